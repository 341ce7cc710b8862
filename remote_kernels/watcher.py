"""One status poller per scheduler per event loop: a single batched query for all live jobs."""

from __future__ import annotations

import asyncio
import logging
import time

from . import perloop
from .runner import CommandError
from .schedulers import JobState, JobStatus, Scheduler, UnreadableOutput

log = logging.getLogger(__name__)


def _answered(error: BaseException) -> bool:
    """Whether a failed status query got an answer it could not read (a parser's exception, a
    job id the adapter rejects), rather than no answer at all (the command failed)."""
    return isinstance(error, UnreadableOutput) or not isinstance(error, (CommandError, OSError))


class JobWatcher:
    """Polls ``scheduler.status`` for every watched job in one command.

    One round asks about all watched jobs; rounds follow each other as the most urgent job
    wants (``delay``).  A job waiting to start wants a round every ``fast_interval`` seconds
    at first (most start within a second), then every ``backoff`` times the time it has
    waited so far, at most every ``max_interval``: a job that waits long costs ever fewer
    queries, and its start is seen at most that fraction of its wait late.  Any other watched
    job (a link being restored, a job ending) wants one every ``interval``.  The loop
    never ends on an error: any exception of a query or of its parser is one failed query,
    logged and retried.  A job is declared lost (state UNKNOWN, reason naming the failure)
    only after ``max_failures`` consecutive failed queries about it.  When the batched answer
    cannot be read, each job is asked about on its own, and a job whose answer still cannot be
    read is asked about alone from then on: one bad record does not hide the others' status.
    ``await wait_update(job_id)`` returns the next status.
    """

    def __init__(self, scheduler: Scheduler, interval: float = 2.0, fast_interval: float = 0.2,
                 max_failures: int = 5, backoff: float = 0.25, max_interval: float = 30.0):
        self.scheduler = scheduler
        self.interval, self.fast_interval, self.max_failures = interval, fast_interval, max_failures
        self.backoff, self.max_interval = backoff, max_interval
        self.status: dict[str, JobStatus] = {}
        self._waiters: dict[str, asyncio.Event] = {}
        self._starting: dict[str, float] = {}   # job id -> when it began waiting
        self._failed: dict[str, int] = {}       # job id -> consecutive failed queries about it
        self._alone: set[str] = set()           # jobs whose record broke a batched answer
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self.queries = 0

    @classmethod
    def for_scheduler(cls, scheduler: Scheduler, **kw) -> "JobWatcher":
        """The running loop's shared watcher for scheduler's kind, place, timeout and kw
        (perloop: a closed loop's watchers are dropped)."""
        runner = scheduler.runner
        key = (cls, scheduler.name, type(runner), runner.where, runner.timeout, tuple(sorted(kw.items())))
        return perloop.shared(key, lambda: cls(scheduler, **kw))

    @property
    def failures(self) -> int:
        """The most consecutive failed queries about any watched job (0: the last ones answered)."""
        return max(self._failed.values(), default=0)

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
        self._failed.pop(job_id, None)
        self._alone.discard(job_id)
        ev = self._waiters.pop(job_id, None)
        if ev:
            ev.set()

    def delay(self, now: float) -> float:
        """Seconds from ``now`` (time.monotonic()) until the next round: the shortest any
        watched job wants."""
        wants = [min(self.max_interval, max(self.fast_interval, self.backoff * (now - since)))
                 for since in self._starting.values()]
        if len(self._starting) < len(self.status):
            wants.append(self.interval)
        return min(wants, default=self.interval)

    async def wait_update(self, job_id: str) -> JobStatus:
        ev = self._waiters[job_id]
        ev.clear()
        await ev.wait()
        return self.status.get(job_id, JobStatus(JobState.GONE))

    async def _poll_once(self) -> None:
        """One round: the batched query for all jobs but those asked about alone, then those."""
        batch = [j for j in self.status if j not in self._alone]
        for ids in ([batch] if batch else []) + [[j] for j in self.status if j in self._alone]:
            await self._query(ids)

    async def _query(self, ids: list[str]) -> None:
        """Ask about ids and record the answer; any failure is counted, never raised."""
        self.queries += 1
        try:
            new = {j: st for j, st in (await self.scheduler.status(ids)).items() if j in self.status}
        except asyncio.CancelledError:
            raise
        except Exception as e:   # whatever the query or its parser raised, the watcher goes on
            if len(ids) > 1 and _answered(e):
                log.warning("job status answer unreadable (%s); asking about each of %d jobs", e, len(ids))
                for job_id in ids:
                    if job_id in self.status:
                        await self._query([job_id])
                return
            if _answered(e):
                self._alone.update(ids)
            self._count_failure(ids, e)
            return
        for job_id, st in new.items():
            self._failed.pop(job_id, None)
            self.status[job_id] = st
            self._waiters[job_id].set()

    def _count_failure(self, ids: list[str], error: Exception) -> None:
        counts = []
        for job_id in (j for j in ids if j in self.status):
            count = self._failed[job_id] = self._failed.get(job_id, 0) + 1
            counts.append(count)
            if count >= self.max_failures:
                self.status[job_id] = JobStatus(JobState.UNKNOWN, f"status query failing: {error}")
                self._waiters[job_id].set()
        log.warning("job status query failed (%d/%d): %s", max(counts, default=0), self.max_failures, error)

    async def _run(self) -> None:
        while self.status:
            await self._poll_once()
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self.delay(time.monotonic()))
            except asyncio.TimeoutError:
                pass
        self._task = None
