"""One kernel's batch job: submitted once, watched while it waits, explained when it ends, ended once.

Owned by the session (session.py) and used only on its event loop.  Scheduler status is
for a job that waits and for learning why a job ended: while the kernel runs and its link
answers, the session calls quiet() and the job costs the scheduler no query.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from pathlib import Path
from typing import Callable

from . import script
from .errors import KernelStartError
from .joblogs import REMOTE_JOB_DIR, job_log_dir
from .options import KernelOptions
from .registry import Entry
from .runner import CommandError, CommandRunner
from .schedulers import JobState, JobStatus, Scheduler
from .schedulers.base import Dispatched
from .schedulers.limits import SiteFacts
from .watcher import JobWatcher

# poll() codes when the job, not the kernel, ended (the kernel's own code otherwise).
JOB_ENDED_CODES = {JobState.CANCELLED: 143, JobState.TIMEOUT: 124, JobState.NODE_FAIL: 135,
                   JobState.PREEMPTED: 143, JobState.OOM: 137, JobState.FAILED: 1,
                   JobState.COMPLETED: 0, JobState.GONE: 1, JobState.UNKNOWN: 1}

# After the launcher said bye, how long the job may take to end by itself before it is cancelled.
END_WAIT = 3.0


def interactive(opts: KernelOptions, scheduler: Scheduler) -> bool:
    """Whether a job starts through the scheduler's interactive path (option ``dispatch``):
    'auto' takes it where the scheduler has one, commands run here (no login host: the
    command must live as long as the job) and the spec sets no directives (sbatch lines).
    ValueError if asked for where the scheduler has none, or for a shared allocation (it must
    outlive the server that submitted it, and an interactive job ends with that server's command;
    the same for a kernel with ``persist``; persist with a shared allocation is refused too)."""
    if opts.shared and opts.persist:
        raise ValueError("persist applies to per-kernel allocations; a shared allocation outlives its "
                         "server by linger")
    if opts.shared or opts.persist:
        if opts.dispatch == "interactive":
            what = "a shared allocation" if opts.shared else "a kernel that persists"
            raise ValueError(f"{what} is submitted as a batch job; set dispatch to batch or auto")
        return False
    if opts.dispatch == "batch":
        return False
    if not scheduler.dispatch_prefix:
        if opts.dispatch == "interactive":
            raise ValueError(f"{scheduler.name} has no interactive dispatch; set dispatch to batch or auto")
        return False
    return opts.dispatch == "interactive" or not (opts.login_host or opts.directives)


class Job:
    """A batch job for one session.  Methods raise KernelStartError (one line) where they fail."""

    def __init__(self, opts: KernelOptions, scheduler: Scheduler, runner: CommandRunner, *,
                 name: str, session_id: str, kernel_id: str, log: logging.Logger):
        self.opts, self.scheduler, self.runner, self.log = opts, scheduler, runner, log
        self.name, self.session_id, self.kernel_id = name, session_id, kernel_id
        self.watcher = JobWatcher.for_scheduler(scheduler, interval=opts.poll_interval,
                                                max_interval=opts.queue_poll_max)
        self.id: str | None = None
        self.entry: Entry | None = None
        self.timings: dict[str, float] = {}
        self.t0 = 0.0
        self.queue_timeout = opts.queue_timeout
        self._waitable: set[str] = set()   # reasons the site's facts showed to clear with time
        self._ended = False
        self.dispatched: Dispatched | None = None   # the interactive command, when dispatched so

    @property
    def interactive(self) -> bool:
        """interactive(opts, scheduler) for this job."""
        return interactive(self.opts, self.scheduler)

    # --- where its output goes -------------------------------------------------------------
    def _log_dir(self) -> str:
        return REMOTE_JOB_DIR if self.opts.login_host else str(job_log_dir())

    @property
    def log_file(self) -> str:
        """The job's output file: local, or relative to the home on the login host."""
        return f"{self._log_dir()}/{self.id}.log"

    async def log_tail(self, lines: int = 5) -> str:
        """The last lines of the job's output, joined with ' | ' ('' if unreadable)."""
        if self.opts.login_host:
            code, out, _ = await self.runner.run(["tail", "-n", str(lines), self.log_file], check=False)
            text = out.strip().splitlines() if code == 0 else []
        else:
            try:
                text = Path(self.log_file).read_text(errors="replace").strip().splitlines()[-lines:]
            except OSError:
                text = []
        return " | ".join(text)

    # --- submit ---------------------------------------------------------------------------
    async def submit(self) -> None:
        """Render and submit the script; on return the job is recorded and watched.

        Cancelled meanwhile, the submission still finishes (however often the caller is
        cancelled) and the job it made is cancelled, so no job is left that nobody knows of."""
        self.t0 = time.monotonic()
        res = self.opts.resources(job_name=f"rk-{self.name}"[:64], output=f"{self._log_dir()}/%j.log")
        try:
            interactive = self.interactive
            text = script.render(self.scheduler, self.opts, res, session=self.session_id, interactive=interactive)
            if self.opts.login_host:
                await self.runner.run(["mkdir", "-p", "-m", "700", REMOTE_JOB_DIR])
        except (CommandError, ValueError) as e:
            raise KernelStartError(f"{self.scheduler.name} job not submitted: {e}") from None
        submit = asyncio.ensure_future(self._dispatch(text, res) if interactive else self.scheduler.submit(text, res))
        try:
            self.id = await asyncio.shield(submit)
        except asyncio.CancelledError:
            await _shielded(self._withdraw(submit))
            raise
        except Exception as e:
            raise KernelStartError(await self._refusal(e)) from None
        self.timings["submit"] = time.monotonic() - self.t0
        self._record(allocation=self.session_id if self.opts.shared else "")
        self.log.info("remote kernel %s: submitted %s job %s", self.name, self.scheduler.name, self.id)
        self.watch()

    def _record(self, node: str = "", allocation: str = "") -> None:
        self.entry = Entry(session_id=self.session_id, spec=self.name, scheduler=self.scheduler.name,
                           job_id=self.id, kernel_id=self.kernel_id, node=node, allocation=allocation)
        self.entry.save()

    def adopt(self, job_id: str, node: str, allocation: str) -> None:
        """Be a running job another kernel submitted (a shared allocation this kernel joined):
        recorded in the registry, not watched (its link says it lives), never submitted."""
        self.id, self.t0 = job_id, time.monotonic()
        self.timings.update(submit=0.0, queued=0.0)
        self._record(node=node, allocation=allocation)

    async def _dispatch(self, text: str, res) -> str:
        self.dispatched = await self.scheduler.dispatch(text, res)
        return self.dispatched.job_id

    async def _withdraw(self, submit: asyncio.Future) -> None:
        """Let an abandoned submission finish (never cancelling it) and cancel the job it made."""
        done, _ = await asyncio.wait({submit}, timeout=self.runner.timeout)
        if not done or submit.exception() is not None:
            if not done:
                self.log.warning("remote kernel %s: an abandoned submit did not finish; a job may be left",
                                 self.name)
            return
        try:
            await self.scheduler.cancel(submit.result())
        except Exception as e:  # noqa: BLE001 - logged; `remote-kernels cancel --orphans` finds it
            self.log.warning("remote kernel %s: cancelling job %s of an abandoned start failed: %s",
                             self.name, submit.result(), e)
        if self.dispatched is not None:
            await self.dispatched.finish()

    # --- watching ---------------------------------------------------------------------------
    def watch(self, starting: bool = True) -> None:
        """Have the watcher query the job (``starting``: at the fast rate of a job about to start)."""
        if self.id is not None:
            self.watcher.watch(self.id, starting=starting)

    def quiet(self) -> None:
        """No more scheduler queries for this job until watch() (its link says it lives)."""
        if self.id is not None:
            self.watcher.unwatch(self.id)

    @property
    def status(self) -> JobStatus | None:
        return self.watcher.status.get(self.id or "")

    @property
    def finished(self) -> bool:
        st = self.status
        return st is not None and st.state.finished

    async def wait_running(self, on_status: Callable[[JobStatus, float], None] | None) -> JobStatus:
        """Wait until the job runs on a node.  KernelStartError if it ends first, can never start
        or waits longer than queue_timeout (the caller cancels it then)."""
        last = None
        while True:
            status = await self.watcher.wait_update(self.id)
            if on_status is not None:
                on_status(dataclasses.replace(status, job_id=self.id), time.monotonic() - self.t0)
            summary = (status.state, status.reason, status.start_time)
            if summary != last:
                last = summary
                extra = f", estimated start {status.start_time}" if status.state is JobState.QUEUED \
                    and status.start_time else ""
                self.log.info("remote kernel %s: job %s %s%s%s", self.name, self.id, status.state.value,
                              f" ({status.reason})" if status.reason else "", extra)
            if status.state is JobState.RUNNING and status.node:
                self.watcher.started(self.id)
                self.timings["queued"] = time.monotonic() - self.t0 - self.timings["submit"]
                if self.entry is not None:
                    self.entry.node = status.node
                    self.entry.save()
                return status
            never = await self._never_starts(status)
            if never:
                raise KernelStartError(never)
            if status.state.finished:
                tail = await self.log_tail()
                raise KernelStartError(
                    f"job {self.id} ended before the kernel started ({status.native or status.state.value}"
                    f"{', ' + status.reason if status.reason else ''})" + (f": {tail}" if tail else ""))
            waited = time.monotonic() - self.t0
            if self.queue_timeout and waited > self.queue_timeout:
                raise KernelStartError(
                    f"job {self.id} still {status.state.value} after {waited:.0f}s"
                    f" (reason: {status.reason or 'none given'}); cancelled it. Raise queue_timeout or "
                    "choose a less busy partition")

    async def ended_early(self, node: str) -> str:
        """The one line for a job that ended before its launcher answered (with its output's end)."""
        await asyncio.sleep(0.2)   # let the job's output reach the log file
        tail = await self.log_tail()
        st = self.status
        return (f"job {self.id} on {node} ended before its launcher started ({st.native or st.state.value})"
                + (f": {tail}" if tail else f"; see {self.log_file}"))

    def summary(self) -> str:
        """Where the job is, in words: "slurm job 42 is queued (Priority) after 12s"."""
        st = self.status
        if st is None:
            return f"{self.scheduler.name} job {self.id} is not known any more"
        waited = f"after {time.monotonic() - self.t0:.0f}s"
        if st.state is JobState.RUNNING:
            return f"{self.scheduler.name} job {self.id} started on {st.node} {waited}; the kernel is starting"
        return (f"{self.scheduler.name} job {self.id} is {st.state.value}" + (f" ({st.reason})" if st.reason else "")
                + f" {waited}")

    async def why_ended(self, updates: int = 20) -> tuple[int, str]:
        """After its launcher went away: (poll code, reason) from the scheduler's word on the job."""
        self.watch(starting=False)
        for _ in range(updates):
            st = self.status
            if st is not None and st.state.finished:
                return JOB_ENDED_CODES.get(st.state, 1), f"job {self.id} {st.native or st.state.value}" + (
                    f" ({st.reason})" if st.reason else "")
            await self.watcher.wait_update(self.id)
        return 1, "lost contact with the launcher"

    # --- why it cannot start ------------------------------------------------------------------
    def _asked(self):
        return self.opts.resources(job_name="", output="")

    async def _site_facts(self, kind: str) -> SiteFacts:
        """The adapter's facts for a why-never message; none (a vaguer message) if the query fails."""
        try:
            return await self.scheduler.site_facts(self.id, kind)
        except (CommandError, OSError, ValueError) as e:
            self.log.debug("remote kernel %s: reading the site's limits failed: %s", self.name, e)
            return SiteFacts()

    async def _never_starts(self, status: JobStatus) -> str | None:
        """The one line saying why the job can never start (the caller cancels it), or None."""
        kind = self.scheduler.never(status)
        said = status.reason or status.native
        if kind is None or said in self._waitable:
            return None
        line = self.scheduler.explain(kind, said, self._asked(), await self._site_facts(kind))
        if line is None:
            self._waitable.add(said)   # the facts show it clears with time; not asked again
            return None
        return f"{self.scheduler.name} job {self.id} can never start ({said}): {line}"

    async def _refusal(self, error: Exception) -> str:
        """The one line for a refused submission: the limit and the fix when the error names one."""
        refused = self.scheduler.refused(str(error))
        line = None
        if refused is not None:
            kind, said = refused
            line = self.scheduler.explain(kind, said, self._asked(), await self._site_facts(kind))
        if line is None:
            return f"{self.scheduler.name} refused the job: {error}"
        return f"{self.scheduler.name} refused the job ({said}): {line}"

    # --- end ---------------------------------------------------------------------------------
    async def end(self, said_bye: bool, keep: bool = False) -> None:
        """End the job (once; later calls return at once): after the launcher said bye, give it
        END_WAIT s to end by itself (polled at the fast rate: it ends within a poll or two), else
        (or at once) cancel it.  Forgets the job afterwards.  ``keep``: only forget it (a shared
        allocation that other kernels use, or that lingers)."""
        if self._ended or self.id is None:
            return
        self._ended = True
        if keep:
            self.watcher.unwatch(self.id)
            self._forget()
            return
        self.watch(starting=said_bye)
        deadline = time.monotonic() + END_WAIT
        st = self.status
        while said_bye and (st is None or not st.state.finished) and time.monotonic() < deadline:
            try:
                st = await asyncio.wait_for(self.watcher.wait_update(self.id), max(0.1, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                break
        if st is None or not st.state.finished:
            try:
                await self.scheduler.cancel(self.id)
                self.log.info("remote kernel %s: cancelled job %s", self.name, self.id)
            except Exception as e:  # noqa: BLE001 - the job may have ended meanwhile
                self.log.warning("remote kernel %s: cancelling job %s failed: %s", self.name, self.id, e)
        self.watcher.unwatch(self.id)
        if self.dispatched is not None:
            await self.dispatched.finish()
        self._forget()

    def _forget(self) -> None:
        if self.entry is not None:
            self.entry.remove()
            self.entry = None


async def _shielded(coro) -> None:
    """Run coro to its end even if the caller is cancelled again meanwhile."""
    task = asyncio.ensure_future(coro)
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            continue
