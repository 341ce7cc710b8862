"""The queued-kernel stand-in, spoken to by jupyter_client's own client over real ZMQ sockets."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from pathlib import Path

import pytest
import zmq
import zmq.asyncio
from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.session import Session

from remote_kernels import curve
from remote_kernels.launcher import CHANNELS
from remote_kernels.standin import QueuedKernelStandIn

KEY = b"a-test-key-0123456789"


def make_info(tmp_path: Path, encrypted: bool) -> dict:
    """A kernel's connection info in tmp_path; ``encrypted``: with a Curve keypair
    (transport_encryption), which the stand-in and the relay then speak, as the kernel does."""
    tmp_path.chmod(0o700)
    ports = dict(zip(CHANNELS, range(1, 6)))
    info = {"transport": "ipc", "ip": str(tmp_path / "k"), "key": KEY, "signature_scheme": "hmac-sha256", **ports}
    if encrypted:
        public, secret = zmq.curve_keypair()
        info.update(curve_publickey=public.decode(), curve_secretkey=secret.decode())
    return info


@pytest.fixture(params=["plain", "curve"])
def info(request, tmp_path) -> dict:
    return make_info(tmp_path, request.param == "curve")


def client_for(info: dict, key: bytes = KEY) -> AsyncKernelClient:
    kc = AsyncKernelClient(session=Session(key=key))
    kc.load_connection_info({k: v for k, v in info.items() if k != "key"})
    kc.start_channels()
    return kc


@contextlib.asynccontextmanager
async def holding_standin(info: dict):
    """A holding stand-in and a client that has made its kernel_info round trip with it."""
    standin = QueuedKernelStandIn(info, lambda: "job 42 is queued")
    standin.start()
    kc = client_for(info)
    try:
        await kc.wait_for_ready(timeout=10)
        yield standin, kc
    finally:
        kc.stop_channels()
        standin.close()


async def iopub_of(kc, msg_id: str, until_state: str = "idle", timeout: float = 10) -> list[tuple]:
    """(msg_type, execution_state or None) of the iopub messages parented by msg_id, up to a
    status of until_state."""
    published = []
    while not published or published[-1] != ("status", until_state):
        msg = await kc._async_get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") == msg_id:
            published.append((msg["msg_type"], msg["content"].get("execution_state")))
    return published


async def test_a_holding_stand_in_answers_kernel_info_keeps_cells_and_never_says_idle(info):
    standin = QueuedKernelStandIn(info, lambda: "slurm job 42 is queued (Priority)")
    standin.start()
    kc = client_for(info)
    try:
        await kc.wait_for_ready(timeout=10)   # a kernel_info round trip on shell and iopub
        reply = await kc.kernel_info(reply=True, timeout=5)
        assert reply["content"]["language_info"]["name"] == "python"
        assert "job 42 is queued" in reply["content"]["banner"]
        status = await kc._async_get_iopub_msg(timeout=5)
        assert (status["msg_type"], status["content"], status["parent_header"]) == \
            ("status", {"execution_state": "starting"}, {})

        first, second = kc.execute("a = 1"), kc.comm_info()
        await wait_for(lambda: standin.held_kinds[-2:] == ["execute_request", "comm_info_request"])
        # Of one client's kernel_info requests only the last is kept, for the kernel to answer.
        assert standin.held_kinds == ["kernel_info_request", "execute_request", "comm_info_request"]
        request = kc.session.msg("kernel_info_request")
        kc.control_channel.send(request)   # the control channel is answered, and kept nothing
        reply = await kc._async_get_control_msg(timeout=5)
        assert reply["parent_header"]["msg_id"] == request["header"]["msg_id"]
        assert standin.held_kinds == ["kernel_info_request", "execute_request", "comm_info_request"]
        assert not await kc.shell_channel.msg_ready()   # nothing answered the cell
    finally:
        kc.stop_channels()
        standin.close()
    assert not any(Path(f"{info['ip']}-{n}").exists() for n in CHANNELS.values()), "ipc files left"


async def wait_for(condition, timeout: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("where", ["in place", "in a new stand-in"])
async def test_a_failed_start_answers_what_was_kept_and_every_cell_since(info, where):
    """The job ended in the queue (the stand-in fails in place), or the kernel's start failed
    after the hand-over (a new stand-in gets what was kept; its clients reconnect)."""
    async with holding_standin(info) as (holding, kc):
        await _failed_start_answers(info, holding, kc, where)


async def _failed_start_answers(info, holding, kc, where) -> None:
    failed = holding
    try:
        kept = kc.execute("print('must not run')")
        await wait_for(lambda: "execute_request" in holding.held_kinds)
        if where == "in place":
            holding.describe = lambda: "the kernel could not start (no ipykernel)"
            holding.fail()
        else:
            failed = QueuedKernelStandIn(info, lambda: "the kernel could not start (no ipykernel)", hold=False,
                                         held=holding.take_held())
            holding.close()
            failed.start()
        reply = await kc._async_get_shell_msg(timeout=10)
        assert reply["parent_header"]["msg_id"] == kept
        assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "KernelNotStarted"
        assert reply["content"]["evalue"] == "this cell did not run: the kernel could not start (no ipykernel)"
        published = await iopub_of(kc, kept)
        assert published[-1] == ("status", "idle") and ("error", None) in published, published
        if where == "in place":   # no reconnection: all of it arrives
            assert published == [("status", "busy"), ("error", None), ("status", "idle")]
        later = kc.execute("print('must not run either')")
        reply = await kc._async_get_shell_msg(timeout=10)
        assert reply["parent_header"]["msg_id"] == later and reply["content"]["ename"] == "KernelNotStarted"
        reply = await kc.comm_info(reply=True, timeout=5)
        assert reply["content"] == {"status": "ok", "comms": {}}
    finally:
        failed.close()


async def test_the_relay_runs_the_kept_cells_on_the_kernel_in_order_and_nudges_its_status(info, tmp_path):
    """A real local ipykernel takes over the stand-in's endpoints (as the forwards do), its shell
    socket on the relay's path: the cells kept while queued run, in order, their replies reach
    the client that sent them, and the kernel's status reaches the client unasked."""
    async with holding_standin(info) as (standin, kc):
        await _relay_runs_kept_cells(info, tmp_path, standin, kc)


