"""Small helpers for tests that drive the real test cluster."""

from __future__ import annotations

import getpass
import subprocess
import time

def sbatch_wait(tmp_path, *args: str, wrap: str, timeout: float = 60) -> str:
    """Submit a batch job, wait for it to finish (sbatch --wait), return its output."""
    out = tmp_path / "job.out"
    subprocess.run(
        ["sbatch", "--wait", "--quiet", f"--output={out}", *args, "--wrap", wrap],
        check=True, timeout=timeout, capture_output=True, text=True,
    )
    return out.read_text()


def wait_until(what: str, cond, timeout: float = 30, interval: float = 0.1):
    """Poll cond() until it returns something true; fail with ``what`` after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def jobs_named(name: str, user: str | None = None, states: str = "all") -> set[str]:
    """Ids of ``user``'s (default: this process's user's) jobs named ``name`` in ``states``.
    Compare with a set taken before the test: earlier runs may have used the same name."""
    out = subprocess.run(["squeue", "-h", "-u", user or getpass.getuser(), "-t", states, "-n", name, "-o", "%i"],
                         capture_output=True, text=True, check=True).stdout
    return set(out.split())


def job_limits(job_id: str, user: str | None = None) -> dict[str, str]:
    """TimeLimit, NumCPUs and Partition of job ``job_id`` from ``scontrol show job``, once
    ``squeue`` lists it as ``user``'s (default: this process's user's); {} when it does not."""
    listed = subprocess.run(["squeue", "-h", "-t", "all", "-u", user or getpass.getuser(), "-j", job_id, "-o", "%i"],
                            capture_output=True, text=True).stdout.split()
    if job_id not in listed:
        return {}
    record = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True).stdout
    fields = dict(f.split("=", 1) for f in record.split() if "=" in f)
    return {k: fields.get(k, "") for k in ("JobId", "TimeLimit", "NumCPUs", "Partition")}
