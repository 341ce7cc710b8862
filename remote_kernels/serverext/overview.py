"""What the JupyterLab extension shows of remote kernels, and the two things it may do to them.

``Overview`` runs on the Jupyter server's own event loop.  It merges two sources:
this server's kernels (their provisioner's ``get_provisioner_info()``: session state, job id,
node, whether the start is pending) and the user's registry (registry.py: every live remote
kernel of this user, of this server or of any other, including those whose server is gone).
The scheduler's word on their jobs (state, pending reason, estimated start, time left) comes
from ``JobFacts``: one batched query per scheduler, cached ``ttl`` seconds, so a status bar
polling from many tabs costs the scheduler one query per ``ttl``.

``cancel`` and ``shut_down`` act only on kernels of this server or entries of this user's
registry (a private 0700 directory); anything else is ``NotFound``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from dataclasses import dataclass

from ..commands.jobs import end, owner_state
from ..registry import Entry, entries
from ..runner import CommandError, runner_for
from ..options import KernelOptions
from ..schedulers import JobState, JobStatus, get_scheduler
from ..schedulers._common import seconds

# Seconds a scheduler answer is reused.
STATUS_TTL = 3.0

# Session state (session.State values) -> what the user is told: the phase of the kernel's job.
PHASES = {"new": "submitting", "submitting": "submitting", "queued": "queued", "connecting": "starting",
          "ready": "starting", "starting": "starting", "running": "running", "reconnecting": "reconnecting",
          "closing": "ending", "ending": "ending", "ended": "ended"}


class NotFound(LookupError):
    """No kernel of this server and no entry of this user's registry has that id."""


class Refused(ValueError):
    """The action does not apply to that kernel (the message says what does)."""


@dataclass(frozen=True)
class JobKey:
    scheduler: str
    job_id: str
    login_host: str = ""


class JobFacts:
    """Batched, cached scheduler status of jobs: JobKey -> JobStatus (reason, start_time, and
    time_left for running jobs).  A failed query reads as UNKNOWN, never raises."""

    def __init__(self, ttl: float = STATUS_TTL, clock=time.monotonic):
        self.ttl, self.clock = ttl, clock
        self._cache: dict[JobKey, tuple[float, JobStatus]] = {}
        self._lock = asyncio.Lock()
        self.queries = 0   # scheduler commands run (for tests)

    async def get(self, keys: list[JobKey], timeout: float = 30.0) -> dict[JobKey, JobStatus]:
        async with self._lock:
            now = self.clock()
            stale = [k for k in set(keys) if k not in self._cache or now - self._cache[k][0] > self.ttl]
            groups: dict[tuple[str, str], list[JobKey]] = {}
            for k in stale:
                groups.setdefault((k.scheduler, k.login_host), []).append(k)
            for (name, host), group in groups.items():
                found = await self._query(name, host, [k.job_id for k in group], timeout)
                for k in group:
                    self._cache[k] = (now, found.get(k.job_id, JobStatus(JobState.UNKNOWN)))
            for k in [k for k, (t, _) in self._cache.items() if now - t > 10 * self.ttl]:
                del self._cache[k]
            return {k: self._cache[k][1] for k in keys}

    async def _query(self, name: str, host: str, job_ids: list[str], timeout: float) -> dict[str, JobStatus]:
        try:
            scheduler = get_scheduler(name, runner_for(host, timeout))
            self.queries += 1
            found = await scheduler.status(job_ids)
            running = [j for j, st in found.items() if st.state is JobState.RUNNING]
            if running:
                self.queries += 1
                for job_id, st in (await scheduler.time_left(running)).items():
                    if job_id in found:
                        found[job_id].time_left = st.time_left
            return found
        except (ValueError, CommandError, OSError):
            return {}


def summary(view: dict) -> str:
    """One line for the status bar: 'slurm job 42 queued (BeginTime), estimated start 19:00'."""
    job = f"{view['scheduler']} job {view['job_id']}" if view.get("job_id") else "remote kernel"
    phase = view["phase"]
    if phase == "queued":
        return (f"{job} queued" + (f" ({view['reason']})" if view.get("reason") else "")
                + (f", estimated start {view['start_time']}" if view.get("start_time") else ""))
    if phase in ("starting", "reconnecting"):
        return f"{job} {phase} on {view.get('node') or '?'}"
    if phase == "running":
        return f"{job} running on {view.get('node') or '?'}" + (
            f", {view['time_left']} left" if view.get("time_left") else "")
    if phase == "ended" and view.get("ended_reason"):
        return f"{job} ended: {view['ended_reason']}"
    return f"{job} {phase}"


