"""``remote-kernels attach`` and ``detach``: a detached kernel (option ``persist``) by hand.

``attach ID`` takes over a kernel that outlived its server: it writes a connection file (0600,
in the Jupyter runtime directory) with the kernel's key on fresh local ports, prints it, and
serves it in the foreground as ``run`` does (so ``jupyter console --existing FILE`` reaches
the kernel, its state intact); SIGINT interrupts the kernel, SIGTERM/SIGHUP detach it again.
``detach ID`` asks the process holding a kernel, when it is such an ``attach`` or argv-mode
``run`` process on this host, to let it go (SIGHUP); a Jupyter server detaches its kernels
with ``persist`` when it exits.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from pathlib import Path

from jupyter_client.connect import write_connection_file
from jupyter_core.paths import jupyter_runtime_dir

from .. import persisted
from ..registry import entries
from . import CommandFailed


def find(ident: str) -> persisted.Record:
    """The record whose kernel id, session id or job id is ident (or a unique id prefix)."""
    found = persisted.records()
    hits = [r for r in found if ident in (r.kernel_id, r.session_id, r.job_id)] or \
           [r for r in found if r.kernel_id.startswith(ident) or r.session_id.startswith(ident)]
    if not hits:
        raise CommandFailed(f"no kernel that can outlive its server has id {ident!r}; see `remote-kernels ps`")
    if len(hits) > 1:
        raise CommandFailed(f"{ident!r} matches {len(hits)} kernels; give more of the id")
    return hits[0]


def holder(record: persisted.Record) -> int:
    """The pid of the live process on this host that holds record's kernel; 0 if none."""
    entry = next((e for e in entries() if e.session_id == record.session_id), None)
    if entry is None or entry.owner_host != socket.gethostname() or not entry.owner_alive():
        return 0
    return entry.owner_pid if entry.owner_pid != os.getpid() else 0


def attach(ident: str, connection_file: str | None) -> int:
    from ..argv_mode import serve
    from ..kernelspec import remote_spec, spec_config
    from ..options import KernelOptions

    record = find(ident)
    if (pid := holder(record)):
        raise CommandFailed(f"kernel {record.kernel_id} is held by process {pid}; detach it there first")
    try:
        spec = remote_spec(record.spec)
        options = KernelOptions(**spec_config(spec))
    except (KeyError, ValueError) as e:
        raise CommandFailed(f"kernelspec {record.spec}: {e}") from None
    path = connection_file or str(Path(jupyter_runtime_dir()) / f"kernel-rk-{record.kernel_id}.json")
    path, info = write_connection_file(path, ip="127.0.0.1", key=record.key.encode(),
                                       signature_scheme=record.signature_scheme, kernel_name=record.kernel_name)
    info = dict(info, key=record.key)
    print(f"attaching to kernel {record.kernel_id} (job {record.job_id} on {record.node}); "
          f"connect with: jupyter console --existing {path}", flush=True)
    from ..session import KernelStartError
    try:
        return asyncio.run(serve(record.spec, options, info, spec.get("env") or {}, path, attach=record))
    except KernelStartError as e:
        raise CommandFailed(str(e)) from None
    finally:
        Path(path).unlink(missing_ok=True)


def detach(ident: str) -> int:
    record = find(ident)
    pid = holder(record)
    if not pid:
        print(f"kernel {record.kernel_id} is detached already (job {record.job_id})")
        return 0
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        cmdline = []
    words = {w.decode(errors="replace") for w in cmdline}
    if not ({"attach", "run"} & words and any("remote" in w for w in words)):
        raise CommandFailed(f"kernel {record.kernel_id} is held by process {pid}, not an attach or run of "
                            "remote-kernels; stop that server instead (it detaches kernels with persist)")
    os.kill(pid, signal.SIGHUP)
    print(f"asked process {pid} to detach kernel {record.kernel_id} (job {record.job_id})")
    return 0
