"""The core: one remote kernel's job, node connection, forwards and launcher.

Both adapters (the jupyter_client provisioner and argv mode) drive this class:

    s = RemoteKernelSession(options, log=...)
    await s.start_job()                      # submit, wait in the queue, reach the launcher
    await s.forward(endpoints)               # login-side endpoints -> the kernel's node sockets
    await s.start_kernel(key, scheme, cwd=..., env=...)   # (re)start ipykernel in the job
    s.exit_code                              # None while the kernel lives
    await s.signal(signal.SIGINT)
    await s.stop_kernel()                    # kernel gone, job kept (restart)
    await s.close()                          # kernel, launcher and job gone, forwards closed

Every failure raises ``KernelStartError`` with a one-line message; whatever was
created before the failure (job, connection) is released before it is raised.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import time
from pathlib import Path
from typing import Awaitable, Callable

import asyncssh
from jupyter_core.paths import jupyter_data_dir

from . import script
from .registry import Entry
from .launcher import CHANNELS
from .options import KernelOptions
from .runner import CommandError, SSHCommandRunner, runner_for
from .schedulers import JobState, JobStatus, get_scheduler
from .schedulers.limits import SiteFacts
from .ssh import NodeConnection, NodeConnections
from .sshconnect import SSH_ERRORS, UntrustedConfig, describe
from .watcher import JobWatcher

# poll() codes when the job, not the kernel, ended (the kernel's own code otherwise).
JOB_ENDED_CODES = {JobState.CANCELLED: 143, JobState.TIMEOUT: 124, JobState.NODE_FAIL: 135,
                   JobState.PREEMPTED: 143, JobState.OOM: 137, JobState.FAILED: 1,
                   JobState.COMPLETED: 0, JobState.GONE: 1, JobState.UNKNOWN: 1}


# How long a kernel's death by a signal waits to be told apart from its job's end.
SIGNAL_EXIT_GRACE = 1.0

# Seconds a node may drop logins after its job started (see RemoteKernelSession._connect_node).
ADMIT_WAIT = 10.0

# Where jobs write their output when the server is off the cluster (relative to the login home).
REMOTE_JOB_DIR = ".remote-kernels/jobs"


class KernelStartError(RuntimeError):
    """The kernel could not be started; the message names the cause and the fix."""


def job_log_dir() -> Path:
    d = Path(jupyter_data_dir()) / "remote-kernels" / "jobs"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    return d


class RemoteKernelSession:
    def __init__(self, options: KernelOptions, *, name: str = "remote-kernel", kernel_id: str = "",
                 log: logging.Logger | None = None):
        self.opts = options
        self.name = name
        self.log = log or logging.getLogger(__name__)
        self.runner = runner_for(options.login_host, options.command_timeout)
        self.scheduler = get_scheduler(options.scheduler, self.runner)
        self.watcher = JobWatcher.for_scheduler(self.scheduler, interval=options.poll_interval)
        self.session_id = secrets.token_hex(8)   # names the node dir; not a secret
        self.job_id: str | None = None
        self.node: str | None = None
        self.node_info: dict = {}
        self.conn: NodeConnection | None = None
        self._ctl: tuple[asyncssh.SSHReader, asyncssh.SSHWriter] | None = None
        self._pending: dict[int, asyncio.Future] = {}   # request id -> reply
        self._next_id = 0
        self._reader_task: asyncio.Task | None = None
        self._listeners: list = []
        self.exit_code: int | None = None
        self.kernel_pid: int | None = None
        self.ended_reason = ""
        self.timings: dict[str, float] = {}
        self.kernel_id = kernel_id
        self.entry: Entry | None = None
        # Called with (JobStatus, seconds waited) at each poll while the job waits to start.
        self.on_status: Callable[[JobStatus, float], None] | None = None
        # Seconds queued before the start gives up (0: never); a caller may set a default.
        self.queue_timeout = options.queue_timeout
        self._waitable: set[str] = set()   # reasons the site's facts showed to clear with time
        self._endpoints: dict[str, str | int] = {}
        self._closing = False
        self._start_task: asyncio.Task | None = None
        self._exit_report: tuple[asyncio.TimerHandle, int] | None = None   # delayed, see _kernel_exited
        self._t0 = 0.0
        self.reconnects = 0

    # --- paths ---------------------------------------------------------------
    @property
    def node_dir(self) -> str:
        return f"{self.opts.runtime_base.rstrip('/')}/rk-{self.session_id}"

    @property
    def log_file(self) -> str:
        """The job's output file: local, or relative to the home on the login host."""
        return f"{self._log_dir()}/{self.job_id}.log"

    def _log_dir(self) -> str:
        return REMOTE_JOB_DIR if self.opts.login_host else str(job_log_dir())

    async def job_log_tail(self, lines: int = 5) -> str:
        """The last lines of the job's output, joined with ' | ' ('' if unreadable)."""
        if self.opts.login_host:
            code, out, _ = await self.runner.run(["tail", "-n", str(lines), self.log_file], check=False)
            text = out.strip().splitlines() if code == 0 else []
        else:
            try:
                text = Path(self.log_file).read_text(errors="replace").strip().splitlines()[-lines:]
            except OSError:
                text = []
        return " | ".join(text)

    def _via(self) -> SSHCommandRunner | None:
        return self.runner if isinstance(self.runner, SSHCommandRunner) else None

    # --- job -----------------------------------------------------------------
    async def start_job(self) -> None:
        """Submit the job, wait until it runs, connect to the node and reach the launcher."""
        self._start_task = asyncio.current_task()
        try:
            await self.submit_job()
            await self.reach_launcher()
        finally:
            self._start_task = None

    async def submit_job(self) -> None:
        """Render and submit the batch script; the job is known (and watched) on return."""
        self._t0 = time.monotonic()
        try:
            text = script.render(self.scheduler, self.opts, session=self.session_id,
                                 job_name=f"rk-{self.name}"[:64], output=f"{self._log_dir()}/%j.log")
            try:
                if self.opts.login_host:
                    await self.runner.run(["mkdir", "-p", "-m", "700", REMOTE_JOB_DIR])
                self.job_id = await self._submit(text)
            except Exception as e:
                raise KernelStartError(await self._refusal(e)) from None
            self.timings["submit"] = time.monotonic() - self._t0
            self.entry = Entry(session_id=self.session_id, spec=self.name, scheduler=self.scheduler.name,
                               job_id=self.job_id, kernel_id=self.kernel_id)
            self.entry.save()
            self.log.info("remote kernel %s: submitted %s job %s", self.name, self.scheduler.name, self.job_id)
            self.watcher.watch(self.job_id)
        except BaseException:
            await self.close()
            raise

    async def reach_launcher(self) -> None:
        """After submit_job(): wait until the job runs, connect to its node, reach the launcher."""
        try:
            status = await self._wait_running()
            self.watcher.started(self.job_id)
            self.node = status.node.split(",")[0]
            self.entry.node = self.node
            self.entry.save()
            self.timings["queued"] = time.monotonic() - self._t0 - self.timings["submit"]
            self.log.info("remote kernel %s: job %s running on %s", self.name, self.job_id, self.node)
            t1 = time.monotonic()
            self.conn = await self._connect_node()
            self.timings["ssh"] = time.monotonic() - t1
            await self._connect_launcher()
            self.timings["launcher"] = time.monotonic() - t1 - self.timings["ssh"]
        except BaseException:
            await self.close()
            raise

    async def _connect_node(self) -> NodeConnection:
        """The pool's connection to the job's node.  KernelStartError if it cannot be had.

        A node may drop a login for a moment after the job starts (pam_slurm_adopt admits a
        user once the job's extern step exists): a dropped login is tried again for ADMIT_WAIT s."""
        deadline, delay = time.monotonic() + ADMIT_WAIT, 0.1
        while True:
            try:
                return await NodeConnections.shared().acquire(
                    self.node, self.job_id, interactive=self.opts.interactive_ssh, via=self._via())
            except SSH_ERRORS as e:
                if not isinstance(e, asyncssh.ConnectionLost) or time.monotonic() + delay > deadline:
                    raise KernelStartError(f"cannot reach node {self.node} over SSH: {describe(e)}") from None
                self.log.debug("remote kernel %s: %s dropped the login (%s); retrying", self.name, self.node, e)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    def start_in_background(self, then: Callable[[], Awaitable[None]]) -> asyncio.Task:
        """After submit_job(): reach the launcher, then await ``then()``, in a task of their own.

        For callers that must not wait for the queue.  A failure closes the session, sets
        ``exit_code`` (1) and ``ended_reason`` and is logged; close() cancels the task.
        """
        async def finish() -> None:
            try:
                await self.reach_launcher()
                await then()
            except BaseException:
                await self.close()
                raise

        self._start_task = asyncio.get_running_loop().create_task(finish())
        self._start_task.add_done_callback(self._background_start_done)
        return self._start_task

    def _background_start_done(self, task: asyncio.Task) -> None:
        if task.cancelled() or task.exception() is None:
            return
        self.ended_reason = str(task.exception())
        self.log.error("remote kernel %s: %s", self.name, self.ended_reason)
        self.exit_code = 1

    def queue_summary(self) -> str:
        """Where the job is, in words: "slurm job 42 is queued (Priority) after 12s"."""
        st = self.watcher.status.get(self.job_id or "")
        if st is None:
            return f"{self.scheduler.name} job {self.job_id} is not known any more"
        waited = f"after {time.monotonic() - self._t0:.0f}s"
        if st.state is JobState.RUNNING:
            return f"{self.scheduler.name} job {self.job_id} started on {st.node} {waited}; the kernel is starting"
        return (f"{self.scheduler.name} job {self.job_id} is {st.state.value}" + (f" ({st.reason})" if st.reason else "")
                + f" {waited}")

    async def wait_start(self) -> None:
        """Wait until a start in progress has finished, whatever its outcome."""
        if self._start_task is not None and not self._start_task.done():
            await asyncio.wait({self._start_task})

    @property
    def starting(self) -> bool:
        """True while a start is in progress (the job may still wait in the queue)."""
        return self._start_task is not None and not self._start_task.done()

    async def _submit(self, text: str) -> str:
        """Submit; if cancelled meanwhile, let the submission finish and cancel what it made,
        so a start abandoned at that moment leaves no job nobody knows of."""
        submit = asyncio.ensure_future(self.scheduler.submit(text))
        try:
            return await asyncio.shield(submit)
        except asyncio.CancelledError:
            try:
                job_id = await asyncio.wait_for(submit, self.runner.timeout)
                await self.scheduler.cancel(job_id)
            except Exception as e:
                self.log.warning("remote kernel %s: a job may be left from an abandoned submit: %s", self.name, e)
            raise

    async def _wait_running(self) -> JobStatus:
        last = None
        while True:
            status = await self.watcher.wait_update(self.job_id)
            if self.on_status is not None:
                self.on_status(status, time.monotonic() - self._t0)
            summary = (status.state, status.reason, status.start_time)
            if summary != last:
                last = summary
                extra = f", estimated start {status.start_time}" if status.state is JobState.QUEUED and status.start_time else ""
                self.log.info("remote kernel %s: job %s %s%s%s", self.name, self.job_id, status.state.value,
                              f" ({status.reason})" if status.reason else "", extra)
            if status.state is JobState.RUNNING and status.node:
                return status
            never = await self._never_starts(status)
            if never:
                raise KernelStartError(never)
            if status.state.finished:
                tail = await self.job_log_tail()
                raise KernelStartError(
                    f"job {self.job_id} ended before the kernel started ({status.native or status.state.value}"
                    f"{', ' + status.reason if status.reason else ''})" + (f": {tail}" if tail else ""))
            waited = time.monotonic() - self._t0
            if self.queue_timeout and waited > self.queue_timeout:
                raise KernelStartError(
                    f"job {self.job_id} still {status.state.value} after {waited:.0f}s"
                    f" (reason: {status.reason or 'none given'}); cancelled it. Raise queue_timeout or "
                    "choose a less busy partition")

    def _asked(self):
        """The spec's request (for why-never messages)."""
        return self.opts.resources(job_name="", output="")

    async def _site_facts(self, kind: str):
        """The adapter's facts for a why-never message; none (a vaguer message) if the query fails."""
        try:
            return await self.scheduler.site_facts(self.job_id, kind)
        except (CommandError, OSError, ValueError) as e:
            self.log.debug("remote kernel %s: reading the site's limits failed: %s", self.name, e)
            return SiteFacts()

    async def _never_starts(self, status: JobStatus) -> str | None:
        """The one line saying why the job can never start (the caller cancels it), or None."""
        kind = self.scheduler.never(status)
        said = status.reason or status.native
        if kind is None or said in self._waitable:
            return None
        line = self.scheduler.explain(kind, said, self._asked(), await self._site_facts(kind))
        if line is None:
            self._waitable.add(said)   # the facts show it clears with time; not asked again
            return None
        return f"{self.scheduler.name} job {self.job_id} can never start ({said}): {line}"

    async def _refusal(self, error: Exception) -> str:
        """The one line for a refused submission: the limit and the fix when the error names one."""
        refused = self.scheduler.refused(str(error))
        line = None
        if refused is not None:
            kind, said = refused
            line = self.scheduler.explain(kind, said, self._asked(), await self._site_facts(kind))
        if line is None:
            return f"{self.scheduler.name} refused the job: {error}"
        return f"{self.scheduler.name} refused the job ({said}): {line}"

    async def _connect_launcher(self, timeout: float | None = None) -> None:
        """Open the control channel to the launcher's socket once it listens."""
        timeout = self.opts.launch_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        path = f"{self.node_dir}/ctl"
        delay = 0.02
        while True:
            try:
                self._ctl = await self.conn.conn.open_unix_connection(path)
                break
            except asyncssh.ChannelOpenError as e:
                if e.code == asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED:
                    raise KernelStartError(
                        f"sshd on {self.node} refuses unix-socket forwarding ({e.reason}); the site must "
                        "allow it (AllowStreamLocalForwarding yes)") from None
                # OPEN_CONNECT_FAILED: the launcher does not listen yet
            st = self.watcher.status.get(self.job_id)
            if st and st.state.finished:
                await asyncio.sleep(0.2)   # let the job's output reach the log file
                tail = await self.job_log_tail()
                raise KernelStartError(
                    f"job {self.job_id} on {self.node} ended before its launcher started"
                    f" ({st.native or st.state.value})" + (f": {tail}" if tail else f"; see {self.log_file}"))
            if time.monotonic() > deadline:
                raise KernelStartError(
                    f"launcher of job {self.job_id} did not answer on {self.node} within "
                    f"{timeout:g}s; see {self.log_file}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)
        self._reader_task = asyncio.get_running_loop().create_task(self._read_events())
        self.node_info = await self._request({"op": "hello"})
        self.log.info("remote kernel %s: launcher ready on %s (%s)", self.name,
                      self.node_info.get("host"), self.node_info.get("python"))

    async def _read_events(self) -> None:
        reader = self._ctl[0]
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                msg = json.loads(line)
                if msg.get("event") == "exited":
                    self._kernel_exited(msg.get("code"))
                else:
                    fut = self._pending.pop(msg.get("id"), None)
                    if fut is not None and not fut.done():
                        fut.set_result(msg)
        except (asyncssh.Error, OSError, ValueError):
            pass
        finally:
            self._ctl = None
            signalled = self._cancel_exit_report()   # the launcher went too: the job ended, explained below
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_result({"event": "lost"})
            self._pending.clear()
            if not self._closing and self.kernel_pid is not None and self.exit_code is None:
                if self.conn is not None and self.conn.closed and await self._reconnect():
                    if self.node_info.get("kernel") is None:   # it ended while we were away
                        self._report_exit(signalled if signalled is not None else 1)
                    return
                await self._explain_lost_launcher()

    def _kernel_exited(self, code: int | None) -> None:
        """The launcher reports the kernel's end.  A kernel killed by a signal may have been
        killed with its job (scancel signals every process of the job): if the launcher's
        channel closes within SIGNAL_EXIT_GRACE, the job's end is reported instead."""
        self._cancel_exit_report()
        if code is not None and code < 0:
            timer = asyncio.get_running_loop().call_later(SIGNAL_EXIT_GRACE, self._report_exit, code)
            self._exit_report = (timer, code)
        else:
            self._report_exit(code)

    def _report_exit(self, code: int | None) -> None:
        self._exit_report = None
        self.exit_code = code
        self.log.info("remote kernel %s: kernel exited with code %s", self.name, code)

    def _cancel_exit_report(self) -> int | None:
        """Drop a delayed exit report; return its code (None if there was none)."""
        if self._exit_report is None:
            return None
        timer, code = self._exit_report
        timer.cancel()
        self._exit_report = None
        return code

    def _flush_exit_report(self) -> None:
        """Report a delayed exit now, unless the kernel's end is already known otherwise."""
        code = self._cancel_exit_report()
        if code is not None and self.exit_code is None:
            self.exit_code = code

    async def _reconnect(self) -> bool:
        """The SSH connection dropped: reconnect with backoff, reopen control and forwards.

        Gives up (False) when the job has ended or after grace minus a margin, when the
        launcher's dead-man switch would end the job anyway.  The kernel is untouched.
        """
        pool, old = NodeConnections.shared(), self.conn
        deadline = time.monotonic() + max(5.0, self.opts.grace - 5.0)
        delay = 0.25
        self.log.warning("remote kernel %s: SSH connection to %s dropped; reconnecting", self.name, self.node)
        self._close_forwards()   # stop accepting local connections onto the dead SSH connection
        while not self._closing and time.monotonic() < deadline:
            st = self.watcher.status.get(self.job_id)
            if st is None or st.state.finished:
                return False
            try:
                new = await pool.acquire(self.node, self.job_id, interactive=self.opts.interactive_ssh,
                                         via=self._via())
            except UntrustedConfig as e:   # a configuration error does not heal by waiting
                self.log.error("remote kernel %s: cannot reconnect to %s: %s", self.name, self.node, e)
                return False
            except SSH_ERRORS as e:
                self.log.info("remote kernel %s: reconnect to %s failed (%s); retrying in %.1fs",
                              self.name, self.node, describe(e), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            if old is not None:
                await pool.release(old)
                old = None
            self.conn = new
            try:
                await self._connect_launcher(timeout=max(1.0, deadline - time.monotonic()))
                await self.forward(self._endpoints)
            except (KernelStartError, OSError, asyncssh.Error):
                return False
            self.reconnects += 1
            self.log.warning("remote kernel %s: reconnected to %s; forwards restored", self.name, self.node)
            return True
        return False

    async def _explain_lost_launcher(self) -> None:
        """The control channel closed: find out from the scheduler why, and set exit_code."""
        if self.job_id is None:
            return
        for _ in range(20):
            st = self.watcher.status.get(self.job_id)
            if st is None:
                return
            if st.state.finished:
                self.ended_reason = f"job {self.job_id} {st.native or st.state.value}" + (
                    f" ({st.reason})" if st.reason else "")
                self.log.warning("remote kernel %s: %s", self.name, self.ended_reason)
                self.exit_code = JOB_ENDED_CODES.get(st.state, 1)
                return
            await self.watcher.wait_update(self.job_id)
        self.ended_reason = "lost contact with the launcher"
        self.exit_code = 1

    async def _request(self, msg: dict, timeout: float = 30.0) -> dict:
        """Send one control request; its reply (matched by id).  KernelStartError on failure."""
        if self._ctl is None:
            raise KernelStartError(f"no connection to the launcher of job {self.job_id}")
        self._next_id += 1
        req_id = self._next_id
        fut = asyncio.get_running_loop().create_future()
        self._pending[req_id] = fut
        try:
            self._ctl[1].write((json.dumps(dict(msg, id=req_id)) + "\n").encode())
            reply = await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise KernelStartError(f"launcher of job {self.job_id} did not answer {msg['op']!r} "
                                   f"within {timeout:g}s") from None
        except (asyncssh.Error, OSError) as e:
            raise KernelStartError(f"lost the launcher of job {self.job_id} on {self.node}: {e}") from None
        finally:
            self._pending.pop(req_id, None)
        if reply.get("event") == "lost":
            raise KernelStartError(f"lost the launcher of job {self.job_id} on {self.node}")
        return reply

    # --- forwards ------------------------------------------------------------
    async def forward(self, endpoints: dict[str, str | int]) -> None:
        """Forward login-side endpoints to the kernel's node sockets.

        ``endpoints`` maps channel (``shell_port``...) to a unix path or a TCP port on 127.0.0.1.
        Replaces forwards made before (jupyter_client deletes ipc socket files on restart).
        """
        self._close_forwards()
        self._endpoints = dict(endpoints)
        for channel, local in endpoints.items():
            remote = f"{self.node_dir}/k-{CHANNELS[channel]}"
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

    # --- kernel --------------------------------------------------------------
    async def start_kernel(self, key: bytes | str, signature_scheme: str = "hmac-sha256", *,
                           kernel_name: str = "", cwd: str | None = None, env: dict | None = None) -> None:
        """Start (or restart) the kernel in the job; return once its sockets are bound."""
        if isinstance(key, bytes):
            key = key.decode()
        self._cancel_exit_report()   # the previous kernel's
        self.exit_code = None
        reply = await self._request({"op": "start", "key": key, "signature_scheme": signature_scheme,
                                     "kernel_name": kernel_name, "cwd": cwd, "env": env or {}}, timeout=120)
        if reply.get("event") != "started":
            raise KernelStartError(reply.get("message", f"launcher could not start the kernel: {reply}"))
        self.kernel_pid = reply["pid"]

    async def signal(self, signum: int) -> None:
        if self._ctl is not None:
            await self._request({"op": "signal", "signum": int(signum)})

    async def stop_kernel(self) -> None:
        """Stop the kernel, keep the job and launcher (for a restart)."""
        self._flush_exit_report()
        if self._ctl is not None:
            reply = await self._request({"op": "stop"})
            if self.exit_code is None:
                self.exit_code = reply.get("code") if reply.get("code") is not None else -9
        self.kernel_pid = None

    @property
    def usable(self) -> bool:
        """True while the launcher is reachable (a restart can reuse the allocation)."""
        return self._ctl is not None

    async def close(self) -> None:
        """End everything: kernel, launcher, job, forwards, connection.  Idempotent.

        A start in progress is cancelled first (its own clean-up cancels the job).  Afterwards
        ``exit_code`` is set (0 unless the kernel had exited already)."""
        self._closing = True
        start = self._start_task
        if start is not None and not start.done() and start is not asyncio.current_task():
            start.cancel()
            await asyncio.wait({start})   # not gather: a cancelled close() must not cancel it again
        said_bye = False
        if self._ctl is not None:
            try:
                said_bye = (await self._request({"op": "shutdown"}, timeout=10)).get("event") == "bye"
            except KernelStartError:
                pass
        self._close_forwards()
        if self._reader_task is not None:
            self._reader_task.cancel()
            self._reader_task = None
        if self.job_id is not None:
            await self._end_job(said_bye)
            self.job_id = None
        if self.entry is not None:
            self.entry.remove()
            self.entry = None
        if self.conn is not None:
            conn, self.conn = self.conn, None
            await NodeConnections.shared().release(conn)
        self._flush_exit_report()
        if self.exit_code is None:
            self.exit_code = 0
        self.kernel_pid = None

    async def _end_job(self, said_bye: bool) -> None:
        """After the launcher said bye, wait briefly for the job to end by itself; else cancel it."""
        job_id, deadline = self.job_id, time.monotonic() + 3.0
        st = self.watcher.status.get(job_id)
        while said_bye and st is not None and not st.state.finished \
                and time.monotonic() < deadline:
            try:
                st = await asyncio.wait_for(self.watcher.wait_update(job_id), max(0.1, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                break
        if st is None or not st.state.finished:
            try:
                await self.scheduler.cancel(job_id)
                self.log.info("remote kernel %s: cancelled job %s", self.name, job_id)
            except Exception as e:  # the job may have ended meanwhile
                self.log.warning("remote kernel %s: cancelling job %s failed: %s", self.name, job_id, e)
        self.watcher.unwatch(job_id)