DEFAULT_WARNING = KernelOptions.walltime_warning.default_value


def left_seconds(time_left: str) -> int | None:
    """Seconds in the scheduler's time left ("4:59", "1-02:00:00"); None if there is none."""
    try:
        return seconds(time_left) if time_left and ":" in time_left else None
    except ValueError:
        return None


def make_view(*, info: dict | None, entry: Entry | None, status: JobStatus | None, kernel_id: str = "",
              spec: str = "", server: str = "", notebook: str | None = None,
              warn_before: int = DEFAULT_WARNING) -> dict:
    """A kernel as the extension shows it, from the provisioner's info (this server's kernels),
    the registry entry (any of the user's kernels) and the scheduler's status of its job.
    ``warn`` is true once a running job has at most ``warn_before`` seconds left (the spec's
    walltime_warning): the frontend then shows its notification."""
    info = info or {}
    job_id = info.get("job_id") or (entry.job_id if entry else None)
    if info.get("state"):
        phase = PHASES.get(info["state"], info["state"])
    elif status is not None and status.state in (JobState.QUEUED, JobState.HELD):
        phase = "queued"
    elif status is not None and status.state is JobState.RUNNING:
        phase = "running"
    elif status is not None and status.state.finished:
        phase = "ended"
    else:
        phase = "unknown"
    if phase == "queued" and status is not None and status.state is JobState.RUNNING:
        phase = "starting"   # the scheduler has started it; the session has not yet seen it
    view = {
        "kernel_id": kernel_id or (entry.kernel_id if entry else ""),
        "session_id": info.get("session_id") or (entry.session_id if entry else ""),
        "spec": spec or (entry.spec if entry else ""),
        "scheduler": info.get("scheduler") or (entry.scheduler if entry else ""),
        "job_id": job_id,
        "node": info.get("node") or (status.node if status else None) or (entry.node if entry else None) or None,
        "state": info.get("state") or "",
        "phase": phase,
        "job_state": status.state.value if status else "",
        "reason": status.reason if status else "",
        "start_time": status.start_time if status else None,
        "time_left": status.time_left if status else "",
        "time_left_seconds": left_seconds(status.time_left) if status else None,
        "warn_before": warn_before,
        "pending": bool(info.get("pending")),
        "ended_reason": info.get("ended_reason") or "",
        "log_file": info.get("log_file") or "",
        "server": server,
        "notebook": notebook,
        "known": bool(info),   # a kernel of this server (else only in the registry)
        "started": entry.started if entry else None,
        "owner_pid": entry.owner_pid if entry else os.getpid(),
        "owner_host": entry.owner_host if entry else socket.gethostname(),
    }
    left = view["time_left_seconds"]
    view["warn"] = bool(phase == "running" and warn_before > 0 and left is not None and left <= warn_before)
    view["summary"] = summary(view)
    return view


