"""One kernel per scheduler through jupyter_client, end to end on the test cluster.

slurm is the real SLURM; sge the real Grid Engine of tests/cluster/sge.py (when it is
up); ssh starts the launcher over SSH on c1 with no scheduler; pbs, torque, lsf,
htcondor and flux are the fake commands of tests/fake_schedulers/, which speak those
schedulers' command lines and hand the job to SLURM, so it really runs on a node.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import pytest

from conftest import SERVER_MARKER
from conftest import _missing as missing

from kernel_helpers import SERVER_SCRIPT, kernel_environ, processes_mentioning, remote, run_cell, start_sleeping_cell, until, value_of
from site_helpers import VENV_BIN, as_user, unique
from remote_kernels.cli import main as cli_main
from remote_kernels.options import KernelOptions
from remote_kernels.runner import CommandError
from remote_kernels.schedulers import get_scheduler
from remote_kernels.schedulers._common import seconds
from remote_kernels.script import render

FAKES = Path(__file__).parent / "fake_schedulers"
SGE_SCRIPT = Path(__file__).parent / "cluster" / "sge.py"
FAKE_FLAVOURS = ("pbs", "torque", "lsf", "htcondor", "flux")
SCHEDULERS = ("slurm", "sge", "ssh", *FAKE_FLAVOURS)
# The variable each scheduler sets in the job to the id its adapter parsed from the submit output.
JOB_ID_VARIABLE = {"slurm": "SLURM_JOB_ID", "sge": "JOB_ID", "pbs": "PBS_JOBID", "torque": "PBS_JOBID",
                   "lsf": "LSB_JOBID", "htcondor": "RK_JOB_ID", "flux": "FLUX_JOB_ID"}
TIME_LIMIT = "00:10:00"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def scheduler_env(request, monkeypatch, tmp_path, cluster):
    """Make scheduler ``request.param`` reachable: fakes first on PATH, or the real SGE checked."""
    name = request.param
    if name in FAKE_FLAVOURS:
        monkeypatch.setenv("PATH", f"{FAKES / name}:{os.environ['PATH']}")
        monkeypatch.setenv("RK_FAKE_SCHEDULER_STATE", str(tmp_path / "fake-state"))
    elif name == "sge":
        status = subprocess.run([sys.executable, str(SGE_SCRIPT), "status"], capture_output=True, text=True)
        if status.returncode != 0:
            missing(f"real SGE not up ({status.stdout.strip()}); run `{SGE_SCRIPT} up`")   # fails under CI
    return name


def spec_config(name: str) -> dict:
    config = {"scheduler": name, "time": TIME_LIMIT, "cpus": 1, "poll_interval": 0.5, "queue_poll_max": 0.5}
    if name == "ssh":
        config["partition"] = "c1"   # the host to run on
    return config


def underlying_time_limit(name: str, job: str, tmp_path: Path) -> int | None:
    """Seconds of the time limit the job really got, from the scheduler running it (None: no limit)."""
    if name == "ssh":
        return None
    if name == "sge":
        out = subprocess.run(["qstat", "-j", job], capture_output=True, text=True).stdout
        m = re.search(r"h_rt=(\d+)", out)
        return int(m.group(1)) if m else 0
    slurm_id = job
    if name in FAKE_FLAVOURS:
        state = json.loads((tmp_path / "fake-state" / "state.json").read_text())
        slurm_id = state["jobs"][job]["slurm"]
    out = subprocess.run(["scontrol", "show", "job", slurm_id], capture_output=True, text=True).stdout
    m = re.search(r"TimeLimit=(\S+)", out)
    return seconds(m.group(1)) if m else 0


def assert_own_environment(env: dict[str, str], user: str, server_secret: str) -> None:
    """env is a job's own for user (home, name, search path) and has nothing of the submitter's."""
    assert SERVER_MARKER not in env and not [k for k, v in env.items() if server_secret in v]
    me = pwd.getpwnam(user)
    assert (env.get("HOME"), env.get("USER")) == (me.pw_dir, me.pw_name) and env.get("PATH"), env
    assert env.get("LC_ALL") != "C"   # the locale the adapter's commands run in stays with them


@pytest.mark.parametrize("scheduler_env", SCHEDULERS, indirect=True)
async def test_kernel_lifecycle(scheduler_env, make_spec, start_kernel, tmp_path, server_secret):
    name = scheduler_env
    spec = make_spec(f"rk-e2e-{name}", **spec_config(name))
    km, kc = await start_kernel(spec)
    session = await remote(km)
    job, sid = session["job_id"], session["session_id"]

    # The job (launcher and kernel) has its own environment on the node, not the server's.
    env = await kernel_environ(kc)
    assert_own_environment(env, pwd.getpwuid(os.getuid()).pw_name, server_secret)
    assert server_secret.encode() not in Path(f"/proc/{env['JPY_PARENT_PID']}/environ").read_bytes()

    # It runs on a compute node, in the job the adapter submitted, with the resources asked for.
    host = await value_of(kc, "__import__('socket').gethostname()")
    assert host in ("c1", "c2") and host == session["node"]
    if name == "ssh":
        assert host == "c1" and job.startswith("c1:")
        assert await value_of(kc, "__import__('os').environ['RK_SSH_HOST']") == "c1"
    else:
        assert await value_of(kc, f"__import__('os').environ['{JOB_ID_VARIABLE[name]}']") == job
    assert Path(session["log_file"]).exists(), f"job output not at {session['log_file']}"
    limit = underlying_time_limit(name, job, tmp_path)
    assert limit in (None, seconds(TIME_LIMIT)), f"time limit {limit!r}"
    st = (await get_scheduler(name).status([job]))[job]
    assert st.state.value == "running" and st.node == host

    # Interrupting a sleeping cell.
    await start_sleeping_cell(kc)
    await km.interrupt_kernel()
    reply = await kc.get_shell_msg(timeout=5)
    assert reply["content"]["ename"] == "KeyboardInterrupt"

    # Restart keeps the job.
    await run_cell(kc, "x = 1")
    await km.restart_kernel()
    await kc.wait_for_ready(timeout=60)
    assert (await remote(km))["job_id"] == job
    content, _ = await run_cell(kc, "x")
    assert content["ename"] == "NameError"

    # Shutdown leaves no job (as the scheduler itself sees it) and no launcher.
    assert processes_mentioning(sid)
    await km.shutdown_kernel()
    adapter = get_scheduler(name)

    async def job_left():
        return (await adapter.status([job]))[job].state.finished

    await until_async(f"{name} job {job} to end", job_left, timeout=20)
    await until("launcher and kernel processes to end", lambda: not processes_mentioning(sid), timeout=10)


@pytest.mark.parametrize("scheduler_env", SCHEDULERS, indirect=True)
async def test_job_cancelled_from_outside_is_noticed(scheduler_env, make_spec, start_kernel):
    """The adapter's cancel (qdel, bkill, condor_rm, flux cancel, kill) ends the job and the kernel;
    poll() reports it from the scheduler's own status, and no launcher or kernel is left."""
    name = scheduler_env
    km, kc = await start_kernel(make_spec(f"rk-e2e-{name}", **spec_config(name)))
    session = await remote(km)
    job, sid = session["job_id"], session["session_id"]
    assert await value_of(kc, "1 + 1") == "2"
    await get_scheduler(name).cancel(job)

    async def polled():
        return await km.provisioner.poll() is not None

    await until_async(f"poll() to report {name} job {job} ended", polled, timeout=20)
    code, reason = await km.provisioner.poll(), (await remote(km))["ended_reason"]
    assert code != 0 and reason, f"poll() {code}, ended_reason {reason!r}"
    await until("launcher and kernel processes to end", lambda: not processes_mentioning(sid), timeout=15)


