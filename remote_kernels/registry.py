"""This user's live remote kernels, one small JSON file each, for `ps` and `cancel --orphans`.

Files live in ``$JUPYTER_RUNTIME_DIR/remote-kernels/`` (0700), named by session id,
written 0600.  They hold no secret: job id, scheduler, node, spec name, and the pid
and host of the process that owns the kernel (so orphans can be recognised), and for a
kernel in a shared allocation the allocation's id (kernels with the same one share a job).
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from jupyter_core.paths import jupyter_runtime_dir

from .paths import private_dir, write_private_json


def registry_dir() -> Path:
    return private_dir(Path(jupyter_runtime_dir()) / "remote-kernels")


@dataclass
class Entry:
    session_id: str
    spec: str
    scheduler: str
    job_id: str
    kernel_id: str = ""
    node: str = ""
    owner_pid: int = field(default_factory=os.getpid)
    owner_host: str = field(default_factory=socket.gethostname)
    started: float = field(default_factory=time.time)
    allocation: str = ""   # a shared allocation's id (its launcher's session id); "" per kernel

    @property
    def path(self) -> Path:
        return registry_dir() / f"{self.session_id}.json"

    def save(self) -> None:
        write_private_json(self.path, asdict(self))

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    def owner_alive(self) -> bool:
        """False only when the owner ran on this host and its pid is gone."""
        if self.owner_host != socket.gethostname():
            return True
        try:
            os.kill(self.owner_pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True


def entries() -> list[Entry]:
    found = []
    for path in sorted(registry_dir().glob("*.json")):
        try:
            found.append(Entry(**json.loads(path.read_text())))
        except (OSError, ValueError, TypeError):
            continue
    return found


def sharing(entry: Entry, among: list[Entry] | None = None) -> list[Entry]:
    """The other kernels of ``among`` (default: all entries) in entry's job."""
    return [e for e in (entries() if among is None else among)
            if e.session_id != entry.session_id and e.job_id == entry.job_id and e.scheduler == entry.scheduler]
