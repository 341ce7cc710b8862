"""Transport ``direct``: the login side's link to a launcher over CurveZMQ, no SSH anywhere.

The session (session.py) makes the key directory before it submits the job (``prepare``):
``key_dir(session)``, 0700, in the user's Jupyter data directory (home, which the nodes share:
the job logs are there too), holding ``launcher.json`` (0600) with the Curve keypair of the
launcher's control channel, and once the job is submitted ``job.json`` naming it (``record_job``;
keydirs.py prunes directories whose job has ended).  The batch script names the directory
only.  The launcher reads the keypair, binds its control channel on the node's cluster-network
address and writes the endpoint there (launcher.py); ``DirectLink`` connects to it, with the
keypair's public key as the server key, and speaks the launcher's JSON-line protocol through
``LauncherClient`` (control.py), one ZMQ message per line.  The kernel's key and Curve keys
then travel on that encrypted channel as in SSH mode.

jupyter_client's frontends connect to the kernel's TCP ports on the node themselves, with its
Curve keys (``frontend_info``: the connection info a provisioner hands jupyter_client once the
kernel runs); nothing on the login side carries their traffic.  Where frontends must keep
login-side endpoints (argv mode: the frontend's own ports; a kernel that started behind a
queued job's stand-in), ``forward`` has ``ChannelRelay`` bind them and carry each channel to
the node inside libzmq (``zmq.proxy_steerable`` in a thread per channel: no Python per
message), CurveZMQ on the node side always, and on the frontend side with the connection
info's Curve keys when it has them (transport_encryption).  The kernel's Curve keypair is the
connection info's, else one of the session's own (``node_keys``).  Used on the session's event
loop; close() releases everything.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Callable

from . import background, curve
from .control import LauncherClient
from .errors import KernelStartError
from .link import DROPPED, LAUNCHER, LauncherLink, heartbeat
from .options import KernelOptions

# Seconds between looks for the launcher's endpoint file while the job starts.
ENDPOINT_POLL = 0.05
# Most seconds one reconnect attempt waits for the launcher's hello.
RECONNECT_ATTEMPT = 4.0
# The file in a key directory that names the session's job (record_job).
JOB_RECORD = "job.json"


def key_root() -> Path:
    """Where the sessions' key directories are (not created)."""
    from jupyter_core.paths import jupyter_data_dir

    return Path(jupyter_data_dir()) / "remote-kernels" / "direct"


def key_dir(session: str) -> Path:
    """The key directory of session ``session`` (not created)."""
    return key_root() / session


def prepare(session: str) -> Path:
    """Make the session's key directory (0700) with the launcher's control keypair (0600)."""
    import zmq

    from .paths import private_dir, write_private_json

    path = key_dir(session)
    private_dir(path.parent)
    path.mkdir(mode=0o700)   # fails if it exists: never reuse one
    public, secret = zmq.curve_keypair()
    write_private_json(path / "launcher.json", {"public": public.decode(), "secret": secret.decode()})
    background.remove_at_exit(str(path))
    return path


def record_job(session: str, job_id: str, scheduler: str) -> None:
    """After the submit: name the session's job, its scheduler and this host in ``job.json``
    (0600) in its key directory, for keydirs.prune().  Nothing secret.  An OSError is logged,
    not raised: without the record only that pruning passes the directory by."""
    from .paths import write_private_json

    try:
        write_private_json(key_dir(session) / JOB_RECORD,
                           {"job_id": job_id, "scheduler": scheduler, "host": socket.gethostname()})
    except OSError as e:
        logging.getLogger(__name__).warning("remote kernels: cannot record job %s in %s: %s", job_id,
                                            key_dir(session), e)


def remove(session: str) -> None:
    path = key_dir(session)
    shutil.rmtree(path, ignore_errors=True)
    background.forget_removal(str(path))


