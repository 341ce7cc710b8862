"""Every SSH connection remote-kernels makes, trusted the way OpenSSH trusts hosts.

``connect()`` is the one place that calls ``asyncssh.connect``: node connections, the
login host (login-host mode) and the ``ssh`` backend's hosts all come from here.

OpenSSH's rules, which asyncssh does not apply by itself:

- configuration from ``~/.ssh/config`` and then the system's ``/etc/ssh/ssh_config``
  (first value wins, ``Host``/``Match``/``Include`` as OpenSSH reads them);
- host keys from ``UserKnownHostsFile`` (default ``~/.ssh/known_hosts``,
  ``~/.ssh/known_hosts2``) *and* ``GlobalKnownHostsFile`` (default
  ``/etc/ssh/ssh_known_hosts``, ``/etc/ssh/ssh_known_hosts2``), with ``@cert-authority``
  and ``@revoked`` lines and hashed names; ``HostKeyAlias`` names the key to look up;
- ``ProxyJump`` hops are opened through ``connect()`` too, so they are checked alike.

Stricter than OpenSSH on one point: an unknown key is never accepted, whatever
``StrictHostKeyChecking`` says.  A configuration whose trust list names no readable
file would verify nothing: ``connect()`` refuses it (``UntrustedConfig``) before any
connection is made.  Every connection sends keepalives, and none sends any of this
process's environment: a ``SendEnv`` (Debian's ssh_config has ``SendEnv LANG LC_*``) would
hand the Jupyter server's variables to whatever the session runs (the ``ssh`` backend's jobs).
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import asyncssh

SYSTEM_CONFIG = "/etc/ssh/ssh_config"
USER_KNOWN_HOSTS = ("~/.ssh/known_hosts", "~/.ssh/known_hosts2")
GLOBAL_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")
KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 30, 4

# asyncssh logs each channel it opens and closes at INFO: 55 lines for one papermill run,
# 60-70 per kernel in VS Code's output.  Its warnings and errors still show; its INFO lines
# only where the application set the "asyncssh" logger's level itself (or `run --log-level DEBUG`).
if logging.getLogger("asyncssh").level == logging.NOTSET:
    logging.getLogger("asyncssh").setLevel(logging.WARNING)


class UntrustedConfig(ValueError):
    """The SSH configuration for a host trusts no host key at all; the message names the setting."""


# What a failed connect() raises; callers catch these and name the cause (see describe()).
SSH_ERRORS = (OSError, asyncssh.Error, asyncio.TimeoutError, UntrustedConfig)


def config_files() -> list[str]:
    """The OpenSSH client configuration files that exist, user's first (first value wins)."""
    files = [Path("~/.ssh/config").expanduser(), Path(SYSTEM_CONFIG)]
    return [str(f) for f in files if os.access(f, os.R_OK)]


def host_config(host: str):
    """asyncssh's reading of the OpenSSH configuration for ``host``."""
    return asyncssh.SSHClientConnectionOptions(config=config_files(), host=host).config


def _setting(config, name: str, default: tuple[str, ...]) -> tuple[list[str], str]:
    """(files, how they were chosen) for a known-hosts setting; [] when set to none."""
    value = config.get(name)
    if value is None:
        return list(default), f"{name} (default {' '.join(default)})"
    return list(value), f"{name} {' '.join(value) or 'none'}"


def known_hosts_files(host: str, config=None) -> list[str]:
    """The readable known_hosts files OpenSSH would consult for ``host``, user's then global.

    Raises UntrustedConfig when there is none: a connection would verify nothing."""
    config = host_config(host) if config is None else config
    found, said = [], []
    for name, default in (("UserKnownHostsFile", USER_KNOWN_HOSTS), ("GlobalKnownHostsFile", GLOBAL_KNOWN_HOSTS)):
        files, how = _setting(config, name, default)
        said.append(how)
        for f in files:
            path = os.path.expanduser(f)
            if os.path.isfile(path) and os.access(path, os.R_OK) and path not in found:
                found.append(path)
    if not found:
        raise UntrustedConfig(
            f"no host key of {host} can be verified: {'; '.join(said)} name no readable file. "
            f"Ask your site for the nodes' keys in /etc/ssh/ssh_known_hosts, or add {host} to ~/.ssh/known_hosts")
    return found


