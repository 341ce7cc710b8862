"""The session's state machine with fakes of its parts (no cluster): transitions, failures, close.

The fakes stand for job.Job and link.NodeLink with the same methods; what they record is
what the session asked of them.  The real parts are exercised by the cluster suites.
"""

from __future__ import annotations

import asyncio

import pytest

from remote_kernels.errors import KernelStartError
from remote_kernels.link import DROPPED, LAUNCHER
from remote_kernels.options import KernelOptions
from remote_kernels.schedulers import JobState, JobStatus
from remote_kernels.session import LIVE, TRANSITIONS, RemoteKernelSession, State


class FakeJob:
    def __init__(self, *, ends_as: JobState = JobState.CANCELLED):
        self.id: str | None = None
        self.timings: dict = {}
        self.log_file = "/nonexistent/job.log"
        self.queue_timeout = 0
        self.calls: list[str] = []
        self.ends_as = ends_as
        self.finished = False
        self.status = None
        self.run = asyncio.Event()   # set: the job "starts running"
        self.run.set()
        self.end_gate = asyncio.Event()   # set: end() returns (the scheduler's word that it ended)
        self.end_gate.set()

    async def submit(self):
        self.calls.append("submit")
        self.id = "42"
        self.timings["submit"] = 0.0

    async def wait_running(self, on_status):
        self.calls.append("wait_running")
        await self.run.wait()
        self.timings["queued"] = 0.0
        return JobStatus(JobState.RUNNING, node="c1")

    def watch(self, starting=True):
        self.calls.append("watch")

    def quiet(self):
        self.calls.append("quiet")

    def summary(self):
        return "fake job 42"

    async def log_tail(self):
        return ""

    async def why_ended(self):
        self.calls.append("why_ended")
        return {JobState.CANCELLED: 143, JobState.TIMEOUT: 124}[self.ends_as], f"job 42 {self.ends_as.name}"

    async def end(self, said_bye):
        self.calls.append(f"end(bye={said_bye})")
        await self.end_gate.wait()
        self.calls.append("job gone")


class FakeLink:
    """Answers requests like a launcher; ``breaks`` is resolved by the test to break the link."""

    made: list["FakeLink"] = []

    def __init__(self, opts, *, node, job_id, node_dir, via, on_event, log, connect_error=None,
                 reconnect_gate: asyncio.Event | None = None):
        self.node, self.on_event = node, on_event
        self.calls: list[str] = []
        self.hello = {}
        self.reconnects = 0
        self.breaks: asyncio.Future = asyncio.get_running_loop().create_future()
        self.connect_error = connect_error
        self.reconnect_gate = reconnect_gate
        self.closed = False
        self.kernel = None
        FakeLink.made.append(self)

    @property
    def usable(self):
        return bool(self.hello) and not self.closed and not self.breaks.done()

    async def connect(self):
        self.calls.append("connect")
        if self.connect_error:
            raise KernelStartError(self.connect_error)

    async def reach(self, job_finished, log_file):
        self.calls.append("reach")
        self.hello = {"event": "hello", "host": "c1", "kernel": None}
        return self.hello

    async def request(self, msg, timeout=30.0):
        self.calls.append(msg["op"])
        if not self.usable:
            raise KernelStartError("no connection to the fake launcher")
        if msg["op"] == "start":
            self.kernel = 1234
            return {"event": "started", "pid": 1234}
        if msg["op"] == "stop":
            self.kernel = None
            return {"event": "stopped", "code": -15}
        if msg["op"] == "shutdown":
            return {"event": "bye"}
        return {"event": "ok"}

    async def forward(self, endpoints):
        if self.closed:
            raise KernelStartError("no connection to the fake launcher")
        self.calls.append("forward")

    async def broken(self):
        return await asyncio.shield(self.breaks)

    async def reconnect(self, job_finished):
        self.calls.append("reconnect")
        if self.reconnect_gate is not None:
            await self.reconnect_gate.wait()
        self.breaks = asyncio.get_running_loop().create_future()
        self.hello = {"event": "hello", "kernel": self.kernel}
        self.reconnects += 1
        await self.forward({})
        return True

    async def close(self):
        self.calls.append("close")
        self.closed = True


def make_session(job=None, **link_kw) -> tuple[RemoteKernelSession, FakeJob, list[State]]:
    job = job or FakeJob()

    def link(*a, **kw):
        return FakeLink(*a, **kw, **link_kw)

    s = RemoteKernelSession(KernelOptions(), name="t", job=job, link_factory=link)
    seen = [s.state]
    real_to = s._to

    def to(new):
        real_to(new)
        seen.append(new)

    s._to = to
    return s, job, seen


async def started(**kw):
    s, job, seen = make_session(**kw)
    await s.start_job()
    await s.forward({"shell_port": 1})
    await s.start_kernel(b"key")
    return s, job, seen


