"""The login side's link to one job's launcher: SSH connection, control channel, forwards.

Owned by the session (session.py), used only on its event loop.  ``open()`` reaches the
launcher once the job runs; ``broken()`` waits until the link fails and says how;
``reconnect()`` restores connection, control channel and forwards after a drop;
``close()`` ends it for good (nothing is reopened afterwards).  Failures raise
KernelStartError with one line.

In a shared allocation the link acts for one kernel slot (``slot``, the session's id): its
hello names the slot (again after each reconnect), and its forwards reach that slot's
sockets (``kernel_dir``).  ``join()`` opens such a link to a launcher that already runs;
AllocationFull when the launcher takes no more kernels.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Callable

import asyncssh

from .control import LauncherClient, LauncherLost
from .errors import KernelStartError
from .launcher import CHANNELS
from .options import KernelOptions
from .runner import SSHCommandRunner
from .ssh import CONNECT_TIMEOUT, NodeConnection, NodeConnections
from .sshconnect import SSH_ERRORS, UntrustedConfig, describe

# Seconds a node may drop logins after its job started (pam_slurm_adopt admits a user once
# the job's extern step exists).
ADMIT_WAIT = 10.0
# Most seconds between pings: a silent link is noticed within (SILENT_BEATS + 1) of them.
PING_EVERY = 2.0
# Reconnecting: seconds one attempt may take (at least; three times the first connection's
# time on a slow link), and the most between attempts that failed fast.  TCP resends an
# unanswered SYN only after 1, 3, 7... s: fresh attempts put one on the wire every second
# or two, so a link that comes back is used at once.
RECONNECT_ATTEMPT = 4.0
RECONNECT_PAUSE = 1.0
# What broken() returns.
DROPPED = "dropped"     # the SSH connection (or the link under it) failed: the launcher may live on
LAUNCHER = "launcher"   # the launcher closed its channel over a working connection: it ended


def endpoints(info: dict) -> dict[str, str | int]:
    """The login-side endpoints of a connection file's info: channel -> ipc path or TCP port."""
    if info.get("transport", "tcp") == "ipc":
        return {ch: f"{info['ip']}-{info[ch]}" for ch in CHANNELS}
    return {ch: int(info[ch]) for ch in CHANNELS}


def heartbeat(grace: float) -> float:
    """Seconds between pings: well inside the launcher's dead-man ``grace``, and often
    enough that a silent link is noticed within seconds."""
    return max(0.5, min(PING_EVERY, grace / 3))


def attempt_timeout(first_connect: float) -> float:
    """Seconds one reconnect attempt may take, for a link whose first connection took
    ``first_connect`` s."""
    return min(CONNECT_TIMEOUT, max(RECONNECT_ATTEMPT, 3 * first_connect))


class AllocationFull(KernelStartError):
    """The shared allocation's launcher takes no more kernels (max_kernels) or is ending."""


# Seconds joining a running launcher may wait for its control socket (it listens already).
JOIN_TIMEOUT = 2.0


class LauncherLink:
    """What every link to a launcher has: its name, whether its control channel is open, and
    requests on it (``ctl``: the LauncherClient, once opened)."""

    job_id: str
    node: str
    ctl: LauncherClient | None
    _closed: bool

    @property
    def what(self) -> str:
        return f"the launcher of job {self.job_id} on {self.node}"

    @property
    def usable(self) -> bool:
        return not self._closed and self.ctl is not None and self.ctl.open

    async def request(self, msg: dict, timeout: float = 30.0) -> dict:
        """One control request's reply.  KernelStartError if the channel fails or is silent."""
        if not self.usable:
            raise KernelStartError(f"no connection to {self.what}")
        try:
            return await self.ctl.request(msg, timeout)
        except LauncherLost as e:
            raise KernelStartError(str(e)) from None

    def _end_control(self) -> None:
        """Mark the link closed for good and close its control channel (close()'s first step)."""
        self._closed = True
        if self.ctl is not None:
            self.ctl.close()


