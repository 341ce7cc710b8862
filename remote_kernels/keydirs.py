"""Pruning of transport direct's key directories whose session's job has ended.

A key directory (direct.py) is removed when its session ends, at its server's exit and by the
launcher when the job ends; a server that was killed while its job was still queued, the job
then cancelled before it started, leaves its directory behind.  At each start of a direct
session, ``prune_soon`` removes the directories ``candidates`` picks whose job the scheduler
then says has finished (ended, or no longer known).  Only directories with a job record
(``direct.record_job``) written on this host for this scheduler at least MIN_AGE s ago, not
this process's own, are asked about: one without a record (its server died during the submit,
or it predates records) is left alone; so is one recorded on another host (a home shared with
another cluster's login hosts: this scheduler never knew that job).  The scheduler is asked
once per start, and only when there is a candidate.  A job still queued, running, held,
suspended, unknown, or one the scheduler did not answer for keeps its directory: another
server of this user (a kernel that outlives its server, too) may still use it.  Nothing is
removed when the query fails.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shutil
import socket
import time
from dataclasses import dataclass

from . import background
from .direct import JOB_RECORD, key_dir, key_root
from .runner import CommandError
from .schedulers import Scheduler

log = logging.getLogger(__name__)

# How old a job record must be before its job is asked about (a scheduler may not list a job at once).
MIN_AGE = 3600.0
_SESSION = re.compile(r"[A-Za-z0-9_-]+")
_tasks: set[asyncio.Task] = set()


@dataclass(frozen=True)
class KeyDir:
    """A key directory's job record: the session (the directory's name) and what record_job wrote."""

    session: str
    job_id: str
    scheduler: str
    host: str
    recorded: float   # the record's mtime


def candidates(found: list[KeyDir], *, scheduler: str, host: str, mine: set[str], now: float) -> list[KeyDir]:
    """Those of ``found`` whose job the scheduler may be asked about: recorded on ``host`` for
    ``scheduler`` at least MIN_AGE s before ``now``, and not a session of ``mine``."""
    return [d for d in found if d.scheduler == scheduler and d.host == host and d.session not in mine
            and d.job_id and now - d.recorded >= MIN_AGE]


def prune_soon(scheduler: Scheduler) -> None:
    """Start prune() in the background on the running loop (never raises)."""
    task = asyncio.get_running_loop().create_task(prune(scheduler))
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


async def prune(scheduler: Scheduler) -> list[str]:
    """Remove stale key directories (module docstring); return their sessions."""
    try:
        records = _records()
        mine = {d.session for d in records if background.removal_pending(str(key_dir(d.session)))}
        found = candidates(records, scheduler=scheduler.name, host=socket.gethostname(), mine=mine, now=time.time())
        if not found:
            return []
        status = await scheduler.status(sorted({d.job_id for d in found}))
        gone = [d.session for d in found if d.job_id in status and status[d.job_id].state.finished]
        for session in gone:
            shutil.rmtree(key_dir(session), ignore_errors=True)
        if gone:
            log.info("remote kernels: removed %d key director%s of ended jobs", len(gone),
                     "y" if len(gone) == 1 else "ies")
        return gone
    except (OSError, CommandError) as e:
        log.debug("remote kernels: pruning key directories failed: %s", e)
        return []


def _records() -> list[KeyDir]:
    """The key directories that hold a readable job record."""
    found = []
    try:
        dirs = list(key_root().iterdir())
    except FileNotFoundError:
        return []
    for path in dirs:
        if not _SESSION.fullmatch(path.name) or path.is_symlink() or not path.is_dir():
            continue
        record = path / JOB_RECORD
        try:
            data = json.loads(record.read_text())
            found.append(KeyDir(path.name, str(data["job_id"]), str(data["scheduler"]), str(data["host"]),
                                record.stat().st_mtime))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return found