class ZmqStream:
    """A DEALER connected to the launcher, as the reader and writer LauncherClient takes."""

    def __init__(self, ctx, endpoint: str, server_key: str):
        import zmq

        self.sock = ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        curve.client_of(self.sock, server_key)
        self.sock.connect(endpoint)
        self.closed = False

    async def readline(self) -> bytes:
        if self.closed:
            return b""
        return await self.sock.recv()   # b"": the launcher's end

    async def disconnected(self) -> None:
        """Return when a TCP connection to the launcher that was up when this was called
        drops (its process ended, or the network broke: libzmq would reconnect by itself)."""
        import zmq
        from zmq.utils.monitor import parse_monitor_message

        monitor = self.sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        try:
            while parse_monitor_message(await monitor.recv_multipart())["event"] != zmq.EVENT_DISCONNECTED:
                pass
        finally:
            if not self.closed:
                self.sock.disable_monitor()
            monitor.close(linger=0)

    def write(self, data: bytes) -> None:
        if self.closed:
            raise OSError("closed")
        self.sock.send(data.rstrip(b"\n"))

    def close(self) -> None:
        import zmq

        if not self.closed:
            self.closed = True
            try:
                self.sock.send(b"", flags=zmq.NOBLOCK)   # tell the launcher this channel ends
            except Exception:  # noqa: BLE001 - nothing to tell it through
                pass
            self.sock.close(linger=100)