# A user's own process submitting a batch script (file argv[2]), rendered from the Resources in
# argv[3] (JSON), through adapter argv[1]; prints the job id.
USER_SUBMIT = ("import asyncio, json, sys; from remote_kernels.schedulers import Resources, get_scheduler; "
               "print(asyncio.run(get_scheduler(sys.argv[1]).submit(open(sys.argv[2]).read(), "
               "Resources(**json.loads(sys.argv[3])))))")


@pytest.mark.parametrize("scheduler_env", [s for s in SCHEDULERS if s != "ssh"], indirect=True)
async def test_a_users_job_gets_none_of_the_submitters_environment(scheduler_env, cluster, server_secret,
                                                                   monkeypatch):
    """Submitted by the unprivileged test user through the adapter, a kernel's batch script
    (whose set-up line here records the environment and ends the job) has that user's own
    environment on the node, and nothing of the submitting process's."""
    name, user = scheduler_env, cluster["test_user"]
    work = Path(tempfile.mkdtemp(prefix="rk-envtest-", dir="/tmp"))
    opts = KernelOptions(environ={}, scheduler=name, time="00:02:00", python=str(VENV_BIN / "python"),
                         setup=[f"env -0 > {work}/env.tmp && mv {work}/env.tmp {work}/env && exit 0"])
    request = opts.resources(job_name=unique("rk-envtest"), output=f"{work}/%j.log")
    (work / "job.sh").write_text(render(get_scheduler(name), opts, request, session=unique("envtest")))
    shutil.chown(work, user)
    monkeypatch.setenv("RK_FAKE_SCHEDULER_STATE", str(work / "state"))   # the user's, for the cancel below too
    env = {SERVER_MARKER: server_secret, "RK_FAKE_SCHEDULER_STATE": str(work / "state")}
    if name in FAKE_FLAVOURS:
        env["PATH"] = f"{FAKES / name}:{VENV_BIN}:/usr/local/bin:/usr/bin:/bin"
    job = None
    try:
        res = as_user(user, str(VENV_BIN / "python"), "-c", USER_SUBMIT, name, str(work / "job.sh"),
                      json.dumps(asdict(request)), env=env)
        assert res.returncode == 0, res.stderr
        job = res.stdout.split()[-1]
        await until(f"{name} job {job} to write its environment", (work / "env").exists, timeout=60)
        job_env = dict(item.split("=", 1) for item in (work / "env").read_text().split("\0") if "=" in item)
        assert_own_environment(job_env, user, server_secret)
    finally:
        if job is not None:
            try:
                await get_scheduler(name).cancel(job)   # it ends by itself; in case it did not
            except CommandError:
                pass
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.parametrize("scheduler_env", ["slurm", "pbs", "flux"], indirect=True)
async def test_request_over_the_partition_limit_fails_at_once(scheduler_env, make_spec):
    """A wall time over the partition's limit (debug: 4:00:00): SLURM's pending reason, PBS's
    "Can Never Run" comment, Flux's unsatisfiable-request exception.  The start fails from that
    answer (not from a queue timeout: the one given is far off), in one line; the job is gone
    (as its scheduler sees it)."""
    from jupyter_client.manager import AsyncKernelManager
    from remote_kernels.session import KernelStartError

    name = scheduler_env
    make_spec(f"rk-e2e-never-{name}", **dict(spec_config(name), partition="debug", time="10:00:00"))
    km = AsyncKernelManager(kernel_name=f"rk-e2e-never-{name}")
    with pytest.raises(KernelStartError) as err:
        await km.start_kernel(queue_timeout=300)   # a start it ended would say "still queued after"
    message = str(err.value)
    m = re.match(rf"^{name} job (\S+) can never start \(", message)
    assert m and "\n" not in message, message
    if name == "slurm":
        assert "partition debug allows at most 4:00:00" in message
    job = m.group(1)

    async def job_left():
        return (await get_scheduler(name).status([job]))[job].state.finished

    await until_async(f"{name} job {job} to end", job_left, timeout=15)


