"""The core: one remote kernel's lifecycle, an explicit state machine over its parts.

The parts: the job (job.py: submit, watch, explain, end), the link to the job's launcher
(link.py: SSH connection, control channel, forwards, reconnect) and the launcher itself
on the node (launcher.py).  The session owns them, lives on one event loop (the
provisioner's background loop, or argv mode's own) and is used only from it:

    s = RemoteKernelSession(options, log=...)
    await s.start_job()              # submit, wait in the queue, reach the launcher
    await s.forward(endpoints)       # login-side endpoints -> the kernel's node sockets
    await s.start_kernel(key, scheme, cwd=..., env=..., curve=...)   # (re)start ipykernel in the job
    s.exit_code                      # None while the kernel lives
    await s.signal(signal.SIGINT)
    await s.stop_kernel()            # kernel gone, job kept (restart)
    await s.shut_down()              # kernel and launcher gone; job, forwards, link end in the background
    await s.close()                  # kernel, launcher and job gone, forwards closed
    await s.adopt(job_id, node)      # instead of start_job(): a kernel that outlived its server (persist)
    await s.detach()                 # link closed; kernel, launcher and job run on (persist)

With ``allocation: shared`` the session first looks for this user's live allocation of
the same spec (allocations.py) and joins it (state JOINING, then READY: no job submitted);
only when there is none, or all are full, does it submit one, which it then publishes for
the next kernel.  Its kernel has a slot of its own in the launcher (link.py), and its end
ends the job only when it was the allocation's last kernel (and ``linger`` is 0).

``State`` and ``TRANSITIONS`` are the whole lifecycle (docs/architecture.md draws them);
every change of state goes through ``_to()``, which refuses any other.  Every failure
raises ``KernelStartError`` with one line; whatever was created before the failure (job,
connection) is released before it is raised.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import secrets
import time
from typing import Awaitable, Callable

from . import allocations, joblogs, keydirs, registry
from .errors import KernelStartError
from .job import JOB_ENDED_CODES, Job   # noqa: F401 - JOB_ENDED_CODES: part of this module's interface
from .launcher import ENDED_AT_START, SETUP_ERRORS
from .link import DROPPED, AllocationFull, NodeLink
from . import direct
from .options import KernelOptions
from .runner import SSHCommandRunner, runner_for
from .schedulers import JobStatus, get_scheduler

__all__ = ["KernelStartError", "RemoteKernelSession", "State", "TRANSITIONS"]

# How long a kernel's death by a signal waits to be told apart from its job's end.
SIGNAL_EXIT_GRACE = 1.0


class State(enum.Enum):
    NEW = "new"                     # nothing submitted yet
    JOINING = "joining"             # shared: looking for (and joining) a live allocation of the spec
    SUBMITTING = "submitting"       # the submit command runs
    QUEUED = "queued"               # the job waits to start
    CONNECTING = "connecting"       # the job runs; SSH to its node, reaching the launcher
    READY = "ready"                 # the launcher answers; no kernel runs (first start, stopped, exited)
    STARTING = "starting"           # the launcher starts a kernel
    RUNNING = "running"             # the kernel runs
    RECONNECTING = "reconnecting"   # the link dropped; the kernel runs on; restoring it
    CLOSING = "closing"             # close(): kernel and launcher being stopped
    ENDING = "ending"               # the kernel is stopped; its job, forwards and link being ended
    ENDED = "ended"                 # all gone; exit_code and ended_reason are final


S = State
TRANSITIONS: dict[State, frozenset[State]] = {
    S.NEW: frozenset({S.SUBMITTING, S.JOINING, S.CONNECTING, S.CLOSING}),   # CONNECTING: adopt()
    S.JOINING: frozenset({S.READY, S.SUBMITTING, S.CLOSING}),
    S.SUBMITTING: frozenset({S.QUEUED, S.CLOSING}),
    S.QUEUED: frozenset({S.CONNECTING, S.CLOSING}),
    S.CONNECTING: frozenset({S.READY, S.RUNNING, S.CLOSING}),   # RUNNING: adopt()
    S.READY: frozenset({S.STARTING, S.RECONNECTING, S.CLOSING}),
    S.STARTING: frozenset({S.RUNNING, S.READY, S.RECONNECTING, S.CLOSING}),
    S.RUNNING: frozenset({S.READY, S.STARTING, S.RECONNECTING, S.CLOSING}),
    S.RECONNECTING: frozenset({S.READY, S.RUNNING, S.CLOSING}),
    S.CLOSING: frozenset({S.ENDING}),
    S.ENDING: frozenset({S.ENDED}),
    S.ENDED: frozenset(),
}
# info() keys from the launcher's hello.
LAUNCHER_INFO = {"python": "python", "launcher_pid": "pid", "launcher_host": "host"}
# States in which the launcher is reachable or being reached again: a restart reuses the job.
LIVE = frozenset({S.READY, S.STARTING, S.RUNNING, S.RECONNECTING})


class HeldExit:
    """A kernel's end by a signal, reported only after SIGNAL_EXIT_GRACE s: it may be its job's
    end (scancel signals every process of the job), which the link's break reports instead."""

    def __init__(self) -> None:
        self._timer: asyncio.TimerHandle | None = None
        self._code: int | None = None

    def hold(self, code: int, report: Callable[[int], None]) -> None:
        self.drop()
        self._code = code
        self._timer = asyncio.get_running_loop().call_later(SIGNAL_EXIT_GRACE, self._fire, report)

    def _fire(self, report: Callable[[int], None]) -> None:
        code = self.drop()
        if code is not None:
            report(code)

    def drop(self) -> int | None:
        """Forget the held end; its code (None if none was held)."""
        if self._timer is not None:
            self._timer.cancel()
        code, self._timer, self._code = self._code, None, None
        return code


