"""`make demo` (python -m remote_kernels.demo): the README's first command runs a cell on a
compute node, and leaves no job once it has exited."""

from __future__ import annotations

import re
import subprocess
import sys

from kernel_helpers import job_in_queue
from slurm_helpers import wait_until


def test_the_demo_runs_a_cell_on_a_compute_node_and_leaves_no_job(cluster):
    res = subprocess.run([sys.executable, "-m", "remote_kernels.demo"], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    ready = re.search(r"^kernel ready in [\d.]+s on node (\S+)$", res.stdout, re.MULTILINE)
    hello = re.search(r"^hello from (\S+), SLURM job (\d+)$", res.stdout, re.MULTILINE)
    assert ready and hello, res.stdout
    assert ready.group(1) == hello.group(1) and hello.group(1) in ("c1", "c2")
    assert "kernel shut down; its job ends with it" in res.stdout
    job = hello.group(2)
    assert f"submitted slurm job {job}\n" in res.stderr   # the kernel's own job, by its whole id
    wait_until(f"the demo's job {job} to leave the queue", lambda: not job_in_queue(job), timeout=15)