class DirectLink(LauncherLink):
    """NodeLink's interface (link.py) for transport direct.  ``node_keys`` and ``started`` are
    the session's hooks around a kernel's start."""

    def __init__(self, opts: KernelOptions, *, node: str, job_id: str, node_dir: str, via=None,
                 on_event: Callable[[dict], None], log: logging.Logger, slot: str = ""):
        import zmq.asyncio

        self.opts, self.node, self.job_id, self.node_dir = opts, node, job_id, node_dir
        self.on_event, self.log = on_event, log
        self.session = os.path.basename(node_dir.rstrip("/"))[3:]   # node_dir is BASE/rk-SESSION
        self.kernel_dir = node_dir
        self.ctl: LauncherClient | None = None
        self._stream: ZmqStream | None = None   # the control channel's socket
        self.hello: dict = {}
        self.reconnects = 0
        self._ctx = zmq.asyncio.Context()
        self._endpoints: dict[str, str | int] = {}
        self._kernel: dict = {}      # the started reply: ip, ports
        self._keys: dict = {}        # the frontend side's Curve keys ({}: none)
        self._node_keys: dict = {}   # the kernel's keypair
        self._relay: ChannelRelay | None = None
        self._closed = False

    async def connect(self) -> None:
        """Nothing to connect before the launcher listens (no SSH)."""

    async def reach(self, job_finished: Callable[[], bool], log_file: str) -> dict:
        return await self._open_control(self.opts.launch_timeout, job_finished, log_file)

    async def join(self) -> dict:
        raise KernelStartError("transport 'direct' does not support joining a running launcher")

    async def _open_control(self, timeout: float, job_finished: Callable[[], bool], log_file: str) -> dict:
        where = key_dir(self.session)
        deadline = time.monotonic() + timeout
        while True:
            try:
                endpoint = json.loads((where / "endpoint.json").read_text())["endpoint"]
                keys = json.loads((where / "launcher.json").read_text())
                break
            except (OSError, ValueError, KeyError):
                pass
            if job_finished():
                raise KernelStartError(f"job {self.job_id} on {self.node} ended before its launcher started")
            if time.monotonic() > deadline:
                raise KernelStartError(f"{self.what} did not answer within {timeout:g}s; see {log_file}")
            await asyncio.sleep(ENDPOINT_POLL)
        stream = self._stream = ZmqStream(self._ctx, endpoint, keys["public"])
        self.ctl = LauncherClient(stream, stream, on_event=self.on_event, heartbeat=heartbeat(self.opts.grace),
                                  what=self.what)
        self.ctl.start()
        hello = await self.request({"op": "hello", "persist": 0}, timeout=max(1.0, deadline - time.monotonic()))
        if hello.get("event") != "hello":
            self.ctl.close()
            raise KernelStartError(f"{self.what}: {hello.get('message', hello)}")
        self.hello = hello
        return hello

    # --- the kernel's channels -------------------------------------------------------------
    def node_keys(self, keys: dict | None) -> dict:
        """The Curve keys the kernel is started with: the connection info's (``keys``), else a
        keypair of this link's own (the node hop is always encrypted)."""
        self._keys = dict(keys or {})
        if not self._node_keys or (self._keys and self._keys != self._node_keys):
            if self._keys:
                self._node_keys = dict(self._keys)
            else:
                import zmq

                public, secret = (k.decode() for k in zmq.curve_keypair())
                self._node_keys = {"curve_publickey": public, "curve_secretkey": secret}
        return dict(self._node_keys)

    def frontend_info(self) -> dict:
        """Where frontends reach the started kernel themselves: transport, ip, the five ports
        and its Curve keys (text), as in a connection file.  {} before a start."""
        if not self._kernel:
            return {}
        return {"transport": "tcp", "ip": self._kernel["ip"], **self._kernel["ports"], **self._node_keys}

    async def forward(self, endpoints: dict[str, str | int]) -> None:
        """Serve these login-side endpoints (channel -> ipc path, or TCP port on 127.0.0.1), replacing
        the earlier ones; they carry to the kernel once it has started (again at once after a
        restart: its ports stay).  {}: none (frontends connect to the node, frontend_info)."""
        if self._closed:
            raise KernelStartError(f"no connection to {self.what}")
        self._close_relay()
        self._endpoints = dict(endpoints)
        if self._kernel:
            self._open_relay()

    async def started(self, reply: dict) -> None:
        """A start's reply (ip, ports): serve the endpoints to this kernel."""
        if reply.get("ports") != self._kernel.get("ports") or self._relay is None:
            self._kernel = {"ip": reply["ip"], "ports": reply["ports"]}
            self._close_relay()
            self._open_relay()

    def _open_relay(self) -> None:
        if not self._endpoints:
            return
        ip, ports = self._kernel["ip"], self._kernel["ports"]
        kernel = {ch: f"tcp://{ip}:{ports[ch]}" for ch in self._endpoints}
        try:
            self._relay = ChannelRelay(self._endpoints, kernel, self._keys, self._node_keys)
        except OSError as e:
            raise KernelStartError(f"cannot serve the kernel's login-side endpoints: {e}") from None

    def _close_relay(self) -> None:
        if self._relay is not None:
            relay, self._relay = self._relay, None
            relay.close()

    # --- failure and recovery ---------------------------------------------------------------
    async def broken(self) -> str:
        """As NodeLink's; also DROPPED at once when the control channel's TCP connection drops
        (a launcher killed outright says no end; reconnect() then learns whether the job ended)
        rather than after the heartbeat's silence."""
        closed = asyncio.ensure_future(self.ctl.wait_closed())
        dropped = asyncio.ensure_future(self._stream.disconnected())
        try:
            await asyncio.wait({closed, dropped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            dropped.cancel()
            closed.cancel()
        if not closed.done() or closed.cancelled():
            return DROPPED
        return DROPPED if self.ctl.silent else LAUNCHER

    async def reconnect(self, job_finished: Callable[[], bool]) -> bool:
        """After a silence: open a fresh control channel (libzmq reconnects the channels by
        itself) until grace minus a margin has passed.  False if the job ended meanwhile."""
        deadline = time.monotonic() + max(5.0, self.opts.grace - 5.0)
        self.log.warning("remote kernel: the control channel to %s went silent; reconnecting", self.node)
        while not self._closed and time.monotonic() < deadline and not job_finished():
            if self.ctl is not None:
                self.ctl.close()
            try:
                await self._open_control(RECONNECT_ATTEMPT, job_finished, "the job's log")
            except KernelStartError as e:
                self.log.info("remote kernel: reaching the launcher on %s failed (%s); retrying", self.node, e)
                continue
            self.reconnects += 1
            self.log.warning("remote kernel: the control channel to %s is back", self.node)
            return True
        return False

    async def close(self) -> None:
        """End the link: control channel, relay, context.  Idempotent."""
        self._end_control()
        self._close_relay()
        if self._ctx is not None:
            self._ctx.destroy(linger=0)
            self._ctx = None


# socket types: (frontend side, bound; kernel side, connected)
def _types():
    import zmq

    return {"shell_port": (zmq.ROUTER, zmq.DEALER), "stdin_port": (zmq.ROUTER, zmq.DEALER),
            "control_port": (zmq.ROUTER, zmq.DEALER), "hb_port": (zmq.ROUTER, zmq.DEALER),
            "iopub_port": (zmq.XPUB, zmq.XSUB)}


class ChannelRelay:
    """Each channel's login-side endpoint carried to the kernel's node endpoint by a libzmq
    proxy in a thread of its own.  The shell and stdin sockets toward the kernel share one
    routing id, as a frontend's do: ipykernel addresses stdin by the shell's routing id.
    OSError when an endpoint cannot be bound (nothing is left open then)."""

    def __init__(self, endpoints: dict[str, str | int], kernel: dict[str, str], keys: dict, node_keys: dict):
        import zmq

        self._ctx = zmq.Context()
        self._threads: list[tuple[threading.Thread, object]] = []
        self._paths: list[str] = []   # the ipc endpoints bound
        routing_id = secrets.token_bytes(8)
        try:
            for channel, local in endpoints.items():
                self._start(channel, local, kernel[channel], keys, node_keys, routing_id)
        except BaseException:
            self.close()
            raise

    def _start(self, channel: str, local, remote: str, keys: dict, node_keys: dict, routing_id: bytes) -> None:
        import zmq

        front_type, back_type = _types()[channel]
        front, back = self._ctx.socket(front_type), self._ctx.socket(back_type)
        ctrl_name = f"inproc://rk-relay-{id(self)}-{channel}"
        ctrl_in, ctrl_out = self._ctx.socket(zmq.PAIR), self._ctx.socket(zmq.PAIR)
        for sock in (front, back, ctrl_in, ctrl_out):
            sock.linger = 0
        curve.serve(front, keys)
        curve.connect_to(back, node_keys)
        if channel in ("shell_port", "stdin_port"):
            back.routing_id = routing_id
        try:
            if isinstance(local, int):
                front.bind(f"tcp://127.0.0.1:{local}")
            else:
                old = os.umask(0o077)
                try:
                    front.bind(f"ipc://{local}")
                finally:
                    os.umask(old)
                os.chmod(local, 0o600)
        except zmq.ZMQError as e:
            for sock in (front, back, ctrl_in, ctrl_out):
                sock.close()
            raise OSError(f"{local}: {e}") from None
        back.connect(remote)
        ctrl_in.bind(ctrl_name)
        ctrl_out.connect(ctrl_name)

        def run() -> None:
            try:
                zmq.proxy_steerable(front, back, None, ctrl_in)
            except zmq.ZMQError:
                pass
            finally:
                for sock in (front, back, ctrl_in):
                    sock.close(linger=0)

        thread = threading.Thread(target=run, name=f"rk-relay-{channel}", daemon=True)
        thread.start()
        self._threads.append((thread, ctrl_out))
        if isinstance(local, str):
            self._paths.append(local)

    def close(self) -> None:
        """Stop every proxy, close the sockets (ipc files removed).  Idempotent."""
        for thread, ctrl in self._threads:
            try:
                ctrl.send(b"TERMINATE")
            finally:
                thread.join(5)
                ctrl.close(linger=0)
        stuck = any(thread.is_alive() for thread, _ in self._threads)
        self._threads.clear()
        if self._ctx is not None:
            if stuck:
                self._ctx.destroy(linger=0)
            else:
                self._ctx.term()
            self._ctx = None
        for path in self._paths:
            try:
                os.unlink(path)
            except OSError:
                pass