async def _relay_runs_kept_cells(info, tmp_path, standin, kc) -> None:
    from jupyter_client.manager import AsyncKernelManager
    from remote_kernels.relay import ShellRelay
    from remote_kernels.standin import signer, zmq_url

    km = None
    try:
        cells = [kc.execute(code) for code in ("x = 20", "x += 22", "print(x)")]
        await wait_for(lambda: standin.held_kinds.count("execute_request") == 3)
        ctx, shell, held = standin.hand_over()
        relay_path = str(tmp_path / "relay")
        km = AsyncKernelManager(kernel_name="python3", transport="ipc", ip=info["ip"])
        km.session.key = KEY
        if "curve_publickey" in info:   # written into the kernel's connection file
            km.curve_publickey, km.curve_secretkey = info["curve_publickey"].encode(), info["curve_secretkey"].encode()
        km.shell_port, km.iopub_port, km.stdin_port, km.control_port, km.hb_port = \
            6, info["iopub_port"], info["stdin_port"], info["control_port"], info["hb_port"]
        await km.start_kernel()
        os.symlink(f"{info['ip']}-6", relay_path)
        relay = ShellRelay(ctx, shell, held, relay_path, zmq_url(info, "iopub_port"), signer(info), curve.keys(info))
        relay.start()
        try:
            replies = [await kc._async_get_shell_msg(timeout=30) for _ in range(4)]   # the kept kernel_info too
            executed = [r for r in replies if r["msg_type"] == "execute_reply"]
            assert [r["parent_header"]["msg_id"] for r in executed] == cells
            assert all(r["content"]["status"] == "ok" for r in executed)
            printed, nudged = [], False
            while not nudged:   # after the cells' output, a status parented by no request of this client
                msg = await kc._async_get_iopub_msg(timeout=10)
                if msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
                    printed.append((msg["content"]["text"], msg["parent_header"]["msg_id"]))
                nudged = bool(printed) and msg["msg_type"] == "status" and \
                    msg["parent_header"].get("msg_id") not in cells and msg["content"]["execution_state"] == "idle"
            assert printed == [("42\n", cells[2])]
            reply = await kc.execute("x", reply=True, timeout=10)   # new cells go through the relay
            assert reply["content"]["status"] == "ok"
        finally:
            relay.close()
    finally:
        if km is not None:
            await km.shutdown_kernel(now=True)