# --- the table ------------------------------------------------------------------------------

def test_every_state_has_transitions_and_ended_is_final():
    assert set(TRANSITIONS) == set(State)
    assert TRANSITIONS[State.ENDED] == frozenset()
    for state, targets in TRANSITIONS.items():
        assert targets <= set(State)
        if state not in (State.CLOSING, State.ENDING, State.ENDED):
            assert State.CLOSING in targets, state
    # Closing stops the kernel, then its job, forwards and link end: one way, to the end.
    assert TRANSITIONS[State.CLOSING] == {State.ENDING} and TRANSITIONS[State.ENDING] == {State.ENDED}


def test_every_state_is_reachable_and_every_state_can_end():
    reach, todo = {State.NEW}, [State.NEW]
    while todo:
        for nxt in TRANSITIONS[todo.pop()]:
            if nxt not in reach:
                reach.add(nxt)
                todo.append(nxt)
    assert reach == set(State)
    for state in State:   # from each state, ENDED is reachable
        seen, todo = {state}, [state]
        while todo:
            for nxt in TRANSITIONS[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        assert State.ENDED in seen, state


async def test_a_transition_outside_the_table_is_refused():
    s, _, _ = make_session()
    with pytest.raises(RuntimeError, match="no transition new -> running"):
        s._to(State.RUNNING)
    assert s.state is State.NEW


# --- lifecycles ------------------------------------------------------------------------------

async def test_start_restart_and_close_walk_the_table():
    s, job, seen = await started()
    assert s.state is State.RUNNING and s.exit_code is None and s.usable
    assert job.calls[:3] == ["submit", "wait_running", "quiet"]   # no queries while the link answers
    await s.stop_kernel()
    assert s.state is State.READY and s.exit_code == -15
    await s.start_kernel(b"key")
    await s.close()
    assert seen == [State.NEW, State.SUBMITTING, State.QUEUED, State.CONNECTING, State.READY, State.STARTING,
                    State.RUNNING, State.READY, State.STARTING, State.RUNNING, State.CLOSING, State.ENDING,
                    State.ENDED]
    assert "end(bye=True)" in job.calls and s.exit_code == 0
    assert not s.usable and State.ENDED not in LIVE


async def test_the_kernels_own_exit_keeps_the_job():
    s, job, _ = await started()
    s._launcher_event({"event": "exited", "code": 3})
    assert s.state is State.READY and s.exit_code == 3 and s.usable
    assert not any(c.startswith("end") for c in job.calls)
    await s.close()


async def test_launcher_gone_ends_the_session_with_the_jobs_code():
    s, job, seen = await started(job=FakeJob(ends_as=JobState.TIMEOUT))
    FakeLink.made[-1].breaks.set_result(LAUNCHER)
    await asyncio.wait_for(_until(lambda: s.state is State.ENDED), 5)
    assert s.exit_code == 124 and "TIMEOUT" in s.ended_reason
    assert job.calls.count("end(bye=False)") == 1 and FakeLink.made[-1].closed


async def test_a_killed_kernel_whose_link_then_breaks_reports_the_jobs_end():
    """scancel kills the kernel (exit -15) and then the launcher: the job's end is reported."""
    s, job, _ = await started()
    s._launcher_event({"event": "exited", "code": -15})
    FakeLink.made[-1].breaks.set_result(LAUNCHER)
    await asyncio.wait_for(_until(lambda: s.state is State.ENDED), 5)
    assert s.exit_code == 143


async def test_a_dropped_link_is_restored_with_the_kernel_running():
    s, job, seen = await started()
    link = FakeLink.made[-1]
    link.breaks.set_result(DROPPED)
    await asyncio.wait_for(_until(lambda: link.reconnects == 1 and s.state is State.RUNNING), 5)
    assert State.RECONNECTING in seen and "watch" in job.calls and job.calls[-1] == "quiet"
    assert s.exit_code is None
    await s.close()


async def test_close_during_a_reconnect_does_not_resurrect_the_forwards():
    """B12: the reconnect used to run in the old reader task and reopen forwards after close()."""
    gate = asyncio.Event()
    s, job, seen = await started(reconnect_gate=gate)
    link = FakeLink.made[-1]
    link.breaks.set_result(DROPPED)
    await asyncio.wait_for(_until(lambda: s.state is State.RECONNECTING and "reconnect" in link.calls), 5)
    await s.close()
    gate.set()
    await asyncio.sleep(0)   # give a surviving reconnect every chance to go on
    assert s.state is State.ENDED and link.closed
    assert link.calls.count("forward") == 1   # the first, before the drop; none after close
    assert link.reconnects == 0


async def test_overlapping_closes_end_everything_once():
    """B13: two close() calls at once both cancelled and both ended the job."""
    s, job, _ = await started()
    await asyncio.gather(s.close(), s.close())
    await s.close()
    assert [c for c in job.calls if c.startswith("end")] == ["end(bye=True)"]
    assert FakeLink.made[-1].calls.count("shutdown") == 1


async def test_a_cancelled_close_still_finishes():
    s, job, _ = await started()
    closing = asyncio.ensure_future(s.close())
    await asyncio.sleep(0)
    closing.cancel()
    await asyncio.wait_for(_until(lambda: s.state is State.ENDED), 5)
    assert "end(bye=True)" in job.calls


async def test_shut_down_returns_once_the_launcher_said_bye_and_the_job_ends_afterwards():
    s, job, seen = await started()
    job.end_gate.clear()   # the scheduler has not yet seen the job end
    link = FakeLink.made[-1]
    await asyncio.wait_for(s.shut_down(), 5)
    assert s.state is State.ENDING and s.stopped and not s.usable and s.exit_code == 0
    assert link.calls[-1] == "shutdown" or "close" in link.calls
    ended = []
    s.when_closed(lambda: ended.append(s.state))
    await asyncio.wait_for(_until(lambda: "end(bye=True)" in job.calls), 5)
    assert link.closed and link.calls.index("shutdown") < link.calls.index("close")
    assert ended == [] and not s._close_task.done()
    job.end_gate.set()
    await asyncio.wait_for(s.close(), 5)   # close() waits for the rest
    assert s.state is State.ENDED and ended == [State.ENDED] and job.calls[-1] == "job gone"
    assert seen[-3:] == [State.CLOSING, State.ENDING, State.ENDED]


async def test_shut_down_without_a_bye_ends_the_job_before_it_returns():
    """The kernel may run on when its launcher cannot be told: its job's end stops it."""
    s, job, _ = await started()
    link = FakeLink.made[-1]
    link.closed = True   # the link is gone: no shutdown request can be sent
    await asyncio.wait_for(s.shut_down(), 5)
    assert "shutdown" not in link.calls and job.calls[-2:] == ["end(bye=False)", "job gone"]
    await asyncio.wait_for(s.close(), 5)
    assert s.state is State.ENDED and job.calls.count("end(bye=False)") == 1


async def test_a_session_shut_down_but_still_ending_is_awaited_at_exit():
    from remote_kernels import background

    async def go():   # on the background loop, as the provisioner's sessions
        s, job, _ = await started()
        job.end_gate.clear()
        await s.shut_down()
        background.track(s)
        s.when_closed(lambda: background.untrack(s))
        asyncio.get_running_loop().call_later(0.2, job.end_gate.set)
        return s

    s = await background.run(go())
    assert s.state is State.ENDING
    await asyncio.get_running_loop().run_in_executor(None, background._close_all)   # what atexit calls
    assert s.state is State.ENDED and s not in background._live


async def test_a_failed_connect_raises_its_own_error_and_releases_the_job():
    s, job, seen = make_session(connect_error="cannot reach node c1 over SSH: refused")
    with pytest.raises(KernelStartError, match="cannot reach node c1"):
        await s.start_job()
    assert s.state is State.ENDED and seen[-3:] == [State.CLOSING, State.ENDING, State.ENDED]
    assert "end(bye=False)" in job.calls and s.ended_reason.startswith("cannot reach node c1")


async def test_close_while_queued_cancels_the_start_and_ends_the_job():
    job = FakeJob()
    job.run.clear()   # stays queued
    s, _, seen = make_session(job=job)
    start = asyncio.ensure_future(s.start_job())
    await asyncio.wait_for(_until(lambda: "wait_running" in job.calls), 5)
    await s.close()
    with pytest.raises(asyncio.CancelledError):
        await start
    assert s.state is State.ENDED and "end(bye=False)" in job.calls and State.CONNECTING not in seen


async def _until(cond, step: float = 0.01):
    while not cond():
        await asyncio.sleep(step)


def test_the_documented_state_table_is_the_code():
    """docs/architecture.md's "Kernel states" table lists exactly session.TRANSITIONS."""
    from pathlib import Path

    text = (Path(__file__).parent.parent / "docs" / "architecture.md").read_text()
    section = text.split("## Kernel states", 1)[1].split("\n## ", 1)[0]
    documented = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0] in {s.value for s in State}:
            nexts = frozenset(State(n.strip()) for n in cells[2].split(",") if n.strip() not in ("", "—"))
            documented[State(cells[0])] = nexts
    assert documented == TRANSITIONS


def test_a_start_with_options_that_cannot_go_together_fails_with_one_line():
    from remote_kernels.errors import KernelStartError

    with pytest.raises(KernelStartError, match=r"^transport 'direct' does not support allocation shared yet; "
                                               r"use transport 'ssh' or drop allocation$"):
        RemoteKernelSession(KernelOptions(transport="direct", allocation="shared", environ={}), name="t")
