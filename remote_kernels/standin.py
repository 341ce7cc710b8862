"""A login-side stand-in for a kernel whose job still waits in the queue.

A server on jupyter_server gets launch_kernel's answer before the job runs (hosted.py), and
then holds each websocket handshake until the kernel answers ``kernel_info`` (up to
``kernel_info_timeout``, 60 s); browsers open one websocket at a time, so one queued kernel
would stall every notebook.  The stand-in binds the kernel's login-side endpoints until the
job runs and speaks in the kernel's place, signed with the kernel's key:

* while the job is queued (``hold``) it answers ``kernel_info`` (its banner says where the
  job is) and the control channel's requests, and keeps every shell message, in order, for
  the kernel: cells run once it starts (relay.py replays them, with the ``kernel_info``
  requests so that their frontends see the real kernel's answer).  Every status it publishes
  says ``starting``: no frontend or server sees a queued kernel as idle;
* once the start has failed (not ``hold``) it answers every request at once, cells with an
  error naming why (the cell did not run), and the requests it held the same way.

Heartbeats are echoed; unsigned or malformed messages are dropped.  When the job runs,
``hand_over()`` gives the shell socket and what it held to the relay and closes the rest; the
frontend's other ZMQ sockets reconnect to the forwards bound on the same endpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Awaitable, Callable

import zmq
import zmq.asyncio
from jupyter_client.session import Session

from . import __version__, curve
from .launcher import CHANNELS

log = logging.getLogger(__name__)

LANGUAGE_INFO = {"name": "python", "mimetype": "text/x-python", "file_extension": ".py",
                 "pygments_lexer": "ipython3", "codemirror_mode": {"name": "ipython", "version": 3},
                 "nbconvert_exporter": "python"}
# Seconds after binding at which a holding stand-in says "starting" unasked, as a kernel does
# once at its start: a subscriber's socket reconnects within a few hundred milliseconds (after
# a restart, the server's still believes the kernel before it).
ANNOUNCE_AT = (0.0, 0.5, 1.5)
# How long answers to what an earlier stand-in kept wait for their clients to reconnect, and
# how long for the other subscribers once the first is back.
RECONNECTED = 5.0
RESUBSCRIBED = 0.3
SOCKET_TYPES = {"shell_port": zmq.ROUTER, "control_port": zmq.ROUTER, "stdin_port": zmq.ROUTER,
                "iopub_port": zmq.XPUB, "hb_port": zmq.REP}   # XPUB: it hears subscribers come


async def at_times(offsets: tuple[float, ...], act: Callable[[], Awaitable]) -> None:
    """await act() at each of these offsets (seconds) from now."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    for at in offsets:
        await asyncio.sleep(max(0.0, started + at - loop.time()))
        await act()


def zmq_url(info: dict, channel: str) -> str:
    """The ZMQ URL of a channel's login-side endpoint in a connection info."""
    if info["transport"] == "ipc":
        return f"ipc://{info['ip']}-{info[channel]}"
    return f"tcp://{info['ip']}:{info[channel]}"


def signer(info: dict) -> Session:
    """A Session that signs (and checks) with the kernel's key from its connection info."""
    key = info["key"]
    return Session(key=key if isinstance(key, bytes) else key.encode(),
                   signature_scheme=info.get("signature_scheme", "hmac-sha256"), username="remote-kernels")


