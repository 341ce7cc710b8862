"""A remote kernel as jupyter_client's provisioner sees it, on the background loop.

The provisioner (provisioner.py) is a thin shell on the caller's loop: each of its calls
runs one method here through ``background.run``, so the session, the stand-in and the
"held" restart are only ever touched from the background loop's thread.

The job lives from the first launch() until end(): jupyter_client calls kill()/terminate()
with restart=False even while restarting (jupyter_client#1061), so those only stop the
kernel, never the job.  Under jupyter_server (``deferred``) launch() waits at most
DEFER_AFTER seconds for the job; if it is still queued, a stand-in answers on the
kernel's endpoints (standin.py) and keeps the frontends' cells until the kernel starts;
then a relay (relay.py) hands them to the kernel and carries its shell channel.  After a
start that failed the stand-in answers again, saying why, so the server's restarter sees a
live kernel and never resubmits.

With option ``persist`` a running kernel has a record (persisted.py, holding its key) from
its start until it ends for good; detach() lets it run on for a next server, which adopt()s
it from that record (no job submitted, the same key, fresh login-side endpoints).  A
process that exits with such a kernel still here detaches it too (at interpreter exit).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import Callable

from . import background, curve
from .link import endpoints
from .errors import KernelStartError
from .options import KernelOptions
from .persisted import Record, record_of
from .session import RemoteKernelSession, State
from .relay import ShellRelay
from .standin import QueuedKernelStandIn, signer, zmq_url

# Under jupyter_server, how long launch waits for the job before returning with a stand-in.
DEFER_AFTER = 5.0


class HostedKernel:
    """Session, stand-in and restart state of one provisioner.  Used on the background loop only."""

    def __init__(self, options: KernelOptions, *, name: str, kernel_id: str, log: logging.Logger):
        self.options, self.name, self.kernel_id, self.log = options, name, kernel_id, log
        self.session: RemoteKernelSession | None = None
        self.standin: QueuedKernelStandIn | None = None
        self.relay: ShellRelay | None = None   # the shell channel of a kernel that started behind a stand-in
        self.relay_path = ""   # a private login-side path for the relay's forward (set by the provisioner)
        self.held = False   # a restart of a kernel whose job is queued is under way (the job is kept)
        self.info: dict = {}   # the connection info (login-side endpoints, key)
        self.frontend: dict = {}   # the connection info frontends are given: info, or (direct) the node's
        self._handing_over: tuple | None = None   # the stand-in's shell socket and held messages, until the kernel runs
        self.last: dict = {}   # info() of the session ended last
        self.record: Record | None = None   # persist: the running kernel's record for re-adoption
        self.notebook = ""   # the notebook's path the server gave the kernel (JPY_SESSION_NAME), for its record

    @property
    def pending(self) -> bool:
        """The job has not started the kernel (yet): a start is running or a stand-in answers."""
        return self.standin is not None or (self.session is not None and self.session.starting)

    async def poll(self) -> int | None:
        if self.held:
            return 0   # "stopped", for jupyter_client's restart; the job stays queued
        if self.pending:
            return None
        return 0 if self.session is None else await self.session.poll()

    async def launch(self, env: dict, cwd: str | None, on_status: Callable | None, queue_timeout: float,
                     deferred: bool) -> None:
        """Start the kernel, in the current job if it is usable.  KernelStartError on failure
        (everything released: jupyter_client forgets a manager whose start failed)."""
        self.notebook = env.get("JPY_SESSION_NAME", "")
        self.frontend = dict(self.info)
        if self.held:   # restarted while the start was pending; jupyter_client removed the ipc files
            self.held = False
            session = self.session
            if session is not None and session.starting:
                if session.node is None:   # still queued: the start goes on behind a stand-in
                    self._open_standin(session)
                    return
                await session.wait_start()   # past the queue: let it finish, then restart as usual
        if self.session is not None and not self.session.usable:
            self.log.warning("remote kernel: the job of the previous kernel is gone; submitting a new one")
            await self.end_session(wait=True)   # its forwards use the endpoints the new one will
        if self.session is None:
            session = self.session = RemoteKernelSession(self.options, name=self.name, kernel_id=self.kernel_id,
                                                         log=self.log)
            background.track(session)
            session.on_status = on_status
            session.job.queue_timeout = session.job.queue_timeout or queue_timeout
            if deferred:
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
        task.add_done_callback(lambda t: self._deferred_done(session, t))
        self.log.info("remote kernel %s: job %s is still queued; the kernel starts when it runs, a "
                      "stand-in answers until then", session.name, session.job_id)

    def _deferred_done(self, session: RemoteKernelSession, task: asyncio.Task) -> None:
        """A start that failed behind a stand-in leaves a stand-in saying why (not a dead kernel
        that the server's restarter would resubmit); a cancelled one (shut down) leaves none."""
        if not task.cancelled() and task.exception() is not None and session is self.session:
            self.log.error("remote kernel %s: %s", session.name, task.exception())
            if self.standin is not None and self.standin.hold:   # it ended in the queue
                self.standin.fail()
            else:
                self._open_standin(session, hold=False)

    async def _start_kernel(self, session: RemoteKernelSession, env: dict, cwd: str | None) -> None:
        """Forward the endpoints and start the kernel.  Behind a holding stand-in, its shell
        endpoint stays bound and the kernel's shell socket is forwarded to the relay's path.
        Transport direct with no stand-in: nothing is forwarded; ``frontend`` becomes the
        node's endpoints (frontends connect there, launch returns it)."""
        info, standin = self.info, self.standin
        ends = endpoints(info)
        to_node = self.options.direct and standin is None
        if standin is not None and standin.hold and self.relay_path:
            self._close_relay()
            ends["shell_port"] = self.relay_path
            self._handing_over = standin.hand_over()
            self.standin = None
        else:
            self._close_standin()
        await session.forward({} if to_node else ends)
        await session.start_kernel(info["key"], info.get("signature_scheme", "hmac-sha256"),
                                   kernel_name=info.get("kernel_name", ""), cwd=cwd, env=env,
                                   curve=curve.keys(info))
        if to_node:
            self.frontend = dict(info, **session.frontend_info())
        if self.options.persist:
            self._keep_record(session)
        if self._handing_over is not None:
            ctx, shell, held = self._handing_over
            self._handing_over = None
            self.relay = ShellRelay(ctx, shell, held, self.relay_path, zmq_url(info, "iopub_port"), signer(info),
                                    curve.keys(info))
            self.relay.start()

    def _keep_record(self, session: RemoteKernelSession) -> None:
        """Write (or refresh) the running kernel's record for a next server."""
        self.record = record_of(session, self.info, kernel_id=self.kernel_id or session.session_id,
                                notebook=self.notebook)
        self.record.save()
        background.track(session, at_exit=lambda: self._detach_at_exit(session))

    async def _detach_at_exit(self, session: RemoteKernelSession) -> None:
        """At interpreter exit with this kernel still here, its server ended without detaching
        it (jupyter_server stopped by SIGINT with no terminal, as JupyterHub's spawners first
        stop it, runs no shutdown_all): detach it as that would have.  A session that is no
        longer this running kernel's is closed as any."""
        if session is self.session and await self.detach():
            self.log.info("remote kernel %s: detached at exit; it waits %gs for the next server", self.name,
                          self.options.persist)
        else:
            await session.close()

    async def adopt(self, record: Record) -> None:
        """Instead of launch(): take over the kernel ``record`` describes (its server is gone),
        forwarded to this kernel's endpoints (self.info, made with the record's key).
        KernelStartError if it cannot be (the record is removed: the job ends by itself)."""
        self.notebook = record.notebook
        self.frontend = dict(self.info)
        session = self.session = RemoteKernelSession(self.options, name=self.name, kernel_id=self.kernel_id,
                                                     log=self.log, session_id=record.session_id)
        background.track(session)
        try:
            await session.adopt(record.job_id, record.node)
            await session.forward(endpoints(self.info))
        except BaseException as e:
            self.session = None
            if not session.stopped:
                await session.detach()
            background.untrack(session)
            self.last = session.info()
            record.remove()
            if isinstance(e, (OSError, asyncio.TimeoutError)):
                raise KernelStartError(f"cannot forward to the kernel of job {record.job_id}: {e}") from None
            raise
        self._keep_record(session)

    async def detach(self) -> bool:
        """Let the running kernel outlive this server (option persist): the session lets go of
        it (session.detach) and its record says since when.  False, and nothing done, when
        there is no running kernel with a record."""
        session = self.session
        if session is None or self.record is None or session.state is not State.RUNNING:
            return False
        self.session = None
        self._close_standin()
        try:
            await session.detach()
        finally:
            background.untrack(session)
            self.last = session.info()
        self.record.detached = time.time()
        self.record.save()
        self.record = None
        return True

    async def shutdown_requested(self, restart: bool) -> None:
        self.held = False
        if restart and self.session is not None and self.session.starting:
            # Restarting a kernel whose job is still queued: keep the job and its place.
            self.log.info("remote kernel: restart while job %s is queued; keeping the job", self.session.job_id)
            self.held = True
        elif self.pending:
            # Nothing runs yet to receive the request: withdraw the job now.
            job = self.session.job_id if self.session else None
            self.log.info("remote kernel: the kernel has not started; ending it" + (f" and job {job}" if job else ""))
            await self.end_session()

    async def tell(self, what: str, *args) -> None:
        """signal/stop_kernel to the session.  While the kernel has not started, stopping means
        withdrawing the job; signals are dropped.  KernelStartError from the session propagates."""
        if self.pending:
            if what != "signal":
                await self.end_session()
            return
        if self.session is not None:
            await getattr(self.session, what)(*args)

    async def end_session(self, *, wait: bool = False) -> None:
        """Close the session and any stand-in (job withdrawn or ended).  Returns once the kernel
        is stopped (session.shut_down); its job, forwards and link end on this loop afterwards,
        the session tracked for interpreter exit until then.  ``wait``: return once all ended."""
        self.held = False
        self._close_standin()
        if self.record is not None:   # the kernel ends for good: nobody may adopt it
            self.record.remove()
            self.record = None
        session, self.session = self.session, None
        if session is None:
            return
        background.track(session)   # at exit closed, not detached: the kernel ends for good

        def ended() -> None:
            background.untrack(session)
            if self.last.get("session_id") == session.session_id:
                self.last = session.info()

        try:
            await (session.close() if wait else session.shut_down())
        finally:
            self.last = session.info()
            session.when_closed(ended)

    def describe(self) -> dict:
        """The session's info() (the last one's after it ended, {} before any), plus whether
        the start is pending."""
        info = self.session.info() if self.session is not None else self.last
        node = self.frontend.get("ip") != self.info.get("ip")
        return dict(info, pending=self.pending, frontends="node" if node else "login")

    def _open_standin(self, session: RemoteKernelSession, hold: bool = True) -> None:
        """(Re)bind a stand-in on the kernel's endpoints, answering with the session's state;
        ``hold``: keeping cells for the kernel (else answering them, and what was kept, at once)."""
        def where() -> str:
            if session.starting or not session.ended_reason:
                return f"{session.job.summary()}; run it again once the kernel has started"
            return f"the kernel could not start ({session.ended_reason}); restart the kernel to submit a new job"

        held = self._take_held() if not hold else []
        self._close_standin()
        self.standin = QueuedKernelStandIn(self.info, where, hold=hold, held=held)
        self.standin.start()

    def _take_held(self) -> list[list[bytes]]:
        """The cells kept for a kernel whose start failed, from the stand-in or the hand-over."""
        if self._handing_over is not None:
            ctx, shell, held = self._handing_over
            self._handing_over = None
            shell.close(linger=0)
            ctx.term()
            self._unlink_shell_endpoint()
            return held
        return self.standin.take_held() if self.standin is not None else []

    def _close_standin(self) -> None:
        """Close the stand-in, a socket being handed over and the relay: the endpoints are free
        afterwards."""
        if self.standin is not None:
            standin, self.standin = self.standin, None
            standin.close()
        self._take_held()
        self._close_relay()

    def _close_relay(self) -> None:
        if self.relay is not None:
            relay, self.relay = self.relay, None
            relay.close()
            self._unlink_shell_endpoint()

    def _unlink_shell_endpoint(self) -> None:
        """Remove the shell endpoint's ipc file (a socket closed here had it bound)."""
        shell = endpoints(self.info)["shell_port"]
        if isinstance(shell, str):
            with contextlib.suppress(OSError):
                os.unlink(shell)


