"""Acting as the test site's ordinary users: run the product as them, with their own specs.

Each command runs under ``runuser`` with a clean environment (HOME, USER, PATH only), as a
user's own login would have it; root's environment does not leak into theirs.
"""

from __future__ import annotations

import pwd
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

VENV_BIN = Path(sys.executable).parent   # the project's venv: made from Debian's python3.11, readable by all
# What an ordinary user's shell has (root's PATH here holds directories other users cannot read).
USER_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}


def home(user: str) -> Path:
    return Path(pwd.getpwnam(user).pw_dir)


def as_user(user: str, *argv: str, env: dict | None = None, netns: str | None = None, timeout: float = 180,
            home_dir: str | Path | None = None, umask: int = -1) -> subprocess.CompletedProcess:
    """Run argv as ``user`` from / (optionally in network namespace ``netns``), output captured;
    never raises on failure.  ``home_dir`` replaces the user's HOME."""
    base = {"HOME": str(home_dir or home(user)), "USER": user, "LOGNAME": user, **USER_ENV}
    cmd = ["runuser", "-u", user, "--", "env", "-i", *[f"{k}={v}" for k, v in {**base, **(env or {})}.items()],
           *argv]
    if netns:
        cmd = ["nsenter", f"--net=/run/netns/{netns}", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          umask=umask, cwd="/")


def unique(prefix: str) -> str:
    """A name no earlier run used (kernelspecs, job names, files)."""
    return f"{prefix}-{secrets.token_hex(4)}"


class UserSpecs:
    """Kernelspecs a user installs for themselves (``--user``); remove_all() takes them away."""

    def __init__(self):
        self.made: list[tuple[str, Path]] = []

    def install(self, user: str, prefix: str, *args: str, home_dir: Path | None = None) -> str:
        name = unique(prefix)
        res = as_user(user, str(VENV_BIN / "remote-kernels"), "install", name, "--user", *args, home_dir=home_dir)
        assert res.returncode == 0, res.stderr
        self.made.append((name, Path(home_dir or home(user)) / ".local/share/jupyter/kernels" / name))
        return name

    def remove_all(self) -> None:
        for _, path in self.made:
            shutil.rmtree(path, ignore_errors=True)


def user_jobs(user: str, job_name: str) -> list[str]:
    """Live job ids of ``user`` named ``job_name`` (the queue filtered by user and name)."""
    out = subprocess.run(["squeue", "-h", "-u", user, "-n", job_name, "-t", "PENDING,RUNNING,COMPLETING",
                          "-o", "%i"], capture_output=True, text=True, check=True).stdout
    return out.split()


class held_node:
    """``with held_node(user, node) as job_id:`` a running job of user's on node (pam_slurm_adopt
    lets them SSH there only meanwhile); cancelled on exit."""

    def __init__(self, user: str, node: str, timeout: float = 30):
        self.user, self.node, self.timeout = user, node, timeout
        self.job_id = ""

    def __enter__(self) -> str:
        res = as_user(self.user, "sbatch", "--parsable", "-w", self.node, "-J", unique("rk-hold"),
                      "-o", "/dev/null", "--wrap", "sleep 600")
        assert res.returncode == 0, res.stderr
        self.job_id = res.stdout.strip().split(";")[0]
        deadline = time.monotonic() + self.timeout
        while _state(self.job_id) != "RUNNING":
            assert time.monotonic() < deadline, f"job {self.job_id} of {self.user} did not start on {self.node}"
            time.sleep(0.1)
        return self.job_id

    def __exit__(self, *exc) -> None:
        subprocess.run(["scancel", self.job_id], capture_output=True)


def _state(job_id: str) -> str:
    return subprocess.run(["squeue", "-h", "-j", job_id, "-t", "all", "-o", "%T"],
                          capture_output=True, text=True).stdout.strip()
