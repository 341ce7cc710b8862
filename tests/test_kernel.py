"""Compute-node kernels through jupyter_client, end to end on the test cluster."""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kernel_helpers import job_in_queue, processes_mentioning, remote, remote_sync, run_cell, start_sleeping_cell, until, value_of
from proc_helpers import tcp_listeners
from remote_kernels.direct import key_dir
from slurm_helpers import wait_until


async def test_kernel_runs_on_a_compute_node_in_the_notebook_dir(start_kernel, tmp_path):
    km, kc = await start_kernel("rk-test", cwd=str(tmp_path))
    assert await value_of(kc, "__import__('socket').gethostname()") in ("c1", "c2")
    assert await value_of(kc, "__import__('os').getcwd()") == str(tmp_path)
    assert (await remote(km))["job_id"]


async def test_long_partition_kernel_runs_on_c2(start_kernel):
    km, kc = await start_kernel("rk-long")
    assert await value_of(kc, "__import__('socket').gethostname()") == "c2"


async def test_setup_lines_and_env_reach_the_kernel(start_kernel):
    km, kc = await start_kernel("rk-env")
    assert await value_of(kc, "__import__('os').environ['RK_FROM_SETUP']") == "set-up-ran"
    assert await value_of(kc, "__import__('os').environ['RK_FROM_SPEC']") == "spec value"


async def _interrupt_sleep(km, kc, interrupt) -> dict:
    msg_id = await start_sleeping_cell(kc)
    await interrupt()
    # The reply must come well before the 60 s sleep ends (a lost interrupt fails); how fast it
    # comes is the benchmark's to measure (interrupt latency in `make bench`), not this test's.
    reply = await kc.get_shell_msg(timeout=30)
    assert reply["parent_header"]["msg_id"] == msg_id
    return reply["content"]


async def test_interrupt_message_stops_a_running_cell(start_kernel, any_spec):
    km, kc = await start_kernel(any_spec)
    content = await _interrupt_sleep(km, kc, km.interrupt_kernel)
    assert content["status"] == "error" and content["ename"] == "KeyboardInterrupt"
    assert await value_of(kc, "1 + 1") == "2"


async def test_sigint_through_the_launcher_stops_a_running_cell(start_kernel, any_spec):
    km, kc = await start_kernel(any_spec)
    content = await _interrupt_sleep(km, kc, lambda: km.signal_kernel(signal.SIGINT))
    assert content["status"] == "error" and content["ename"] == "KeyboardInterrupt"


async def test_restart_reuses_the_allocation(start_kernel, any_spec):
    km, kc = await start_kernel(any_spec)
    job = (await remote(km))["job_id"]
    pid_before = await value_of(kc, "__import__('os').getpid()")
    await run_cell(kc, "x = 42")
    await km.restart_kernel()
    await kc.wait_for_ready(timeout=60)
    assert (await remote(km))["job_id"] == job
    assert job_in_queue(job)
    assert await value_of(kc, "__import__('os').getpid()") != pid_before
    content, out = await run_cell(kc, "x")
    assert content["status"] == "error" and content["ename"] == "NameError"


async def test_shutdown_leaves_nothing_behind(start_kernel, any_spec):
    km, kc = await start_kernel(any_spec)
    session = await remote(km)
    job, sid = session["job_id"], session["session_id"]
    login_dir = (await remote(km))["login_dir"]
    assert processes_mentioning(sid), "the launcher should be running while the kernel lives"
    await km.shutdown_kernel()
    # Shutdown returns once the kernel is stopped; the job ends afterwards, by itself (the
    # launcher exits), not cancelled.
    assert (await remote(km))["state"] in ("ending", "ended")
    await until(f"job {job} to leave the queue", lambda: not job_in_queue(job), timeout=15)
    assert final_state(job) == "COMPLETED"
    await until("launcher and kernel processes to end", lambda: not processes_mentioning(sid), timeout=10)
    assert not Path(login_dir).exists()
    assert not Path(f"/tmp/rk-{sid}").exists()
    assert not key_dir(sid).exists()   # transport direct's key directory (never made for ssh)
    deadline = time.monotonic() + 10
    while (state := (await remote(km))["state"]) != "ended":   # its link and job released
        assert time.monotonic() < deadline, f"the session is still {state} 10 s after its job ended"
        await asyncio.sleep(0.1)