async def test_ssh_hosts_through_a_login_host(cluster, make_spec):
    """A server off the cluster (the laptop namespace reaches only the login host) starts an
    ssh-"scheduled" kernel on c1: the adapter's SSH connections jump through the login host."""
    make_spec("rk-e2e-ssh-laptop", **spec_config("ssh"), login_host=cluster["laptop"]["login_host"])
    res = subprocess.run(["nsenter", f"--net=/run/netns/{cluster['laptop']['netns']}", sys.executable, "-c",
                          SERVER_SCRIPT, "rk-e2e-ssh-laptop",
                          "import socket, os; print(socket.gethostname(), os.environ['RK_SSH_HOST'])"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    _, host, ssh_host, job, status = next(l for l in res.stdout.splitlines() if l.startswith("RESULT")).split()
    assert (host, ssh_host, status) == ("c1", "c1", "ok") and job.startswith("c1:")
    assert (await get_scheduler("ssh").status([job]))[job].state.finished


async def until_async(what: str, cond, timeout: float, interval: float = 0.2):
    """kernel_helpers.until for a coroutine condition."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await cond():
        assert loop.time() < deadline, f"timed out after {timeout}s waiting for {what}"
        await asyncio.sleep(interval)


@pytest.mark.parametrize("name", SCHEDULERS)
def test_install_accepts_every_scheduler(name, tmp_path, capsys):
    assert cli_main(["install", f"rk-{name}", "--scheduler", name, "--no-check", "--prefix", str(tmp_path)]) == 0
    spec = json.loads((tmp_path / "share" / "jupyter" / "kernels" / f"rk-{name}" / "kernel.json").read_text())
    assert spec["metadata"]["kernel_provisioner"]["config"]["scheduler"] == name
