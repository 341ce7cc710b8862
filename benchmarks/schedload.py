"""The scheduler load of this process's kernels: its queries, and slurmctld's own count of them.

``LoadMeter`` puts counting wrappers of SLURM's query commands (squeue, scontrol, sinfo)
first on PATH: each logs its command line and, when the bench runs as root, runs the real
command as user ``nobody``.  slurmctld counts RPCs per user (``sdiag``, "Remote Procedure
Call statistics by user"), so nobody's count is exactly the RPCs this process's queries
cost, whatever other users (other test runs, root's own commands) do on the cluster at the
same time.  Run as another user, the meter counts that user's RPCs (all of theirs).
Counts are differences of sdiag readings: nothing is reset.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path

QUERY_COMMANDS = ("squeue", "scontrol", "sinfo")
COUNTING_USER = "nobody"
SINCE = re.compile(r"^Data since\s.*\((?P<epoch>\d+)\)\s*$", re.MULTILINE)
BY_USER = "Remote Procedure Call statistics by user"
USER_ROW = re.compile(r"^\s*(?P<name>\S+)\s+\(\s*(?P<uid>\d+)\)\s+count:(?P<count>\d+)")
# The real commands, found before any wrapper is on PATH.
REAL = {cmd: shutil.which(cmd) or f"/usr/bin/{cmd}" for cmd in (*QUERY_COMMANDS, "sdiag")}


def parse_sdiag(text: str) -> tuple[int | None, dict[int, int]]:
    """(the epoch its statistics count from, {uid: RPC count}) from sdiag's output."""
    m = SINCE.search(text)
    counts: dict[int, int] = {}
    if BY_USER in text:
        for line in text.split(BY_USER, 1)[1].splitlines()[1:]:
            row = USER_ROW.match(line)
            if row is None:
                if line.strip():
                    break   # the next section
                continue
            counts[int(row.group("uid"))] = int(row.group("count"))
    return (int(m.group("epoch")) if m else None), counts


def rpcs_between(before: tuple[int | None, dict[int, int]], after: tuple[int | None, dict[int, int]],
                 uid: int) -> int | None:
    """uid's RPCs between two readings; None if the statistics were reset (or unread) meanwhile."""
    (since0, counts0), (since1, counts1) = before, after
    if since0 is None or since0 != since1:
        return None
    delta = counts1.get(uid, 0) - counts0.get(uid, 0)
    return delta if delta >= 0 else None


def read_sdiag() -> tuple[int | None, dict[int, int]]:
    res = subprocess.run([REAL["sdiag"]], capture_output=True, text=True)
    return parse_sdiag(res.stdout) if res.returncode == 0 else (None, {})


class LoadMeter:
    """Counting wrappers on PATH (for this process and its children) from construction on."""

    def __init__(self, tmp: Path):
        bindir = tmp / "bin"
        bindir.mkdir()
        self.log = tmp / "queries.log"
        self.log.touch()
        as_counter = os.geteuid() == 0
        user = COUNTING_USER if as_counter else pwd.getpwuid(os.geteuid()).pw_name
        self.uid = pwd.getpwnam(user).pw_uid
        self.user = user
        drop = f"setpriv --reuid={self.uid} --regid={pwd.getpwnam(user).pw_gid} --clear-groups " if as_counter else ""
        for cmd in QUERY_COMMANDS:
            wrapper = bindir / cmd
            wrapper.write_text(f'#!/bin/sh\necho "{cmd} $*" >> {self.log}\nexec {drop}{REAL[cmd]} "$@"\n')
            wrapper.chmod(0o755)
        os.environ["PATH"] = f"{bindir}{os.pathsep}{os.environ['PATH']}"
        self._begun: tuple[int, tuple, float] | None = None

    def queries(self) -> list[str]:
        """Every query command line run so far."""
        return self.log.read_text().splitlines()

    def begin(self) -> None:
        self._begun = (len(self.queries()), read_sdiag(), time.perf_counter())

    def end(self) -> dict:
        """The window since begin(): its queries and RPCs, in all and per minute (RPCs None if
        sdiag's statistics were reset meanwhile or could not be read)."""
        n0, sdiag0, t0 = self._begun
        secs = time.perf_counter() - t0
        queries = self.queries()[n0:]
        rpcs = rpcs_between(sdiag0, read_sdiag(), self.uid)
        return {"seconds": secs, "queries": len(queries), "queries_per_min": len(queries) * 60 / secs,
                "commands": dict(Counter(q.split()[0] for q in queries)), "rpcs": rpcs,
                "rpcs_per_min": None if rpcs is None else rpcs * 60 / secs, "counted_user": self.user}
