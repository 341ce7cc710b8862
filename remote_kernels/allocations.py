"""This user's shared allocations: the live jobs a next kernel of the same spec may start in.

One record per allocation (option ``allocation: shared``), ``ALLOCATION.json`` in the
registry's ``allocations/`` directory: 0600 files in 0700 directories of this user's
Jupyter runtime dir, so only this user's servers (a second JupyterLab, a VS Code window)
ever find them, and a kernel never lands in another user's allocation (the launcher's
0700 directory on the node would refuse it too).  A record holds no secret: job id, node,
the spec's fingerprint.  The submitting session publishes it once its launcher answers;
a failed join, the allocation's last kernel or ``remote-kernels cancel`` withdraws it.

``locked()`` serialises find-or-submit between this user's servers (flock on a file in
the registry directory), so two kernels started at once share one job.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .options import KernelOptions
from .paths import private_dir
from .registry import registry_dir

# Seconds a start waits for another server's find-or-submit before it gives up on sharing.
LOCK_WAIT = 30.0
# What makes two kernels' allocations interchangeable: the spec's name and every option
# that shapes the job or what runs in it.
SAME = ("scheduler", "login_host", "partition", "account", "qos", "time", "cpus", "mem", "gpus", "constraint",
        "reservation", "directives", "python", "setup", "env", "runtime_base", "grace", "linger", "max_kernels")


def fingerprint(spec: str, opts: KernelOptions) -> str:
    """A digest of the spec's name and the options in SAME (after RK_* overrides)."""
    facts = {"spec": spec, **{name: getattr(opts, name) for name in SAME}}
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=list).encode()).hexdigest()[:32]


def allocations_dir() -> Path:
    return private_dir(registry_dir() / "allocations")


@dataclass
class Allocation:
    allocation: str    # the launcher's session id: its directory on the node is rk-ALLOCATION
    fingerprint: str
    spec: str
    scheduler: str
    job_id: str
    node: str
    runtime_base: str
    started: float = field(default_factory=time.time)

    @property
    def node_dir(self) -> str:
        return f"{self.runtime_base.rstrip('/')}/rk-{self.allocation}"

    @property
    def path(self) -> Path:
        return allocations_dir() / f"{self.allocation}.json"

    def publish(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            json.dump(asdict(self), f)
        tmp.replace(self.path)


def withdraw(allocation: str) -> None:
    """Forget a record (no error if there is none)."""
    if allocation:
        (allocations_dir() / f"{allocation}.json").unlink(missing_ok=True)


def published() -> list[Allocation]:
    """Every record, newest first (unreadable ones skipped)."""
    found = []
    for path in allocations_dir().glob("*.json"):
        try:
            found.append(Allocation(**json.loads(path.read_text())))
        except (OSError, ValueError, TypeError):
            continue
    return sorted(found, key=lambda a: a.started, reverse=True)


def candidates(fp: str) -> list[Allocation]:
    """The records of allocations a kernel with fingerprint ``fp`` may join, newest first."""
    return [a for a in published() if a.fingerprint == fp]


def for_job(scheduler: str, job_id: str) -> list[Allocation]:
    return [a for a in published() if a.scheduler == scheduler and a.job_id == job_id]


@contextlib.asynccontextmanager
async def locked(wait: float = LOCK_WAIT):
    """Hold this user's find-or-submit lock (True), or, after ``wait`` s, go on without it
    (False: a stuck server must not stop every start)."""
    fd = os.open(registry_dir() / "allocations.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline, held = time.monotonic() + wait, False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = True
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.02)
        yield held
    finally:
        os.close(fd)   # releases the lock
