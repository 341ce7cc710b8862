"""Everything a kernel starts ends with it, on SLURM and with the ssh backend (where nothing else
would end it): a cell's double-forked, SIGTERM-ignoring process in a session of its own.

SLURM's proctrack/cgroup (the test cluster's) kills the job's cgroup when the job ends; so on
SLURM it is a restart, the job still running, that shows the launcher ends such processes itself.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from kernel_helpers import remote, run_cell, until
from proc_helpers import DETACHED, identify, parent, running
from remote_kernels.schedulers import get_scheduler
from test_schedulers_e2e import spec_config


def kill_wait() -> int:
    """SLURM's KillWait (s): how long after SIGTERM a job's processes get SIGKILL."""
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, check=True).stdout
    return int(re.search(r"^KillWait\s*=\s*(\d+)", out, re.M).group(1))


async def detach_in_cell(kc, pidfile: Path, launcher_pid: int) -> tuple[int, str]:
    """Run DETACHED from a cell; the orphan's (pid, start time), checked to be the launcher's child."""
    cell = (f"import subprocess, sys; subprocess.run([sys.executable, '-c', {DETACHED!r}, {str(pidfile)!r}], "
            f"start_new_session=True, check=True)")
    content, out = await run_cell(kc, cell)
    assert content["status"] == "ok", out
    await until(f"{pidfile} to be written", pidfile.exists)
    orphan = identify(int(pidfile.read_text()))
    assert parent(orphan) == launcher_pid, f"the orphan's parent is {parent(orphan)}, not the launcher {launcher_pid}"
    return orphan


@pytest.mark.parametrize("backend", ["slurm", "ssh"])
async def test_a_cells_detached_process_ends_with_its_kernel(cluster, backend, make_spec, start_kernel):
    km, kc = await start_kernel(make_spec(f"rk-tree-{backend}", **spec_config(backend)))
    session = await remote(km)
    job, launcher = session["job_id"], session["launcher_pid"]
    work = Path(tempfile.mkdtemp(prefix="rk-tree-", dir="/tmp"))   # removing it ends the orphans in any case
    try:
        first = await detach_in_cell(kc, work / "first", launcher)
        await km.restart_kernel()   # replies once the previous kernel and all it started are gone
        assert not running(first), "a process the previous kernel started outlived the restart"
        assert (await get_scheduler(backend).status([job]))[job].state.value == "running"
        await kc.wait_for_ready(timeout=60)

        second = await detach_in_cell(kc, work / "second", launcher)
        shutdown = asyncio.ensure_future(km.shutdown_kernel())
        await until("the second kernel's orphan to end after shutdown", lambda: not running(second),
                    timeout=kill_wait() + 5)
        await shutdown
    finally:
        shutil.rmtree(work, ignore_errors=True)
