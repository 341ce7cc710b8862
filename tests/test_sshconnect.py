"""sshconnect.connect(): OpenSSH's trust rules on the test site's real sshds.

Each test gives the process a HOME of its own whose ~/.ssh/config says where trust comes from."""

from __future__ import annotations

from pathlib import Path

import asyncssh
import pytest

from remote_kernels import sshconnect

ROOT_KEY = str(Path("~root/.ssh/id_ed25519").expanduser())


def _node_key(cluster, node: str) -> str:
    kind, blob = (Path(cluster["state"]) / "nodes" / node / "ssh_host_ed25519_key.pub").read_text().split()[:2]
    return f"{kind} {blob}"


@pytest.fixture
def ssh_config(tmp_path, monkeypatch):
    """ssh_config(text): make ``text`` this process's ~/.ssh/config (root's key as identity)."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)

    def write(text: str) -> Path:
        (home / ".ssh" / "config").write_text(text + f"\nHost *\n    IdentityFile {ROOT_KEY}\n")
        return home
    return write


async def _hostname(host: str) -> str:
    async with await sshconnect.connect(host, timeout=20) as conn:
        return (await conn.run("hostname", check=True)).stdout.strip()


async def test_system_known_hosts_and_host_certificates_are_trusted(cluster, ssh_config):
    ssh_config("")
    assert sshconnect.known_hosts_files("c1") == [cluster["known_hosts"]]
    assert await _hostname("c1") == "c1"
    assert await _hostname("c2") == "c2"   # by its certificate: no key of c2 is listed


async def test_a_config_that_trusts_nothing_is_refused_before_connecting(cluster, ssh_config):
    ssh_config("Host c1\n    UserKnownHostsFile none\n    GlobalKnownHostsFile none\n")
    with pytest.raises(sshconnect.UntrustedConfig) as err:
        await sshconnect.connect("c1")
    message = str(err.value)
    assert "UserKnownHostsFile none" in message and "GlobalKnownHostsFile none" in message and "\n" not in message


async def test_user_file_none_still_verifies_against_the_global_files(cluster, ssh_config, tmp_path):
    (tmp_path / "bad").write_text(f"c1 {_node_key(cluster, 'c2')}\n")
    ssh_config(f"Host c1\n    UserKnownHostsFile none\n    GlobalKnownHostsFile {tmp_path}/bad\n")
    with pytest.raises(asyncssh.HostKeyNotVerifiable, match="known hosts read"):
        await sshconnect.connect("c1")


async def test_host_key_alias_names_the_key_to_look_up(cluster, ssh_config, tmp_path):
    (tmp_path / "kh").write_text(f"c1-by-alias {_node_key(cluster, 'c1')}\n")
    base = f"    UserKnownHostsFile {tmp_path}/kh\n    GlobalKnownHostsFile none\n"
    ssh_config(f"Host c1\n{base}")
    with pytest.raises(asyncssh.HostKeyNotVerifiable):   # c1 (and its address) are not listed
        await sshconnect.connect("c1")
    ssh_config(f"Host c1\n    HostKeyAlias c1-by-alias\n{base}")
    assert await _hostname("c1") == "c1"


async def test_proxy_jump_hops_are_verified_too(cluster, ssh_config, tmp_path):
    (tmp_path / "bad").write_text(f"login {_node_key(cluster, 'c1')}\n")
    ssh_config("Host c1\n    ProxyJump login\n")
    assert await _hostname("c1") == "c1"
    # The same jump with a wrong key for the login host: refused at the hop.
    ssh_config(f"Host c1\n    ProxyJump login\nHost login\n    UserKnownHostsFile {tmp_path}/bad\n"
               "    GlobalKnownHostsFile none\n")
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        await sshconnect.connect("c1")


def test_proxy_jump_syntax():
    assert sshconnect._split_hop("login") == ("login", None, None)
    assert sshconnect._split_hop("me@login:2222") == ("login", "me", 2222)
    assert sshconnect._split_hop("[fe80::1]:22") == ("fe80::1", None, 22)


async def test_an_unreachable_login_host_is_one_line_naming_the_host_and_the_fix(tmp_path, monkeypatch):
    from remote_kernels.runner import CommandError, SSHCommandRunner
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "known_hosts").write_text("")
    monkeypatch.setenv("HOME", str(tmp_path))
    runner = SSHCommandRunner("no-such-host.invalid", timeout=20)
    with pytest.raises(CommandError) as e:
        await runner.run(["squeue", "--version"])
    message = str(e.value)
    assert "\n" not in message and "login host no-such-host.invalid" in message
    assert "`ssh no-such-host.invalid` works" in message and "login_host" in message
    assert message.startswith("cannot reach login host")   # not "`squeue --version` exited 255": it never ran
    await runner.close()
