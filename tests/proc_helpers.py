"""Processes as /proc shows them (on the test cluster the login side and the nodes share it).

The tests' own reading, independent of the launcher's: a process is named by (pid, start time),
so a reused pid is never taken for the process it replaced.
"""

from __future__ import annotations

import os
from pathlib import Path

# ``python -c DETACHED PIDFILE``, started in a session of its own (Popen(start_new_session=True)):
# it forks, the middle process exits, and the grandchild, an orphan ignoring SIGTERM, writes its
# pid to PIDFILE and runs until PIDFILE.exit exists or PIDFILE's directory is removed (the
# test's clean-up, whatever the code under test did).
DETACHED = """
import os, signal, sys, time
if os.fork():
    os._exit(0)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
while os.path.isdir(os.path.dirname(sys.argv[1])) and not os.path.exists(sys.argv[1] + ".exit"):
    time.sleep(0.05)
"""


def stat(pid: int) -> tuple[int, str, str] | None:
    """(ppid, state, start time) of pid, None if there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = raw[raw.rindex(b")") + 2:].split()
    return int(fields[1]), fields[0].decode(), fields[19].decode()


def identify(pid: int) -> tuple[int, str]:
    """(pid, start time) of a live process."""
    st = stat(pid)
    assert st is not None, f"process {pid} does not exist"
    return pid, st[2]


def running(proc: tuple[int, str]) -> bool:
    """The process (pid, start time) exists and is not a zombie."""
    st = stat(proc[0])
    return st is not None and st[2] == proc[1] and st[1] != "Z"


def parent(proc: tuple[int, str]) -> int | None:
    st = stat(proc[0])
    return st[0] if st is not None and st[2] == proc[1] else None


def children(pid: int) -> list[tuple[int, str]]:
    """(pid, state) of each process whose parent is pid."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (st := stat(int(entry.name))) is not None and st[0] == pid:
            found.append((int(entry.name), st[1]))
    return found


def tree(pid: int) -> list[int]:
    """pid and all its descendants."""
    below, todo = [pid], [pid]
    while todo:
        kids = [child for child, _ in children(todo.pop())]
        below += kids
        todo += kids
    return below


def tcp_listeners(pids: list[int]) -> list[int]:
    """TCP ports (v4 and v6) on which any of pids listens, in its network namespace."""
    ports = set()
    for pid in pids:
        try:
            rows = [line.split() for table in ("tcp", "tcp6")
                    for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]]
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:   # gone meanwhile
            continue
        inodes = set(filter(None, (_link(f"/proc/{pid}/fd/{fd}") for fd in fds)))
        ports |= {int(row[1].rsplit(":", 1)[1], 16) for row in rows
                  if row[3] == "0A" and f"socket:[{row[9]}]" in inodes}
    return sorted(ports)


def _link(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:   # that descriptor was closed meanwhile
        return None