class RemoteKernelSession:
    def __init__(self, options: KernelOptions, *, name: str = "remote-kernel", kernel_id: str = "",
                 log: logging.Logger | None = None, job: Job | None = None, link_factory=None,
                 session_id: str = ""):
        """``job`` and ``link_factory`` (called as NodeLink is) replace the parts, for tests.
        ``session_id``: the launcher's, for adopt() (default: a new one).  KernelStartError
        for options that cannot go together (KernelOptions.unsupported)."""
        if options.unsupported():
            raise KernelStartError(options.unsupported())
        self.opts, self.name = options, name
        self.log = log or logging.getLogger(__name__)
        self.runner = runner_for(options.login_host, options.command_timeout)
        self.scheduler = get_scheduler(options.scheduler, self.runner)
        self.session_id = session_id or secrets.token_hex(8)   # names the node dir (or the slot); not a secret
        self.shared = options.shared
        self.allocation_id = self.session_id     # shared: the launcher's session id (another's once joined)
        self.joined = False                      # shared: started in an allocation another kernel made
        self.job = job or Job(options, self.scheduler, self.runner, name=name, session_id=self.session_id,
                              kernel_id=kernel_id, log=self.log)
        self._link_factory = link_factory or (direct.DirectLink if options.direct else NodeLink)
        self.link: NodeLink | None = None
        self.state = S.NEW
        self.exit_code: int | None = None
        self.kernel_pid: int | None = None
        self.ended_reason = ""
        # Called with (JobStatus, seconds waited) at each poll while the job waits to start.
        self.on_status: Callable[[JobStatus, float], None] | None = None
        self._start_task: asyncio.Task | None = None
        self._supervisor: asyncio.Task | None = None
        self._close_task: asyncio.Task | None = None
        self._stopped = asyncio.Event()   # set on ENDING: the kernel is stopped
        self._held_exit = HeldExit()
        self._spec_lock: allocations.SpecLock | None = None   # shared: held from joining until published
        self._detach = False   # close() leaves kernel, launcher and job running (detach(), a failed adopt())

    # --- what it is ---------------------------------------------------------------------------
    def _to(self, new: State) -> None:
        if new not in TRANSITIONS[self.state]:
            raise RuntimeError(f"remote kernel {self.name}: no transition {self.state.value} -> {new.value}")
        self.log.debug("remote kernel %s: %s -> %s", self.name, self.state.value, new.value)
        self.state = new

    @property
    def job_id(self) -> str | None:
        return self.job.id

    @property
    def node(self) -> str | None:
        return self.link.node if self.link is not None else None

    @property
    def node_dir(self) -> str:
        """The launcher's directory on the node."""
        return f"{self.opts.runtime_base.rstrip('/')}/rk-{self.allocation_id}"

    @property
    def kernel_dir(self) -> str:
        """The kernel's directory on the node: the launcher's, or its slot's in a shared allocation."""
        return f"{self.node_dir}/s-{self.session_id}" if self.shared else self.node_dir

    @property
    def starting(self) -> bool:
        """True while a start is in progress (the job may still wait in the queue)."""
        return self._start_task is not None and not self._start_task.done()

    @property
    def stopped(self) -> bool:
        """True once the kernel is stopped for good (its job may still be ending)."""
        return self.state in (S.ENDING, S.ENDED)

    @property
    def usable(self) -> bool:
        """True while the launcher is reachable (a restart can reuse the allocation)."""
        return self.state in LIVE

    def info(self) -> dict:
        """What a frontend or test may know of the kernel (no secret)."""
        return {"state": self.state.value, "job_id": self.job.id, "node": self.node, "scheduler": self.scheduler.name,
                "session_id": self.session_id, "node_dir": self.node_dir, "log_file": self.job.log_file,
                "allocation": self.opts.allocation, "allocation_id": self.allocation_id if self.shared else "",
                "joined": self.joined, "kernel_dir": self.kernel_dir,
                "exit_code": self.exit_code, "kernel_pid": self.kernel_pid, "ended_reason": self.ended_reason,
                "reconnects": self.link.reconnects if self.link else 0, "timings": dict(self.job.timings),
                **{k: (self.link.hello.get(v) if self.link else None) for k, v in LAUNCHER_INFO.items()}}

    # --- start --------------------------------------------------------------------------------
    async def start_job(self) -> None:
        """Submit the job, wait until it runs, connect to the node and reach the launcher."""
        self._start_task = asyncio.current_task()
        try:
            await self.submit_job()
            await self.reach_launcher()
        finally:
            self._start_task = None

    async def submit_job(self) -> None:
        """Submit; the job is known (and watched) on return.  KernelStartError if refused.
        Shared: join a live allocation instead when there is one (state READY on return)."""
        if not self.shared:
            await self._submit()
            return
        self._to(S.JOINING)
        # Held until the job this start submits is published (or the start fails): a start of
        # the spec meanwhile, by any of this user's servers, waits and joins it.
        self._spec_lock = allocations.SpecLock(allocations.fingerprint(self.name, self.opts))
        if not await self._spec_lock.acquire():
            self.log.info("remote kernel %s: another start of this spec is still under way; submitting a job "
                          "of its own", self.name)
        if await self._or_close(self._join()):
            self._spec_lock.release()
        else:
            await self._submit()

    async def _submit(self) -> None:
        self._to(S.SUBMITTING)
        if self.opts.direct:   # the batch script names it; the keys stay in its 0600 files
            direct.prepare(self.session_id)
        await self._or_close(self.job.submit())
        if self.opts.direct:
            direct.record_job(self.session_id, self.job.id, self.scheduler.name)
            keydirs.prune_soon(self.scheduler)
        joblogs.prune_soon(self.runner, self.scheduler, remote=bool(self.opts.login_host))
        self._to(S.QUEUED)

    def _make_link(self, *, node: str, job_id: str):
        via = self.runner if isinstance(self.runner, SSHCommandRunner) else None
        slot = {"slot": self.session_id} if self.shared else {}
        return self._link_factory(self.opts, node=node, job_id=job_id, node_dir=self.node_dir, via=via,
                                  on_event=self._launcher_event, log=self.log, **slot)

    async def _join(self) -> bool:
        """Start in this user's live allocation of the same spec, if one takes this kernel:
        True once its launcher answered for this kernel's slot (state READY)."""
        t0 = time.monotonic()
        found = allocations.candidates(allocations.fingerprint(self.name, self.opts))
        for alloc in await allocations.running(self.scheduler, found, self.log):
            self.allocation_id = alloc.allocation
            link = self._make_link(node=alloc.node, job_id=alloc.job_id)
            try:
                await link.join()
            except KernelStartError as e:
                await link.close()
                if not isinstance(e, AllocationFull):   # its launcher is gone: nobody joins it again
                    allocations.withdraw(alloc.allocation)
                self.log.info("remote kernel %s: not joining job %s: %s", self.name, alloc.job_id, e)
                continue
            self.link, self.joined = link, True
            self.job.adopt(alloc.job_id, alloc.node, alloc.allocation)
            # Reaching a running launcher is this start's "ssh" and "launcher" phases (check prints them).
            took = time.monotonic() - t0
            self.job.timings.update(join=took, ssh=took, launcher=0.0)
            self.log.info("remote kernel %s: joined the allocation of job %s on %s", self.name, alloc.job_id,
                          alloc.node)
            self._to(S.READY)
            self._supervisor = asyncio.get_running_loop().create_task(self._supervise())
            return True
        self.allocation_id = self.session_id
        return False

    async def adopt(self, job_id: str, node: str) -> None:
        """Instead of start_job(): reach the launcher of a kernel that outlived its server
        (option ``persist``) in job ``job_id`` on ``node``, this session's id naming its node
        dir; nothing is submitted.  State RUNNING on return (then forward()).  KernelStartError
        when it cannot be reached (the session ends, the job left to its dead-man switch) or
        no kernel runs there any more (the session ends with its job)."""
        self._start_task = asyncio.current_task()
        self._to(S.CONNECTING)
        self.job.adopt(job_id, node, "")
        self.link = self._make_link(node=node, job_id=job_id)
        try:
            try:
                hello = await self.link.join()
            except BaseException:
                self._detach = True
                raise
            if hello.get("kernel") is None:
                raise KernelStartError(f"no kernel runs in job {job_id} on {node} any more")
        except BaseException as e:
            if isinstance(e, KernelStartError):
                self.ended_reason, self.exit_code = str(e), 1
            self._start_task = None
            await self.close()
            raise
        self._start_task = None
        self.kernel_pid = hello["kernel"]
        self.job.timings.update(ssh=0.0, launcher=0.0)
        self.job.quiet()
        self._to(S.RUNNING)
        self.log.info("remote kernel %s: adopted the kernel of job %s on %s", self.name, job_id, node)
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise())

    async def detach(self) -> None:
        """Let the kernel run on for a next server (option ``persist``): forwards, control
        channel and connection are closed, the kernel, its launcher and job are not, and the
        job's registry entry stays.  Then state ENDED, ended_reason says so."""
        self._detach = True
        await self.close()

    async def reach_launcher(self) -> None:
        """After submit_job(): wait until the job runs, connect to its node, reach the launcher."""
        await self._or_close(self._reach())

    async def _reach(self) -> None:
        if self.joined:
            return
        status = await self.job.wait_running(self.on_status)
        self._to(S.CONNECTING)
        self.log.info("remote kernel %s: job %s running on %s", self.name, self.job.id, status.node)
        self.link = self._make_link(node=status.node, job_id=self.job.id)
        t1 = time.monotonic()
        try:
            await self.link.connect()
            self.job.timings["ssh"] = time.monotonic() - t1
            info = await self.link.reach(lambda: self.job.finished, self.job.log_file)
        except KernelStartError:
            if not self.job.finished:
                raise
            raise KernelStartError(await self.job.ended_early(status.node)) from None
        self.job.timings["launcher"] = time.monotonic() - t1 - self.job.timings["ssh"]
        self.log.info("remote kernel %s: launcher ready on %s (%s)", self.name, info.get("host"), info.get("python"))
        self._to(S.READY)
        if self.shared:   # the next kernel of this spec may start here
            allocations.Allocation(allocation=self.allocation_id, fingerprint=allocations.fingerprint(self.name, self.opts),
                                   spec=self.name, scheduler=self.scheduler.name, job_id=self.job.id, node=status.node,
                                   runtime_base=self.opts.runtime_base).publish()
            self._spec_lock.release()
        self.job.quiet()   # the link's traffic says it lives; the scheduler is asked again when it fails
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise())

    async def _or_close(self, step: Awaitable):
        """step's result; on any failure the session is closed (KernelStartError: exit code 1)."""
        try:
            return await step
        except BaseException as e:
            if isinstance(e, KernelStartError):
                self.ended_reason, self.exit_code = str(e), 1
            if self._close_task is None:   # else close() cancelled this step and is waiting for it
                await self.close()
            raise

    def start_in_background(self, then: Callable[[], Awaitable[None]]) -> asyncio.Task:
        """After submit_job(): reach the launcher, then await ``then()``, in a task of their own
        (for callers that must not wait for the queue).  A failure closes the session (exit_code
        1, ended_reason set); close() cancels the task."""
        async def finish() -> None:
            await self.reach_launcher()
            await self._or_close(then())

        self._start_task = asyncio.get_running_loop().create_task(finish())
        return self._start_task

    async def wait_start(self) -> None:
        """Wait until a start in progress has finished, whatever its outcome."""
        if self.starting:
            await asyncio.wait({self._start_task})

    async def poll(self) -> int | None:
        """The kernel's exit code, None while it runs or its start is in progress."""
        return None if self.starting else self.exit_code

    # --- the kernel -----------------------------------------------------------------------------
    async def forward(self, endpoints: dict[str, str | int]) -> None:
        await self.link.forward(endpoints)

    def frontend_info(self) -> dict:
        """Transport direct, once the kernel runs: the connection info's transport, ip, ports and
        Curve keys with which frontends reach it on the node (DirectLink.frontend_info); else {}."""
        return self.link.frontend_info() if self.opts.direct and self.link is not None else {}

    async def start_kernel(self, key: bytes | str, signature_scheme: str = "hmac-sha256", *,
                           kernel_name: str = "", cwd: str | None = None, env: dict | None = None,
                           curve: dict | None = None) -> None:
        """Start (or restart) the kernel in the job; return once its sockets are bound.
        ``curve``: the kernel's Curve keypair (curve.keys()), sent the way the key is."""
        self._held_exit.drop()   # the previous kernel's
        self._to(S.STARTING)
        self.exit_code = None
        try:
            if self.opts.direct:
                curve = self.link.node_keys(curve)
            reply = await self.link.request({"op": "start", "key": key.decode() if isinstance(key, bytes) else key,
                                             "signature_scheme": signature_scheme, "kernel_name": kernel_name,
                                             "cwd": cwd, "env": env or {}, **(curve or {})}, timeout=120)
            if self.opts.direct and reply.get("event") == "started":
                await self.link.started(reply)
        except KernelStartError:
            self.exit_code = 1
            raise
        if reply.get("event") != "started":
            self.exit_code = 1
            self._to(S.READY)
            message = reply.get("message", f"launcher could not start the kernel: {reply}")
            if "code" in reply and reply["code"] not in SETUP_ERRORS:   # the kernel ran: its output ends the line
                tail = await self._output_after_start_failed()
                message += f" ({self.job.log_file}" + (f", last lines: {tail})" if tail else ")")
            raise KernelStartError(message)
        self.kernel_pid = reply["pid"]
        if self.state is S.STARTING:
            self._to(S.RUNNING)

    async def _output_after_start_failed(self, within: float = 5.0) -> str:
        """The job output's last lines once the launcher's word on the kernel's end (written after
        the kernel's own output) has reached the log file, or after ``within`` s."""
        deadline = time.monotonic() + within
        while ENDED_AT_START not in (tail := await self.job.log_tail()) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        return tail

    async def signal(self, signum: int) -> None:
        if self.link is not None and self.link.usable:
            await self.link.request({"op": "signal", "signum": int(signum)})

    async def stop_kernel(self) -> None:
        """Stop the kernel, keep the job and launcher (for a restart)."""
        self._flush_exit_report()
        if self.link is not None and self.link.usable:
            reply = await self.link.request({"op": "stop"})
            if self.exit_code is None:
                self.exit_code = reply.get("code") if reply.get("code") is not None else -9
        self.kernel_pid = None
        if self.state in (S.RUNNING, S.STARTING):
            self._to(S.READY)

    def _launcher_event(self, msg: dict) -> None:
        """The launcher reports the kernel's end; an end by a signal is held (HeldExit)."""
        if msg.get("event") == "exited":
            code = msg.get("code")
            if code is not None and code < 0:
                self._held_exit.hold(code, self._report_exit)
            else:
                self._held_exit.drop()
                self._report_exit(code)

    def _report_exit(self, code: int | None) -> None:
        self.exit_code, self.kernel_pid = code, None
        self.log.info("remote kernel %s: kernel exited with code %s", self.name, code)
        if self.state is S.RUNNING:
            self._to(S.READY)

    def _flush_exit_report(self) -> None:
        code = self._held_exit.drop()
        if code is not None and self.exit_code is None:
            self._report_exit(code)

    # --- the link's failures --------------------------------------------------------------------
    async def _supervise(self) -> None:
        """The one task that watches the link: reconnects after drops, ends the session when
        the launcher is gone.  Cancelled by close()."""
        while True:
            how = await self.link.broken()
            signalled = self._held_exit.drop()   # the link went too: the job's end explains it
            if how == DROPPED:
                before = self.state
                self._to(S.RECONNECTING)
                self.job.watch(starting=False)   # learn whether the job ends meanwhile
                if await self.link.reconnect(lambda: self.job.finished):
                    self.job.quiet()
                    alive = self.link.hello.get("kernel") is not None
                    if before is S.RUNNING and not alive:   # it ended while we were away
                        self.exit_code, self.kernel_pid = (signalled if signalled is not None else 1), None
                    self._to(S.RUNNING if before is S.RUNNING and alive else S.READY)
                    continue
            code, self.ended_reason = await self.job.why_ended()
            self.log.warning("remote kernel %s: %s", self.name, self.ended_reason)
            if self.exit_code is None:   # a kernel that had exited keeps its own code
                self.exit_code = code
            await self.close()
            return

    # --- end ------------------------------------------------------------------------------------
    async def close(self) -> None:
        """End everything: kernel, launcher, job, forwards, connection.  Idempotent: concurrent
        and later calls wait for the one closing.  A start in progress is cancelled first.
        Afterwards ``exit_code`` is set (0 unless the kernel had exited already)."""
        await asyncio.shield(self._closing())

    async def shut_down(self) -> None:
        """close(), returning once the kernel is stopped (state ENDING or ENDED): its launcher
        said bye, or, when it could not, its job was cancelled.  Ending the job, forwards and
        link goes on in the closing task; close() waits for it (background.py's exit does)."""
        closing = self._closing()
        stopped = asyncio.ensure_future(self._stopped.wait())
        try:
            await asyncio.wait({closing, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
        if closing.done():
            closing.result()

    def when_closed(self, fn: Callable[[], None]) -> None:
        """After close() or shut_down(): call fn() once the closing has finished (state ENDED
        unless it failed; a failure nobody awaits is logged here)."""
        def done(task: asyncio.Task) -> None:
            if not task.cancelled() and task.exception() is not None:
                self.log.warning("remote kernel %s: ending job %s failed: %s", self.name, self.job.id,
                                 task.exception())
            fn()

        self._closing().add_done_callback(done)

    def _closing(self) -> asyncio.Task:
        if self._close_task is None:
            spare = asyncio.current_task()   # a start or the supervisor closing on failure: not cancelled
            self._close_task = asyncio.get_running_loop().create_task(self._close(spare))
        return self._close_task

    async def _close(self, spare: asyncio.Task | None) -> None:
        self._to(S.CLOSING)
        if self._spec_lock is not None:
            self._spec_lock.release()
        for task in (self._start_task, self._supervisor):
            if task is not None and task is not spare and not task.done():
                task.cancel()
                await asyncio.wait({task})
        if self._detach:
            await self._let_go()
            return
        bye: dict = {}
        if self.link is not None and self.link.usable:
            try:
                bye = await self.link.request({"op": "shutdown"}, timeout=10)
            except KernelStartError:
                pass
        said_bye = bye.get("event") == "bye"
        if not said_bye:   # the kernel may run on: its job's end (cancelled at once) stops it
            await self._release(said_bye)
        self._flush_exit_report()
        if self.exit_code is None:
            self.exit_code = 0
        self.kernel_pid = None
        self._to(S.ENDING)
        self._stopped.set()
        if said_bye:
            await self._release(said_bye, bye.get("kernels", 0))
        self._to(S.ENDED)

    async def _let_go(self) -> None:
        """close() of a detached session: only the link is closed; CLOSING -> ENDING -> ENDED."""
        if self.link is not None:
            await self.link.close()
        self.job.quiet()
        self.ended_reason = self.ended_reason or (f"detached: the kernel runs on in job {self.job.id} for "
                                                  f"{self.opts.persist:g}s unless a server adopts it")
        if self.exit_code is None:
            self.exit_code = 0
        self.kernel_pid = None
        self._to(S.ENDING)
        self._stopped.set()
        self._to(S.ENDED)

    async def _release(self, said_bye: bool, others: int = 0) -> None:
        """Close the link (control channel, forwards, connection), then end the job.  Shared:
        only when this was the allocation's last kernel and it does not linger (``others``:
        the kernels its launcher still holds after the bye); without a bye, when no other
        kernel of this user is registered in the job (the launcher's per-kernel dead-man
        switch ends this one's kernel)."""
        if self.link is not None:
            await self.link.close()
        if self.opts.direct:
            direct.remove(self.session_id)
        if not self.shared:
            await self.job.end(said_bye)
            return
        if said_bye:
            keep = others > 0 or self.opts.linger > 0
        else:
            keep = self.job.entry is not None and bool(registry.sharing(self.job.entry))
        if not keep:
            allocations.withdraw(self.allocation_id)
        await self.job.end(said_bye, keep=keep)
