"""The %remote_kernel magic: what it reads and prints (pure), and that the launcher's ipykernel
loads it with nothing installed in the kernel's environment (a real launcher and ipykernel), and
on a compute node of the test cluster."""

from __future__ import annotations

import ast
import asyncio
import socket
import subprocess
from pathlib import Path

import pytest

from kernel_helpers import remote, run_cell
from test_launcher import DEADLINE, launch, until_exists  # noqa: F401

from remote_kernels import kernel_magic
from remote_kernels.script import launcher_source

SOURCE = Path(kernel_magic.__file__).read_text()


def test_the_magic_is_python_3_8_stdlib_and_ipython_only():
    tree = ast.parse(SOURCE, feature_version=(3, 8))
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= {"os", "signal", "socket", "subprocess", "threading"}, imported


def test_the_launcher_carries_the_magic():
    src = launcher_source()
    ast.parse(src, feature_version=(3, 8))
    namespace: dict = {}
    exec(compile(ast.Module([n for n in ast.parse(src).body if isinstance(n, ast.Assign)
                             and any(getattr(t, "id", "") == "KERNEL_MAGIC" for t in n.targets)], []),
                 "launcher", "exec"), namespace)
    assert namespace["KERNEL_MAGIC"] == SOURCE


def fake_squeue(stdout: str, code: int = 0):
    calls = []

    def run(argv, **kw):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, code, stdout, "")

    return run, calls


def test_slurm_job_resources_and_time_left():
    env = {"SLURM_JOB_ID": "42", "SLURMD_NODENAME": "c1", "SLURM_JOB_PARTITION": "debug",
           "SLURM_CPUS_PER_TASK": "2", "SLURM_MEM_PER_NODE": "2048", "SLURM_JOB_ACCOUNT": "physics"}
    run, calls = fake_squeue("58:12|1:00:00\n")
    facts = kernel_magic.job_facts(env, run)
    assert calls == [["squeue", "-h", "-j", "42", "-o", "%L|%l"]]
    assert kernel_magic.describe(facts) == "\n".join([
        "remote kernel: slurm job 42 on c1",   # the node as SLURM names it
        "  partition  debug",
        "  account    physics",
        "  cpus       2",
        "  memory     2G",
        "  time limit 1:00:00",
        "  time left  58:12",
    ])


def test_what_cannot_be_learnt_is_left_out():
    run, _ = fake_squeue("", code=1)   # squeue failed
    facts = kernel_magic.job_facts({"SLURM_JOB_ID": "42", "SLURM_MEM_PER_NODE": "500"}, run)
    assert kernel_magic.describe(facts) == f"remote kernel: slurm job 42 on {socket.gethostname()}\n  memory     500M"

    def missing(argv, **kw):
        raise FileNotFoundError(argv[0])

    assert "time left" not in kernel_magic.job_facts({"SLURM_JOB_ID": "42"}, missing)
    facts = kernel_magic.job_facts({"PBS_JOBID": "7.server", "PBS_QUEUE": "workq"}, missing)
    assert kernel_magic.describe(facts).splitlines()[0] == f"remote kernel: pbs job 7.server on {socket.gethostname()}"
    assert kernel_magic.describe(kernel_magic.job_facts({}, missing)).startswith("remote kernel: no batch job found")


async def test_the_launchers_ipykernel_has_the_magic(launch):  # noqa: F811
    """Started as the node starts it (launcher_source, ipykernel's boot file): %remote_kernel works
    and `%load_ext remote_kernel_magic` finds it, though nothing of remote_kernels is importable."""
    from jupyter_client.asynchronous import AsyncKernelClient

    launcher = await launch()
    client = await launcher.client()
    env = {"SLURM_JOB_ID": "4242", "SLURM_JOB_PARTITION": "debug", "SLURM_CPUS_PER_TASK": "3",
           "PYTHONPATH": "/nonexistent"}
    reply = await client.request({"op": "start", "key": "test-key", "cwd": "/tmp", "env": env}, DEADLINE)
    assert reply["event"] == "started", reply
    magic = launcher.dir / "remote_kernel_magic.py"
    assert magic.read_text() == SOURCE and oct(magic.stat().st_mode & 0o777) == "0o600"
    kc = AsyncKernelClient()
    kc.load_connection_file(str(launcher.dir / "kernel.json"))
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=DEADLINE)
        content, out = await run_cell(kc, "%remote_kernel", timeout=DEADLINE)
        assert content["status"] == "ok", out
        lines = out.splitlines()
        assert lines[0] == f"remote kernel: slurm job 4242 on {socket.gethostname()}", out
        assert "  partition  debug" in lines and "  cpus       3" in lines, out
        content, out = await run_cell(kc, "%load_ext remote_kernel_magic", timeout=DEADLINE)
        assert content["status"] == "ok", out
    finally:
        kc.stop_channels()


