"""The shell channel of a kernel that started behind a stand-in (standin.py).

While the job was queued, the stand-in kept the frontends' shell messages: their cells, and
the ``kernel_info`` requests it answered without the kernel.  When the kernel runs, the
relay takes over the stand-in's shell socket (a ROUTER on the frontend's endpoint, so
nothing a frontend sends meanwhile is lost) and carries messages both ways through a
DEALER connected to a private path that the link forwards to the kernel's shell socket:
first what was kept, in order, then everything else.  The routing ids travel as the wire
protocol's routing prefix, which the kernel returns with each reply.

Frontends reconnect their other sockets to the kernel on their own, every 100 ms (ZMQ's
default), and a cell's output published before a frontend's iopub socket is back would be
lost.  So before replaying, the relay subscribes to the kernel's login-side iopub endpoint
itself and sends silent, empty executes of its own until it hears their status (the
forwards carry iopub), then waits ``RECONNECTED`` more for the frontends' sockets.  Nor does
anything tell frontends that the kernel now runs: JupyterLab takes no status from
``kernel_info``'s children and would show "starting" until the user's next cell.  So after
the replay the relay nudges the kernel again (``NUDGES``): every subscriber takes those
executes' status as the kernel's state.  Their replies (no routing prefix) are dropped.

The hosted kernel (hosted.py) makes it at the kernel's first start and closes it at the
next restart or the kernel's end; used on the background loop only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import zmq
import zmq.asyncio
from jupyter_client.session import DELIM, Session

from . import curve
from .standin import ANNOUNCE_AT, at_times

log = logging.getLogger(__name__)

# Seconds after the replay at which the relay nudges the kernel for the frontends' sake.
NUDGES = ANNOUNCE_AT
# Seconds the relay waits, once iopub reaches it, for the frontends' sockets to be back
# (they retry every 0.1 s); and at most, for iopub to reach it at all.
RECONNECTED = 0.3
IOPUB_WAIT = 10.0
NUDGE = {"code": "", "silent": True, "store_history": False, "user_expressions": {}, "allow_stdin": False,
         "stop_on_error": False}


class ShellRelay:
    """Carries one kernel's shell channel from ``frontend`` (a bound ROUTER) to ``kernel``
    (an ipc path forwarded to the kernel's shell socket), replaying ``held`` first once
    ``iopub`` (the kernel's login-side iopub endpoint, a ZMQ URL) carries its output.
    ``keys``: the kernel's Curve keys (curve.keys()) when its channels are encrypted."""

    def __init__(self, ctx: zmq.asyncio.Context, frontend: zmq.asyncio.Socket, held: list[list[bytes]],
                 kernel: str, iopub: str, session: Session, keys: dict | None = None):
        self._ctx, self._frontend, self._held, self._session, self._iopub = ctx, frontend, held, session, iopub
        self._keys = keys or {}
        self._kernel = ctx.socket(zmq.DEALER)
        self._kernel.linger = 0
        curve.connect_to(self._kernel, self._keys)
        self._kernel.connect(f"ipc://{kernel}")
        self._tasks: list[asyncio.Task] = []

    def start(self) -> None:
        """Replay what was held, then relay both ways and nudge (on the running loop)."""
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._to_kernel()), loop.create_task(self._to_frontend())]

    def close(self) -> None:
        """Stop relaying; close both sockets and the context.  Idempotent."""
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()
        if self._ctx is not None:
            # destroy, not term: the probe's subscriber of a cancelled task is still open, and
            # term would wait for it (on this loop: for ever).
            self._ctx.destroy(linger=0)
            self._ctx = None

    async def _to_kernel(self) -> None:
        await self._until_iopub_flows()
        await asyncio.sleep(RECONNECTED)
        held, self._held = self._held, []
        for frames in held:
            await self._kernel.send_multipart(frames)
        if held:
            log.debug("relay: replayed %d message(s) kept while the job was queued", len(held))
        self._tasks.append(asyncio.get_running_loop().create_task(
            at_times(NUDGES, lambda: self._kernel.send_multipart(self._nudge()))))
        while True:
            await self._kernel.send_multipart(await self._frontend.recv_multipart())

    async def _until_iopub_flows(self) -> None:
        """Nudge the kernel until a subscriber of our own on its iopub endpoint hears one of
        the nudges' status (IOPUB_WAIT s at most; then the replay goes ahead anyway)."""
        sub = self._ctx.socket(zmq.SUB)
        sub.linger = 0
        sub.subscribe(b"")
        curve.connect_to(sub, self._keys)
        sub.connect(self._iopub)
        loop = asyncio.get_running_loop()
        deadline, sent = loop.time() + IOPUB_WAIT, set()
        try:
            while loop.time() < deadline:
                nudge = self._session.msg("execute_request", NUDGE)
                sent.add(nudge["header"]["msg_id"])
                await self._kernel.send_multipart(self._session.serialize(nudge))
                while await sub.poll(200):
                    if _parent_id(self._session, await sub.recv_multipart()) in sent:
                        return
            log.warning("relay: the kernel's output did not reach the login side within %gs", IOPUB_WAIT)
        finally:
            sub.close(linger=0)

    def _nudge(self) -> list[bytes]:
        return self._session.serialize(self._session.msg("execute_request", NUDGE))

    async def _to_frontend(self) -> None:
        while True:
            frames = await self._kernel.recv_multipart()
            if frames and frames[0] != DELIM:   # no routing prefix: a reply to a nudge
                with contextlib.suppress(zmq.ZMQError):
                    await self._frontend.send_multipart(frames)


def _parent_id(session: Session, frames: list[bytes]) -> str | None:
    """The msg_id of the request a published message answers (None if it does not verify)."""
    try:
        _, parts = session.feed_identities(frames)
        return session.deserialize(parts, content=False)["parent_header"].get("msg_id")
    except Exception:  # noqa: BLE001 - not ours to judge: the kernel's other subscribers see it too
        return None
