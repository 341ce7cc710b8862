"""Helpers for driving compute-node kernels the way frontends do."""

from __future__ import annotations

import asyncio
import subprocess


async def run_cell(kc, code: str, timeout: float = 60) -> tuple[dict, str]:
    """Execute code until the kernel reports idle; return (reply content, stdout+stderr text)."""
    out: list[str] = []

    def hook(msg):
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            out.append("\n".join(msg["content"]["traceback"]))

    reply = await kc.execute_interactive(code, output_hook=hook, timeout=timeout)
    return reply["content"], "".join(out)


async def remote(km) -> dict:
    """What the provisioner tells of its kernel (state, job_id, node, session_id, node_dir, log_file,
    login_dir, ended_reason, reconnects, timings, pending): its public get_provisioner_info()."""
    return (await km.provisioner.get_provisioner_info())["remote_kernel"]


async def until_ended(km, timeout: float = 30) -> None:
    """Wait until km's session has ended entirely: a shutdown returns while its job and link are
    still being ended (state "ending"), and a test's scheduler environment (PATH with fake
    commands, their state) must outlive that end, or the next test's scheduler gets its commands."""
    import time

    deadline = time.monotonic() + timeout
    while km.provisioner is not None and (state := (await remote(km)).get("state")) not in (None, "ended"):
        assert time.monotonic() < deadline, f"the kernel's session is still {state} {timeout:g}s after its shutdown"
        await asyncio.sleep(0.05)


def remote_sync(km) -> dict:
    """remote() for a synchronous KernelManager."""
    from jupyter_client.utils import run_sync
    return run_sync(km.provisioner.get_provisioner_info)()["remote_kernel"]


async def value_of(kc, expr: str) -> str:
    content, out = await run_cell(kc, f"print({expr})")
    assert content["status"] == "ok", out
    return out.strip()


async def kernel_environ(kc) -> dict[str, str]:
    """os.environ inside the kernel."""
    import json

    return json.loads(await value_of(kc, "__import__('json').dumps(dict(__import__('os').environ))"))


# A cell whose output comes from a forked child (through ipykernel's pipe for subprocess output).
FORKED_PRINT = """
import os
pid = os.fork()
if pid == 0:
    print("printed by a forked child", flush=True)
    os._exit(0)
os.waitpid(pid, 0)
"""

# A cell that says when it sleeps: an interrupt sent after execute_input but before the
# cell's code runs can land in ipykernel's own code and be lost; after this output it cannot.
SLEEPING_CELL = "print('rk-sleeping', flush=True); import time; time.sleep(60)"


async def start_sleeping_cell(kc, timeout: float = 30) -> str:
    """Execute SLEEPING_CELL; return its msg_id once its output shows it is sleeping."""
    msg_id = kc.execute(SLEEPING_CELL)
    while True:
        msg = await kc.get_iopub_msg(timeout=timeout)
        if (msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "stream"
                and "rk-sleeping" in msg["content"]["text"]):
            return msg_id


async def wait_for_kernel_info(kc, timeout: float, every: float = 1.0) -> None:
    """What frontends do: send kernel_info_request until a reply comes (the job may still be
    queued, a link be restored), and until iopub also carries that request's status (a
    request sent before iopub's socket has (re)connected loses its iopub messages); asking
    again after ``every`` s without both.  AssertionError after ``timeout`` s."""
    import asyncio
    import queue

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout

    def wait() -> float:   # seconds to wait for the next message: never past the deadline
        return max(0.0, min(every, deadline - loop.time()))

    while loop.time() < deadline:
        msg_id = kc.kernel_info()
        try:
            while (await kc.get_shell_msg(timeout=wait()))["parent_header"].get("msg_id") != msg_id:
                pass
            while (await kc.get_iopub_msg(timeout=wait()))["parent_header"].get("msg_id") != msg_id:
                pass
            return
        except queue.Empty:   # nothing yet
            continue
    raise AssertionError(f"no kernel_info reply on shell and iopub within {timeout}s")


def job_in_queue(job_id: str) -> bool:
    """True while squeue still lists this user's job ``job_id`` as pending/running/completing."""
    import getpass

    out = subprocess.run(["squeue", "-h", "-u", getpass.getuser(), "-j", job_id, "-o", "%i"],
                         capture_output=True, text=True).stdout
    return job_id in out.split()


