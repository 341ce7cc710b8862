"""The login side as it is at a site: a Jupyter server, its kernels' output read by a websocket client.

JupyterLab talks to the server over websockets with the ``v1.kernel.websocket.jupyter.org``
protocol, with which the server passes each kernel message on without decoding it; the
server's process is then the login side's whole cost: its websocket bridging, and the
transport (SSH forwards in the provisioner, or with transport direct the Curve decryption of
its ZMQ sockets).  ``measure(specs, ...)`` starts one server (iopub rate limiting off, so the
stream measures the transport, not the limiter), a kernel of each spec, and streams output from
each in turns, as bench.py's measure_streams does; it reports the server process's CPU
seconds per GB (/proc: all its threads, none of its kernels' processes) and the MB/s the
websocket client received.  Used by bench.py only.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.websocket import websocket_connect

V1 = "v1.kernel.websocket.jupyter.org"


def _v1(channel: str, parts: list[bytes]) -> bytes:
    """A websocket message of the v1 protocol: offsets, channel, header, parent, metadata, content."""
    offsets = [8 * (len(parts) + 3)]
    for chunk in [channel.encode(), *parts]:
        offsets.append(offsets[-1] + len(chunk))
    return b"".join([len(offsets).to_bytes(8, "little"), *(o.to_bytes(8, "little") for o in offsets),
                     channel.encode(), *parts])


def _parts(message: bytes) -> tuple[str, list[bytes]]:
    """(channel, [header, parent_header, metadata, content, buffers...]) of a v1 message."""
    n = int.from_bytes(message[:8], "little")
    offsets = [int.from_bytes(message[8 * (i + 1):8 * (i + 2)], "little") for i in range(n)]
    return (message[offsets[0]:offsets[1]].decode(),
            [message[offsets[i]:offsets[i + 1]] for i in range(1, n - 1)])


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])   # utime, stime


class Server:
    """A jupyter_server of this Python, on a free port of 127.0.0.1, for as long as ``with`` lasts."""

    def __init__(self):
        self.token = secrets.token_hex(16)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.root = tempfile.mkdtemp(prefix="rk-bench-server-")
        self.log = open(Path(self.root) / "server.log", "w")
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Server:
        argv = [sys.executable, "-m", "jupyter_server", f"--ServerApp.port={self.port}", "--ServerApp.ip=127.0.0.1",
                f"--IdentityProvider.token={self.token}", "--ServerApp.open_browser=False",
                f"--ServerApp.root_dir={self.root}", "--ZMQChannelsWebsocketConnection.limit_rate=False"]
        if os.geteuid() == 0:
            argv.append("--allow-root")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, cwd=self.root)
        return self

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()

    async def request(self, method: str, path: str, body: dict | None = None) -> dict:
        req = HTTPRequest(f"http://127.0.0.1:{self.port}{path}", method=method,
                          headers={"Authorization": f"token {self.token}"},
                          body=None if body is None else json.dumps(body), request_timeout=180)
        reply = await AsyncHTTPClient().fetch(req, raise_error=True)
        return json.loads(reply.body) if reply.body else {}

    async def until_up(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                await self.request("GET", "/api/status")
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"the Jupyter server did not start; see {self.log.name}") from None
                await asyncio.sleep(0.2)

    async def channels(self, kernel_id: str):
        req = HTTPRequest(f"ws://127.0.0.1:{self.port}/api/kernels/{kernel_id}/channels",
                          headers={"Authorization": f"token {self.token}"})
        return await websocket_connect(req, subprotocols=[V1], max_message_size=64 * 2**20)


async def _until_idle(ws, code: str) -> tuple[int, float]:
    """Run code; (stream bytes received, seconds) until iopub says idle for it."""
    msg_id = uuid.uuid4().hex
    header = {"msg_id": msg_id, "msg_type": "execute_request", "username": "bench", "session": uuid.uuid4().hex,
              "date": "", "version": "5.3"}
    content = {"code": code, "silent": False, "store_history": False, "user_expressions": {}, "allow_stdin": False}
    t0 = time.perf_counter()
    await ws.write_message(_v1("shell", [json.dumps(p).encode() for p in (header, {}, {}, content)]), binary=True)
    received = 0
    while True:
        message = await ws.read_message()
        if message is None:
            raise RuntimeError("the server closed the kernel's websocket")
        channel, parts = _parts(message)
        if channel != "iopub" or json.loads(parts[1]).get("msg_id") != msg_id:
            continue
        kind = json.loads(parts[0])["msg_type"]
        if kind == "stream":
            received += len(parts[3])
        elif kind == "status" and json.loads(parts[3])["execution_state"] == "idle":
            return received, time.perf_counter() - t0


async def measure(specs: dict[str, str], streams: int, stream_mb: int) -> dict[str, dict]:
    """side -> {throughput, cpu_per_gb: a value per round; throughput_mb_s, cpu_s_per_gb: medians}
    for a kernel of each of ``specs`` (side -> kernelspec) in one server, streaming in turns."""
    code = (f"import sys\nline = 'x' * 999_999 + '\\n'\nfor _ in range({stream_mb}):\n"
            "    sys.stdout.write(line)\n    sys.stdout.flush()")
    with Server() as server:
        await server.until_up()
        opened = {}
        try:
            for side, name in specs.items():
                kernel = await server.request("POST", "/api/kernels", {"name": name})
                opened[side] = (kernel["id"], await server.channels(kernel["id"]))
                await _until_idle(opened[side][1], "1")
            out = {side: {"throughput": [], "cpu_per_gb": []} for side in specs}
            tick = os.sysconf("SC_CLK_TCK")
            for _ in range(streams):
                for side, (_, ws) in opened.items():
                    cpu0 = _cpu_ticks(server.proc.pid)
                    received, secs = await _until_idle(ws, code)
                    cpu = (_cpu_ticks(server.proc.pid) - cpu0) / tick
                    out[side]["throughput"].append(received / secs / 1e6)
                    out[side]["cpu_per_gb"].append(cpu / (received / 1e9))
        finally:
            for kernel_id, ws in opened.values():
                ws.close()
                await server.request("DELETE", f"/api/kernels/{kernel_id}")
    for side in out.values():
        side["throughput_mb_s"] = statistics.median(side["throughput"])
        side["cpu_s_per_gb"] = statistics.median(side["cpu_per_gb"])
    return out
