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

# Seconds a start waits for another start of the spec (submitting, queued) before it submits its own.
LOCK_WAIT = 20.0
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


async def running(scheduler, found: list[Allocation], log) -> list[Allocation]:
    """Those of ``found`` whose job ``scheduler`` does not call ended (one query); the records
    of ended ones are withdrawn.  All of them if the query fails (joining then tells)."""
    if not found:
        return []
    try:
        states = await scheduler.status([a.job_id for a in found])
    except Exception as e:  # noqa: BLE001 - any failure of the query: the join attempt tells
        log.debug("remote kernels: cannot ask %s about shared jobs: %s", scheduler.name, e)
        return found
    ended = [a for a in found if a.job_id in states and states[a.job_id].state.finished]
    for alloc in ended:
        withdraw(alloc.allocation)
    return [a for a in found if a not in ended]


def for_job(scheduler: str, job_id: str) -> list[Allocation]:
    return [a for a in published() if a.scheduler == scheduler and a.job_id == job_id]


class SpecLock:
    """This user's find-or-submit lock for one fingerprint (flock on a file in the registry):
    held from looking for an allocation until the job it submitted (if any) is published or
    has failed, so a kernel of the same spec started meanwhile, by any of this user's
    servers, joins that job instead of submitting another.  Released when the holder's
    process ends, whatever the way."""

    def __init__(self, fp: str):
        self.path = allocations_dir() / f"{fp}.lock"
        self._fd: int | None = None

    async def acquire(self, wait: float = LOCK_WAIT) -> bool:
        """Take the lock; False after ``wait`` s without it (a start must not wait for another
        server's long queue: it submits a job of its own then)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._fd = fd
                return True
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    return False
                await asyncio.sleep(0.02)
            except BaseException:
                os.close(fd)
                raise

    def release(self) -> None:
        """Let the next start go (idempotent)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)   # releases the flock