class Overview:
    """This server's remote kernels and the user's registry, as views (make_view)."""

    def __init__(self, kernel_manager, session_manager=None, facts: JobFacts | None = None):
        self.km, self.sessions, self.facts = kernel_manager, session_manager, facts or JobFacts()

    # --- reading -----------------------------------------------------------------------
    async def _server_kernels(self) -> dict[str, tuple[dict, str, str, int]]:
        """kernel id -> (provisioner info, spec name, login host, walltime_warning) of this
        server's remote kernels."""
        from ..provisioner import RemoteKernelProvisioner

        found = {}
        for kid in list(self.km.list_kernel_ids()):
            try:
                manager = self.km.get_kernel(kid)
            except KeyError:
                continue
            prov = getattr(manager, "provisioner", None)
            if isinstance(prov, RemoteKernelProvisioner):
                info = (await prov.get_provisioner_info()).get("remote_kernel", {})
                found[kid] = (info, manager.kernel_name, prov.login_host, prov.walltime_warning)
        return found

    async def _notebooks(self) -> dict[str, str]:
        """kernel id -> the path of the notebook (session) using it."""
        if self.sessions is None:
            return {}
        try:
            return {s["kernel"]["id"]: s.get("path", "") for s in await self.sessions.list_sessions()
                    if s.get("kernel")}
        except Exception:   # a kernel that vanished mid-listing: no names this time
            return {}

    async def kernels(self) -> list[dict]:
        """Every remote kernel of this user: this server's first, then the registry's others."""
        ours = await self._server_kernels()
        by_kernel = {e.kernel_id: e for e in entries() if e.kernel_id}
        others = [e for e in entries() if e.kernel_id not in ours]
        keys = {kid: JobKey(info.get("scheduler", ""), info["job_id"], host)
                for kid, (info, _, host, _) in ours.items() if info.get("job_id")}
        keys.update({e.session_id: JobKey(e.scheduler, e.job_id) for e in others})
        statuses = await self.facts.get(list(keys.values()))
        notebooks = await self._notebooks()
        views = [make_view(info=info, entry=by_kernel.get(kid), status=statuses.get(keys.get(kid)), kernel_id=kid,
                           spec=spec, server="this", notebook=notebooks.get(kid), warn_before=warn)
                 for kid, (info, spec, _, warn) in ours.items()]
        for e in others:
            mine = e.owner_host == socket.gethostname() and e.owner_pid == os.getpid()
            server = "this" if mine else owner_state(e)   # alive / dead / unknown
            views.append(make_view(info=None, entry=e, status=statuses.get(keys[e.session_id]), server=server))
        return views

    async def kernel(self, kernel_id: str) -> dict:
        """The view of one kernel of this server (or of the registry, by kernel id).  NotFound."""
        for view in await self.kernels():
            if view["kernel_id"] == kernel_id:
                return view
        raise NotFound(f"no remote kernel {kernel_id!r} of yours")

    # --- acting --------------------------------------------------------------------------
    def _entry(self, ident: str) -> Entry:
        hits = [e for e in entries() if ident in (e.kernel_id, e.session_id, e.job_id)]
        if len(hits) != 1:
            raise NotFound(f"no remote kernel or job {ident!r} of yours")
        return hits[0]

    async def cancel(self, ident: str) -> str:
        """Withdraw the job of a kernel (kernel, session or job id).  A kernel of this server is
        shut down (the server forgets it and its job ends with it); any other registered one has
        its job cancelled and its entry removed.  NotFound for anything else."""
        if ident in self.km.list_kernel_ids():
            await self.km.shutdown_kernel(ident, now=True)
            return f"kernel {ident} shut down; its job ends with it"
        entry = self._entry(ident)
        if entry.kernel_id and entry.kernel_id in self.km.list_kernel_ids():
            await self.km.shutdown_kernel(entry.kernel_id, now=True)
            return f"kernel {entry.kernel_id} shut down; job {entry.job_id} ends with it"
        return await end(entry)

    async def warn(self, kernel_id: str) -> str:
        """Signal a batch job of this server's kernel whose wall-time is near (view.warn) with the
        pre-end signal, as SLURM's --signal does (the launcher passes on the first one it gets):
        SLURM drops its own when it falls before the batch step runs.  Refused for an
        interactively dispatched job (srun signals every process of the step) and for others'."""
        from ..job import interactive
        from ..launcher import WALLTIME_SIGNAL

        if kernel_id not in self.km.list_kernel_ids():
            raise NotFound(f"no remote kernel {kernel_id!r} of this server")
        prov = self.km.get_kernel(kernel_id).provisioner
        view = await self.kernel(kernel_id)
        scheduler = get_scheduler(prov.scheduler, runner_for(prov.login_host, prov.command_timeout))
        if not view["warn"] or not view["job_id"]:
            raise Refused(f"kernel {kernel_id}'s job is not near its wall-time")
        if interactive(prov, scheduler) or scheduler.no_signal:
            raise Refused(f"job {view['job_id']} runs interactively: it gets the notification only")
        try:
            await scheduler.signal(view["job_id"], WALLTIME_SIGNAL)
        except (CommandError, ValueError) as e:
            raise Refused(f"cannot signal job {view['job_id']}: {e}") from None
        return f"job {view['job_id']} told that its wall-time is near"

    async def shut_down(self, kernel_id: str) -> str:
        """Shut down a kernel of this server.  Refused for others' (their job can be cancelled)."""
        if kernel_id not in self.km.list_kernel_ids():
            self._entry(kernel_id)   # NotFound if it is not the user's at all
            raise Refused(f"kernel {kernel_id} is not one of this server's: cancel its job instead")
        await self.km.shutdown_kernel(kernel_id)
        return f"kernel {kernel_id} shut down"