class NodeLink(LauncherLink):
    def __init__(self, opts: KernelOptions, *, node: str, job_id: str, node_dir: str,
                 via: SSHCommandRunner | None, on_event: Callable[[dict], None], log: logging.Logger,
                 slot: str = ""):
        self.opts, self.node, self.job_id, self.node_dir = opts, node, job_id, node_dir
        self.slot = slot
        self.via, self.on_event, self.log = via, on_event, log
        self.conn: NodeConnection | None = None
        self.ctl: LauncherClient | None = None
        self.hello: dict = {}
        self.reconnects = 0
        self._endpoints: dict[str, str | int] = {}
        self._listeners: list = []
        self._closed = False
        self._connect_took = 0.0   # seconds the first connection took to open

    @property
    def kernel_dir(self) -> str:
        """The node directory of this link's kernel: the launcher's, or its slot's."""
        return f"{self.node_dir}/s-{self.slot}" if self.slot else self.node_dir

    # --- open -----------------------------------------------------------------------------
    async def connect(self) -> None:
        """Connect to the job's node (called once the job runs there)."""
        self.conn = await self._connect()

    async def reach(self, job_finished: Callable[[], bool], log_file: str) -> dict:
        """After connect(): wait for the launcher's socket, say hello; return its answer."""
        return await self._open_control(self.opts.launch_timeout, job_finished, log_file)

    async def join(self) -> dict:
        """connect() and reach a launcher that already runs (a shared allocation); its hello.
        AllocationFull if it takes no more kernels, KernelStartError if it cannot be reached."""
        await self.connect()
        return await self._open_control(JOIN_TIMEOUT, lambda: False, "the job's log")

    async def _connect(self) -> NodeConnection:
        """The pool's connection to the job's node; a login dropped just after the job
        started is tried again for ADMIT_WAIT s."""
        deadline, delay = time.monotonic() + ADMIT_WAIT, 0.1
        while True:
            t0 = time.monotonic()
            try:
                conn = await NodeConnections.shared().acquire(
                    self.node, self.job_id, interactive=self.opts.interactive_ssh, via=self.via)
                self._connect_took = time.monotonic() - t0
                return conn
            except SSH_ERRORS as e:
                if not isinstance(e, asyncssh.ConnectionLost) or time.monotonic() + delay > deadline:
                    raise KernelStartError(f"cannot reach node {self.node} over SSH: {describe(e)}") from None
                self.log.debug("remote kernel: %s dropped the login (%s); retrying", self.node, e)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _open_control(self, timeout: float, job_finished: Callable[[], bool], log_file: str) -> dict:
        """Open the control channel once the launcher listens; KernelStartError if it never does."""
        deadline, delay = time.monotonic() + timeout, 0.02
        while True:
            try:
                reader, writer = await self.conn.conn.open_unix_connection(f"{self.node_dir}/ctl")
                break
            except asyncssh.ChannelOpenError as e:
                if e.code == asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED:
                    raise KernelStartError(
                        f"sshd on {self.node} refuses unix-socket forwarding ({e.reason}); the site must "
                        "allow it (AllowStreamLocalForwarding yes)") from None
                # OPEN_CONNECT_FAILED: the launcher does not listen yet
            if job_finished():
                raise KernelStartError(f"job {self.job_id} on {self.node} ended before its launcher started")
            if time.monotonic() > deadline:
                raise KernelStartError(f"{self.what} did not answer within {timeout:g}s; see {log_file}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)
        self.ctl = LauncherClient(reader, writer, on_event=self.on_event,
                                  heartbeat=heartbeat(self.opts.grace), what=self.what)
        self.ctl.start()
        # persist always: an adopting server whose spec dropped it ends the kernel after grace again.
        hello = await self.request({"op": "hello", **({"kernel": self.slot} if self.slot else {}),
                                    **({} if self.slot else {"persist": self.opts.persist})})
        if hello.get("event") != "hello":
            self.ctl.close()
            error = AllocationFull if hello.get("full") else KernelStartError
            raise error(f"{self.what}: {hello.get('message', hello)}")
        self.hello = hello
        return self.hello

    # --- use ------------------------------------------------------------------------------
    async def forward(self, endpoints: dict[str, str | int]) -> None:
        """Forward login-side endpoints (channel -> unix path, or TCP port on 127.0.0.1) to the
        kernel's node sockets, replacing earlier forwards (jupyter_client deletes ipc files on restart)."""
        if self._closed or self.conn is None:
            raise KernelStartError(f"no connection to {self.what}")
        self._close_forwards()
        self._endpoints = dict(endpoints)
        for channel, local in endpoints.items():
            remote = f"{self.kernel_dir}/k-{CHANNELS[channel]}"
            if isinstance(local, int):
                listener = await self.conn.conn.forward_local_port_to_path("127.0.0.1", local, remote)
            else:
                listener = await self.conn.conn.forward_local_path(local, remote)
                os.chmod(local, 0o600)
            self._listeners.append(listener)

    def _close_forwards(self) -> None:
        for listener in self._listeners:
            listener.close()
        self._listeners.clear()

    # --- failure and recovery ---------------------------------------------------------------
    async def broken(self) -> str:
        """Wait until the control channel ends; DROPPED if the connection under it failed (or
        went silent), LAUNCHER if the launcher ended it over a working connection."""
        await self.ctl.wait_closed()
        if self.ctl.silent or self.conn is None or self.conn.closed:
            return DROPPED
        return LAUNCHER

    async def reconnect(self, job_finished: Callable[[], bool]) -> bool:
        """After DROPPED: reconnect, reopen the control channel and the forwards.

        The old connection is aborted (nothing is sent on it or waited for); attempts last
        attempt_timeout() s each and follow one another at once (one that failed fast after a
        pause of up to RECONNECT_PAUSE s).  False when the job has ended, on an SSH
        configuration error, or after grace minus a margin (the launcher's dead-man switch
        ends the job then).  The kernel is untouched."""
        pool = NodeConnections.shared()
        deadline = time.monotonic() + max(5.0, self.opts.grace - 5.0)
        attempt, pause = attempt_timeout(self._connect_took), 0.25
        self.log.warning("remote kernel: SSH connection to %s dropped; reconnecting", self.node)
        self._close_forwards()   # stop accepting local connections onto the dead connection
        if self.conn is not None:
            old, self.conn = self.conn, None
            old.abort()
            await pool.release(old)
        while not self._closed and time.monotonic() < deadline and not job_finished():
            try:
                self.conn = await pool.acquire(self.node, self.job_id, connect_timeout=attempt,
                                               interactive=self.opts.interactive_ssh, via=self.via)
            except UntrustedConfig as e:   # a configuration error does not heal by waiting
                self.log.error("remote kernel: cannot reconnect to %s: %s", self.node, e)
                return False
            except SSH_ERRORS as e:
                wait = 0.0 if isinstance(e, asyncio.TimeoutError) else pause   # a timeout has waited enough
                self.log.info("remote kernel: reconnect to %s failed (%s); retrying%s",
                              self.node, describe(e), f" in {wait:.1f}s" if wait else "")
                await asyncio.sleep(wait)
                pause = min(pause * 2, RECONNECT_PAUSE)
                continue
            try:
                await self._open_control(max(1.0, deadline - time.monotonic()), job_finished, "the job's log")
                await self.forward(self._endpoints)
            except (KernelStartError, OSError, asyncssh.Error):
                return False
            self.reconnects += 1
            self.log.warning("remote kernel: reconnected to %s; forwards restored", self.node)
            return True
        return False

    async def close(self) -> None:
        """End the link: control channel, forwards, connection.  Idempotent; nothing reopens after."""
        self._end_control()
        self._close_forwards()
        if self.conn is not None:
            conn, self.conn = self.conn, None
            await NodeConnections.shared().release(conn)
