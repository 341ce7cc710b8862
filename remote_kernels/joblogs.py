"""Job logs: where each job writes its output, and the pruning of old ones.

A job's output goes to ``job_log_dir()/ID.log`` (``~/.local/share/jupyter/remote-kernels/jobs``),
or to ``REMOTE_JOB_DIR/ID.log`` in the home on the login host in login-host mode.  At each
start, at most once an hour per place (a stamp file in job_log_dir()), logs untouched for
MAX_AGE seconds are removed, except those of a job in this user's registry or one the
scheduler still has (queued, running, or unknown because it did not answer).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from pathlib import Path

from jupyter_core.paths import jupyter_data_dir

from .paths import private_dir
from .registry import entries
from .runner import CommandError, CommandRunner
from .schedulers import Scheduler

log = logging.getLogger(__name__)

# Where jobs write their output when the server is off the cluster (relative to the login home).
REMOTE_JOB_DIR = ".remote-kernels/jobs"
MAX_AGE = 7 * 86400.0
PRUNE_EVERY = 3600.0
_LOG_NAME = re.compile(r"([A-Za-z0-9_.\[\]-]+)\.log")
_tasks: set[asyncio.Task] = set()


def job_log_dir() -> Path:
    return private_dir(Path(jupyter_data_dir()) / "remote-kernels" / "jobs")


def prune_soon(runner: CommandRunner, scheduler: Scheduler, *, remote: bool) -> None:
    """Start prune() in the background on the running loop if this place is due (never raises)."""
    if not _due(runner.where if remote else "local"):
        return
    task = asyncio.get_running_loop().create_task(prune(runner, scheduler, remote=remote))
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


def _due(place: str) -> bool:
    """True (and the place's stamp touched) unless it was pruned within PRUNE_EVERY s."""
    stamp = job_log_dir() / (".pruned-" + re.sub(r"[^A-Za-z0-9_.@-]", "_", place))
    try:
        if time.time() - stamp.stat().st_mtime < PRUNE_EVERY:
            return False
    except FileNotFoundError:
        pass
    stamp.touch()
    return True


async def prune(runner: CommandRunner, scheduler: Scheduler, *, remote: bool) -> list[str]:
    """Remove stale logs (module docstring); return the job ids whose logs were removed.

    Nothing is removed when the scheduler cannot say which of the candidates it still has."""
    try:
        old = await (_remote_old(runner) if remote else _local_old())
        known = {e.job_id for e in entries()}
        candidates = [j for j in old if j not in known]
        if not candidates:
            return []
        status = await scheduler.status(candidates)
        gone = [j for j in candidates if j in status and status[j].state.finished]
        if gone:
            await (_remote_remove(runner, gone) if remote else _local_remove(gone))
            log.info("remote kernels: removed %d job log(s) older than %d days", len(gone), MAX_AGE // 86400)
        return gone
    except (OSError, CommandError) as e:
        log.debug("remote kernels: pruning job logs failed: %s", e)
        return []


async def _local_old() -> list[str]:
    limit = time.time() - MAX_AGE
    found = []
    for path in job_log_dir().iterdir():
        m = _LOG_NAME.fullmatch(path.name)
        if m and path.is_file() and path.stat().st_mtime < limit:
            found.append(m.group(1))
    return found


async def _local_remove(job_ids: list[str]) -> None:
    for job_id in job_ids:
        (job_log_dir() / f"{job_id}.log").unlink(missing_ok=True)


async def _remote_old(runner: CommandRunner) -> list[str]:
    code, out, _ = await runner.run(["find", REMOTE_JOB_DIR, "-maxdepth", "1", "-type", "f", "-name", "*.log",
                                     "-mmin", f"+{int(MAX_AGE // 60)}"], check=False)
    if code != 0:   # no such directory yet, or find refused: nothing to prune
        return []
    names = (line.rsplit("/", 1)[-1] for line in out.splitlines())
    return [m.group(1) for name in names if (m := _LOG_NAME.fullmatch(name))]


async def _remote_remove(runner: CommandRunner, job_ids: list[str]) -> None:
    await runner.run(["rm", "-f", "--", *(f"{REMOTE_JOB_DIR}/{j}.log" for j in job_ids)])
