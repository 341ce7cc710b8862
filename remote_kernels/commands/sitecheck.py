"""What ``remote-kernels install`` checks on the login side before it writes a spec.

The scheduler's limits (adapters with ``checks_requests``: SLURM) through the adapter's
``site_facts`` and the same pure check and lines as a job that can never start
(schedulers/limits.py); and the kernel's Python, where the login side can tell: an absolute
path on a network filesystem, which the compute nodes see as the login node does.  With
``user_choices``, also the largest request users may choose.  Queries run
where the scheduler's commands run (on ``login_host`` over SSH for such a spec).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Sequence

from ..options import KernelOptions
from ..runner import CommandError, runner_for
from ..schedulers import get_scheduler
from ..schedulers.limits import REQUEST

# Filesystem types (/proc/mounts) that are the same on every node that mounts them.
NETWORK_FS = frozenset("nfs nfs4 lustre gpfs beegfs cifs smb3 ceph fuse.ceph glusterfs fuse.glusterfs panfs "
                       "wekafs afs pvfs2 orangefs cvfs".split())
MOUNTS = ["cat", "/proc/self/mounts"]


def mount_of(path: str, mounts: str) -> tuple[str, str]:
    """(mount point, filesystem type) holding ``path`` according to /proc/mounts text; ("", "") if none."""
    best = ("", "")
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        target = fields[1].encode().decode("unicode_escape")   # \040 for a blank
        inside = path == target or path.startswith(target.rstrip("/") + "/")
        if inside and len(target) >= len(best[0]):
            best = (target, fields[2])
    return best


def python_problem(python: str, exists: bool, mounts: str, where: str) -> str | None:
    """The line for a kernel Python the login side can tell is missing on the compute nodes: an
    absolute path, absent, on a network filesystem.  None otherwise (present, or cannot tell)."""
    if not python.startswith("/") or exists:
        return None
    target, fstype = mount_of(python, mounts)
    if fstype not in NETWORK_FS:
        return None
    return (f"Python {python} not found on {where} (in {target}, a shared {fstype} filesystem the compute "
            f"nodes see too); set --python to a path that exists on the compute nodes")


async def _python(runner, python: str) -> str | None:
    if not python.startswith("/"):
        return None
    (code, _, _), (mcode, mounts, _) = await asyncio.gather(
        runner.run(["test", "-e", python], check=False), runner.run(MOUNTS, check=False))
    where = "the login node" if runner.where == "local" else runner.where
    return python_problem(python, code == 0, mounts, where) if mcode == 0 and code in (0, 1) else None


async def site_problem(opts: KernelOptions, also: Sequence[dict] = ()) -> tuple[str | None, str | None]:
    """(the one line for what this site would never run, a note on what was not checked).
    ``also``: further requests to check, each as resource values over the spec's (the largest
    choices users may make, choices.largest_choices)."""
    runner = runner_for(opts.login_host, opts.command_timeout)
    scheduler = get_scheduler(opts.scheduler, runner)
    if not scheduler.checks_requests:
        return None, None
    res = opts.resources(job_name="", output="")
    skip = scheduler.checkable(res)
    try:
        facts, python = await asyncio.gather(scheduler.site_facts(None, REQUEST), _python(runner, opts.python))
    except (CommandError, OSError, ValueError) as e:
        return None, f"not checked against the site ({e}); installed as given"
    finally:
        await runner.close()
    if python:
        return python, None
    if skip:
        return None, f"the request was not checked ({skip}; checking the options alone would mislead)"
    if not facts.partitions:
        return None, f"not checked: {scheduler.name} listed no partitions (is `scontrol show partition` answering?)"
    for values in ({}, *also):
        if line := scheduler.check(replace(res, **values), facts):
            what = ("the largest request users may choose (" + ", ".join(f"{k} {v}" for k, v in values.items())
                    + ")") if values else "this request"
            return f"{scheduler.name} would never run {what}: {line}", None
    return None, None
