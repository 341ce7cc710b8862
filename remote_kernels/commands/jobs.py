"""``remote-kernels ps`` and ``cancel``: this user's running remote kernels (the registry)."""

from __future__ import annotations

import json
import socket
import sys
import time
from dataclasses import asdict

from ..registry import Entry, entries
from ..runner import CommandError
from ..schedulers import JobState, JobStatus, get_scheduler
from . import CommandFailed, duration, table


def owner_state(entry: Entry) -> str:
    """alive, dead, or unknown (the owner ran on another host)."""
    if entry.owner_host != socket.gethostname():
        return "unknown"
    return "alive" if entry.owner_alive() else "dead"


def label(entry: Entry) -> str:
    """The kernel id, or the session id for kernels without one (argv mode)."""
    return entry.kernel_id or entry.session_id


async def job_states(found: list[Entry]) -> dict[str, JobStatus]:
    """session id -> state and time left of its job: one scheduler query per scheduler."""
    states: dict[str, JobStatus] = {}
    for name in sorted({e.scheduler for e in found}):
        group = [e for e in found if e.scheduler == name]
        try:
            by_job = await get_scheduler(name).time_left([e.job_id for e in group])
        except (ValueError, CommandError, OSError) as e:
            print(f"remote-kernels: cannot ask {name} about jobs: {e}", file=sys.stderr)
            by_job = {}
        for e in group:
            states[e.session_id] = by_job.get(e.job_id, JobStatus(JobState.UNKNOWN))
    return states


async def ps(as_json: bool = False) -> int:
    """Print this user's remote kernels with their jobs' state, time left and owner."""
    found = entries()
    states = await job_states(found)
    now = time.time()
    rows = [dict(asdict(e), state=states[e.session_id].state.value, time_left=states[e.session_id].time_left,
                 age=round(now - e.started), owner=owner_state(e)) for e in found]
    if as_json:
        print(json.dumps(rows, indent=1))
    elif not rows:
        print("No remote kernels running.")
    else:
        print(table(["kernel", "spec", "job", "node", "state", "age", "time left", "owner"],
                    [[label(e), e.spec, e.job_id, e.node or "-", r["state"], duration(r["age"]),
                      r["time_left"] or "-", f"{e.owner_pid} {r['owner']}"] for e, r in zip(found, rows)]))
    return 0


def match(ident: str, found: list[Entry]) -> Entry:
    """The entry whose kernel id, session id or job id is ident (or a unique id prefix)."""
    hits = [e for e in found if ident in (e.kernel_id, e.session_id, e.job_id)] or \
           [e for e in found if e.kernel_id.startswith(ident) or e.session_id.startswith(ident)]
    if not hits:
        raise CommandFailed(f"no remote kernel with kernel, session or job id {ident!r}; see `remote-kernels ps`")
    if len(hits) > 1:
        raise CommandFailed(f"{ident!r} matches {len(hits)} kernels ({', '.join(label(e) for e in hits)}); "
                            "give more of the id")
    return hits[0]


async def end(entry: Entry) -> str:
    """Cancel entry's job and forget the entry; return what happened to the job."""
    try:
        scheduler = get_scheduler(entry.scheduler)
    except ValueError as e:
        raise CommandFailed(str(e)) from None
    async def ended() -> bool:
        try:
            return (await scheduler.status([entry.job_id]))[entry.job_id].state.finished
        except (CommandError, KeyError):
            return False

    if await ended():
        what = "had already ended"
    else:
        try:
            await scheduler.cancel(entry.job_id)
            what = "cancelled"
        except CommandError as e:   # fine if it ended meanwhile
            if not await ended():
                raise CommandFailed(f"cannot cancel job {entry.job_id}: {e}") from None
            what = "had already ended"
    entry.remove()
    return f"job {entry.job_id} of kernel {label(entry)} (spec {entry.spec}) {what}"


async def cancel(ident: str) -> int:
    """Cancel the job of one registered kernel."""
    print(await end(match(ident, entries())))
    return 0


async def cancel_orphans() -> int:
    """Cancel the jobs of kernels whose owning process is gone."""
    orphans = [e for e in entries() if owner_state(e) == "dead"]
    if not orphans:
        print("No orphaned remote kernels: every registered kernel's owning process is alive.")
        return 0
    failed = 0
    for entry in orphans:
        try:
            print(f"{await end(entry)}; its owner, process {entry.owner_pid}, is gone")
        except (CommandFailed, OSError) as e:
            print(f"remote-kernels cancel: kernel {label(entry)}: {e}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0
