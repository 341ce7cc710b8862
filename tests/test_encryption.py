"""Transport encryption (jupyter_client's ``transport_encryption``) of compute-node kernels, on the
test cluster: the kernel serves the Curve keys jupyter_client's policy provisions, every channel
is encrypted end to end through the forwards, and a node that cannot do Curve fails the start
with one line.  The browser half is tests/test_encryption_browser.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from jupyter_client.manager import AsyncKernelManager

from kernel_helpers import processes_mentioning, remote, run_cell, until, value_of, without_curve_nothing_is_heard
from remote_kernels.session import KernelStartError
from slurm_helpers import jobs_named

OLD_IPYKERNEL = "ipykernel==6.29.5"   # before CurveZMQ (7.4)
LIVE = "PENDING,RUNNING,COMPLETING,CONFIGURING"


async def test_required_encrypts_every_channel_and_a_client_without_the_key_gets_nothing(start_kernel, tmp_path):
    km, kc = await start_kernel("rk-test", transport_encryption="required")
    info = json.loads(Path(km.connection_file).read_text())
    public, secret = info["curve_publickey"], info["curve_secretkey"]
    session = await remote(km)
    node_info = json.loads((Path(session["node_dir"]) / "kernel.json").read_text())
    assert (node_info["curve_publickey"], node_info["curve_secretkey"]) == (public, secret)
    assert await value_of(kc, "__import__('socket').gethostname()") in ("c1", "c2")

    async def owner_runs_a_cell():
        content, out = await run_cell(kc, "print('rk-' + 'seen by the owner')")
        assert content["status"] == "ok" and out == "rk-seen by the owner\n"

    # Through the login-side forwards, and on the node's own sockets.
    await without_curve_nothing_is_heard(info, tmp_path / f"executed-{uuid.uuid4().hex}", owner_runs_a_cell)
    await without_curve_nothing_is_heard(node_info, tmp_path / f"executed-{uuid.uuid4().hex}", owner_runs_a_cell)

    # The secret key, like the HMAC key, is in no argv, script, scheduler record or log.
    assert processes_mentioning(secret) == []
    script = subprocess.run(["scontrol", "write", "batch_script", session["job_id"], "-"],
                            capture_output=True, text=True).stdout
    show = subprocess.run(["scontrol", "show", "job", "-d", session["job_id"]], capture_output=True, text=True).stdout
    assert session["job_id"] in show and secret not in show and secret not in script
    assert secret not in Path(session["log_file"]).read_text()

    await km.restart_kernel()   # the restarted kernel keeps the keys (clients reconnect with them)
    assert json.loads(Path(km.connection_file).read_text())["curve_secretkey"] == secret
    await kc.wait_for_ready(timeout=60)
    assert await value_of(kc, "6 * 7") == "42"


async def test_disabled_writes_no_curve_keys(start_kernel):
    km, kc = await start_kernel("rk-test")
    assert "curve_secretkey" not in json.loads(Path(km.connection_file).read_text())
    assert "curve_secretkey" not in json.loads((Path((await remote(km))["node_dir"]) / "kernel.json").read_text())


@pytest.fixture(scope="module")
def old_ipykernel(tmp_path_factory) -> str:
    """The Python of a venv with an ipykernel that predates CurveZMQ (on the shared filesystem)."""
    venv = tmp_path_factory.mktemp("old-ipykernel") / "venv"
    subprocess.run(["/usr/bin/python3.11", "-m", "venv", str(venv)], check=True)
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", OLD_IPYKERNEL], capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr
    yield str(venv / "bin" / "python")
    shutil.rmtree(venv.parent, ignore_errors=True)


@pytest.mark.parametrize("policy, transport, asks, other", [
    ("required", "ssh", "the server's transport_encryption asks for", "set transport_encryption to disabled"),
    ("auto", "ssh", "the server's transport_encryption asks for", "set transport_encryption to disabled"),
    ("disabled", "direct", "transport direct needs", "use transport ssh")])
async def test_a_node_whose_ipykernel_cannot_do_curve_fails_the_start_with_one_line(make_spec, old_ipykernel, policy,
                                                                                    transport, asks, other):
    """Our specs declare curve, so ``auto`` asks for it as ``required`` does; transport direct
    needs it whatever the policy.  Nothing is left running."""
    name = make_spec(f"rk-old-ipykernel-{transport}", python=old_ipykernel, transport=transport)
    before = jobs_named(f"rk-{name}", states=LIVE)
    km = AsyncKernelManager(kernel_name=name)
    with pytest.raises(KernelStartError) as err:
        await km.start_kernel(transport_encryption=policy)
    message = str(err.value)
    assert "\n" not in message
    assert f"{asks} CurveZMQ-encrypted channels" in message and "predates CurveZMQ" in message
    assert f"{old_ipykernel} -m pip install -U ipykernel" in message and message.endswith(other)
    await km.provisioner.cleanup()
    await until("no job left", lambda: jobs_named(f"rk-{name}", states=LIVE) <= before, timeout=20)
