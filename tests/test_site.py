"""The test site as users meet it: ordinary users with no known_hosts of their own, node keys
published in /etc/ssh/ssh_known_hosts (c2 by a host certificate of the site CA), a tcsh user."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from site_helpers import UserSpecs, as_user, home, unique, user_jobs, VENV_BIN
from slurm_helpers import wait_until

CHECK = str(VENV_BIN / "remote-kernels")
ON_C1 = ("--directive=--nodelist=c1",)
ON_C2 = ("--partition", "long")   # c2 only: the node with a host certificate


@pytest.fixture
def specs():
    made = UserSpecs()
    yield made
    made.remove_all()


def _checked(res: subprocess.CompletedProcess, node: str) -> None:
    assert res.returncode == 0, res.stdout[-1500:] + res.stderr[-1500:]
    assert f"Kernel ran on node {node} " in res.stdout


@pytest.mark.parametrize("user", ["rkuser", "rkcsh"])
@pytest.mark.parametrize("node, where", [("c1", ON_C1), ("c2", ON_C2)])
def test_users_without_known_hosts_reach_nodes_the_site_publishes(cluster, specs, user, node, where):
    assert not (home(user) / ".ssh" / "known_hosts").exists()
    name = specs.install(user, "rk-site", *where)
    _checked(as_user(user, CHECK, "check", name), node)
    # Strict checking: nothing was learnt on the way.
    assert not (home(user) / ".ssh" / "known_hosts").exists()


def test_tcsh_user_from_a_laptop_through_the_login_host(cluster, specs):
    assert cluster["users"]["rkcsh"].endswith("/tcsh")
    name = specs.install("rkcsh", "rk-csh-laptop", "--login-host", cluster["laptop"]["login_host"])
    res = as_user("rkcsh", CHECK, "check", name, netns=cluster["laptop"]["netns"])
    assert res.returncode == 0, res.stdout[-1500:] + res.stderr[-1500:]
    assert any(f"Kernel ran on node {n} " in res.stdout for n in cluster["nodes"])


def test_tcsh_user_through_the_ssh_backend(cluster, specs):
    # Not to a compute node: pam_slurm_adopt admits users there only inside a SLURM job.
    name = specs.install("rkcsh", "rk-csh-ssh", "--scheduler", "ssh", "--partition", "login")
    _checked(as_user("rkcsh", CHECK, "check", name), "login")


def test_a_node_that_refuses_the_user_says_why(cluster, specs):
    """The ssh backend to a compute node where the user holds no job: pam_slurm_adopt's reason."""
    name = specs.install("rkcsh", "rk-csh-pam", "--scheduler", "ssh", "--partition", "c2")
    res = as_user("rkcsh", CHECK, "check", name)
    assert res.returncode == 1
    assert "Access denied by pam_slurm_adopt: you have no active jobs on this node" in res.stderr


def _node_key(cluster, node: str) -> str:
    kind, blob = (Path(cluster["state"]) / "nodes" / node / "ssh_host_ed25519_key.pub").read_text().split()[:2]
    return f"{kind} {blob}"


def _trust_case(case: str, cluster, tmp: Path) -> tuple[list[str], tuple[str, ...], str]:
    """(ssh config lines, where the spec runs, the words the error must contain) for a broken trust."""
    c1, c2 = cluster["nodes"]["c1"], cluster["nodes"]["c2"]
    if case == "wrong_key":              # a key that is not c1's, and nothing else
        (tmp / "bad").write_text(f"c1,{c1} {_node_key(cluster, 'c2')}\n")
        return [f"UserKnownHostsFile {tmp}/bad", "GlobalKnownHostsFile /dev/null"], ON_C1, "host key not verifiable"
    if case == "other_ca":               # c2's certificate is not from this CA
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / "other_ca")], check=True)
        ca = " ".join((tmp / "other_ca.pub").read_text().split()[:2])
        (tmp / "ca").write_text(f"@cert-authority c2,{c2} {ca}\n")
        return [f"UserKnownHostsFile {tmp}/ca", "GlobalKnownHostsFile none"], ON_C2, "host key not verifiable"
    if case == "user_file_none":         # asyncssh alone would verify nothing here
        (tmp / "bad").write_text(f"c1,{c1} {_node_key(cluster, 'c2')}\n")
        return ["UserKnownHostsFile none", f"GlobalKnownHostsFile {tmp}/bad"], ON_C1, "host key not verifiable"
    assert case == "no_trust"
    return ["UserKnownHostsFile none", "GlobalKnownHostsFile none"], ON_C1, "UserKnownHostsFile none"


