"""Transport direct on the test cluster: no SSH anywhere, CurveZMQ on every socket that listens.

The lifecycle suite (interrupt, restart, shutdown, poll, the dead-man switch) runs over both
transports in test_kernel.py and test_failures.py (fixture ``transport``); these are what only
the direct transport has to prove: a user whose nodes refuse SSH runs kernels, other users
reach nothing on any port, and the wire carries no clear text.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import secrets
import signal
import subprocess
import sys
import tempfile
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from kernel_helpers import remote, run_cell, until, value_of
from proc_helpers import tcp_listeners
from remote_kernels.direct import key_dir
from site_helpers import VENV_BIN, UserSpecs, as_user

CHECK = str(VENV_BIN / "remote-kernels")
OTHER_USER = "rkuser"


@pytest.fixture
def specs():
    made = UserSpecs()
    yield made
    made.remove_all()


def _ssh_connections(uid: int) -> list[str]:
    """The login side's TCP connections to an SSH port owned by uid (``ss`` with owners)."""
    out = subprocess.run(["ss", "-Htnae", "dport = :22"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if f"uid:{uid} " in line + " "]


def test_a_direct_kernel_runs_for_a_user_whose_nodes_refuse_ssh(cluster, specs):
    user = cluster["no_ssh_user"]
    uid = pwd.getpwnam(user).pw_uid
    refused = specs.install(user, "rk-nossh-ssh", "--partition", "debug")
    res = as_user(user, CHECK, "check", refused)
    assert res.returncode != 0, "the node's sshd lets this user in: the test cluster is not set up as it must be"
    name = specs.install(user, "rk-nossh-direct", "--partition", "debug", "--transport", "direct")
    seen: list[str] = []
    with ThreadPoolExecutor(1) as pool:
        run = pool.submit(as_user, user, CHECK, "check", name)
        while not run.done():   # every moment of the start, the cell and the shutdown
            seen += _ssh_connections(uid)
        res = run.result()
    assert res.returncode == 0, res.stdout[-1500:] + res.stderr[-1500:]
    assert "Kernel ran on node c" in res.stdout
    assert seen == []


# Run as another user: connect to every port given, with plain ZMQ sockets of every kind a
# client uses; send execute requests signed with the kernel's HMAC key (which this user is
# given, so only CurveZMQ stands in the way) and heartbeats; count whatever arrives.
ATTACKER = textwrap.dedent("""
    import json, sys, time, zmq
    from jupyter_client.session import Session
    host, ports, key, marker = sys.argv[1], json.loads(sys.argv[2]), open(sys.argv[3]).read(), sys.argv[4]
    ctx, socks = zmq.Context(), []
    session = Session(key=key.encode())
    for port in ports:
        for kind in (zmq.SUB, zmq.DEALER, zmq.REQ):
            s = ctx.socket(kind)
            s.linger = 0
            if kind == zmq.SUB:
                s.subscribe(b"")
            s.connect(f"tcp://{host}:{port}")
            socks.append(s)
            if kind == zmq.DEALER:
                s.send_multipart(session.serialize(session.msg("execute_request", {
                    "code": f"open({marker!r}, 'w').close()", "silent": False})))
                s.send(b'{"op": "shutdown"}')
            if kind == zmq.REQ:
                s.send(b"ping")
    received, deadline = 0, time.monotonic() + float(sys.argv[5])
    poller = zmq.Poller()
    for s in socks:
        poller.register(s, zmq.POLLIN)
    while time.monotonic() < deadline:
        for s, _ in poller.poll(100):
            s.recv_multipart()
            received += 1
    ctx.destroy(linger=0)   # not at exit: a context left open may block the interpreter's exit
    print(json.dumps({"received": received}))
""")


@pytest.mark.parametrize("where", ["login", "node"])
async def test_other_users_on_every_port_get_nothing_and_run_nothing(start_kernel, where, tmp_path):
    km, kc = await start_kernel("rk-direct")
    session = await remote(km)
    node_info = json.loads((Path(session["node_dir"]) / "kernel.json").read_text())
    endpoint = json.loads((key_dir(session["session_id"]) / "endpoint.json").read_text())["endpoint"]
    host, launcher_port = endpoint[len("tcp://"):].rsplit(":", 1)
    ports = sorted([int(launcher_port)] + [node_info[ch] for ch in ("shell_port", "iopub_port", "stdin_port",
                                                                    "control_port", "hb_port")])
    # Every TCP port the kernel and the launcher listen on is one the other user tries.
    assert tcp_listeners([session["kernel_pid"], session["launcher_pid"]]) == ports
    assert host == node_info["ip"] != "127.0.0.1"

    other = pwd.getpwnam(OTHER_USER)
    given = Path(tempfile.mkdtemp(prefix="rk-other-"))
    os.chown(given, other.pw_uid, other.pw_gid)
    key_file = given / "key"
    key_file.write_text(node_info["key"])
    os.chown(key_file, other.pw_uid, other.pw_gid)
    marker = given / f"executed-{secrets.token_hex(4)}"
    script = given / "attacker.py"
    script.write_text(ATTACKER)
    os.chmod(script, 0o644)
    try:
        loop = asyncio.get_running_loop()
        attack = loop.run_in_executor(None, lambda: as_user(
            OTHER_USER, sys.executable, str(script), host, json.dumps(ports), str(key_file), str(marker), "6",
            netns=session["node"] if where == "node" else None, timeout=60))
        printed = 0
        while not attack.done():   # the owner's kernel talks all the while
            content, out = await run_cell(kc, "print('rk-owner-output')")
            assert content["status"] == "ok"
            printed += out.count("rk-owner-output")
        res = await attack
        assert res.returncode == 0, res.stderr[-1500:]
        assert json.loads(res.stdout.strip().splitlines()[-1]) == {"received": 0}
        assert printed > 0 and not marker.exists()
        assert await value_of(kc, "'still mine'") == "still mine"
    finally:
        subprocess.run(["rm", "-rf", str(given)])


def _capture(cluster, path: Path) -> subprocess.Popen:
    """tcpdump on the cluster's bridge, writing every packet whole to path; returns once it listens."""
    proc = subprocess.Popen(["tcpdump", "--immediate-mode", "-i", cluster["bridge"], "-U", "-s", "0", "-w", str(path),
                             "tcp"],
                            stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    assert "listening on" in line, line
    return proc


async def test_a_capture_on_the_bridge_never_holds_a_printed_marker(cluster, start_kernel, tmp_path):
    km, kc = await start_kernel("rk-direct")
    marker = f"rk-marker-{secrets.token_hex(8)}"
    pcap = tmp_path / "bridge.pcap"
    capture = _capture(cluster, pcap)
    try:
        content, out = await run_cell(kc, f"for _ in range(200): print({marker[:8]!r} + {marker[8:]!r})")
        assert content["status"] == "ok" and out.count(marker) == 200
        await until("the capture to hold the cell's traffic", lambda: pcap.stat().st_size > 200 * len(marker))
    finally:
        capture.send_signal(signal.SIGINT)
        _, err = capture.communicate(timeout=20)
    captured = int(next(line.split()[0] for line in err.splitlines() if "packets captured" in line))
    data = pcap.read_bytes()
    assert captured > 0 and len(data) > 200 * len(marker), err   # the output crossed the bridge
    assert marker.encode() not in data


async def test_frontends_connect_to_the_kernel_on_the_node_and_nothing_relays_on_the_login_side(start_kernel):
    """jupyter_client is given the kernel's node endpoints and Curve keys: the connection
    file names the node's address and the ports the kernel listens on there, nothing is bound
    in the login directory and no relay thread runs; a restart in the same job keeps them."""
    import threading

    km, kc = await start_kernel("rk-direct")
    session = await remote(km)
    node_info = json.loads((Path(session["node_dir"]) / "kernel.json").read_text())
    written = json.loads(Path(km.connection_file).read_text())
    channels = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
    assert written["transport"] == "tcp" and written["ip"] == node_info["ip"] != "127.0.0.1"
    assert {ch: written[ch] for ch in channels} == {ch: node_info[ch] for ch in channels}
    assert written["curve_publickey"] == node_info["curve_publickey"]
    assert session["frontends"] == "node"
    assert os.listdir(session["login_dir"]) == []
    assert [t.name for t in threading.enumerate() if t.name.startswith("rk-relay")] == []
    assert await value_of(kc, "__import__('socket').gethostname()") == session["node"]
    await km.restart_kernel()
    await kc.wait_for_ready(timeout=60)
    assert json.loads(Path(km.connection_file).read_text()) == written
    assert (await remote(km))["job_id"] == session["job_id"]
    assert await value_of(kc, "'same client'") == "same client"