async def test_forged_malformed_and_non_request_messages_get_no_answer(info):
    """A request signed with another key, a malformed message and a message that is no request,
    then a real request, all on one socket: the stand-in reads them in order, so an answer to
    any of the first three would come before the real request's, which must come first."""
    standin = QueuedKernelStandIn(info, lambda: "job 1 is queued")
    standin.start()
    ctx = zmq.asyncio.Context()
    raw = ctx.socket(zmq.DEALER)
    curve.connect_to(raw, info)
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


async def test_with_curve_keys_a_client_without_them_gets_no_answer_and_hears_nothing(tmp_path):
    """A queued encrypted kernel's stand-in is a Curve server like the kernel: a request signed
    with the right HMAC key but sent without Curve is never answered, and its subscriber hears
    none of what the stand-in publishes for a client that has the keys."""
    info = make_info(tmp_path, encrypted=True)
    standin = QueuedKernelStandIn(info, lambda: "job 1 is queued")
    standin.start()
    ctx = zmq.asyncio.Context()
    raw, sub = ctx.socket(zmq.DEALER), ctx.socket(zmq.SUB)
    sub.subscribe(b"")
    sub.connect(f"ipc://{info['ip']}-{CHANNELS['iopub_port']}")
    raw.connect(f"ipc://{info['ip']}-{CHANNELS['shell_port']}")
    signed = Session(key=KEY)
    kc = client_for(info)
    try:
        await raw.send_multipart(signed.serialize(signed.msg("kernel_info_request", {})))
        await kc.wait_for_ready(timeout=10)   # answered, with status on iopub, for the client with the keys
        reply = await kc.kernel_info(reply=True, timeout=5)
        assert reply["content"]["status"] == "ok"
        assert await raw.poll(500) == 0 and await sub.poll(0) == 0
    finally:
        kc.stop_channels()
        ctx.destroy(linger=0)
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


CLOSE_WHILE_PROBING = """
import asyncio, sys
from remote_kernels.relay import ShellRelay
from remote_kernels.standin import QueuedKernelStandIn, signer, zmq_url

async def main(info, nowhere):
    standin = QueuedKernelStandIn(info, lambda: "job 42 is queued")
    standin.start()
    ctx, shell, held = standin.hand_over()
    relay = ShellRelay(ctx, shell, held, nowhere, zmq_url(info, "iopub_port"), signer(info))
    relay.start()
    while not relay._tasks or relay._tasks[0].done():
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.3)   # inside the probe, which waits for iopub that never comes
    relay.close()              # on the loop, as hosted.py does
    print("closed")

asyncio.run(main(eval(sys.argv[1]), sys.argv[2]))
"""


def test_a_relay_closed_while_it_waits_for_the_kernel_returns_at_once(info, tmp_path):
    """Closed (a restart) before the kernel's output reached it: close() must not wait for the
    subscriber of its cancelled probe (a context's term() would, for ever, on the loop)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", CLOSE_WHILE_PROBING, repr(info), str(tmp_path / "no-kernel")],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and done.stdout.strip() == "closed", done.stderr
