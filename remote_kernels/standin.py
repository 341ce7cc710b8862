"""A login-side stand-in for a kernel whose job still waits in the queue.

Under a server with pending kernels the provisioner returns before the job runs, and
jupyter_server then holds each websocket handshake until the kernel answers
``kernel_info`` (up to ``kernel_info_timeout``, 60 s); browsers open one websocket at a
time, so one queued kernel would stall every notebook.  The stand-in binds the kernel's
login-side endpoints until the job runs and answers in the kernel's place, signed with
the kernel's key: ``kernel_info`` (its banner says where the job is), empty replies to
the requests frontends send on their own, and an error naming the job's state to
``execute_request`` (the cell did not run); other messages get no answer.  Heartbeats are echoed.  Once the job runs
the provisioner closes it; the frontend's ZMQ sockets reconnect to the real kernel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Callable

import zmq
import zmq.asyncio
from jupyter_client.session import Session

from . import __version__
from .launcher import CHANNELS

log = logging.getLogger(__name__)

LANGUAGE_INFO = {"name": "python", "mimetype": "text/x-python", "file_extension": ".py",
                 "pygments_lexer": "ipython3", "codemirror_mode": {"name": "ipython", "version": 3},
                 "nbconvert_exporter": "python"}
SOCKET_TYPES = {"shell_port": zmq.ROUTER, "control_port": zmq.ROUTER, "stdin_port": zmq.ROUTER,
                "iopub_port": zmq.PUB, "hb_port": zmq.REP}


class QueuedKernelStandIn:
    """Answers on a kernel's endpoints while its job is queued.  ``describe()`` says where the
    job is, e.g. "job 42 is queued (Priority)"; it is called for each reply."""

    def __init__(self, connection_info: dict, describe: Callable[[], str]):
        key = connection_info["key"]
        self.session = Session(key=key if isinstance(key, bytes) else key.encode(),
                               signature_scheme=connection_info.get("signature_scheme", "hmac-sha256"),
                               username="remote-kernels")
        self.info, self.describe = connection_info, describe
        self._ctx: zmq.asyncio.Context | None = None
        self._sockets: dict[str, zmq.asyncio.Socket] = {}
        self._tasks: list[asyncio.Task] = []

    def _endpoint(self, channel: str) -> str:
        info = self.info
        if info["transport"] == "ipc":
            return f"ipc://{info['ip']}-{info[channel]}"
        return f"tcp://{info['ip']}:{info[channel]}"

    def start(self) -> None:
        """Bind all five endpoints and start answering (on the running loop)."""
        self._ctx = zmq.asyncio.Context()
        try:
            for channel in CHANNELS:
                sock = self._ctx.socket(SOCKET_TYPES[channel])
                sock.linger = 0
                self._sockets[channel] = sock
                sock.bind(self._endpoint(channel))
                if self.info["transport"] == "ipc":
                    os.chmod(f"{self.info['ip']}-{self.info[channel]}", 0o600)
        except zmq.ZMQError:
            self.close()
            raise
        loop = asyncio.get_running_loop()
        for channel in ("shell_port", "control_port", "hb_port"):
            self._tasks.append(loop.create_task(self._serve(channel)))

    def close(self) -> None:
        """Unbind everything (ipc socket files are removed).  Idempotent."""
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()
        for channel, sock in self._sockets.items():
            sock.close(linger=0)
            if self.info["transport"] == "ipc":
                with contextlib.suppress(OSError):
                    os.unlink(f"{self.info['ip']}-{self.info[channel]}")
        self._sockets.clear()
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None

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
            if not msg["header"]["msg_type"].endswith("_request"):
                continue   # comm messages and the like expect no reply
            try:
                await self._answer(sock, idents, msg)
            except zmq.ZMQError as e:
                log.debug("stand-in: could not answer %s: %s", msg["header"]["msg_type"], e)

    async def _answer(self, sock: zmq.asyncio.Socket, idents: list, request: dict) -> None:
        kind = request["header"]["msg_type"]
        where = self.describe()
        await self._publish("status", {"execution_state": "busy"}, request)
        if kind == "execute_request":
            error = {"ename": "KernelNotStarted", "evalue": f"this cell did not run: {where}", "traceback": []}
            error["traceback"] = [f"{error['ename']}: {error['evalue']}"]
            await self._publish("error", error, request)
            content = dict(error, status="error", execution_count=0)
        else:
            content = self._reply_content(kind, request["content"], where)
        reply = self.session.msg(kind.replace("_request", "_reply"), content, parent=request)
        await sock.send_multipart(self.session.serialize(reply, ident=idents))
        await self._publish("status", {"execution_state": "idle"}, request)

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

    async def _publish(self, msg_type: str, content: dict, parent: dict) -> None:
        msg = self.session.msg(msg_type, content, parent=parent)
        await self._sockets["iopub_port"].send_multipart(self.session.serialize(msg, ident=[msg_type.encode()]))
