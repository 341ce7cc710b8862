"""The queued-kernel stand-in, spoken to by jupyter_client's own client over real ZMQ sockets."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest
import zmq
import zmq.asyncio
from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.session import Session

from remote_kernels.launcher import CHANNELS
from remote_kernels.standin import QueuedKernelStandIn

KEY = b"a-test-key-0123456789"


@pytest.fixture
def info(tmp_path) -> dict:
    tmp_path.chmod(0o700)
    ports = dict(zip(CHANNELS, range(1, 6)))
    return {"transport": "ipc", "ip": str(tmp_path / "k"), "key": KEY, "signature_scheme": "hmac-sha256", **ports}


def client_for(info: dict, key: bytes = KEY) -> AsyncKernelClient:
    kc = AsyncKernelClient(session=Session(key=key))
    kc.load_connection_info({k: v for k, v in info.items() if k != "key"})
    kc.start_channels()
    return kc


async def test_answers_in_the_kernels_place_until_closed(info):
    standin = QueuedKernelStandIn(info, lambda: "slurm job 42 is queued (Priority)")
    standin.start()
    kc = client_for(info)
    try:
        await kc.wait_for_ready(timeout=10)   # a kernel_info round trip on shell and iopub
        reply = await kc.kernel_info(reply=True, timeout=5)
        assert reply["content"]["language_info"]["name"] == "python"
        assert "job 42 is queued" in reply["content"]["banner"]

        msg_id = kc.execute("print('must not run')")
        reply = await kc._async_get_shell_msg(timeout=5)
        assert reply["parent_header"]["msg_id"] == msg_id
        assert reply["content"]["status"] == "error"
        assert reply["content"]["ename"] == "KernelNotStarted"
        assert reply["content"]["evalue"] == "this cell did not run: slurm job 42 is queued (Priority)"
        published = []
        while not published or published[-1] != ("status", "idle"):
            msg = await kc._async_get_iopub_msg(timeout=5)
            if msg["parent_header"].get("msg_id") == msg_id:
                state = msg["content"].get("execution_state")
                published.append((msg["msg_type"], state) if state else (msg["msg_type"], None))
        assert published == [("status", "busy"), ("error", None), ("status", "idle")]

        reply = await kc.comm_info(reply=True, timeout=5)
        assert reply["content"] == {"status": "ok", "comms": {}}
    finally:
        kc.stop_channels()
        standin.close()
    assert not any(Path(f"{info['ip']}-{n}").exists() for n in CHANNELS.values()), "ipc files left"


async def test_forged_malformed_and_non_request_messages_get_no_answer(info):
    """A request signed with another key, a malformed message and a message that is no request,
    then a real request, all on one socket: the stand-in reads them in order, so an answer to
    any of the first three would come before the real request's, which must come first."""
    standin = QueuedKernelStandIn(info, lambda: "job 1 is queued")
    standin.start()
    ctx = zmq.asyncio.Context()
    raw = ctx.socket(zmq.DEALER)
    raw.connect(f"ipc://{info['ip']}-{CHANNELS['shell_port']}")
    signed, forger = Session(key=KEY), Session(key=b"not-the-key")
    real = signed.msg("kernel_info_request", {})
    try:
        await raw.send_multipart(forger.serialize(forger.msg("kernel_info_request", {})))
        await raw.send_multipart([b"no delimiter", b"{}"])
        await raw.send_multipart(signed.serialize(signed.msg("comm_msg", {"comm_id": "x", "data": {}})))
        await raw.send_multipart(signed.serialize(real))
        _, frames = signed.feed_identities(await asyncio.wait_for(raw.recv_multipart(), 10))
        reply = signed.deserialize(frames)
        assert (reply["msg_type"], reply["parent_header"]["msg_id"]) == ("kernel_info_reply", real["header"]["msg_id"])
        assert reply["content"]["status"] == "ok"
    finally:
        raw.close(linger=0)
        ctx.term()
        standin.close()


async def test_sockets_are_owner_only(info):
    standin = QueuedKernelStandIn(info, lambda: "job 1 is queued")
    standin.start()
    try:
        for n in CHANNELS.values():
            assert os.stat(f"{info['ip']}-{n}").st_mode & 0o077 == 0
    finally:
        standin.close()


def _free_tcp_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


async def test_a_taken_endpoint_fails_the_start_and_releases_the_others():
    ports = dict(zip(CHANNELS, _free_tcp_ports(5)))
    info = {"transport": "tcp", "ip": "127.0.0.1", "key": KEY, **ports}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ports["hb_port"]))   # the last one bound
        taken.listen()
        with pytest.raises(zmq.ZMQError):
            QueuedKernelStandIn(info, lambda: "").start()
    for channel in ("shell_port", "iopub_port", "stdin_port", "control_port"):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", ports[channel]))
