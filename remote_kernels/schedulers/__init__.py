"""The scheduler layer: one small interface, one module per scheduler.

A scheduler adapter turns resources into a job-script header, submits a script
(returning the job id), asks about many jobs in one command, and cancels or
signals a job.  Every adapter reports states from the one enum below.

No job inherits the submitting process's environment (the Jupyter server's, with its
secrets): each adapter submits so that the job starts from the environment its scheduler
gives a job of its own on the node (docs/schedulers.md, "The job's environment").
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from typing import TYPE_CHECKING

from ..runner import CommandRunner

if TYPE_CHECKING:
    from .limits import SiteFacts


class JobState(enum.Enum):
    QUEUED = "queued"
    HELD = "held"
    RUNNING = "running"
    SUSPENDED = "suspended"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    NODE_FAIL = "node_fail"
    PREEMPTED = "preempted"
    OOM = "oom"
    GONE = "gone"          # left the queue; the scheduler no longer knows it
    UNKNOWN = "unknown"

    @property
    def finished(self) -> bool:
        return self not in (JobState.QUEUED, JobState.HELD, JobState.RUNNING,
                            JobState.SUSPENDED, JobState.UNKNOWN)


@dataclass
class JobStatus:
    """What the scheduler says of one job."""

    state: JobState
    reason: str = ""
    node: str | None = None
    start_time: str | None = None   # estimated or actual, as the scheduler prints it
    native: str = ""                # the scheduler's own state word
    time_left: str = ""             # of the allocation, as the scheduler prints it (time_left() only)
    job_id: str = ""                # set where a status is handed out of the job (on_status callbacks)


@dataclass
class Resources:
    """Scheduler-neutral resource request.  Empty values are left to the site's defaults."""

    partition: str = ""
    account: str = ""
    qos: str = ""
    time: str = ""
    cpus: int = 0
    mem: str = ""
    gpus: int = 0
    constraint: str = ""
    reservation: str = ""
    job_name: str = "remote-kernel"
    output: str = ""
    directives: list[str] = field(default_factory=list)


class Scheduler:
    """Interface of a scheduler adapter.  Subclasses implement every method."""

    name = ""
    # Variables the job script exports first, for the adapter's own needs (the spec's env may override).
    script_env: dict[str, str] = {}

    def __init__(self, runner: CommandRunner | None = None):
        self.runner = runner or CommandRunner()

    def header(self, res: Resources) -> list[str]:
        """Job-script directive lines (after the shebang) for these resources."""
        raise NotImplementedError

    async def submit(self, script: str) -> str:
        """Submit the job script (on stdin); return the job id.  The job must not inherit the
        submitting process's environment."""
        raise NotImplementedError

    async def status(self, job_ids: list[str]) -> dict[str, JobStatus]:
        """One command for all job_ids; a job the scheduler no longer knows is GONE."""
        raise NotImplementedError

    async def time_left(self, job_ids: list[str]) -> dict[str, JobStatus]:
        """State and time left (``JobStatus.time_left``) of job_ids, in one command."""
        raise NotImplementedError

    async def cancel(self, job_id: str) -> None:
        raise NotImplementedError

    # --- jobs that can never start (limits.py) -------------------------------------------
    # Pure, from the adapter's tables, except site_facts: the one query made for the message,
    # only once never() or refused() has given a verdict.

    def never(self, status: JobStatus) -> str | None:
        """The kind of limit (limits.py) that ``status`` says the job can never get past; None
        while it may still start."""
        return None

    def refused(self, error: str) -> tuple[str, str] | None:
        """(kind, the scheduler's words) when a refused submission's error names a limit."""
        return None

    async def site_facts(self, job_id: str | None, kind: str) -> "SiteFacts":
        """What the message for ``kind`` names (partition limits, node sizes...), in one query."""
        from .limits import SiteFacts
        return SiteFacts()

    def explain(self, kind: str, said: str, res: Resources, facts: "SiteFacts") -> str | None:
        """The one line naming the limit and the fix; None if the facts show the job may start."""
        from .limits import explain
        return explain(kind, said, res, facts)

    # --- a request checked before any job (remote-kernels install) ---------------------------
    checks_requests = False   # True: site_facts(None, limits.REQUEST) reads what limits.broken needs

    def checkable(self, res: Resources) -> str | None:
        """Why checking ``res`` would check the wrong request (its directives change it), or None."""
        return None

    def check(self, res: Resources, facts: "SiteFacts") -> str | None:
        """The start-time line for the limit ``res`` breaks at this site (pure), or None."""
        from .limits import broken
        found = broken(res, facts)
        return None if found is None else self.explain(found.kind, found.said, res, found.facts)


def get_scheduler(name: str, runner: CommandRunner | None = None) -> Scheduler:
    """The adapter called ``name``; ValueError naming the known ones otherwise."""
    from .flux import Flux
    from .htcondor import HTCondor
    from .lsf import LSF
    from .pbs import PBSPro
    from .sge import SGE
    from .slurm import Slurm
    from .ssh import SSH
    from .torque import Torque

    adapters = {a.name: a for a in (Slurm, PBSPro, Torque, LSF, HTCondor, Flux, SGE, SSH)}
    try:
        return adapters[name](runner)
    except KeyError:
        raise ValueError(f"unknown scheduler {name!r}; known: {', '.join(sorted(adapters))}") from None
