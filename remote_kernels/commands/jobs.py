"""``remote-kernels ps`` and ``cancel``: this user's running remote kernels (the registry).

Kernels in a shared allocation are one entry each with the same job: ``ps`` says how many
share it, ``cancel JOB`` ends all of them (and says which), ``cancel --orphans`` cancels a
shared job only when no live server holds any of its kernels.  A shared allocation that
lingers with no kernel is listed too (an entry without an owner, ``owner_pid`` 0), so it can
be cancelled.  A kernel that outlived its server (option ``persist``: a record in
persisted.py, its owner gone) is listed as detached, with the time it has left to be
re-adopted when its server said when it let go; ``cancel`` ends it (and removes its record),
``cancel --orphans`` leaves it to wait.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from dataclasses import asdict

from .. import allocations, persisted
from ..registry import Entry, entries, sharing
from ..runner import CommandError
from ..schedulers import JobState, JobStatus, get_scheduler
from . import CommandFailed, duration, table


def owner_state(entry: Entry) -> str:
    """alive, dead, unknown (the owner ran on another host), or none (a lingering allocation)."""
    if not entry.owner_pid:
        return "none"
    if entry.owner_host != socket.gethostname():
        return "unknown"
    return "alive" if entry.owner_alive() else "dead"


def detached(entry: Entry, kept: dict[str, persisted.Record]) -> str:
    """'' unless entry's kernel waits to be re-adopted (its record kept, its owner gone, or its
    server let it go): then 'detached', with the time it has left where known."""
    record = kept.get(entry.session_id)
    if record is None or (not record.detached and owner_state(entry) in ("alive", "unknown")):
        return ""
    left = record.time_left()
    return f"detached, {duration(left)} left" if left is not None else f"detached, at most {duration(record.persist)} left"


def kept_records() -> dict[str, persisted.Record]:
    """Session id -> the record of a kernel that may outlive its server."""
    return {r.session_id: r for r in persisted.records()}


def label(entry: Entry) -> str:
    """The kernel id, or the session id for kernels without one (argv mode)."""
    return entry.kernel_id or entry.session_id


def shares(entry: Entry, found: list[Entry]) -> str:
    """ps's "shared" column: "-" per kernel, else how many of the listed kernels are in its job."""
    if not entry.allocation:
        return "-"
    if not entry.owner_pid:
        return "lingering"
    n = len(sharing(entry, found)) + 1
    return f"{n} kernel{'' if n == 1 else 's'}"


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


def lingering(found: list[Entry]) -> list[Entry]:
    """This user's shared allocations in which no kernel of ``found`` is (they linger for the
    next one), as entries without an owner."""
    busy = {(e.scheduler, e.job_id) for e in found}
    return [Entry(session_id=a.allocation, spec=a.spec, scheduler=a.scheduler, job_id=a.job_id, node=a.node,
                  owner_pid=0, owner_host="", started=a.started, allocation=a.allocation)
            for a in allocations.published() if (a.scheduler, a.job_id) not in busy]


async def ps(as_json: bool = False) -> int:
    """Print this user's remote kernels (and lingering shared allocations) with their jobs'
    state, time left and owner."""
    found = entries()
    found += lingering(found)
    states = await job_states(found)
    for e in [e for e in found if not e.owner_pid and states[e.session_id].state.finished]:
        allocations.withdraw(e.allocation)   # its linger is over: the job has ended
        found.remove(e)
    now, kept = time.time(), kept_records()
    for e in found:
        if e.session_id in kept and states[e.session_id].state.finished:   # its persist is over
            kept.pop(e.session_id).remove()
    rows = [dict(asdict(e), state=states[e.session_id].state.value, time_left=states[e.session_id].time_left,
                 age=round(now - e.started), owner=detached(e, kept) or owner_state(e),
                 shared_with=[label(o) for o in sharing(e, found)]) for e in found]
    if as_json:
        print(json.dumps(rows, indent=1))
    elif not rows:
        print("No remote kernels running.")
    else:
        print(table(["kernel", "spec", "job", "shared", "node", "state", "age", "time left", "owner"],
                    [[label(e), e.spec, e.job_id, shares(e, found), e.node or "-", r["state"], duration(r["age"]),
                      r["time_left"] or "-", f"{e.owner_pid} {r['owner']}" if e.owner_pid else "-"]
                     for e, r in zip(found, rows)]))
    return 0


def match(ident: str, found: list[Entry]) -> Entry:
    """The entry whose kernel id, session id or job id is ident (or a unique id prefix); for
    the job id of a shared allocation, any one of its kernels."""
    hits = [e for e in found if ident in (e.kernel_id, e.session_id, e.job_id)] or \
           [e for e in found if e.kernel_id.startswith(ident) or e.session_id.startswith(ident)]
    if not hits:
        raise CommandFailed(f"no remote kernel with kernel, session or job id {ident!r}; see `remote-kernels ps`")
    if len(hits) > 1 and all(e.job_id == ident and e.allocation and e.scheduler == hits[0].scheduler for e in hits):
        return hits[0]
    if len(hits) > 1:
        raise CommandFailed(f"{ident!r} matches {len(hits)} kernels ({', '.join(label(e) for e in hits)}); "
                            "give more of the id")
    return hits[0]


async def end(entry: Entry) -> str:
    """Cancel entry's job and forget the entry (and the other kernels in its job); return
    what happened to the job."""
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
    others = sharing(entry)
    for e in [entry, *others]:
        e.remove()
        if (record := kept_records().get(e.session_id)) is not None:
            record.remove()
    for alloc in allocations.for_job(entry.scheduler, entry.job_id):
        allocations.withdraw(alloc.allocation)
    also = (f"; it ended the {len(others)} other kernel(s) sharing it: {', '.join(label(e) for e in others)}"
            if others and what == "cancelled" else "")
    whose = f"kernel {label(entry)}" if entry.owner_pid else "the lingering shared allocation"
    return f"job {entry.job_id} of {whose} (spec {entry.spec}) {what}{also}"


async def cancel(ident: str) -> int:
    """Cancel the job of one registered kernel (or lingering shared allocation)."""
    found = entries()
    print(await end(match(ident, found + lingering(found))))
    return 0


async def cancel_orphans() -> int:
    """Cancel the jobs of kernels whose owning process is gone."""
    kept = kept_records()
    orphans = [e for e in entries() if owner_state(e) == "dead" and not detached(e, kept)]
    if not orphans:
        print("No orphaned remote kernels: every registered kernel's owning process is alive.")
        return 0
    failed = 0
    for entry in orphans:
        held = [e for e in sharing(entry) if owner_state(e) != "dead"]
        if held:   # a live server holds another kernel of this job: only this kernel is forgotten
            entry.remove()
            print(f"kernel {label(entry)}: its owner, process {entry.owner_pid}, is gone; its job {entry.job_id} "
                  f"is kept for the kernel(s) it shares with ({', '.join(label(e) for e in held)}); the launcher "
                  "ends this kernel after the spec's grace")
            continue
        if not any(e.session_id == entry.session_id for e in entries()):   # ended with a shared orphan before
            continue
        try:
            print(f"{await end(entry)}; its owner, process {entry.owner_pid}, is gone")
        except (CommandFailed, OSError) as e:
            print(f"remote-kernels cancel: kernel {label(entry)}: {e}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0
