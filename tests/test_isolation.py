"""Other users and bad SSH set-ups: sockets private to their owner, SSH failures named clearly."""

from __future__ import annotations

import asyncio
import queue
import secrets
import subprocess
from pathlib import Path

import pytest
from jupyter_client.manager import AsyncKernelManager

from kernel_helpers import FORKED_PRINT, remote, run_cell, until, value_of
from proc_helpers import tcp_listeners, tree
from site_helpers import VENV_BIN, as_user
from slurm_helpers import jobs_named
from remote_kernels.session import KernelStartError

CONNECT_AS = "import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); print('connected')"


async def test_other_users_cannot_reach_the_kernel(cluster, start_kernel):
    km, kc = await start_kernel()
    other = cluster["test_user"]
    session = await remote(km)
    login_socket = f"{session['login_dir']}/k-2"        # iopub, login side
    node_socket = f"{session['node_dir']}/k-2"                  # iopub, on the node
    assert Path(login_socket).is_socket() and Path(node_socket).is_socket()
    for path in (login_socket, node_socket):
        res = as_user(other, "/usr/bin/python3", "-c", CONNECT_AS, path)
        assert res.returncode != 0 and "PermissionError" in res.stderr, (path, res.stdout, res.stderr)
    for path in (km.connection_file, f"{session['node_dir']}/kernel.json"):
        res = as_user(other, "cat", path)
        assert res.returncode != 0 and "Permission denied" in res.stderr
    # The owner still talks to it.
    assert await value_of(kc, "'mine'") == "mine"


# ``python -c FLOOD MARKER PORT...``: 5,000 ZMQ messages of 10 kB, each starting with MARKER,
# pushed to 127.0.0.1:PORT for each PORT (the reported attack on ipykernel's subprocess pipe).
FLOOD = """
import sys, zmq
ctx = zmq.Context()
for port in sys.argv[2:]:
    push = ctx.socket(zmq.PUSH)
    push.sndtimeo = push.linger = 10000
    push.connect("tcp://127.0.0.1:" + port)
    for _ in range(5000):
        push.send_multipart([sys.argv[1].encode(), b"x" * 10000])
    push.close()
ctx.term()
print("flooded", len(sys.argv) - 2)
"""
QUIET = 3   # s after the flood in which nothing of it may arrive (it did within milliseconds)


async def _iopub_texts(kc) -> list[str]:
    """The content of each iopub message waiting for the owner's client, but status and inputs."""
    texts = []
    while True:
        try:
            msg = await kc.get_iopub_msg(timeout=0.01)
        except queue.Empty:
            return texts
        if msg["msg_type"] not in ("status", "execute_input"):
            texts.append(str(msg["content"]))


async def test_another_user_flooding_the_kernels_tcp_ports_reaches_neither_notebook_nor_log(
        cluster, start_kernel):
    """As the other user on the node: flood every TCP port the launcher's and kernel's
    processes listen on.  The owner's notebook gets nothing of it and the job's log grows by
    less than 1 MB; output of the kernel's forked children (ipykernel's pipe) still arrives."""
    km, kc = await start_kernel()
    session = await remote(km)
    ports = tcp_listeners(tree(session["launcher_pid"]))
    log = Path(session["log_file"])
    before = log.stat().st_size
    await _iopub_texts(kc)
    marker = f"rk-flood-{secrets.token_hex(4)}"
    res = await asyncio.to_thread(as_user, cluster["test_user"], str(VENV_BIN / "python"), "-c", FLOOD,
                                  marker, *map(str, ports), netns=session["node"])
    assert res.returncode == 0 and f"flooded {len(ports)}" in res.stdout, res.stderr[-2000:]
    seen: list[str] = []
    loop = asyncio.get_running_loop()
    quiet_until = loop.time() + QUIET
    while loop.time() < quiet_until and not seen:
        seen += await _iopub_texts(kc)
        await asyncio.sleep(0.1)
    grown = log.stat().st_size - before
    if seen or grown >= 1 << 20:
        pytest.fail(f"the flood of TCP ports {ports} grew the job log by {grown} bytes and reached the notebook "
                    f"{len(seen)} times: {seen[0][:200] if seen else ''}")
    content, out = await run_cell(kc, FORKED_PRINT)
    assert content["status"] == "ok" and out == "printed by a forked child\n", out


def _ssh_home(tmp_path, cluster, *, identity: str, port: int = 22) -> Path:
    """A HOME whose ~/.ssh/config names the identity and port (host keys: the site's files)."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    lines = []
    for node, addr in cluster["nodes"].items():
        lines += [f"Host {node}", f"    HostName {addr}", f"    Port {port}",
                  f"    IdentityFile {identity}", "    IdentitiesOnly yes", ""]
    (home / ".ssh" / "config").write_text("\n".join(lines))
    return home


def _new_key(tmp_path) -> str:
    key = tmp_path / "stranger_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return str(key)


ROOT_KEY = str(Path("~root/.ssh/id_ed25519").expanduser())


# Wrong host keys, other CAs and trust-nothing configurations: tests/test_site.py, as a user.
@pytest.mark.parametrize("case, expected", [
    ("unknown_user_key", "authentication failed"),
    ("nothing_listening", "cannot reach node"),
])
async def test_ssh_failures_are_named_and_leave_no_job(cluster, make_spec, tmp_path, monkeypatch, case, expected):
    if case == "unknown_user_key":
        home = _ssh_home(tmp_path, cluster, identity=_new_key(tmp_path))
    else:
        home = _ssh_home(tmp_path, cluster, identity=ROOT_KEY, port=1)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    name = make_spec(f"rk-ssh-{case}")   # a job name no other test's kernels have
    before = jobs_named(f"rk-{name}", states="PENDING,RUNNING")
    km = AsyncKernelManager(kernel_name=name)
    with pytest.raises(KernelStartError) as err:
        await km.start_kernel()
    message = str(err.value)
    assert expected in message and "\n" not in message
    entries = list((home / ".local" / "share" / "jupyter" / "runtime" / "remote-kernels").glob("*.json"))
    assert entries == []

    await until("the failed kernel's job to be gone",
                lambda: not jobs_named(f"rk-{name}", states="PENDING,RUNNING") - before, timeout=10)