def job_state(job_id: str) -> str:
    """This user's job's squeue state ('' once it has left the queue)."""
    import getpass

    out = subprocess.run(["squeue", "-h", "-u", getpass.getuser(), "-j", job_id, "-o", "%T"],
                         capture_output=True, text=True).stdout
    return out.strip()


# Seconds a started job that nobody reaches (its server died while it was queued) may run (#21).
UNCLAIMED_JOB_RUNS = 90


async def see_it_end_unclaimed(job_id: str) -> None:
    """Start the held job ``job_id``, whose server is dead: it must end by itself within
    UNCLAIMED_JOB_RUNS s of its start (not after grace), its launcher saying why in its log."""
    from remote_kernels.joblogs import job_log_dir

    assert job_state(job_id) == "PENDING", f"job {job_id} should still wait in the queue"
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True, capture_output=True)
    await until(f"job {job_id} to start", lambda: job_state(job_id) != "PENDING", timeout=600)   # a busy cluster
    await until(f"job {job_id}, started, to end by itself", lambda: not job_in_queue(job_id),
                timeout=UNCLAIMED_JOB_RUNS)
    log = (job_log_dir() / f"{job_id}.log").read_text()
    assert "nobody reached the launcher within" in log, log


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes (login side and nodes share /proc) containing text."""
    from pathlib import Path

    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd:
            found.append(f"{proc.name}: {cmd}")
    return found


async def until(what: str, cond, timeout: float = 30, interval: float = 0.1):
    """Async twin of slurm_helpers.wait_until for use inside the event loop (never blocks it)."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (value := cond()):
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)
    return value


# A Jupyter server in a separate process (e.g. in the laptop namespace):
# `python -c SERVER_SCRIPT SPEC CODE` starts SPEC's kernel, runs CODE and prints
# "RESULT <output words> <job id> <reply status>", then shuts the kernel down.
SERVER_SCRIPT = """
import asyncio, sys
from jupyter_client.manager import AsyncKernelManager
async def main():
    km = AsyncKernelManager(kernel_name=sys.argv[1])
    await km.start_kernel()
    kc = km.client(); kc.start_channels()
    await kc.wait_for_ready(timeout=60)
    out = []
    reply = await kc.execute_interactive(sys.argv[2], timeout=60,
                                         output_hook=lambda m: out.append(m["content"].get("text", "")))
    print("RESULT", "".join(out).strip(), (await km.provisioner.get_provisioner_info())["remote_kernel"]["job_id"], reply["content"]["status"], flush=True)
    kc.stop_channels()
    await km.shutdown_kernel()
asyncio.run(main())
"""


async def without_curve_nothing_is_heard(info: dict, marker, during) -> None:
    """A client with the HMAC key of connection ``info`` but not its Curve keys: its subscriber
    to iopub hears nothing and its signed execute request (which would create the file
    ``marker``) never runs, while ``await during()`` makes the kernel publish for its owner."""
    import zmq
    import zmq.asyncio
    from jupyter_client.session import Session

    ctx = zmq.asyncio.Context()
    try:
        sub, shell = ctx.socket(zmq.SUB), ctx.socket(zmq.DEALER)
        sub.subscribe(b"")
        sub.connect(f"ipc://{info['ip']}-{info['iopub_port']}")
        shell.connect(f"ipc://{info['ip']}-{info['shell_port']}")
        key = info["key"]
        signer = Session(key=key if isinstance(key, bytes) else key.encode(),
                         signature_scheme=info.get("signature_scheme", "hmac-sha256"))
        await shell.send_multipart(signer.serialize(signer.msg(
            "execute_request", {"code": f"open({str(marker)!r}, 'w').close()", "silent": False})))
        await during()
        assert await sub.poll(500) == 0, "a subscriber without the Curve keys heard the kernel"
        assert await shell.poll(0) == 0, "a client without the Curve keys got an answer"
        assert not marker.exists(), "a client without the Curve keys made the kernel execute"
    finally:
        ctx.destroy(linger=0)
