"""SSH connections to compute nodes: one per job on a node, shared by the kernels of that job.

Per job, not per node: where sites run pam_slurm_adopt, sshd puts a login into one of the
user's jobs on the node and ends it with that job, so a connection shared across jobs would
drop whenever the job it was adopted into ends.

Connections come from ``sshconnect.connect`` (OpenSSH's configuration and host-key
trust, keepalives).  Each connection keeps a pty
session open: sshd switches the connection to interactive mode (TCP_NODELAY)
only then, which makes forwarded round trips ~7x faster (see docs/architecture).
"""

from __future__ import annotations

import asyncio
import logging

import asyncssh

from . import perloop
from .sshconnect import connect

log = logging.getLogger(__name__)
# Seconds opening a node connection may take (TCP, SSH handshake, authentication, pty session).
CONNECT_TIMEOUT = 30.0


class NodeConnection:
    """A shared asyncssh connection to one node, reference counted."""

    def __init__(self, host: str, conn: asyncssh.SSHClientConnection, keeper):
        self.host, self.conn, self._keeper = host, conn, keeper
        self.refs = 0
        self.key: tuple = ()   # set by the pool

    @property
    def closed(self) -> bool:
        return self.conn.is_closed()

    def abort(self) -> None:
        """Drop a connection known to be dead at once: nothing more is sent on it or waited for."""
        self.conn.abort()

    async def close(self) -> None:
        if self._keeper is not None:
            self._keeper.close()
        self.conn.close()
        await self.conn.wait_closed()


class NodeConnections:
    """Pool of NodeConnection keyed by (host, job), per event loop."""

    def __init__(self):
        self._conns: dict[tuple, NodeConnection] = {}
        self._locks: dict[tuple, asyncio.Lock] = {}

    @classmethod
    def shared(cls) -> "NodeConnections":
        """The running loop's pool."""
        return perloop.shared(cls, cls)

    async def acquire(self, host: str, job: str, connect_timeout: float = CONNECT_TIMEOUT, interactive: bool = True,
                      via=None) -> NodeConnection:
        """The pool's connection to host for job ``job``, opened if needed.  Release it with release().

        Called once the job runs on host (a node may admit the user only then).
        ``interactive``: keep a pty session on the connection (see the module docstring).
        ``via``: an SSHCommandRunner whose login-host connection to tunnel through.
        """
        key = (host, job, interactive, via.host if via is not None else "")
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            nc = self._conns.get(key)
            if nc is None or nc.closed:
                tunnel = await via.connection() if via is not None else None
                nc = await self._open(host, connect_timeout, interactive, tunnel)
                nc.key = key
                self._conns[key] = nc
            nc.refs += 1
            return nc

    async def release(self, nc: NodeConnection) -> None:
        nc.refs -= 1
        if nc.refs <= 0:
            if self._conns.get(nc.key) is nc:
                del self._conns[nc.key]
                lock = self._locks.get(nc.key)
                if lock is not None and not lock.locked():
                    del self._locks[nc.key]   # one lock per job would pile up in a long-lived server
            await nc.close()

    @staticmethod
    async def _open(host: str, timeout: float, interactive: bool, tunnel) -> NodeConnection:
        log.debug("opening SSH connection to %s", host)
        conn = await connect(host, tunnel=tunnel, timeout=timeout, encryption_algs=_preferred_ciphers())
        # A pty session puts sshd in interactive mode (TCP_NODELAY) for the whole connection.
        if not interactive:
            return NodeConnection(host, conn, None)
        try:
            keeper = await asyncio.wait_for(conn.create_process("cat", term_type="dumb", encoding=None), timeout)
        except (asyncssh.Error, OSError, asyncio.TimeoutError) as e:
            log.warning("no pty session on %s (%s): forwarded round trips will be slower", host, e)
            keeper = None
        except BaseException:
            conn.close()
            raise
        return NodeConnection(host, conn, keeper)


def _preferred_ciphers() -> list[str]:
    """AES-GCM first (about half the CPU of chacha20 here), then asyncssh's defaults."""
    defaults = [a.decode() for a in asyncssh.encryption.get_default_encryption_algs()]
    first = [a for a in ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com") if a in defaults]
    return first + [a for a in defaults if a not in first]
