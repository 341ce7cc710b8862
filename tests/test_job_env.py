"""What environment a compute-node kernel's job and kernel get (SLURM, through jupyter_client).

The server's environment (with its secrets) must not reach the job, nor SLURM's records of
it; the kernel gets the job's own environment on the node, the spec's `env` option, the
kernelspec's env stanza (over the launcher's control channel only) and JPY_SESSION_NAME.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import subprocess
import uuid
from pathlib import Path

import pytest

from conftest import SERVER_MARKER
from kernel_helpers import SERVER_SCRIPT, kernel_environ, remote, value_of
from site_helpers import VENV_BIN, UserSpecs, as_user, home

# Secrets a Jupyter server's environment carries (JupyterHub's API token under both names,
# the server's own token, a gateway's token): none may reach a job.
SERVER_SECRETS = ("JUPYTERHUB_API_TOKEN", "JPY_API_TOKEN", "JUPYTER_TOKEN", "JUPYTER_GATEWAY_AUTH_TOKEN")


def proc_environ(pid: int | str) -> bytes:
    """The environment a process was started with (nodes share the pid namespace; root reads it)."""
    return Path(f"/proc/{pid}/environ").read_bytes()


def slurm_records(job: str, batch: bool) -> dict[str, str]:
    """What SLURM keeps of a live job: scontrol's view of it and its steps, and for a batch job
    the batch script and the environment slurmctld saved with it
    (StateSaveLocation/hash.N/job.ID/environment; an allocation made by srun has none)."""
    def scontrol(*args: str) -> str:
        return subprocess.run(["scontrol", *args], capture_output=True, text=True, check=True).stdout

    state = re.search(r"^StateSaveLocation\s*=\s*(\S+)", scontrol("show", "config"), re.MULTILINE).group(1)
    saved = Path(state) / f"hash.{int(job) % 10}" / f"job.{job}" / "environment"
    records = {"scontrol show job -d": scontrol("show", "job", "-d", job),
               "scontrol show step": scontrol("show", "step", job)}
    if not batch:
        assert not saved.exists()
        return records
    return {**records, "batch script": scontrol("write", "batch_script", job, "-"),
            str(saved): saved.read_bytes().decode(errors="replace")}


@pytest.mark.parametrize("dispatch", ["batch", "interactive"])
async def test_the_job_gets_nothing_of_the_servers_environment_and_the_kernel_its_spec(
        dispatch, start_kernel, make_spec, server_secret, monkeypatch):
    for name in SERVER_SECRETS:
        monkeypatch.setenv(name, f"{server_secret}-{name}")
    substituted = f"subst-{uuid.uuid4().hex}"
    monkeypatch.setenv("RK_SUBST_SOURCE", substituted)
    user_secret = f"user-secret-{uuid.uuid4().hex}"
    # A server running inside a job of its own (as under some JupyterHub spawners): its SLURM_*
    # variables must not make the kernel's job a step of that one.
    monkeypatch.setenv("SLURM_JOB_ID", "999999")
    monkeypatch.setenv("SLURM_JOBID", "999999")
    spec = make_spec("rk-env-policy", dispatch=dispatch, env={"RK_FROM_OPTION": "option value"},
                     stanza={"RK_USER_TOKEN": user_secret, "RK_STANZA": "from ${RK_SUBST_SOURCE}"})
    notebook = "work/env-policy.ipynb"
    # As jupyter_server starts a notebook's kernel: its whole environment plus JPY_SESSION_NAME.
    km, kc = await start_kernel(spec, env={**os.environ, "JPY_SESSION_NAME": notebook})
    session = await remote(km)

    env = await kernel_environ(kc)
    assert env["RK_FROM_OPTION"] == "option value"
    assert env["RK_USER_TOKEN"] == user_secret
    assert env["RK_STANZA"] == f"from {substituted}"   # ${VAR} expanded by jupyter_client, login side
    assert env["JPY_SESSION_NAME"] == notebook
    leaked = [k for k in (SERVER_MARKER, *SERVER_SECRETS, "RK_SUBST_SOURCE") if k in env]
    assert not leaked and not [k for k, v in env.items() if server_secret in v], leaked
    # The user's own environment for a job on the node: their home, and srun steps inherit the kernel's.
    assert env["HOME"] == pwd.getpwuid(os.getuid()).pw_dir and env["SLURM_JOB_ID"] == session["job_id"]
    assert env.get("LC_ALL") != "C"   # the locale scheduler commands run in stays with them
    assert env["JPY_PARENT_PID"] == str(session["launcher_pid"])
    srun = "__import__('subprocess').run(['srun', '-n1', 'printenv', 'RK_USER_TOKEN'], " \
           "capture_output=True, text=True, timeout=60).stdout"
    assert await value_of(kc, srun) == user_secret

    # The launcher (the job's own process) has the job's environment: neither the server's nor the
    # kernelspec's values, which reach the kernel alone over the control channel.
    launcher = proc_environ(session["launcher_pid"])
    assert server_secret.encode() not in launcher and user_secret.encode() not in launcher
    assert user_secret.encode() in proc_environ(session["kernel_pid"])
    # SLURM's records of the job hold neither either (with sbatch's default --export=ALL they hold both
    # names and values of the whole server environment).
    records = slurm_records(session["job_id"], batch=dispatch == "batch")
    assert f"BatchFlag={int(dispatch == 'batch')}" in records["scontrol show job -d"]
    for where, text in records.items():
        assert server_secret not in text and user_secret not in text, where
        assert SERVER_MARKER not in text, where
    if dispatch == "batch":
        assert "export RK_FROM_OPTION=" in records["batch script"]   # the option is the script's, by design


# Run in a user's kernel: what it has of the server's environment and of its spec, in words.
USER_CELL = ("import os; e = os.environ; launcher = open('/proc/%s/environ' % e['JPY_PARENT_PID'], 'rb').read(); "
             "print([k for k in {names!r} if k in e], any({secret!r} in v for v in e.values()), "
             "{secret!r}.encode() in launcher, {user_secret!r}.encode() in launcher, "
             "e.get('RK_USER_TOKEN') == {user_secret!r}, e['HOME'], e['USER'], e['RK_FROM_OPTION'])")


async def test_a_users_own_kernel_gets_its_spec_and_nothing_of_their_servers_environment(cluster, server_secret):
    """The test user installs a spec (option `env`, and an env stanza added to kernel.json by
    hand, as users do) and runs it from their own Jupyter process, whose environment holds
    server secrets."""
    user, specs = cluster["test_user"], UserSpecs()
    user_secret = f"user-secret-{uuid.uuid4().hex}"
    try:
        name = specs.install(user, "rk-env-user", "--env", "RK_FROM_OPTION=option-value")
        kernel_json = specs.made[-1][1] / "kernel.json"
        kernel_json.write_text(json.dumps({**json.loads(kernel_json.read_text()), "env": {"RK_USER_TOKEN": user_secret}}))
        server_env = {SERVER_MARKER: server_secret, **{k: f"{server_secret}-{k}" for k in SERVER_SECRETS}}
        code = USER_CELL.format(names=[SERVER_MARKER, *SERVER_SECRETS], secret=server_secret, user_secret=user_secret)
        res = as_user(user, str(VENV_BIN / "python"), "-c", SERVER_SCRIPT, name, code, env=server_env)
        assert res.returncode == 0, res.stderr[-2000:]
        result = next(l for l in res.stdout.splitlines() if l.startswith("RESULT")).split(" ", 1)[1]
        assert result.rsplit(" ", 2)[2] == "ok"
        assert result.rsplit(" ", 2)[0] == f"[] False False False True {home(user)} {user} option-value"
    finally:
        specs.remove_all()