def final_state(job: str) -> str:
    """A job's end state as squeue lists it for MinJobAge (30 s on the test cluster) after its end."""
    import getpass

    return subprocess.run(["squeue", "-h", "-u", getpass.getuser(), "-t", "all", "-j", job, "-o", "%T"],
                          capture_output=True, text=True).stdout.strip()


def test_a_process_that_exits_right_after_a_shutdown_leaves_no_job(kernelspecs, tmp_path):
    """kernel_owner.py shuts its kernel down and returns from main at once: interpreter exit
    awaits the job's end still going on in the background.  The registry entry, removed only
    once the job has ended, is gone when the process has exited, and so is the job."""
    owner = Path(__file__).parent / "kernel_owner.py"
    registry = tmp_path / "runtime" / "remote-kernels"
    proc = subprocess.Popen([sys.executable, str(owner), "rk-test"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime")))
    job = None
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 90)
        line = proc.stdout.readline() if ready else ""
        assert line, f"the owner process did not start a kernel (exit code {proc.poll()})"
        job = json.loads(line)["job_id"]
        assert [p.stem for p in registry.glob("*.json")], "the running kernel should be registered"
        _, err = proc.communicate("", timeout=60)   # EOF: shut down, then exit
        assert proc.returncode == 0, err
        assert not list(registry.glob("*.json")), f"job {job}'s end was not awaited at exit:\n{err}"
        assert "left open at exit" not in err, err   # shut down, not abandoned
        wait_until(f"job {job} to leave the queue", lambda: not job_in_queue(job), timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if job is not None and job_in_queue(job):
            subprocess.run(["scancel", job], capture_output=True)


async def scancel_and_wait_for_poll(km, within: float) -> str:
    """scancel the kernel's job; wait (deadline ``within`` s) until poll() reports it; return the job id."""
    job = (await remote(km))["job_id"]
    subprocess.run(["scancel", job], check=True)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while await km.provisioner.poll() is None:
        assert loop.time() < deadline, f"poll() did not report the cancelled job within {within} s"
        await asyncio.sleep(0.1)
    return job


async def test_scancel_is_noticed_by_poll(start_kernel, any_spec):
    km, kc = await start_kernel(any_spec)
    await scancel_and_wait_for_poll(km, within=60)   # how fast: `make bench`
    assert await km.provisioner.poll() != 0
    assert "CANCELLED" in (await remote(km))["ended_reason"]


@pytest.mark.parametrize("dispatch", ["batch", "interactive"])
async def test_key_is_never_in_argv_script_or_readable_files(dispatch, start_kernel, make_spec):
    km, kc = await start_kernel(make_spec(f"rk-key-{dispatch}", dispatch=dispatch))
    key = km.session.key.decode()
    session = await remote(km)
    assert await value_of(kc, "1") == "1"
    assert processes_mentioning(key) == []   # srun's argv too
    if dispatch == "batch":
        script = subprocess.run(["scontrol", "write", "batch_script", session["job_id"], "-"],
                                capture_output=True, text=True, check=True).stdout
        assert "#SBATCH" in script and session["session_id"] in script
        assert key not in script
    for what in ("job", "step"):
        show = subprocess.run(["scontrol", "show", what, "-d", session["job_id"]], capture_output=True,
                              text=True, check=True).stdout
        assert session["job_id"] in show and key not in show
    assert key not in Path(session["log_file"]).read_text()
    node_dir = Path(session["node_dir"])
    assert stat.S_IMODE(node_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((node_dir / "kernel.json").stat().st_mode) == 0o600
    login_dir = Path((await remote(km))["login_dir"])
    assert stat.S_IMODE(login_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(Path(km.connection_file).stat().st_mode) == 0o600


async def test_kernel_uses_ipc_sockets_on_both_sides(start_kernel):
    km, kc = await start_kernel()
    info = json.loads(Path(km.connection_file).read_text())
    assert info["transport"] == "ipc"
    node_info = json.loads((Path((await remote(km))["node_dir"]) / "kernel.json").read_text())
    assert node_info["transport"] == "ipc"
    # The kernel's channels are ipc, and so is ipykernel's internal pipe for output of forked
    # subprocesses (docs/security.md): the kernel listens on no TCP port.
    pid = int(await value_of(kc, "__import__('os').getpid()"))
    assert tcp_listeners([pid]) == []


async def test_kernels_of_two_jobs_on_one_node_have_a_connection_each(start_kernel):
    """One SSH connection per job: where pam_slurm_adopt ends a login with its job, the end
    of one kernel's job must not take another's connection (tests/test_site.py as a user)."""
    km1, kc1 = await start_kernel("rk-long")
    km2, kc2 = await start_kernel("rk-long")
    s1, s2 = await remote(km1), await remote(km2)
    assert s1["node"] == s2["node"] == "c2" and s1["job_id"] != s2["job_id"]
    await km1.shutdown_kernel()
    await until(f"job {s1['job_id']} to leave the queue", lambda: not job_in_queue(s1["job_id"]), timeout=15)
    assert await value_of(kc2, "1") == "1"
    assert (await remote(km2))["reconnects"] == 0


async def test_restart_after_the_job_was_cancelled_submits_a_new_job(start_kernel, any_spec, transport):
    """SSH mode keeps the login-side endpoints, so the client stays connected.  Transport direct
    gives jupyter_client the new kernel's node endpoints: a client made before is connected to
    the old job's and is replaced, as JupyterLab reconnects after every restart."""
    km, kc = await start_kernel(any_spec)
    before = km.get_connection_info()
    old_job = await scancel_and_wait_for_poll(km, within=60)
    await km.restart_kernel(now=True)
    assert (await remote(km))["job_id"] != old_job
    after = km.get_connection_info()
    if transport == "direct":
        assert (after["ip"], after["shell_port"]) != (before["ip"], before["shell_port"])
        kc.stop_channels()
        kc = km.client()
        kc.start_channels()
    else:
        assert after == before
    await kc.wait_for_ready(timeout=60)
    assert await value_of(kc, "__import__('socket').gethostname()") in ("c1", "c2")
    kc.stop_channels()


def test_synchronous_jupyter_client_api(kernelspecs):
    """start_new_kernel + BlockingKernelClient (nbclient's older callers, scripts, tests): no
    event loop runs between the calls, yet messages reach the node, also after a restart."""
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="rk-test", startup_timeout=60)
    job = remote_sync(km)["job_id"]
    try:
        def where() -> list[str]:
            out: list[str] = []
            reply = kc.execute_interactive(
                "import os, socket; print(socket.gethostname(), os.environ['SLURM_JOB_ID'])", timeout=30,
                output_hook=lambda msg: out.append(msg["content"].get("text", "")))
            assert reply["content"]["status"] == "ok"
            return "".join(out).split()

        node, ran_in = where()
        assert node in ("c1", "c2") and ran_in == job
        km.restart_kernel()
        kc.wait_for_ready(timeout=60)
        assert where() == [node, job]
    finally:
        kc.stop_channels()
        km.shutdown_kernel()
    assert remote_sync(km)["state"] in ("ending", "ended")   # stopped; its job ends in the background
    deadline = time.monotonic() + 20
    while job_in_queue(job) or remote_sync(km)["state"] != "ended":
        assert time.monotonic() < deadline, f"job {job} still queued or its session not ended after shutdown"
        time.sleep(0.2)
