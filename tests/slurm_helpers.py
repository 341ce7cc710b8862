"""Small helpers for tests that drive the real test cluster."""

from __future__ import annotations

import shutil
import subprocess
import time

# What an ordinary user's shell has (root's PATH here holds directories other users cannot read).
USER_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}


def as_user(user: str, *argv: str, timeout: float = 30, env: dict | None = None,
            umask: int = -1) -> subprocess.CompletedProcess:
    """Run argv as ``user`` (runuser sets HOME, USER...) in USER_ENV plus ``env``, from /; output captured."""
    return subprocess.run([shutil.which("runuser"), "-u", user, "--", *argv], capture_output=True, text=True,
                          timeout=timeout, env={**USER_ENV, **(env or {})}, umask=umask, cwd="/")


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
