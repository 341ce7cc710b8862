"""jupyter_client adapter: ``remote-kernels-provisioner`` in kernel.json's metadata.

A thin shell on the caller's loop: each call runs one method of its HostedKernel
(hosted.py) on the process's background loop (``background.py``), where sessions live
so that forwards keep running for synchronous jupyter_client users too.  Nothing of the
kernel's state is read from the caller's thread; ``has_process`` is the shell's own flag.
Under a server with pending kernels (``use_pending_kernels``) launch_kernel returns
before a queued job runs (hosted.py says how).

``await provisioner.get_provisioner_info()`` tells frontends and tests about the kernel:
``remote_kernel`` holds the session's state, job id, node, ended reason, timings
(RemoteKernelSession.info), and whether its start is pending.

Launch keyword ``on_status``: ``km.start_kernel(on_status=callback)`` has the session
call ``callback(JobStatus, seconds_waited)`` (on the caller's loop) at each poll while
the job waits to start.  Launch keyword ``queue_timeout``: seconds after which a start
still queued gives up (cancelling the job) when the spec sets no ``queue_timeout``.
Launch keyword ``adopt``: a persisted.Record of this kernel id: instead of starting a
kernel, the provisioner takes over the one the record describes, whose server is gone
(option ``persist``; adopt.py registers such kernels at a server's start), with the
record's key.  ``detach()`` lets a running kernel outlive this server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import tempfile
from typing import Any

from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.provisioning.provisioner_base import KernelProvisionerBase
from traitlets import Enum

from . import background, curve
from .chosen import apply_choice
from .environment import kernel_env
from .launcher import CHANNELS
from .errors import KernelStartError
from .hosted import HostedKernel
from .options import KernelOptions



class RemoteKernelProvisioner(KernelOptions, KernelProvisionerBase):  # type: ignore[misc]
    """Runs the kernel in a batch job on a compute node, reached over SSH."""

    login_transport = Enum(["ipc", "tcp"], "ipc", help=(
        "How the login side exposes the kernel to jupyter_client: 'ipc' sockets in a 0700 "
        "directory (only you can connect) or TCP on 127.0.0.1 (any local user can connect; "
        "the HMAC key stops forged messages but not reading the output).")).tag(config=True)

    _hosted: HostedKernel | None = None
    _alive = False   # launched and not yet waited for: jupyter_client's has_kernel
    _login_dir: str | None = None
    _login_ports: dict | None = None   # the login-side endpoints' ports (ipc: suffixes), chosen once
    _connection_file: str | None = None   # written by pre_launch; removed when the kernel ends
    _spec_values: dict | None = None   # the resources before the notebook's choice (chosen.py)
    _served: dict | None = None   # the endpoints the last launch gave frontends

    @property
    def hosted(self) -> HostedKernel:
        if self._hosted is None:
            self._hosted = HostedKernel(self, name=_short_name(self), kernel_id=self.kernel_id or "", log=self.log)
        return self._hosted

    @property
    def has_process(self) -> bool:
        return self._alive

    async def poll(self) -> int | None:
        return await background.run(self.hosted.poll())

    async def wait(self) -> int | None:
        while (code := await self.poll()) is None:
            await asyncio.sleep(0.1)
        self._alive = False
        return code

    async def send_signal(self, signum: int) -> None:
        await self._tell("signal", signum)

    async def kill(self, restart: bool = False) -> None:
        await self._tell("stop_kernel")

    async def terminate(self, restart: bool = False) -> None:
        await self._tell("signal", signal.SIGTERM)

    async def shutdown_requested(self, restart: bool = False) -> None:
        await background.run(self.hosted.shutdown_requested(restart), cancellable=False)

    async def _tell(self, what: str, *args: Any) -> None:
        """Log (not raise) failures, so that shutdown can go on to cleanup()."""
        try:
            await background.run(self.hosted.tell(what, *args))
        except KernelStartError as e:
            self.log.warning("remote kernel: %s failed: %s", what, e)

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        km = self.parent
        adopt = kwargs.get("adopt")
        if adopt is None:   # the notebook's launch-dialog choice, for this kernel only (chosen.py)
            self._spec_values = apply_choice(self, km.kernel_name, kwargs.get("env") or {}, self._spec_values)
            curve.provision(km)
        else:   # the kernel runs with its key: the connection file must carry it
            km.session.signature_scheme = adopt.signature_scheme
            km.session.key = adopt.key.encode()
            if adopt.curve_publickey:   # and its Curve keys
                km.curve_publickey = adopt.curve_publickey.encode()
                km.curve_secretkey = adopt.curve_secretkey.encode()
        if self._login_dir is None:
            self._login_dir = tempfile.mkdtemp(prefix="rk-")   # 0700
            background.remove_at_exit(self._login_dir)
        if self._login_ports is None:
            if self.login_transport == "ipc":
                self._login_ports = dict(CHANNELS)
            else:
                from jupyter_client.connect import LocalPortCache
                cache = LocalPortCache.instance()
                self._login_ports = {ch: km_port or cache.find_available_port("127.0.0.1")
                                     for ch, km_port in ((ch, getattr(km, ch)) for ch in CHANNELS)}
        if km.ip != self._login_ip():   # the last start gave frontends the node's endpoints
            km.cleanup_connection_file()
        km.transport, km.ip = self.login_transport, self._login_ip()
        for channel, port in self._login_ports.items():
            setattr(km, channel, port)
        km.write_connection_file()
        self._connection_file = km.connection_file
        background.remove_at_exit(km.connection_file)
        self.connection_info = km.get_connection_info()
        kwargs.pop("extra_arguments", None)
        # cmd is jupyter_client's to format; the job runs the launcher, not this argv.
        return await super().pre_launch(cmd=km.format_kernel_cmd(), **kwargs)

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        # kwargs["env"] is the server's whole environment plus the kernelspec's env stanza:
        # only the stanza's keys and environment.PASS_ENV go to the kernel.
        env = kernel_env(getattr(self.kernel_spec, "env", None) or {}, kwargs.get("env") or {})
        on_status = kwargs.get("on_status")
        if on_status is not None:   # the session calls it on the background loop
            on_status = background.call_in(asyncio.get_running_loop(), on_status)
        hosted = self.hosted
        hosted.info = dict(self.connection_info)
        hosted.relay_path = os.path.join(self._login_dir, "shell-relay")
        adopt = kwargs.get("adopt")
        launch_args = getattr(self.parent, "_launch_args", None)
        if isinstance(launch_args, dict):
            launch_args.pop("adopt", None)   # a restart starts a kernel in the adopted job
        try:
            if adopt is not None:
                await background.run(hosted.adopt(adopt))
            else:
                await background.run(hosted.launch(env, kwargs.get("cwd"), on_status,
                                                   kwargs.get("queue_timeout") or 0, self._defer_start()))
        except background.Cancelled:
            await self._end_all()
            raise KernelStartError("the start was cancelled: the kernel was shut down meanwhile") from None
        except BaseException:
            # jupyter_client forgets a manager whose start failed: release everything now.
            await self._end_all()
            raise
        self._alive = True
        # The login-side endpoints, or (transport direct, once the kernel runs) the node's:
        # jupyter_client rewrites the connection file when they differ from what it holds.
        self.connection_info = dict(hosted.frontend or self.connection_info)
        served = {k: self.connection_info.get(k) for k in ("transport", "ip", *CHANNELS)}
        if self._served is not None and served != self._served:
            self._renew_activity_watch()
        self._served = served
        return self.connection_info

    def _renew_activity_watch(self) -> None:
        """The endpoints moved (a restart in a new job, transport direct): jupyter_server watches
        the kernel's iopub (execution_state and last_activity: /api/kernels, /api/status, its
        culler) on a socket it made at the start, and renews it after a user's restart
        (MappingKernelManager.restart_kernel) but not after its restarter's auto-restart, which
        would leave it on the ended job's node.  Once jupyter_client has loaded these endpoints
        (right after launch_kernel returns, on this loop), watch them instead."""
        km = self.parent
        multi, kernel_id = getattr(km, "parent", None), self.kernel_id
        if not callable(getattr(multi, "start_watching_activity", None)):
            return   # not under jupyter_server

        def renew() -> None:
            stream = getattr(km, "_activity_stream", None)
            if stream is None or kernel_id not in multi or multi.get_kernel(kernel_id) is not km:
                return   # not watched (or no longer the server's): nothing to renew
            stream.close()
            km.execution_state = "starting"   # as after any start, until the new kernel's status
            multi.start_watching_activity(kernel_id)

        asyncio.get_running_loop().call_soon(renew)

    def _login_ip(self) -> str:
        return os.path.join(self._login_dir, "k") if self.login_transport == "ipc" else "127.0.0.1"

    def _defer_start(self) -> bool:
        """Return before the job runs under jupyter_server, in either mode: it holds the
        kernel's websockets until launch_kernel returns (pending kernels), or the POST that
        starts it, and lists and stops only kernels whose start returned.  Plain
        jupyter_client users (nbclient, console, scripts) wait for the kernel itself."""
        multi = getattr(self.parent, "parent", None)
        return type(multi).__module__.startswith("jupyter_server.")

    async def detach(self) -> bool:
        """Let the running kernel outlive this server (option ``persist``); True if it did.
        Afterwards the kernel reads as ended here: a shutdown request that follows reaches
        nothing, and cleanup() releases only the login side."""
        detached = await background.run(self.hosted.detach(), cancellable=False)
        if detached:
            await self._end_all()
        return detached

    async def cleanup(self, restart: bool = False) -> None:
        if not restart:
            await self._end_all()

    async def _end_all(self) -> None:
        """End the session and remove the login-side directory and the connection file."""
        self._alive = False
        try:
            await background.run(self.hosted.end_session(), cancellable=False)
        finally:
            if self._login_dir is not None:
                shutil.rmtree(self._login_dir, ignore_errors=True)
                background.forget_removal(self._login_dir)
                self._login_dir = None
            if self._connection_file is not None:
                with contextlib.suppress(OSError):
                    os.unlink(self._connection_file)
                background.forget_removal(self._connection_file)
                self._connection_file = None

    def get_shutdown_wait_time(self, recommended: float = 5.0) -> float:
        return max(recommended, 10.0)

    def get_stable_start_time(self, recommended: float = 10.0) -> float:
        return max(recommended, self.launch_timeout)

    async def get_provisioner_info(self) -> dict[str, Any]:
        info = await super().get_provisioner_info()
        info["remote_kernel"] = dict(await background.run(_describe(self.hosted)), login_dir=self._login_dir)
        return info


async def _describe(hosted: HostedKernel) -> dict:
    return hosted.describe()


def _short_name(prov: RemoteKernelProvisioner) -> str:
    spec_dir = getattr(prov.kernel_spec, "resource_dir", "") or ""
    return os.path.basename(spec_dir.rstrip("/")) or "remote-kernel"
