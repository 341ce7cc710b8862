"""Provisional control-channel client (replaced by the ctl branch's full version)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Callable

log = logging.getLogger(__name__)


class LauncherLost(Exception):
    """The control channel failed or the launcher did not answer."""


class LauncherClient:
    def __init__(self, reader, writer, *, on_event: Callable[[dict], None], heartbeat: float, what: str):
        self.reader, self.writer, self.on_event, self.heartbeat, self.what = reader, writer, on_event, heartbeat, what
        self._pending: dict[int, asyncio.Future] = {}
        self._next = 0
        self._tasks: list[asyncio.Task] = []
        self._closed = asyncio.Event()
        self.silent = False
        self._last = time.monotonic()

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._read())]
        if self.heartbeat:
            self._tasks.append(loop.create_task(self._beat()))

    @property
    def open(self) -> bool:
        return not self._closed.is_set()

    async def _read(self) -> None:
        try:
            while True:
                line = await self.reader.readline()
                if not line:
                    break
                self._last = time.monotonic()
                msg = json.loads(line)
                fut = self._pending.pop(msg.get("id"), None) if "id" in msg else None
                if fut is not None:
                    if not fut.done():
                        fut.set_result(msg)
                elif "event" in msg and msg["event"] != "pong":
                    try:
                        self.on_event(msg)
                    except Exception:  # noqa: BLE001
                        log.exception("control event handler failed")
        except (OSError, ValueError, Exception):  # noqa: BLE001
            pass
        finally:
            self._end()

    async def _beat(self) -> None:
        while self.open:
            await asyncio.sleep(self.heartbeat)
            if time.monotonic() - self._last > 3 * self.heartbeat:
                self.silent = True
                self._end()
                return
            try:
                self._send({"op": "ping"})
            except Exception:  # noqa: BLE001
                self._end()
                return

    def _send(self, msg: dict) -> None:
        self._next += 1
        self.writer.write((json.dumps(dict(msg, id=self._next)) + "\n").encode())
        return self._next

    async def request(self, msg: dict, timeout: float) -> dict:
        if not self.open:
            raise LauncherLost(f"lost {self.what}")
        fut = asyncio.get_running_loop().create_future()
        try:
            req_id = self._send(msg)
        except Exception as e:  # noqa: BLE001
            self._end()
            raise LauncherLost(f"lost {self.what}: {e}") from None
        self._pending[req_id] = fut
        try:
            return await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise LauncherLost(f"{self.what} did not answer {msg['op']!r} within {timeout:g}s") from None
        finally:
            self._pending.pop(req_id, None)

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def _end(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(LauncherLost(f"lost {self.what}"))
        self._pending.clear()
        try:
            self.writer.close()
        except Exception:  # noqa: BLE001
            pass

    def close(self) -> None:
        current = asyncio.current_task() if asyncio.get_event_loop().is_running() else None
        for t in self._tasks:
            if t is not current:
                t.cancel()
        self._end()
