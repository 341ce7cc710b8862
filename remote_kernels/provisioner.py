"""jupyter_client adapter: ``remote-kernels-provisioner`` in kernel.json's metadata.

A thin translation of jupyter_client's provisioner calls onto RemoteKernelSession.
The job lives from the first launch_kernel() until cleanup(restart=False):
jupyter_client calls kill()/terminate() with restart=False even while restarting
(jupyter_client#1061), so those only stop the kernel, never the job.

Sessions live on the process's background loop (``background.py``), so forwards keep
running for synchronous jupyter_client users too.  Under a server with pending kernels
(``use_pending_kernels``) launch_kernel waits at most DEFER_AFTER seconds for the job:
if it is still queued, it returns and the kernel starts when the job runs; until then a
stand-in answers on the kernel's endpoints (standin.py), and shutting down withdraws the job.

Launch keyword ``on_status``: ``km.start_kernel(on_status=callback)`` has the session
call ``callback(JobStatus, seconds_waited)`` (on the caller's loop) at each poll while
the job waits to start.  Launch keyword ``queue_timeout``: seconds after which a start
still queued gives up (cancelling the job) when the spec sets no ``queue_timeout``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
from typing import Any

from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.provisioning.provisioner_base import KernelProvisionerBase
from traitlets import Enum

from . import background
from .environment import kernel_env
from .launcher import CHANNELS
from .options import KernelOptions
from .session import KernelStartError, RemoteKernelSession
from .standin import QueuedKernelStandIn

# Under pending kernels, how long launch_kernel waits for the job before returning with a stand-in.
DEFER_AFTER = 5.0


class RemoteKernelProvisioner(KernelOptions, KernelProvisionerBase):  # type: ignore[misc]
    """Runs the kernel in a batch job on a compute node, reached over SSH."""

    login_transport = Enum(["ipc", "tcp"], "ipc", help=(
        "How the login side exposes the kernel to jupyter_client: 'ipc' sockets in a 0700 "
        "directory (only you can connect) or TCP on 127.0.0.1 (any local user can connect; "
        "the HMAC key stops forged messages but not reading the output).")).tag(config=True)

    session: RemoteKernelSession | None = None
    _standin: QueuedKernelStandIn | None = None
    _held = False   # a restart of a kernel whose job is queued is under way (the job is kept)
    _login_dir: str | None = None

    @property
    def _pending(self) -> bool:
        """The job has not started the kernel (yet): a start is running or a stand-in answers."""
        return self._standin is not None or (self.session is not None and self.session.starting)

    @property
    def has_process(self) -> bool:
        return self._pending or (self.session is not None and self.session.kernel_pid is not None)

    async def poll(self) -> int | None:
        if self._held:
            return 0   # "stopped", for jupyter_client's restart; the job stays queued
        if self._pending:
            return None
        if self.session is None:
            return 0
        return self.session.exit_code

    async def wait(self) -> int | None:
        while (code := await self.poll()) is None:
            await asyncio.sleep(0.1)
        if self.session is not None:
            self.session.kernel_pid = None
        return code

    async def send_signal(self, signum: int) -> None:
        await self._tell("signal", signum)

    async def kill(self, restart: bool = False) -> None:
        await self._tell("stop_kernel")

    async def terminate(self, restart: bool = False) -> None:
        await self._tell("signal", signal.SIGTERM)

    async def shutdown_requested(self, restart: bool = False) -> None:
        self._held = False
        if restart and self.session is not None and self.session.starting:
            # Restarting a kernel whose job is still queued: keep the job and its place.
            self.log.info("remote kernel: restart while job %s is queued; keeping the job", self.session.job_id)
            self._held = True
        elif self._pending:
            # Nothing runs yet to receive the request: withdraw the job now.
            job = self.session.job_id if self.session else None
            self.log.info("remote kernel: the kernel has not started; ending it" + (f" and job {job}" if job else ""))
            await self._end_session()

    async def _tell(self, what: str, *args: Any) -> None:
        """Forward to the session; log (not raise) failures so shutdown can go on to cleanup().

        While the kernel has not started, stopping means withdrawing the job; signals are dropped."""
        if self._pending:
            if what != "signal":
                await self._end_session()
            return
        session = self.session
        if session is None:
            return
        try:
            await background.run(getattr(session, what)(*args))
        except KernelStartError as e:
            self.log.warning("remote kernel: %s failed: %s", what, e)

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        km = self.parent
        if self._login_dir is None:
            self._login_dir = tempfile.mkdtemp(prefix="rk-")   # 0700
        if self.login_transport == "ipc":
            km.transport, km.ip = "ipc", os.path.join(self._login_dir, "k")
            for channel, n in CHANNELS.items():
                setattr(km, channel, n)
        else:
            km.transport, km.ip = "tcp", "127.0.0.1"
            if not km.shell_port:
                from jupyter_client.connect import LocalPortCache
                cache = LocalPortCache.instance()
                for channel in CHANNELS:
                    setattr(km, channel, cache.find_available_port("127.0.0.1"))
        km.write_connection_file()
        self.connection_info = km.get_connection_info()
        kwargs.pop("extra_arguments", None)
        # cmd is jupyter_client's to format; the job runs the launcher, not this argv.
        return await super().pre_launch(cmd=km.format_kernel_cmd(), **kwargs)

    def _endpoints(self) -> dict[str, str | int]:
        info = self.connection_info
        if info["transport"] == "ipc":
            return {ch: f"{info['ip']}-{info[ch]}" for ch in CHANNELS}
        return {ch: int(info[ch]) for ch in CHANNELS}

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        # kwargs["env"] is the server's whole environment plus the kernelspec's env stanza:
        # only the stanza's keys and environment.PASS_ENV go to the kernel.
        env = kernel_env(getattr(self.kernel_spec, "env", None) or {}, kwargs.get("env") or {})
        on_status = kwargs.get("on_status")
        if on_status is not None:   # the session calls it on the background loop
            on_status = background.call_in(asyncio.get_running_loop(), on_status)
        try:
            await background.run(self._launch(env, kwargs.get("cwd"), on_status,
                                              kwargs.get("queue_timeout") or 0))
        except background.Cancelled:
            await self._end_all()
            raise KernelStartError("the start was cancelled: the kernel was shut down meanwhile") from None
        except BaseException:
            # jupyter_client forgets a manager whose start failed: release everything now.
            await self._end_all()
            raise
        return self.connection_info

    def _defer_start(self) -> bool:
        """Return before the job runs when the server uses pending kernels (it then must not
        wait for the queue: it holds the kernel's websockets until launch_kernel returns)."""
        multi = getattr(self.parent, "parent", None)
        return bool(getattr(multi, "use_pending_kernels", False))

    async def _launch(self, env: dict, cwd: str | None, on_status, queue_timeout: float = 0) -> None:
        """On the background loop: start the kernel, in the current job if it is usable."""
        if self._held:   # restarted while the start was pending; jupyter_client removed the ipc files
            self._held = False
            session = self.session
            if session is not None and session.starting:
                if session.node is None:   # still queued: the start goes on behind a stand-in
                    self._open_standin(session)
                    return
                await session.wait_start()   # past the queue: let it finish, then restart as usual
        if self.session is not None and not self.session.usable:
            self.log.warning("remote kernel: the job of the previous kernel is gone; submitting a new one")
            await self._close(self.session)
            self.session = None
        if self.session is None:
            session = self.session = RemoteKernelSession(
                self, name=_short_name(self), kernel_id=self.kernel_id or "", log=self.log)
            background.track(session)
            session.on_status = on_status
            session.queue_timeout = session.queue_timeout or queue_timeout
            if self._defer_start():
                await self._start_deferred(session, env, cwd)
                return
            await session.start_job()
        await self._start_kernel(self.session, env, cwd)

    async def _start_deferred(self, session: RemoteKernelSession, env: dict, cwd: str | None) -> None:
        """Submit, then wait DEFER_AFTER seconds at most: a job still queued by then gets a
        stand-in on the kernel's endpoints and starts in the background."""
        await session.submit_job()
        task = session.start_in_background(lambda: self._start_kernel(session, env, cwd))
        await asyncio.wait({task}, timeout=DEFER_AFTER)
        if task.done() or session.node is not None:   # started, failed, or past the queue
            await task
            return
        self._open_standin(session)
        self.log.info("remote kernel %s: job %s is still queued; the kernel starts when it runs, a "
                      "stand-in answers until then", session.name, session.job_id)

    async def _start_kernel(self, session: RemoteKernelSession, env: dict, cwd: str | None) -> None:
        info = self.connection_info
        self._close_standin()
        await session.forward(self._endpoints())
        await session.start_kernel(info["key"], info.get("signature_scheme", "hmac-sha256"),
                                   kernel_name=info.get("kernel_name", ""), cwd=cwd, env=env)

    async def cleanup(self, restart: bool = False) -> None:
        if not restart:
            await self._end_all()

    async def _end_all(self) -> None:
        """End the session and remove the login-side directory."""
        self._held = False
        try:
            await self._end_session()
        finally:
            if self._login_dir is not None:
                shutil.rmtree(self._login_dir, ignore_errors=True)
                self._login_dir = None

    async def _end_session(self) -> None:
        """Close the session and any stand-in (job withdrawn or ended); the login-side directory
        stays, so a restart keeps the endpoints the frontend is connected to."""
        if self.session is not None or self._standin is not None:
            session, self.session = self.session, None
            await background.run(self._close(session), cancellable=False)

    def _open_standin(self, session: RemoteKernelSession) -> None:
        """(Re)bind a stand-in on the kernel's endpoints, answering with the session's state.

        It stays after a failed start, saying why: a restart by the user submits a new job;
        the server's automatic restarts, which would resubmit forever, do not happen."""
        def where() -> str:
            if session.starting or not session.ended_reason:
                return f"{session.queue_summary()}; run it again once the kernel has started"
            return f"the kernel could not start ({session.ended_reason}); restart the kernel to submit a new job"

        self._close_standin()
        self._standin = QueuedKernelStandIn(self.connection_info, where)
        self._standin.start()

    def _close_standin(self) -> None:
        if self._standin is not None:
            standin, self._standin = self._standin, None
            standin.close()

    async def _close(self, session: RemoteKernelSession | None) -> None:
        """On the background loop (the stand-in's sockets belong to it): end the session."""
        self._close_standin()
        if session is not None:
            try:
                await session.close()
            finally:
                background.untrack(session)

    def get_shutdown_wait_time(self, recommended: float = 5.0) -> float:
        return max(recommended, 10.0)

    def get_stable_start_time(self, recommended: float = 10.0) -> float:
        return max(recommended, self.launch_timeout)

    async def get_provisioner_info(self) -> dict[str, Any]:
        info = await super().get_provisioner_info()
        if self.session is not None:
            info.update(job_id=self.session.job_id, node=self.session.node, scheduler=self.scheduler)
        return info


def _short_name(prov: RemoteKernelProvisioner) -> str:
    spec_dir = getattr(prov.kernel_spec, "resource_dir", "") or ""
    return os.path.basename(spec_dir.rstrip("/")) or "remote-kernel"
