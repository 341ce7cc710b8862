"""Argv mode, driven the way VS Code's local kernel picker does it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.connect import write_connection_file

from conftest import SERVER_MARKER
from kernel_helpers import (job_in_queue, kernel_environ, processes_mentioning, run_cell, see_it_end_unclaimed,
                            start_sleeping_cell, until, value_of, wait_for_kernel_info)


def _job_of(proc_log: list[str]) -> str | None:
    for line in proc_log:
        if "submitted slurm job" in line:
            return line.rsplit(" ", 1)[1].strip()
    return None


@contextlib.asynccontextmanager
async def vscode_kernel(spec_dir: Path, tmp_path: Path, env: dict | None = None, transport: str = "tcp",
                        key: str | None = None):
    """Run a kernelspec's argv exactly as VS Code does (its connection file written first,
    with ``key`` if given; ``env``: the frontend's environment for the process); yield
    (process, client, stderr lines) once the kernel answers.  The process is shut down with
    SIGTERM afterwards."""
    key = key or uuid.uuid4().hex
    ip = "127.0.0.1" if transport == "tcp" else str(tmp_path / "kernel-ipc")
    conn_file, _ = write_connection_file(str(tmp_path / "kernel-vscode.json"), ip=ip, key=key.encode(),
                                         transport=transport)
    argv = json.loads((spec_dir / "kernel.json").read_text())["argv"]
    argv = [a.replace("{connection_file}", conn_file) for a in argv]
    proc = await asyncio.create_subprocess_exec(*argv, cwd=str(tmp_path), env=env, stderr=asyncio.subprocess.PIPE)
    log: list[str] = []

    async def read_log():
        async for line in proc.stderr:
            log.append(line.decode())
    reader = asyncio.ensure_future(read_log())
    kc = AsyncKernelClient()
    kc.load_connection_file(conn_file)
    kc.start_channels()
    try:
        await wait_for_kernel_info(kc, timeout=60)
        yield proc, kc, log
    finally:
        kc.stop_channels()
        if proc.returncode is None:   # SIGTERM, as a frontend does, so the job is cancelled
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
        await reader


async def test_argv_mode_like_vscode(kernelspecs, any_spec, tmp_path):
    """Over either transport: with direct, the frontend's 127.0.0.1 ports through the local relay."""
    async with vscode_kernel(kernelspecs / any_spec, tmp_path) as (proc, kc, log):
        key = kc.session.key.decode()
        assert await value_of(kc, "__import__('socket').gethostname()") in ("c1", "c2")
        assert await value_of(kc, "__import__('os').getcwd()") == str(tmp_path)
        job = _job_of(log)
        assert job and job_in_queue(job)
        # What it creates (ipc sockets where the frontend says) is private from the start.
        umask = next(l for l in Path(f"/proc/{proc.pid}/status").read_text().splitlines() if l.startswith("Umask:"))
        assert umask.split()[1] == "0077"
        # SIGINT to the argv process interrupts the running cell.
        msg_id = await start_sleeping_cell(kc)
        proc.send_signal(signal.SIGINT)
        reply = await kc.get_shell_msg(timeout=5)
        assert reply["parent_header"]["msg_id"] == msg_id
        assert reply["content"]["ename"] == "KeyboardInterrupt"
        assert proc.returncode is None
        # The key never shows in any argv.
        assert processes_mentioning(key) == []
        # SIGTERM shuts everything down.
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 20)
        await until(f"job {job} to leave the queue", lambda: not job_in_queue(job), timeout=15)
        # What VS Code's output shows: our progress lines, not asyncssh's line per channel (63-73 before).
        assert any("launcher ready on" in l for l in log) and not any("asyncssh" in l for l in log), log


async def test_argv_mode_removes_its_ipc_sockets_when_it_ends(kernelspecs, any_spec, tmp_path):
    async with vscode_kernel(kernelspecs / any_spec, tmp_path, transport="ipc") as (proc, kc, log):
        assert await value_of(kc, "1 + 1") == "2"
        sockets = sorted(p.name for p in tmp_path.glob("kernel-ipc-*"))
        assert len(sockets) == 5
        job = _job_of(log)
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 20)
    assert sorted(p.name for p in tmp_path.glob("kernel-ipc-*")) == []
    await until(f"job {job} to leave the queue", lambda: not job_in_queue(job), timeout=15)


