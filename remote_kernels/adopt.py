"""jupyter_server extension: kernels outlive their server (option ``persist``) and are re-adopted.

Enabled with the package (jupyter-config/jupyter_server_config.d/remote_kernels.json, installed
with the wheel).  Kernels without ``persist`` are left alone.  It does two things:

- at the server's start, it registers this user's kernels whose server is gone (their
  records, persisted.py) under their old kernel ids: ``MappingKernelManager.start_kernel``
  with ``kernel_id``, the record's spec as ``kernel_name`` and launch keyword ``adopt``, so
  the provisioner reaches the running kernel instead of submitting a job (provisioner.py).
  A kernel whose notebook is known (under this server's root) gets its session again, so
  the reopened notebook finds its kernel.
  A record whose owner still runs on this host is left to it; one that cannot be adopted is
  removed (its job ends by itself after ``persist``).
- when the server exits (its ``shutdown_all``, which jupyter_server calls only then), kernels
  with ``persist`` are detached first: their link closes and the shutdown that follows
  reaches nothing, so they run on for ``persist`` seconds, waiting for the next server.
"""

from __future__ import annotations

import logging
import os
import socket

from jupyter_client.utils import ensure_async

from . import persisted, registry
from .provisioner import RemoteKernelProvisioner


def _jupyter_server_extension_points() -> list[dict]:
    return [{"module": "remote_kernels.adopt"}]


def _load_jupyter_server_extension(serverapp) -> None:
    from tornado.ioloop import IOLoop

    km, log = serverapp.kernel_manager, serverapp.log
    detach_at_exit(km, log)
    IOLoop.current().add_callback(readopt, km, log, serverapp.session_manager, serverapp.root_dir)


def adoptable(record: persisted.Record) -> bool:
    """Whether this server may take the kernel over: not an argv-mode kernel, and its owner
    (the registry's entry for its session) is not a live process on this host other than
    this one."""
    if record.connection_file:
        return False
    entry = next((e for e in registry.entries() if e.session_id == record.session_id), None)
    if entry is None or entry.owner_pid == os.getpid():
        return True
    return bool(record.detached) or not entry.owner_alive() or entry.owner_host != socket.gethostname()


async def readopt(km, log: logging.Logger, sessions=None, root_dir: str = "") -> list[str]:
    """Register this user's adoptable kernels under their kernel ids (and, with ``sessions``,
    the server's SessionManager, their notebooks' sessions); the ids adopted."""
    adopted = []
    for record in persisted.records():
        if record.kernel_id in km or not adoptable(record):
            continue
        try:
            await km.start_kernel(kernel_id=record.kernel_id, kernel_name=record.spec, adopt=record)
        except Exception as e:  # noqa: BLE001 - one kernel's failure must not stop the others or the server
            log.warning("remote kernels: could not re-adopt kernel %s (job %s on %s): %s",
                        record.kernel_id, record.job_id, record.node, e)
            record.remove()
            continue
        log.info("remote kernels: re-adopted kernel %s (job %s on %s)", record.kernel_id, record.job_id, record.node)
        adopted.append(record.kernel_id)
        if sessions is not None and (path := notebook_path(record.notebook, root_dir)):
            try:
                await sessions.create_session(path=path, name=os.path.basename(path), type="notebook",
                                              kernel_id=record.kernel_id)
            except Exception as e:  # noqa: BLE001 - the kernel is adopted all the same
                log.warning("remote kernels: no session for %s: %s", path, e)
    log.info("remote kernels: re-adoption done (%d kernel%s)", len(adopted), "" if len(adopted) == 1 else "s")
    return adopted


def notebook_path(notebook: str, root_dir: str) -> str:
    """The API path of an absolute notebook path under root_dir; '' if none or outside it."""
    if not notebook or not root_dir:
        return ""
    rel = os.path.relpath(os.path.abspath(notebook), os.path.abspath(root_dir))
    return "" if rel.startswith("..") else rel.replace(os.sep, "/")


def detach_at_exit(km, log: logging.Logger) -> None:
    """Have ``km.shutdown_all`` (the server's exit) detach kernels with persist before it runs."""
    original = km.shutdown_all

    async def shutdown_all(now: bool = False) -> None:
        for kernel_id in list(km.list_kernel_ids()):
            prov = getattr(km.get_kernel(kernel_id), "provisioner", None)
            if isinstance(prov, RemoteKernelProvisioner) and prov.persist:
                try:
                    if await prov.detach():
                        log.info("remote kernels: kernel %s detached; it waits %gs for the next server",
                                 kernel_id, prov.persist)
                except Exception as e:  # noqa: BLE001 - the shutdown goes on
                    log.warning("remote kernels: could not detach kernel %s: %s", kernel_id, e)
        await ensure_async(original(now=now))

    km.shutdown_all = shutdown_all
