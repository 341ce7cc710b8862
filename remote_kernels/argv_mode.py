"""Argv mode: for frontends that run kernel.json's argv themselves (VS Code's local picker).

``remote-kernels run --kernel NAME -f CONNECTION_FILE`` reads the connection file the
frontend wrote (its transport, ports and key), runs the kernel on a compute node
through the same core as the provisioner, and serves exactly those endpoints on the
login side.  SIGINT interrupts the kernel; SIGTERM/SIGHUP shut it down.  The job is
cancelled whenever this process exits, and the ipc sockets it served are removed.  The kernel gets the kernelspec's ``env`` stanza
(as the frontend set it in this process's environment; environment.kernel_env), never
the rest of this process's environment.

With option ``persist``, the kernel has a record (persisted.py) named by the connection
file's path while it runs; SIGTERM/SIGHUP with the kernel still running (the frontend went
away without shutting it down) detaches it instead of ending it, and so does this process's
death.  A next ``run`` for the same connection file, with the same key, re-attaches to that
kernel while its job waits (no job submitted); any other start submits a job as usual.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import stat
import time

from . import curve, persisted
from .environment import kernel_env
from .errors import KernelStartError
from .launcher import CHANNELS
from .options import KernelOptions
from .link import endpoints
from .session import RemoteKernelSession

log = logging.getLogger("remote_kernels.run")


def read_connection_file(path: str) -> dict:
    try:
        with open(path) as f:
            info = json.load(f)
    except OSError as e:
        raise SystemExit(f"remote-kernels run: cannot read connection file {path}: {e.strerror}; "
                         "the frontend must write it before starting the kernel") from None
    except ValueError as e:
        raise SystemExit(f"remote-kernels run: connection file {path} is not valid JSON ({e})") from None
    missing = [k for k in ("key", *CHANNELS) if k not in info]
    if missing:
        raise SystemExit(f"remote-kernels run: connection file {path} lacks {', '.join(missing)}")
    return info


def reattachable(options: KernelOptions, info: dict, connection_file: str) -> persisted.Record | None:
    """The record of a detached kernel this run may re-attach to: persist is on, and the record
    for this connection file carries the same key and Curve keys (the same frontend's kernel)."""
    if not options.persist or not connection_file:
        return None
    record = persisted.load(persisted.for_connection_file(connection_file))
    if record is None or record.key != info["key"] or record.connection_file != os.path.abspath(connection_file):
        return None
    if curve.keys(info).get("curve_secretkey", "") != record.curve_secretkey:
        return None
    return record


async def serve(name: str, options: KernelOptions, info: dict, spec_env: dict | None = None,
                connection_file: str = "", attach: persisted.Record | None = None) -> int:
    """Run the kernel until it exits or we are told to stop; return an exit code.

    ``spec_env``: the kernelspec's ``env`` stanza (kernel.json's "env"); ``connection_file``:
    the path ``info`` was read from (names the kernel's record under option persist);
    ``attach``: re-attach to this record's kernel (``remote-kernels attach``), KernelStartError
    if it cannot be."""
    # Sockets are created where the frontend says (e.g. ipc paths in a shared directory):
    # private from the moment they exist, not only after a chmod.
    os.umask(0o077)
    session, record = await _reattached(name, options, info, connection_file, attach)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    pending: set[asyncio.Task] = set()
    detached = False

    def interrupt() -> None:
        task = loop.create_task(session.signal(signal.SIGINT))
        pending.add(task)
        task.add_done_callback(pending.discard)

    loop.add_signal_handler(signal.SIGINT, interrupt)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    try:
        if record is None:
            start = loop.create_task(_start(session, info, kernel_env(spec_env or {}, os.environ)))
            stopper = loop.create_task(stop.wait())
            await asyncio.wait({start, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if not start.done():
                start.cancel()
                await asyncio.gather(start, return_exceptions=True)   # its clean-up cancels the job
                log.info("stopped while starting")
                return 143
            stopper.cancel()
            start.result()
            if options.persist and connection_file:
                record = persisted.record_of(session, info, kernel_id=persisted.for_connection_file(connection_file),
                                             connection_file=os.path.abspath(connection_file))
                record.save()
        log.info("kernel running on %s (job %s)", session.node, session.job_id)
        while not stop.is_set() and await session.poll() is None:
            try:
                await asyncio.wait_for(stop.wait(), 0.2)
            except asyncio.TimeoutError:
                pass
        code = await session.poll()
        if record is not None and code is None:   # told to stop, the kernel running: it waits for a next run
            await session.detach()
            record.detached, detached = time.time(), True
            record.save()
            log.info("kernel detached: job %s waits %gs for a next run with this connection file",
                     session.job_id, options.persist)
            return 0
        return code if code is not None else 0
    finally:
        if record is not None and not detached:
            record.remove()   # ended or failed: nobody may re-attach
        await session.close()
        _remove_sockets(info)


async def _reattached(name: str, options: KernelOptions, info: dict, connection_file: str,
                      given: persisted.Record | None) -> tuple[RemoteKernelSession, persisted.Record | None]:
    """A session re-attached to ``given``'s kernel or this connection file's detached kernel,
    with its record; else a new session (and None) for a kernel of its own."""
    record = given or reattachable(options, info, connection_file)
    if record is not None:
        session = RemoteKernelSession(options, name=name, log=log, session_id=record.session_id)
        try:
            await session.adopt(record.job_id, record.node)
            await session.forward(endpoints(info))
            log.info("re-attached to the kernel of job %s on %s", record.job_id, record.node)
            return session, record
        except (KernelStartError, OSError) as e:
            if not session.stopped:
                await session.detach()
            if given is not None:
                raise KernelStartError(f"cannot attach to the kernel of job {record.job_id} on {record.node}: {e}") \
                    from None
            log.warning("cannot re-attach to job %s (%s); starting a new kernel", record.job_id, e)
            record.remove()
    return RemoteKernelSession(options, name=name, log=log), None


def _remove_sockets(info: dict) -> None:
    """Remove the ipc socket files served for ``info`` (only sockets: never another file)."""
    for local in endpoints(info).values():
        if isinstance(local, str):
            try:
                if stat.S_ISSOCK(os.lstat(local).st_mode):
                    os.unlink(local)
            except OSError:
                pass


async def _start(session: RemoteKernelSession, info: dict, env: dict) -> None:
    await session.start_job()
    await session.forward(endpoints(info))
    await session.start_kernel(info["key"], info.get("signature_scheme", "hmac-sha256"),
                               kernel_name=info.get("kernel_name", ""), cwd=os.getcwd(), env=env, curve=curve.keys(info))