async def test_argv_mode_gives_the_kernel_its_spec_env_and_nothing_else(make_spec, kernelspecs, tmp_path,
                                                                          server_secret):
    """kernel.json's env stanza reaches the kernel (as the frontend set it in the argv process's
    environment, else from kernel.json); nothing else of that environment reaches the job."""
    user_secret, substituted = f"user-secret-{uuid.uuid4().hex}", f"subst-{uuid.uuid4().hex}"
    spec = make_spec("rk-argv-env", stanza={"RK_USER_TOKEN": "placeholder", "RK_STANZA": "from ${RK_SUBST_SOURCE}"})
    # VS Code applies the stanza itself (here: one key, with its own value); the other comes from kernel.json.
    env = {**os.environ, "RK_USER_TOKEN": user_secret, "RK_SUBST_SOURCE": substituted}
    async with vscode_kernel(kernelspecs / spec, tmp_path, env) as (proc, kc, log):
        kernel = await kernel_environ(kc)
        assert kernel["RK_USER_TOKEN"] == user_secret and kernel["RK_STANZA"] == f"from {substituted}"
        assert SERVER_MARKER not in kernel and "RK_SUBST_SOURCE" not in kernel
        assert not [k for k, v in kernel.items() if server_secret in v]
        job = _job_of(log)
        launcher = Path(f"/proc/{kernel['JPY_PARENT_PID']}/environ").read_bytes()   # the job's own process
        assert f"SLURM_JOB_ID={job}\0".encode() in launcher
        assert server_secret.encode() not in launcher and user_secret.encode() not in launcher
        script = subprocess.run(["scontrol", "write", "batch_script", job, "-"],
                                capture_output=True, text=True, check=True).stdout
        assert server_secret not in script and user_secret not in script


async def test_argv_mode_killed_while_queued_leaves_a_job_that_ends_soon_after_it_starts(make_spec, kernelspecs,
                                                                                        tmp_path):
    """#21: a frontend's kernel process SIGKILLed (a crashed VS Code) while its job waits:
    nobody withdraws the job; once it starts, it ends within a minute or so, not after grace."""
    spec = make_spec("rk-argv-held", directives=["--begin=now+1hour"], grace=300)
    conn_file, _ = write_connection_file(str(tmp_path / "kernel-held.json"), ip="127.0.0.1",
                                         key=uuid.uuid4().hex.encode())
    argv = [a.replace("{connection_file}", conn_file)
            for a in json.loads((kernelspecs / spec / "kernel.json").read_text())["argv"]]
    proc = await asyncio.create_subprocess_exec(*argv, cwd=str(tmp_path), stderr=asyncio.subprocess.PIPE)
    try:
        log: list[str] = []
        while (job := _job_of(log)) is None:
            line = await asyncio.wait_for(proc.stderr.readline(), 60)
            assert line, f"remote-kernels run exited before submitting: {''.join(log)}"
            log.append(line.decode())
        proc.kill()   # SIGKILL: nothing of the process's clean-up runs
        await proc.wait()
        await see_it_end_unclaimed(job)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_argv_mode_unreadable_connection_file(kernelspecs, tmp_path):
    res = subprocess.run([sys.executable, "-m", "remote_kernels", "run", "--kernel", "rk-test",
                          "-f", str(tmp_path / "missing.json")], capture_output=True, text=True, timeout=30)
    assert res.returncode != 0
    assert "cannot read connection file" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


async def test_argv_mode_with_persist_re_attaches_to_its_kernel_for_the_same_connection_file(make_spec, kernelspecs,
                                                                                              tmp_path):
    """SIGKILL of the argv process, or SIGTERM while the kernel runs: a next run for the same
    connection file (same key) finds the kernel, its state and job; a run with another key
    (another frontend's file at the same path) starts a kernel of its own."""
    make_spec("rk-persist-argv", persist=120, time="00:10:00")
    spec_dir = kernelspecs / "rk-persist-argv"
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"))
    key = uuid.uuid4().hex
    async with vscode_kernel(spec_dir, tmp_path, env=env, key=key) as (proc, kc, log):
        assert (await run_cell(kc, "x = 42"))[0]["status"] == "ok"
        job = _job_of(log)
        proc.kill()
        await proc.wait()
    other = None
    try:
        assert job_in_queue(job)
        async with vscode_kernel(spec_dir, tmp_path, env=env, key=key) as (proc, kc, log):
            assert await value_of(kc, "x") == "42"
            assert _job_of(log) is None and any(f"re-attached to the kernel of job {job}" in l for l in log), log
            proc.send_signal(signal.SIGTERM)   # the frontend went away: the kernel waits again
            await asyncio.wait_for(proc.wait(), 20)
        assert any("kernel detached" in l for l in log), log
        assert job_in_queue(job)
        async with vscode_kernel(spec_dir, tmp_path, env=env, key=key) as (proc, kc, log):
            assert await value_of(kc, "x") == "42"
            assert _job_of(log) is None
            # The frontend shuts the kernel down: the job ends and no record is left.
            kc.shutdown()
            await asyncio.wait_for(proc.wait(), 30)
        await until(f"job {job} to leave the queue", lambda: not job_in_queue(job), timeout=20)
        assert not list((tmp_path / "runtime" / "remote-kernels" / "persist").glob("*.json"))
        async with vscode_kernel(spec_dir, tmp_path, env=env) as (proc, kc, log):   # another key
            other = _job_of(log)
            assert other and other != job
            kc.shutdown()   # a SIGTERM would detach it
            await asyncio.wait_for(proc.wait(), 30)
        await until(f"job {other} to leave the queue", lambda: not job_in_queue(other), timeout=20)
    finally:
        for left in (job, other):
            if left and job_in_queue(left):
                subprocess.run(["scancel", left], capture_output=True)
