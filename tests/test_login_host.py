"""A Jupyter server off the cluster ("laptop"): scheduler commands over SSH on the login host,
node connections jumping through it.  The laptop namespace reaches only the login host."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

from kernel_helpers import SERVER_SCRIPT, job_in_queue
from remote_kernels import joblogs
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


def test_old_job_logs_on_the_login_host_are_pruned_at_a_start(cluster, make_spec):
    """The login host is this machine (same home): a stale log of a job SLURM has forgotten goes, a
    fresh one stays."""
    host = cluster["laptop"]["login_host"]
    jobs = Path.home() / joblogs.REMOTE_JOB_DIR
    jobs.mkdir(parents=True, exist_ok=True)
    stale, fresh = jobs / "999999991.log", jobs / "999999992.log"
    for log in (stale, fresh):
        log.write_text("old output\n")
    old = time.time() - joblogs.MAX_AGE - 3600
    os.utime(stale, (old, old))
    (joblogs.job_log_dir() / (".pruned-" + re.sub(r"[^A-Za-z0-9_.@-]", "_", host))).unlink(missing_ok=True)
    try:
        make_spec("rk-laptop-prune", login_host=host)
        res = _in_laptop(cluster, sys.executable, "-c", SERVER_SCRIPT, "rk-laptop-prune", "1 + 1")
        assert res.returncode == 0, res.stderr[-2000:]
        job = next(l for l in res.stdout.splitlines() if l.startswith("RESULT")).split()[-2]
        wait_until("the stale log to be removed", lambda: not stale.exists(), timeout=15)
        assert fresh.exists() and (jobs / f"{job}.log").exists()
        wait_until(f"job {job} to leave the queue", lambda: not job_in_queue(job), timeout=15)
    finally:
        stale.unlink(missing_ok=True)
        fresh.unlink(missing_ok=True)
