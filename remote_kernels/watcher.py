"""One status poller per scheduler per process: a single batched query for all live jobs."""

from __future__ import annotations

import asyncio
import logging
import time

from .runner import CommandError
from .schedulers import JobState, JobStatus, Scheduler

log = logging.getLogger(__name__)


class JobWatcher:
    """Polls ``scheduler.status`` for every watched job in one command.

    It polls every ``interval`` seconds, or every ``fast_interval`` during the first
    ``fast_period`` seconds of a job's wait to start (most jobs start within it).  A failing query is retried; a job is declared lost
    (state UNKNOWN, reason naming the failure) only after ``max_failures``
    consecutive failed queries.  ``await wait_update(job_id)`` returns the next status.
    """

    _instances: dict[tuple, "JobWatcher"] = {}

    def __init__(self, scheduler: Scheduler, interval: float = 2.0, fast_interval: float = 0.2,
                 max_failures: int = 5, fast_period: float = 10.0):
        self.scheduler = scheduler
        self.interval, self.fast_interval, self.max_failures = interval, fast_interval, max_failures
        self.fast_period = fast_period
        self.status: dict[str, JobStatus] = {}
        self._waiters: dict[str, asyncio.Event] = {}
        self._starting: dict[str, float] = {}   # job id -> when it began waiting
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self.failures = 0
        self.queries = 0

    @classmethod
    def for_scheduler(cls, scheduler: Scheduler, **kw) -> "JobWatcher":
        """The shared watcher of this event loop for scheduler's kind, place and settings."""
        key = (id(asyncio.get_running_loop()), scheduler.name, scheduler.runner.where,
               scheduler.runner.timeout, tuple(sorted(kw.items())))
        if key not in cls._instances:
            cls._instances[key] = cls(scheduler, **kw)
        return cls._instances[key]

    def watch(self, job_id: str, starting: bool = True) -> None:
        self.status.setdefault(job_id, JobStatus(JobState.QUEUED, "submitted"))
        self._waiters.setdefault(job_id, asyncio.Event())
        if starting:
            self._starting[job_id] = time.monotonic()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        self._wake.set()

    def started(self, job_id: str) -> None:
        self._starting.pop(job_id, None)

    def unwatch(self, job_id: str) -> None:
        self.status.pop(job_id, None)
        self._starting.pop(job_id, None)
        ev = self._waiters.pop(job_id, None)
        if ev:
            ev.set()

    async def wait_update(self, job_id: str) -> JobStatus:
        ev = self._waiters[job_id]
        ev.clear()
        await ev.wait()
        return self.status.get(job_id, JobStatus(JobState.GONE))

    async def _poll_once(self) -> None:
        ids = list(self.status)
        try:
            self.queries += 1
            new = await self.scheduler.status(ids)
            self.failures = 0
        except (CommandError, OSError) as e:
            self.failures += 1
            log.warning("job status query failed (%d/%d): %s", self.failures, self.max_failures, e)
            if self.failures < self.max_failures:
                return
            new = {j: JobStatus(JobState.UNKNOWN, f"status query failing: {e}") for j in ids}
        for job_id, st in new.items():
            if job_id in self.status:
                self.status[job_id] = st
                self._waiters[job_id].set()

    async def _run(self) -> None:
        while self.status:
            await self._poll_once()
            self._wake.clear()
            now = time.monotonic()
            fast = any(now - t < self.fast_period for t in self._starting.values())
            delay = self.fast_interval if fast else self.interval
            try:
                await asyncio.wait_for(self._wake.wait(), delay)
            except asyncio.TimeoutError:
                pass
        self._task = None