@pytest.mark.parametrize("when", ["after-a-cell", "before-any-cell"])
async def test_the_pre_end_signal_warns_once_under_a_cell(launch, when):  # noqa: F811
    """SIGUSR1 to the launcher (what SLURM's --signal=B:USR1@N sends the batch shell) reaches the
    kernel, which sends the warning as stderr output of the cell run last; before any cell ran,
    under the next one.  A second signal (SLURM's and the server's) warns no more.  Kernel and
    launcher live on."""
    import signal as _signal
    import time

    from jupyter_client.asynchronous import AsyncKernelClient

    from remote_kernels import launcher as launcher_module

    assert kernel_magic.WALLTIME_FLAG == launcher_module.WALLTIME_FLAG
    launcher = await launch()
    client = await launcher.client()
    reply = await client.request({"op": "start", "key": "test-key", "cwd": "/tmp",
                                  "env": {"SLURM_JOB_ID": "4243"}}, DEADLINE)
    assert reply["event"] == "started", reply
    kc = AsyncKernelClient()
    kc.load_connection_file(str(launcher.dir / "kernel.json"))
    kc.start_channels()

    async def run(code: str) -> tuple[str, list[dict]]:
        """Execute code; (its msg id, the warnings seen until its idle)."""
        msg_id, warnings = kc.execute(code), []
        deadline = time.monotonic() + DEADLINE
        while True:
            msg = await kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
            if msg["msg_type"] == "stream" and "wall-time" in msg["content"]["text"]:
                warnings.append(msg)
            if (msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle"
                    and msg["parent_header"].get("msg_id") == msg_id):
                return msg_id, warnings

    async def warning_under(cell: str) -> dict:
        deadline = time.monotonic() + DEADLINE
        while True:
            msg = await kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
            if msg["msg_type"] == "stream" and "wall-time" in msg["content"]["text"]:
                return msg

    try:
        await kc.wait_for_ready(timeout=DEADLINE)
        if when == "after-a-cell":
            cell, _ = await run("x = 1")
            launcher.proc.send_signal(_signal.SIGUSR1)
            msg = await warning_under(cell)
        else:
            launcher.proc.send_signal(_signal.SIGUSR1)   # no cell has run: the warning waits for one
            await until_exists(launcher.dir / launcher_module.WALLTIME_FLAG)
            cell, [msg] = await run("print('first')")
        assert msg["parent_header"]["msg_id"] == cell and msg["content"]["name"] == "stderr"
        assert msg["content"]["text"].startswith("remote-kernels warning: slurm job 4243 reaches its wall-time soon")
        launcher.proc.send_signal(_signal.SIGUSR1)   # the second: no warning
        assert (await client.request({"op": "ping"}, DEADLINE))["event"] == "pong"
        _, warnings = await run("print('still here')")
        assert warnings == [] and launcher.proc.returncode is None
    finally:
        kc.stop_channels()


async def test_remote_kernel_magic_on_a_compute_node(start_kernel):
    """rk-long asks for partition long and 30 minutes: the magic says so, with the job and node."""
    km, kc = await start_kernel("rk-long")
    info = await remote(km)
    content, out = await run_cell(kc, "%remote_kernel")
    assert content["status"] == "ok", out
    lines = out.splitlines()
    assert lines[0] == f"remote kernel: slurm job {info['job_id']} on {info['node']}", out
    assert "  partition  long" in lines and "  time limit 30:00" in lines, out
    left = next(line for line in lines if line.startswith("  time left  "))
    minutes, seconds = left.split()[-1].split(":")
    assert 28 <= int(minutes) <= 29 or (minutes, seconds) == ("30", "00"), left


async def test_an_early_pre_end_signal_ends_nothing(start_kernel, make_spec):
    """A 1-minute batch job with walltime_warning 300 s: SLURM signals it at once, maybe while the
    batch shell or the kernel still start; the job and kernel live on and the next cell warns."""
    import time

    from pathlib import Path

    make_spec("rk-warn-early", time="1", walltime_warning=300, dispatch="batch")
    km, kc = await start_kernel("rk-warn-early")
    info = await remote(km)
    log = Path(info["log_file"])
    deadline = time.monotonic() + 45
    while "wall-time is near" not in log.read_text():
        assert time.monotonic() < deadline, f"no pre-end signal within 45 s: {log.read_text()}"
        await asyncio.sleep(0.5)
    content, out = await run_cell(kc, "print('alive')")
    assert content["status"] == "ok" and "alive" in out, out
    assert f"remote-kernels warning: slurm job {info['job_id']} reaches its wall-time soon" in out, out
