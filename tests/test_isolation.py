"""Other users and bad SSH set-ups: sockets private to their owner, SSH failures named clearly."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from jupyter_client.manager import AsyncKernelManager

from kernel_helpers import remote, until, value_of
from site_helpers import as_user
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
