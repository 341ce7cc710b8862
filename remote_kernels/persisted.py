"""Records of kernels that may outlive their server (option ``persist``), for re-adoption.

One 0600 JSON file per kernel in ``$JUPYTER_RUNTIME_DIR/remote-kernels/persist/`` (0700),
named by kernel id (argv mode: by session id), and nowhere else: they hold the kernel's key.
A record says where the kernel runs (scheduler, job id, node, the launcher's session id and
runtime base, login host) and what a frontend needs to talk to it again (key, signature
scheme, kernel name); it is written once the kernel runs and removed when the kernel ends
for good.  ``detached`` is when its server let it go (0: it runs under a server, or that
server died without a word).

Only the user's own records are read (their runtime directory is theirs alone), and a record
is attached only to the kernel id it names; the launcher it points at answers only over the
user's own SSH login to the node, in a 0700 directory named by the record's session id.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from . import curve
from .paths import private_dir, write_private_json
from .registry import registry_dir

NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")   # kernel and session ids: no path separators


def records_dir() -> Path:
    return private_dir(registry_dir() / "persist")


@dataclass
class Record:
    kernel_id: str          # jupyter's kernel id (argv mode: the session id)
    session_id: str         # the launcher's session: its node dir is RUNTIME_BASE/rk-SESSION
    spec: str
    scheduler: str
    job_id: str
    node: str
    key: str
    persist: float
    signature_scheme: str = "hmac-sha256"
    kernel_name: str = ""
    runtime_base: str = "/tmp"
    login_host: str = ""
    connection_file: str = ""   # argv mode: the frontend's connection file this kernel serves
    notebook: str = ""          # the notebook's path (JPY_SESSION_NAME) under jupyter_server, if known
    saved: float = field(default_factory=time.time)
    detached: float = 0.0
    curve_publickey: str = ""   # the kernel's Curve keypair (transport encryption), if it has one
    curve_secretkey: str = ""

    @property
    def path(self) -> Path:
        if not NAME_RE.match(self.kernel_id):
            raise ValueError(f"kernel id {self.kernel_id!r} cannot name a record")
        return records_dir() / f"{self.kernel_id}.json"

    def save(self) -> None:
        """Write the record (0600, replaced atomically)."""
        write_private_json(self.path, asdict(self))

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    def time_left(self, now: float | None = None) -> float | None:
        """Seconds until the job ends unless re-adopted, for a record whose server let it go
        (``detached``); None when unknown (its server may have died at any time since saved)."""
        if not self.detached:
            return None
        return max(0.0, self.detached + self.persist - (time.time() if now is None else now))


def record_of(session, info: dict, *, kernel_id: str, connection_file: str = "", notebook: str = "") -> Record:
    """The record of a running RemoteKernelSession whose connection info is ``info``."""
    key, opts = info["key"], session.opts
    return Record(kernel_id=kernel_id, session_id=session.session_id, spec=session.name,
                  scheduler=session.scheduler.name, job_id=session.job_id or "", node=session.node or "",
                  key=key.decode() if isinstance(key, bytes) else key, persist=opts.persist,
                  signature_scheme=info.get("signature_scheme", "hmac-sha256"),
                  kernel_name=info.get("kernel_name", ""), runtime_base=opts.runtime_base,
                  login_host=opts.login_host, connection_file=connection_file, notebook=notebook,
                  **curve.keys(info))


def for_connection_file(path: str) -> str:
    """The record name of argv mode's kernel for the connection file ``path``."""
    return "argv-" + hashlib.sha256(os.path.abspath(path).encode()).hexdigest()[:32]


def load(kernel_id: str) -> Record | None:
    """The record of ``kernel_id``; None if there is none or it is not a valid record."""
    if not NAME_RE.match(kernel_id):
        return None
    return _read(records_dir() / f"{kernel_id}.json")


def records() -> list[Record]:
    """All of this user's records that read as valid (others are skipped; [] when the
    directory cannot be made or read, e.g. a runtime directory that is not the user's)."""
    try:
        paths = sorted(records_dir().glob("*.json"))
    except OSError:
        return []
    found = (_read(p) for p in paths)
    return [r for r in found if r is not None]


def _read(path: Path) -> Record | None:
    try:
        st = path.lstat()
        if st.st_uid != os.getuid() or st.st_mode & 0o077 or not path.is_file():
            return None   # not ours, or readable by others: never trusted
        data = json.loads(path.read_text())
        names = {f.name for f in fields(Record)}
        record = Record(**{k: v for k, v in data.items() if k in names})
    except (OSError, ValueError, TypeError):
        return None
    if record.path != path or not NAME_RE.match(record.session_id):
        return None
    return record