class QueuedKernelStandIn:
    """Answers on a kernel's endpoints while its job is queued.  ``describe()`` says where the
    job is, e.g. "job 42 is queued (Priority)"; it is called for each reply.  ``hold``: keep
    shell messages for the kernel (else answer them now); ``held``: raw shell messages a
    stand-in before this one kept (answered at start() when not holding, else kept on)."""

    def __init__(self, connection_info: dict, describe: Callable[[], str], *, hold: bool = True,
                 held: list[list[bytes]] | None = None):
        self.session = signer(connection_info)
        self.info, self.describe = connection_info, describe
        # The shell socket's context (handed over with it) and the other sockets': hand_over()
        # terminates the latter, which waits until their listeners are closed, so the forwards
        # can bind the same TCP ports at once.
        self._ctx: zmq.asyncio.Context | None = None
        self._others: zmq.asyncio.Context | None = None
        self._sockets: dict[str, zmq.asyncio.Socket] = {}
        self._tasks: list[asyncio.Task] = []
        self._subscribed = asyncio.Event()   # a subscriber has subscribed on iopub
        self.hold = hold
        # Raw shell messages (routing ids first), in order, with their type and (once this
        # stand-in has read them: a Session reads a message once) the message.
        self._held: list[tuple[str, list[bytes], dict | None]] = [("", frames, None) for frames in held or []]

    def start(self) -> None:
        """Bind all five endpoints and start answering (on the running loop)."""
        self._ctx, self._others = zmq.asyncio.Context(), zmq.asyncio.Context()
        try:
            for channel in CHANNELS:
                sock = (self._ctx if channel == "shell_port" else self._others).socket(SOCKET_TYPES[channel])
                sock.linger = 0
                if SOCKET_TYPES[channel] == zmq.ROUTER:
                    sock.router_mandatory = True   # an answer to a client not (yet) connected raises
                self._sockets[channel] = sock
                curve.serve(sock, self.info)   # with encryption on, frontends speak Curve to it as to the kernel
                sock.bind(zmq_url(self.info, channel))
                if self.info["transport"] == "ipc":
                    os.chmod(f"{self.info['ip']}-{self.info[channel]}", 0o600)
        except zmq.ZMQError:
            self.close()
            raise
        loop = asyncio.get_running_loop()
        for channel in ("shell_port", "control_port", "hb_port"):
            self._tasks.append(loop.create_task(self._serve(channel)))
        self._tasks.append(loop.create_task(self._watch_subscribers()))
        if not self.hold and self._held:
            self._tasks.append(loop.create_task(self._answer_held()))
        if self.hold:
            self._tasks.append(loop.create_task(self._announce()))

    async def _announce(self) -> None:
        await at_times(ANNOUNCE_AT, lambda: self._publish("status", {"execution_state": "starting"}, None))

    def fail(self) -> None:
        """The kernel will not start: stop holding, answer what was kept and all from now on."""
        self.hold = False
        self._tasks.append(asyncio.get_running_loop().create_task(self._answer_held()))

    def take_held(self) -> list[list[bytes]]:
        """The shell messages kept so far (for a stand-in or relay after this one)."""
        held, self._held = self._held, []
        return [frames for _, frames, _ in held]

    def hand_over(self) -> tuple[zmq.asyncio.Context, zmq.asyncio.Socket, list[list[bytes]]]:
        """Stop answering; close every endpoint but shell; give away (context, shell socket,
        held messages) for relay.py.  The stand-in is closed afterwards."""
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()
        shell = self._sockets.pop("shell_port")
        ctx, self._ctx = self._ctx, None
        self._close_sockets()
        self._term()
        return ctx, shell, self.take_held()

    def _term(self) -> None:
        for ctx in (self._others, self._ctx):
            if ctx is not None:
                ctx.term()
        self._others = self._ctx = None

    def close(self) -> None:
        """Unbind everything (ipc socket files are removed).  Idempotent."""
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()
        self._close_sockets()
        self._term()

    def _close_sockets(self) -> None:
        for channel, sock in self._sockets.items():
            sock.close(linger=0)
            if self.info["transport"] == "ipc":
                with contextlib.suppress(OSError):
                    os.unlink(f"{self.info['ip']}-{self.info[channel]}")
        self._sockets.clear()

    async def _serve(self, channel: str) -> None:
        sock = self._sockets[channel]
        while True:
            frames = await sock.recv_multipart()
            if channel == "hb_port":
                await sock.send_multipart(frames)
                continue
            try:
                idents, parts = self.session.feed_identities(frames)
                msg = self.session.deserialize(parts)   # checks the signature
            except Exception as e:  # noqa: BLE001 - unsigned or malformed: drop it
                log.warning("stand-in: dropped a message that failed to verify (%s)", e)
                continue
            kind = msg["header"]["msg_type"]
            if channel == "shell_port" and self.hold:
                self._keep(frames, msg)
                if kind != "kernel_info_request":
                    continue
            if not kind.endswith("_request"):
                continue   # comm messages and the like expect no reply
            await self._try_answer(sock, idents, msg)

    def _keep(self, frames: list[bytes], msg: dict) -> None:
        """Keep a shell message for the kernel.  Of one client's kernel_info requests only the
        last is kept (jupyter_server asks every 0.5 s while a kernel is starting)."""
        kind = msg["header"]["msg_type"]
        if kind == "kernel_info_request":
            self._held = [h for h in self._held if not (h[0] == kind and h[1][0] == frames[0])]
        self._held.append((kind, frames, msg))

    @property
    def held_kinds(self) -> list[str]:
        """The types of the shell messages kept so far, in order."""
        return [kind for kind, _, _ in self._held]

    async def _answer_held(self) -> None:
        """Not holding (the start failed): answer what an earlier stand-in kept (but the
        kernel_info requests it answered), in order.  Its
        clients' sockets reconnect to this one's endpoints within moments: until then an
        answer is tried again, for RECONNECTED seconds at most."""
        sock = self._sockets["shell_port"]
        deadline = asyncio.get_running_loop().time() + RECONNECTED
        held, self._held = self._held, []
        for _, frames, msg in held:
            idents, parts = self.session.feed_identities(frames)
            if msg is None:
                try:
                    msg = self.session.deserialize(parts)
                except Exception as e:  # noqa: BLE001 - checked by the stand-in that kept it
                    log.debug("stand-in: a kept message does not verify: %s", e)
                    continue
            kind = msg["header"]["msg_type"]
            if not kind.endswith("_request") or kind == "kernel_info_request":   # that one was answered
                continue
            try:
                await self._answer(sock, idents, msg, patient_until=deadline)
            except zmq.ZMQError as e:
                log.debug("stand-in: could not answer %s: %s", kind, e)

    async def _try_answer(self, sock: zmq.asyncio.Socket, idents: list, msg: dict) -> None:
        try:
            await self._answer(sock, idents, msg)
        except zmq.ZMQError as e:
            log.debug("stand-in: could not answer %s: %s", msg["header"]["msg_type"], e)

    async def _answer(self, sock: zmq.asyncio.Socket, idents: list, request: dict, *,
                      patient_until: float | None = None) -> None:
        """Reply to a request, with its status (and error) messages on iopub.  ``patient_until``:
        the client may not be connected yet (an earlier stand-in's): send the reply first, tried
        again until then (loop time), and publish only once it has gone."""
        kind = request["header"]["msg_type"]
        where = self.describe()
        error = None
        if kind == "execute_request":
            error = {"ename": "KernelNotStarted", "evalue": f"this cell did not run: {where}", "traceback": []}
            error["traceback"] = [f"{error['ename']}: {error['evalue']}"]
            content = dict(error, status="error", execution_count=0)
        else:
            content = self._reply_content(kind, request["content"], where)
        reply = self.session.serialize(self.session.msg(kind.replace("_request", "_reply"), content, parent=request),
                                       ident=idents)
        if patient_until is not None:
            await self._send_when_connected(sock, reply, patient_until)
        if not self.hold:
            await self._publish("status", {"execution_state": "busy"}, request)
        if error is not None:
            await self._publish("error", error, request)
        if patient_until is None:
            await sock.send_multipart(reply)
        if self.hold:
            # Unparented: frontends (JupyterLab ignores the status of kernel_info's children)
            # and jupyter_server's activity tracking both take it as the kernel's state.
            await self._publish("status", {"execution_state": "starting"}, None)
        else:
            await self._publish("status", {"execution_state": "idle"}, request)

    async def _send_when_connected(self, sock: zmq.asyncio.Socket, frames: list, until: float) -> None:
        """Send on a ROUTER (router_mandatory) to a client that may not have reconnected yet;
        then wait (until ``until`` at most) for a subscriber on iopub, and a moment for others:
        clients reconnect every 0.1 s."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                await sock.send_multipart(frames)
                break
            except zmq.ZMQError as e:
                if e.errno != zmq.EHOSTUNREACH or loop.time() > until:
                    raise
                await asyncio.sleep(0.05)
        if not self._subscribed.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._subscribed.wait(), max(0.0, until - loop.time()))
            await asyncio.sleep(RESUBSCRIBED)

    async def _watch_subscribers(self) -> None:
        sock = self._sockets["iopub_port"]
        while True:
            event = await sock.recv()
            if event[:1] == b"\x01":
                self._subscribed.set()

    @staticmethod
    def _reply_content(kind: str, content: dict, where: str) -> dict:
        cursor = content.get("cursor_pos", 0)
        replies = {
            "kernel_info_request": {"protocol_version": "5.3", "implementation": "remote-kernels",
                                    "implementation_version": __version__, "language_info": LANGUAGE_INFO,
                                    "banner": f"Kernel not started: {where}.", "help_links": []},
            "comm_info_request": {"comms": {}},
            "complete_request": {"matches": [], "cursor_start": cursor, "cursor_end": cursor, "metadata": {}},
            "inspect_request": {"found": False, "data": {}, "metadata": {}},
            "history_request": {"history": []},
            "is_complete_request": {"status": "unknown"},
            "interrupt_request": {},
            "shutdown_request": {"restart": bool(content.get("restart"))},
        }
        if kind in replies:
            return {"status": "ok", **replies[kind]}
        return {"status": "error", "ename": "KernelNotStarted", "evalue": where, "traceback": []}

    async def _publish(self, msg_type: str, content: dict, parent: dict | None) -> None:
        msg = self.session.msg(msg_type, content, parent=parent)
        await self._sockets["iopub_port"].send_multipart(self.session.serialize(msg, ident=[msg_type.encode()]))
