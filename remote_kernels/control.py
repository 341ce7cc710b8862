"""The login side's control channel to one launcher: JSON-line requests matched to replies by id.

The node link opens the stream (asyncssh ``open_unix_connection`` to the launcher's ``ctl``
socket, ``encoding=None``) and wraps it::

    client = LauncherClient(reader, writer, on_event=..., heartbeat=30, what="the launcher of job 42 on c1")
    client.start()                                   # on the loop that owns the stream
    info = await client.request({"op": "hello"}, timeout=30)
    ...
    client.close()

The protocol is the one in launcher.py's docstring.  Every inbound line is a sign of life.
The channel ends, for good, on EOF, a read or write error, an unparsable line (a garbled
stream cannot be trusted), ``close()``, or when nothing at all has arrived since the last
SILENT_BEATS pings, a heartbeat apart (``silent``: a half-open link, noticed within four
heartbeats).  A channel never reopens: make a new client.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from typing import Callable

log = logging.getLogger(__name__)

SILENT_BEATS = 3   # pings unanswered (nothing inbound since) before the link counts as half-open


class LauncherLost(Exception):
    """The control channel failed or the launcher did not answer; str() is one line naming which."""


class LauncherClient:
    """One control channel.  All methods run on the loop that called ``start()``."""

    def __init__(self, reader, writer, *, on_event: Callable[[dict], None], heartbeat: float, what: str):
        """reader: ``await reader.readline()`` -> bytes (b"" at EOF); writer: write(bytes), close().
        on_event(msg) is called for each message without an id (e.g. ``{"event": "exited"}``);
        heartbeat: seconds between pings (0: none, and no silence check); what: names the
        launcher in messages."""
        self._reader, self._writer = reader, writer
        self._on_event = on_event
        self._heartbeat = heartbeat
        self.what = what
        self.silent = False
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self._tasks: list[asyncio.Task] = []
        self._ended: str | None = None   # why the channel ended
        self._closed: asyncio.Event | None = None
        self._last_heard = time.monotonic()
        self._inbound = 0   # lines received

    def start(self) -> None:
        """Start the reader task and (heartbeat > 0) the heartbeat task on the running loop."""
        loop = asyncio.get_running_loop()
        if self._ended is not None:
            return
        self._last_heard = time.monotonic()
        self._tasks.append(loop.create_task(self._read()))
        if self._heartbeat > 0:
            self._tasks.append(loop.create_task(self._beat()))

    @property
    def open(self) -> bool:
        return self._ended is None

    async def request(self, msg: dict, timeout: float) -> dict:
        """Send msg with a fresh "id"; the reply with that id.

        Raises LauncherLost if the channel is closed or ends meanwhile, or no reply comes
        within timeout (the channel stays open then: a late reply is dropped)."""
        op = msg.get("op")
        if self._ended is not None:
            raise LauncherLost(self._lost())
        req_id = next(self._ids)
        self._send(dict(msg, id=req_id))   # no await before the future is registered: no reply is missed
        fut = self._pending[req_id] = asyncio.get_running_loop().create_future()
        try:
            return await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise LauncherLost(f"{self.what} did not answer {op!r} within {timeout:g}s") from None
        finally:
            self._pending.pop(req_id, None)

    async def wait_closed(self) -> None:
        """Return once the channel has ended, for any reason."""
        if self._closed is None:   # made on first use: on Python 3.9 an Event binds to a loop
            self._closed = asyncio.Event()
            if self._ended is not None:
                self._closed.set()
        await self._closed.wait()

    def close(self) -> None:
        """End the channel (idempotent): stop both tasks, close the writer, fail pending requests."""
        self._end("the channel was closed")

    # --- inside ----------------------------------------------------------------
    def _lost(self) -> str:
        return f"lost {self.what} ({self._ended})"

    def _end(self, why: str) -> None:
        if self._ended is not None:
            return
        self._ended = why
        log.debug("control channel to %s ended: %s", self.what, why)
        current = asyncio.current_task() if self._tasks else None
        for task in self._tasks:
            if task is not current:
                task.cancel()
        try:
            self._writer.close()
        except Exception as e:   # the transport is already gone: nothing more to release
            log.debug("closing the control channel to %s: %r", self.what, e)
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(LauncherLost(self._lost()))
        self._pending.clear()
        if self._closed is not None:
            self._closed.set()

    def _send(self, msg: dict) -> None:
        try:
            self._writer.write((json.dumps(msg) + "\n").encode())
        except Exception as e:   # any writer's error (OSError, asyncssh's, a closed transport's)
            self._end(f"cannot write: {e!r}")
            raise LauncherLost(self._lost()) from None

    async def _read(self) -> None:
        while True:
            try:
                line = await self._reader.readline()
            except Exception as e:   # any reader's error: the stream is broken
                self._end(f"cannot read: {e!r}")
                return
            if not line:
                self._end("the launcher closed the channel")
                return
            self._last_heard = time.monotonic()
            self._inbound += 1
            try:
                msg = json.loads(line)
                if not isinstance(msg, dict):
                    raise ValueError("not a JSON object")
            except ValueError:
                self._end(f"unparsable line from the launcher: {line[:80]!r}")
                return
            self._deliver(msg)
            if self._ended is not None:   # on_event closed the channel
                return

    def _deliver(self, msg: dict) -> None:
        if "id" in msg:
            fut = self._pending.get(msg["id"]) if isinstance(msg["id"], int) else None
            if fut is not None and not fut.done():
                fut.set_result(msg)
            # else: a pong, or the reply to a request that timed out
            return
        try:
            self._on_event(msg)
        except Exception:
            log.exception("handling %r from %s", msg, self.what)

    async def _beat(self) -> None:
        unanswered, seen = 0, self._inbound
        while True:
            await asyncio.sleep(self._heartbeat)
            if self._inbound != seen:
                unanswered, seen = 0, self._inbound
            elif unanswered >= SILENT_BEATS:
                self.silent = True
                self._end(f"nothing arrived for {time.monotonic() - self._last_heard:.0f}s")
                return
            try:
                self._send({"op": "ping", "id": next(self._ids)})
            except LauncherLost:
                return
            unanswered += 1
