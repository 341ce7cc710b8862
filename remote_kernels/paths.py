"""Private directories for this user's remote-kernels state (registry, job logs)."""

from __future__ import annotations

import json
import os
from pathlib import Path


def private_dir(path: str | os.PathLike) -> Path:
    """``path`` as an existing directory only this user can enter (0700), created with its parents.

    An existing directory is made 0700 too (mkdir's mode applies only to a new one); the
    parents keep their modes."""
    d = Path(path)
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    if d.stat().st_mode & 0o777 != 0o700:
        d.chmod(0o700)
    return d


def write_private_json(path: Path, data: dict) -> None:
    """Write ``data`` as JSON to ``path``, mode 0600, replaced atomically (no reader sees half)."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    tmp.replace(path)