def _jumps(config) -> list[str]:
    value = config.get("ProxyJump")
    if not value or str(value).lower() == "none":
        return []
    return [hop.strip() for hop in str(value).split(",") if hop.strip()]


def _split_hop(hop: str) -> tuple[str, str | None, int | None]:
    """``[user@]host[:port]`` (ProxyJump syntax) -> (host, user, port)."""
    user, _, rest = hop.rpartition("@")
    host, port = rest, None
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        port = int(tail[1:]) if tail.startswith(":") else None
    elif rest.count(":") == 1:
        host, _, p = rest.partition(":")
        port = int(p)
    return host, user or None, port


async def connect(host: str, *, tunnel: asyncssh.SSHClientConnection | None = None, timeout: float = 30.0,
                  username: str | None = None, port: int | None = None, **options) -> asyncssh.SSHClientConnection:
    """Open an SSH connection to ``host`` trusted as OpenSSH would trust it (module docstring).

    ``tunnel``: an open connection to go through (login-host mode); otherwise the
    configuration's ``ProxyJump`` hops are opened here.  ``options`` go to asyncssh.
    Raises UntrustedConfig, asyncssh.Error (HostKeyNotVerifiable, PermissionDenied...),
    OSError, asyncio.TimeoutError (after ``timeout`` s in all).
    """
    config = host_config(host)
    trust = known_hosts_files(host, config)
    extra = {k: v for k, v in (("username", username), ("port", port)) if v is not None}

    hops: list[asyncssh.SSHClientConnection] = []

    async def open_() -> asyncssh.SSHClientConnection:
        via = tunnel
        if via is None:
            for hop in _jumps(config):
                hop_host, hop_user, hop_port = _split_hop(hop)
                via = await connect(hop_host, tunnel=via, timeout=timeout, username=hop_user, port=hop_port)
                hops.append(via)
        client = _Client()
        try:
            return await asyncssh.connect(
                host, config=config_files(), known_hosts=trust, tunnel=via, client_factory=lambda: client,
                keepalive_interval=KEEPALIVE_INTERVAL, keepalive_count_max=KEEPALIVE_COUNT, send_env=None,
                **extra, **options)
        except asyncssh.HostKeyNotVerifiable as e:
            raise asyncssh.HostKeyNotVerifiable(f"{e.reason} (known hosts read: {', '.join(trust)})") from None
        except asyncssh.ConnectionLost as e:
            if not client.banner:
                raise
            # sshd said why in a banner, then closed: e.g. pam_slurm_adopt without a job on the node.
            raise asyncssh.ConnectionLost(f"{host} closed the connection at login: {client.banner}") from e

    try:
        conn = await asyncio.wait_for(open_(), timeout)
    except BaseException:
        for hop in hops:
            hop.close()
        raise
    if hops:   # the jump connections live as long as this one
        task = asyncio.get_running_loop().create_task(_close_after(conn, hops))
        _hop_closers.add(task)
        task.add_done_callback(_hop_closers.discard)
    return conn


_hop_closers: set[asyncio.Task] = set()


class _Client(asyncssh.SSHClient):
    """Keeps the server's login banner, which carries PAM's reason for a refusal."""

    banner = ""

    def auth_banner_received(self, msg: str, lang: str) -> None:
        self.banner = " ".join(msg.split())


async def _close_after(conn: asyncssh.SSHClientConnection, hops: list) -> None:
    try:
        await conn.wait_closed()
    finally:   # also when cancelled with its loop
        for hop in reversed(hops):
            hop.close()


def describe(e: BaseException) -> str:
    """One line naming why connect() failed and what to do."""
    if isinstance(e, UntrustedConfig):
        return str(e)
    if isinstance(e, asyncssh.HostKeyNotVerifiable):
        return (f"host key not verifiable: {e}; refusing to connect. Get the right key from your site "
                "(never disable host-key checking)")
    if isinstance(e, asyncssh.PermissionDenied):
        return f"authentication failed ({e}); make sure your SSH key is accepted there"
    if isinstance(e, asyncio.TimeoutError):
        return "connection timed out"
    return str(e) or type(e).__name__
