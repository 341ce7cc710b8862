"""A Jupyter server off the cluster ("laptop"): scheduler commands over SSH on the login host,
node connections jumping through it.  The laptop namespace reaches only the login host."""

from __future__ import annotations

import subprocess
import sys

from kernel_helpers import SERVER_SCRIPT, job_in_queue
from slurm_helpers import wait_until


def _in_laptop(cluster, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["nsenter", f"--net=/run/netns/{cluster['laptop']['netns']}", *argv],
                          capture_output=True, text=True, timeout=timeout)


def test_laptop_cannot_reach_scheduler_or_nodes_directly(cluster):
    assert _in_laptop(cluster, "squeue", timeout=60).returncode != 0
    probe = "import socket; socket.create_connection(('%s', 22), timeout=3)" % cluster["nodes"]["c1"]
    assert _in_laptop(cluster, sys.executable, "-c", probe).returncode != 0


def test_kernel_from_a_laptop_through_the_login_host(cluster, make_spec):
    make_spec("rk-laptop", login_host=cluster["laptop"]["login_host"])
    res = _in_laptop(cluster, sys.executable, "-c", SERVER_SCRIPT, "rk-laptop",
                     "import socket; print(socket.gethostname())")
    assert res.returncode == 0, res.stderr[-2000:]
    line = next(l for l in res.stdout.splitlines() if l.startswith("RESULT"))
    _, host, job, status = line.split()
    assert host in cluster["nodes"] and status == "ok"
    wait_until(f"job {job} to leave the queue", lambda: not job_in_queue(job), timeout=15)
