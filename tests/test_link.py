"""NodeLink's recovery after a drop, over fake SSH connections to a fake launcher (no cluster).

The fake connection's unix channels are local unix connections; a fake network decides
when a connection attempt gets through, the way TCP does: an attempt made while the node
is unreachable gets through only if one of its SYNs (sent 0, 1, 3, 7, 15 s after it
began) goes out once the node is back, before the attempt's timeout.  The real link over
a real outage: tests/test_failures.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import tempfile
from pathlib import Path

import pytest

from remote_kernels import link as link_module
from remote_kernels.control import SILENT_BEATS
from remote_kernels.link import NodeLink, attempt_timeout, heartbeat
from remote_kernels.options import KernelOptions
from remote_kernels.ssh import CONNECT_TIMEOUT, NodeConnection, NodeConnections

DEADLINE = 30   # s: the most any awaited condition may take before the test fails
SYN_TIMES = (0, 1, 3, 7, 15, 31)   # s after a connect began: Linux's SYN and its resends


class FakeSSH:
    """What the link uses of an asyncssh connection."""

    def __init__(self):
        self.aborted = False
        self._closed = asyncio.Event()

    async def open_unix_connection(self, path: str):
        return await asyncio.open_unix_connection(path)

    def is_closed(self) -> bool:
        return self._closed.is_set()

    def abort(self) -> None:
        self.aborted = True
        self._closed.set()

    def close(self) -> None:
        self._closed.set()

    async def wait_closed(self) -> None:
        await self._closed.wait()


class Network:
    """The node's reachability for connection attempts (NodeConnections._open's stand-in)."""

    def __init__(self):
        self.up = False
        self.timeouts: list[float] = []   # each attempt's timeout, in order

    async def open(self, host: str, timeout: float, interactive: bool, tunnel) -> NodeConnection:
        loop = asyncio.get_running_loop()
        began = loop.time()
        self.timeouts.append(timeout)
        for at in SYN_TIMES:
            if at >= timeout:
                break
            await asyncio.sleep(max(0.0, began + at - loop.time()))
            if self.up:
                return NodeConnection(host, FakeSSH(), None)
        await asyncio.sleep(max(0.0, began + timeout - loop.time()))
        raise asyncio.TimeoutError()


async def answer_as_launcher(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """hello and ping, as the launcher answers them."""
    while line := await reader.readline():
        req = json.loads(line)
        reply = {"event": "hello", "kernel": 7} if req["op"] == "hello" else {"event": "pong"}
        writer.write((json.dumps(dict(reply, id=req["id"])) + "\n").encode())


@pytest.fixture
async def node_dir():
    """A directory whose ``ctl`` socket answers as a launcher."""
    base = Path(tempfile.mkdtemp(prefix="rk-l", dir="/tmp"))   # unix socket paths must stay short
    server = await asyncio.start_unix_server(answer_as_launcher, str(base / "ctl"))
    yield base
    server.close()
    shutil.rmtree(base, ignore_errors=True)


async def test_reconnecting_tries_afresh_while_the_node_is_unreachable_and_gets_through_once_it_is_back(
        node_dir, monkeypatch):
    """One long attempt would wait for TCP's next SYN resend (up to 16 s late after a long
    outage); short attempts one after another are always about to send a fresh SYN.  The
    silent old connection is aborted, not closed politely over a link that carries nothing."""
    monkeypatch.setattr(link_module, "RECONNECT_ATTEMPT", 0.5)   # short values: the mechanism, quickly
    network = Network()
    monkeypatch.setattr(NodeConnections, "_open", staticmethod(network.open))
    link = NodeLink(KernelOptions(grace=120, environ={}), node="c1", job_id="42", node_dir=str(node_dir),
                    via=None, on_event=lambda msg: None, log=logging.getLogger("test_link"))
    old = link.conn = NodeConnection("c1", FakeSSH(), None)
    reconnect = asyncio.ensure_future(link.reconnect(lambda: False))
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE
        while len(network.timeouts) < 3:
            assert loop.time() < deadline, f"attempts made while the node was unreachable: {network.timeouts}"
            assert not reconnect.done(), reconnect.result()
            await asyncio.sleep(0.05)
        network.up = True
        assert await asyncio.wait_for(reconnect, DEADLINE) is True
        assert old.conn.aborted
        assert link.hello["event"] == "hello" and link.usable and link.reconnects == 1
        assert set(network.timeouts) == {0.5}
    finally:
        reconnect.cancel()
        await link.close()


def test_a_slow_first_connection_gets_longer_reconnect_attempts():
    assert attempt_timeout(0.2) == link_module.RECONNECT_ATTEMPT
    assert attempt_timeout(3.0) == 9.0
    assert attempt_timeout(600.0) == CONNECT_TIMEOUT


@pytest.mark.parametrize("grace", [1, 2, 3, 6, 10, 30, 120, 300, 3600])
def test_pings_keep_the_dead_man_away_and_silence_is_noticed_within_seconds(grace):
    beat = heartbeat(grace)
    assert beat <= grace / 2   # a healthy link never trips the launcher's dead-man switch
    # The channel is declared silent SILENT_BEATS to SILENT_BEATS + 1 beats after the last word,
    # so reconnect attempts are under way early in an outage, whatever grace.
    assert (SILENT_BEATS + 1) * beat <= 8.0