@pytest.mark.parametrize("case", ["wrong_key", "other_ca", "user_file_none", "no_trust"])
def test_untrusted_nodes_fail_with_one_line_and_leave_no_job(cluster, specs, case):
    user = "rkuser"
    tmp = Path(tempfile.mkdtemp(prefix="rk-trust-"))   # pytest's tmp dirs are root's only
    fake_home = tmp / "home"
    (fake_home / ".ssh").mkdir(parents=True)
    config, where, words = _trust_case(case, cluster, tmp)
    (fake_home / ".ssh" / "config").write_text(
        "Host *\n" + "".join(f"    {line}\n" for line in config)
        + f"    IdentityFile {home(user)}/.ssh/id_ed25519\n")
    for path in (tmp, *tmp.rglob("*")):
        shutil.chown(path, user)
    tmp.chmod(0o700)
    try:
        name = specs.install(user, "rk-trust", *where, home_dir=fake_home)
        res = as_user(user, CHECK, "check", name, home_dir=fake_home)
        assert res.returncode != 0
        failed = [l for l in res.stderr.splitlines() if l.startswith("FAILED")]
        assert len(failed) == 1 and words in failed[0] and "cannot reach node" in failed[0], res.stderr
        wait_until("the failed kernel's job to leave the queue", lambda: user_jobs(user, f"rk-{name}") == [], 15)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# Two kernels of one user on one node, the first shut down while the second works on:
# "RESULT <first job> <second job> <output after> <the second's reconnects>".
TWO_KERNELS = """
import asyncio, sys
from jupyter_client.manager import AsyncKernelManager

async def remote(km):
    return (await km.provisioner.get_provisioner_info())["remote_kernel"]

async def run(km, code):
    kc = km.client(); kc.start_channels()
    await kc.wait_for_ready(timeout=60)
    out = []
    reply = await kc.execute_interactive(code, timeout=60, output_hook=lambda m: out.append(m["content"].get("text", "")))
    kc.stop_channels()
    assert reply["content"]["status"] == "ok", reply
    return "".join(out).strip()

async def main():
    first, second = AsyncKernelManager(kernel_name=sys.argv[1]), AsyncKernelManager(kernel_name=sys.argv[1])
    await first.start_kernel(); await second.start_kernel()
    await run(first, "x = 1"); await run(second, "y = 2")
    jobs = (await remote(first))["job_id"], (await remote(second))["job_id"]
    await first.shutdown_kernel()
    after = await run(second, "print(y * 21)")
    print("RESULT", *jobs, after, (await remote(second))["reconnects"], flush=True)
    await second.shutdown_kernel()
asyncio.run(main())
"""


def test_a_users_kernels_on_one_node_outlive_each_others_jobs(cluster, specs):
    """pam_slurm_adopt puts the user's SSH session to a node into one of their jobs, and ends
    it with that job: the other kernels on that node keep working."""
    name = specs.install("rkuser", "rk-two", *ON_C1)
    res = as_user("rkuser", str(VENV_BIN / "python"), "-c", TWO_KERNELS, name)
    assert res.returncode == 0, res.stdout[-1500:] + res.stderr[-3000:]
    _, job1, job2, after, reconnects = next(l for l in res.stdout.splitlines() if l.startswith("RESULT")).split()
    assert job1 != job2 and after == "42"
    assert reconnects == "0"   # each job has its own connection: the first's end does not touch it
