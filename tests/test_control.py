"""LauncherClient against fake launchers: asyncio unix servers in this process that misbehave
on purpose (the real launcher's side is in test_launcher.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import tempfile
from pathlib import Path

import pytest

from remote_kernels.control import SILENT_BEATS, LauncherClient, LauncherLost

DEADLINE = 30   # s: the most any awaited condition may take before the test fails
WHAT = "the fake launcher"


async def read_request(reader: asyncio.StreamReader) -> dict:
    return json.loads(await asyncio.wait_for(reader.readline(), DEADLINE))


def send(writer: asyncio.StreamWriter, msg: dict) -> None:
    writer.write((json.dumps(msg) + "\n").encode())


@pytest.fixture
async def connect():
    """connect(serve, heartbeat=0, on_event=None) -> LauncherClient, started, talking to a
    fake launcher that runs ``await serve(reader, writer)`` for the connection."""
    base = Path(tempfile.mkdtemp(prefix="rk-c", dir="/tmp"))
    servers, clients = [], []

    async def make(serve, heartbeat: float = 0, on_event=None) -> LauncherClient:
        path = str(base / f"ctl{len(servers)}")
        servers.append(await asyncio.start_unix_server(serve, path))
        reader, writer = await asyncio.open_unix_connection(path)
        client = LauncherClient(reader, writer, on_event=on_event or (lambda msg: None),
                                heartbeat=heartbeat, what=WHAT)
        client.start()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
    for server in servers:
        server.close()
    shutil.rmtree(base, ignore_errors=True)


async def test_replies_are_matched_to_requests_by_id_in_any_order(connect):
    async def reverse(reader, writer):
        reqs = [await read_request(reader) for _ in range(3)]
        for req in reversed(reqs):
            send(writer, {"event": "echo", "op": req["op"], "id": req["id"]})

    client = await connect(reverse)
    replies = await asyncio.gather(*(client.request({"op": op}, DEADLINE) for op in ("a", "b", "c")))
    assert [r["op"] for r in replies] == ["a", "b", "c"]
    assert len({r["id"] for r in replies}) == 3


async def test_no_reply_within_the_timeout_names_the_launcher_and_op(connect):
    late = asyncio.Event()

    async def answer_late(reader, writer):
        req = await read_request(reader)
        await late.wait()
        send(writer, {"event": "started", "id": req["id"]})
        send(writer, {"event": "pong", "id": (await read_request(reader))["id"]})

    client = await connect(answer_late)
    with pytest.raises(LauncherLost) as lost:
        await client.request({"op": "start"}, 0.05)
    assert str(lost.value) == "the fake launcher did not answer 'start' within 0.05s"
    late.set()   # the late reply is dropped; the channel goes on
    assert (await client.request({"op": "ping"}, DEADLINE))["event"] == "pong"
    assert client.open


async def test_eof_fails_the_pending_request_and_every_later_one(connect):
    async def hang_up(reader, writer):
        await read_request(reader)
        writer.close()

    client = await connect(hang_up)
    with pytest.raises(LauncherLost, match=r"^lost the fake launcher \(the launcher closed the channel\)$"):
        await client.request({"op": "hello"}, DEADLINE)
    await asyncio.wait_for(client.wait_closed(), DEADLINE)
    assert not client.open and not client.silent
    with pytest.raises(LauncherLost, match="^lost the fake launcher"):
        await client.request({"op": "hello"}, DEADLINE)


async def test_a_launcher_that_never_answers_is_silent(connect):
    """A half-open link: requests go out, nothing comes back, no EOF ever arrives."""
    pings = []
    eof = asyncio.Event()

    async def mute(reader, writer):
        while line := await reader.readline():
            pings.append(json.loads(line))
        eof.set()

    client = await connect(mute, heartbeat=0.05)
    pending = asyncio.ensure_future(client.request({"op": "start"}, DEADLINE))
    await asyncio.wait_for(client.wait_closed(), DEADLINE)
    assert client.silent and not client.open
    with pytest.raises(LauncherLost, match=r"^lost the fake launcher \(nothing arrived for \d+s\)$"):
        await pending
    await asyncio.wait_for(eof.wait(), DEADLINE)
    assert [p["op"] for p in pings] == ["start"] + ["ping"] * SILENT_BEATS


async def test_a_launcher_that_answers_pings_keeps_the_channel(connect):
    pings = 0
    enough = asyncio.Event()

    async def pong(reader, writer):
        nonlocal pings
        while line := await reader.readline():
            req = json.loads(line)
            send(writer, {"event": "pong", "id": req["id"]})
            pings += 1
            if pings == 4 * SILENT_BEATS:
                enough.set()

    client = await connect(pong, heartbeat=0.02)
    await asyncio.wait_for(enough.wait(), DEADLINE)
    assert client.open and not client.silent


async def test_unsolicited_messages_reach_on_event_and_its_errors_do_not_end_the_channel(connect, caplog):
    events = []

    def on_event(msg):
        events.append(msg)
        if len(events) == 1:
            raise RuntimeError("handler bug")

    async def tell(reader, writer):
        send(writer, {"event": "exited", "code": 3})
        send(writer, {"event": "exited", "code": 4})
        req = await read_request(reader)
        send(writer, {"event": "pong", "id": req["id"]})

    caplog.set_level(logging.ERROR, logger="remote_kernels.control")
    client = await connect(tell, on_event=on_event)
    assert (await client.request({"op": "ping"}, DEADLINE))["event"] == "pong"
    assert events == [{"event": "exited", "code": 3}, {"event": "exited", "code": 4}]
    assert client.open
    assert [str(r.exc_info[1]) for r in caplog.records if r.exc_info] == ["handler bug"]


@pytest.mark.parametrize("garbage", [b"not json\n", b"[1]\n"])
async def test_an_unparsable_line_ends_the_channel(connect, garbage):
    async def garble(reader, writer):
        await read_request(reader)
        writer.write(garbage)

    client = await connect(garble)
    with pytest.raises(LauncherLost, match=r"^lost the fake launcher \(unparsable line from the launcher"):
        await client.request({"op": "hello"}, DEADLINE)
    assert not client.open


async def test_close_is_idempotent_fails_pending_requests_and_closes_the_stream(connect):
    saw_eof = asyncio.Event()
    got_request = asyncio.Event()

    async def wait_for_eof(reader, writer):
        await read_request(reader)
        got_request.set()
        if await reader.readline() == b"":
            saw_eof.set()

    client = await connect(wait_for_eof)
    pending = asyncio.ensure_future(client.request({"op": "start"}, DEADLINE))
    await asyncio.wait_for(got_request.wait(), DEADLINE)
    client.close()
    client.close()
    with pytest.raises(LauncherLost, match=r"^lost the fake launcher \(the channel was closed\)$"):
        await pending
    await asyncio.wait_for(client.wait_closed(), DEADLINE)
    await asyncio.wait_for(saw_eof.wait(), DEADLINE)
    assert not client.open and not client.silent


class BrokenWriter:
    """A writer whose transport has gone (asyncssh raises so on a closed channel)."""

    closed = False

    def write(self, data: bytes) -> None:
        raise BrokenPipeError("channel closed")

    def close(self) -> None:
        self.closed = True


async def test_a_write_error_ends_the_channel():
    writer = BrokenWriter()
    client = LauncherClient(asyncio.StreamReader(), writer, on_event=lambda msg: None, heartbeat=0, what=WHAT)
    client.start()
    with pytest.raises(LauncherLost, match=r"^lost the fake launcher \(cannot write: BrokenPipeError"):
        await client.request({"op": "hello"}, DEADLINE)
    assert not client.open and writer.closed
    await asyncio.wait_for(client.wait_closed(), DEADLINE)
