"""What the scheduler layer speaks in: the one job-state enum, a job's status, a resource request."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


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
    """What the scheduler says of one job.

    ``nodes`` are all the job's hosts, host lists expanded (SLURM's ``c[01-02],d5`` is c01, c02,
    d5); ``node`` is the first of them (given ``nodes`` alone, it is filled in)."""

    state: JobState
    reason: str = ""
    node: str | None = None
    start_time: str | None = None   # estimated or actual, as the scheduler prints it
    native: str = ""                # the scheduler's own state word
    time_left: str = ""             # of the allocation, as the scheduler prints it (time_left() only)
    job_id: str = ""                # set where a status is handed out of the job (on_status callbacks)
    nodes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.node is None and self.nodes:
            self.node = self.nodes[0]
        elif self.node and not self.nodes:
            self.nodes = (self.node,)


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
    warn_before: int = 0   # seconds before the wall-time to signal the batch script (batch_options)
