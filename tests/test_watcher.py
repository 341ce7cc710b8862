"""The job watcher: it never dies of a query's or parser's exception (B2), a batched answer it cannot
read does not blind it to the other jobs (B3), and watchers are kept per event loop.  Real adapters
over fake runners; no cluster needed."""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
import weakref
from pathlib import Path

import pytest

from fake_runner import FakeRunner, printing
from remote_kernels.runner import CommandError
from remote_kernels.schedulers import JobState, JobStatus, Scheduler
from remote_kernels.schedulers.htcondor import HTCondor
from remote_kernels.schedulers.pbs import PBSPro
from remote_kernels.schedulers.slurm import Slurm
from remote_kernels.schedulers.ssh import SSH
from remote_kernels.watcher import JobWatcher

SAMPLES = Path(__file__).parent / "samples"
FAST = dict(interval=0.01, fast_interval=0.01, max_interval=0.01, max_failures=3)
DEADLINE = 10.0   # seconds for a condition that holds within a few polls


def watcher(scheduler: Scheduler) -> JobWatcher:
    return JobWatcher(scheduler, **FAST)


async def next_status(w: JobWatcher, job_id: str, state: JobState) -> JobStatus:
    """The first update of job_id in ``state``; fails (never hangs) if none comes by the deadline."""
    async def wait() -> JobStatus:
        while True:
            st = await w.wait_update(job_id)
            if st.state is state:
                return st

    try:
        return await asyncio.wait_for(wait(), DEADLINE)
    except asyncio.TimeoutError:
        pytest.fail(f"job {job_id} never {state.value}: {w.status.get(job_id)} after {w.queries} queries")


class Flaky(Scheduler):
    """status() raises ``errors`` one after the other, then answers RUNNING for every job."""

    name = "flaky"

    def __init__(self, errors):
        super().__init__(printing(""))
        self.errors = list(errors)

    async def status(self, job_ids):
        if self.errors:
            raise self.errors.pop(0)
        return {j: JobStatus(JobState.RUNNING, node="c1") for j in job_ids}


# --- B2: the watcher never dies ---------------------------------------------------------------

@pytest.mark.parametrize("error", [KeyError("ClusterId"), TypeError("'NoneType' object is not iterable"),
                                   OverflowError("timestamp out of range for platform time_t"),
                                   ValueError("not an ssh job id (HOST:PID): 'x'"), RuntimeError("adapter bug")])
async def test_an_exception_of_a_query_is_one_failed_query(error):
    w = watcher(Flaky([error]))
    w.watch("1")
    assert (await next_status(w, "1", JobState.RUNNING)).node == "c1"
    assert w.queries >= 2 and w.failures == 0
    w.unwatch("1")


async def test_a_record_without_cluster_id_neither_ends_the_watcher_nor_later_starts():
    """B2 as it was reproduced: an HTCondor ad without ClusterId ended the process-wide watcher, and
    every later wait_update() waited forever."""
    answers = {"out": '[{"ProcId": 0, "JobStatus": 2}]'}
    w = watcher(HTCondor(FakeRunner(lambda argv, stdin: (0, answers["out"], ""))))
    w.watch("812.0")
    lost = await next_status(w, "812.0", JobState.UNKNOWN)   # after max_failures failed queries
    assert "unreadable output (KeyError" in lost.reason and w.failures >= FAST["max_failures"]
    answers["out"] = (SAMPLES / "htcondor" / "condor_q-json.json").read_text()
    w.watch("813.0")   # a later start is watched, and the first job recovers too
    assert (await next_status(w, "813.0", JobState.RUNNING)).node == "c2.cluster.example"
    assert (await next_status(w, "812.0", JobState.QUEUED)).reason == ""
    w.unwatch("812.0")
    w.unwatch("813.0")


async def test_a_failing_command_counts_for_every_job_with_one_query_per_poll():
    runner = printing("", 1, "slurm_load_jobs error: Unable to contact slurm controller\n")
    w = watcher(Slurm(runner))
    w.watch("1")
    w.watch("2")
    lost = await next_status(w, "2", JobState.UNKNOWN)
    assert "Unable to contact slurm controller" in lost.reason and w.status["1"].state is JobState.UNKNOWN
    # No answer at all: asking job by job would only multiply the failing commands.
    assert all(call.argv[5] == "1,2" for call in runner.calls) and len(runner.calls) == w.queries
    w.unwatch("1")
    w.unwatch("2")


# --- B3: one job's unreadable record does not blind the others ----------------------------------

def pbs_answers(argv, stdin):
    """qstat -f -F json -x IDS as PBS prints it when job 7020's environment breaks its JSON."""
    ids = argv[5:]
    if "7020.pbs01" not in ids:
        return 0, (SAMPLES / "pbs" / "qstat-f-F-json-x.json").read_text(), ""
    name = "qstat-bad-json-alone.json" if ids == ["7020.pbs01"] else "qstat-bad-json.json"
    return 0, (SAMPLES / "pbs" / name).read_text(), ""


async def test_an_unreadable_batch_falls_back_to_one_query_per_job():
    runner = FakeRunner(pbs_answers)
    w = watcher(PBSPro(runner))
    w.watch("7003.pbs01")
    w.watch("7020.pbs01")
    running = await next_status(w, "7003.pbs01", JobState.RUNNING)
    assert running.node == "c2"
    lost = await next_status(w, "7020.pbs01", JobState.UNKNOWN)   # its own failures, max_failures of them
    assert "unreadable output (JSONDecodeError" in lost.reason
    # From then on the bad job is asked about alone and the others in one batch.
    runner.calls.clear()
    await next_status(w, "7003.pbs01", JobState.RUNNING)
    asked = {tuple(c.argv[5:]) for c in runner.calls}
    assert ("7003.pbs01",) in asked and ("7020.pbs01",) in asked and ("7003.pbs01", "7020.pbs01") not in asked
    w.unwatch("7003.pbs01")
    w.unwatch("7020.pbs01")


async def test_a_bad_ssh_job_id_fails_only_itself():
    ps = FakeRunner(lambda argv, stdin: (0, (SAMPLES / "ssh" / "ps.txt").read_text(), ""))
    ssh = SSH(printing(""))
    ssh.runner_at = lambda where: ps
    w = watcher(ssh)
    w.watch("c1:26725")
    w.watch("not-an-id")
    assert (await next_status(w, "c1:26725", JobState.RUNNING)).node == "c1"
    assert "HOST:PID" in (await next_status(w, "not-an-id", JobState.UNKNOWN)).reason
    w.unwatch("c1:26725")
    w.unwatch("not-an-id")


async def test_unwatch_forgets_the_failures():
    w = watcher(Flaky([CommandError(["x"], 1, "", "down")] * 2))
    w.watch("1")
    await next_status(w, "1", JobState.RUNNING)
    w.unwatch("1")
    assert w.failures == 0 and not w.status


# --- the schedule: fast at first, backing off while jobs wait, one query per round ------------

class Counting(Scheduler):
    """Every job QUEUED; records each status query as (time.monotonic(), the ids asked about)."""

    name = "counting"

    def __init__(self):
        super().__init__(printing(""))
        self.calls: list[tuple[float, tuple[str, ...]]] = []

    async def status(self, job_ids):
        self.calls.append((time.monotonic(), tuple(job_ids)))
        return {j: JobStatus(JobState.QUEUED, "Priority") for j in job_ids}


async def test_the_delay_of_a_waiting_job_grows_with_its_wait_up_to_the_cap():
    w = JobWatcher(Counting(), interval=2.0, fast_interval=0.2, backoff=0.25, max_interval=30.0)
    t0 = time.monotonic()
    w.watch("1")
    assert w.delay(t0 + 0.5) == 0.2                       # its first second: fast
    assert w.delay(t0 + 8) == pytest.approx(2.0, abs=0.01)   # a quarter of its wait
    assert w.delay(t0 + 3600) == 30.0                    # at most the cap
    w._starting["1"] = t0 - 3600   # job 1 has waited an hour
    w.watch("2")   # a new job: the next round comes fast, for both
    assert w.delay(time.monotonic()) == 0.2
    w.started("2")   # running, its link not reached yet: it wants rounds every interval
    assert w.delay(time.monotonic()) == 2.0
    w.unwatch("1")
    w.unwatch("2")
    assert w.delay(t0) == 2.0 and not w.status


async def test_waiting_jobs_share_each_query_and_back_off_to_the_cap():
    """Real loop, real timers: gaps between queries never undercut the schedule (timers do not
    fire early), so a watcher without back-off would make far more queries than allowed here."""
    sched = Counting()
    w = JobWatcher(sched, interval=5.0, fast_interval=0.02, backoff=0.5, max_interval=0.16)
    t0 = time.monotonic()
    w.watch("1")
    w.watch("2")
    await asyncio.sleep(1.5)
    times = [t for t, _ in sched.calls]
    assert all(ids == ("1", "2") for _, ids in sched.calls)   # one query per round for both
    gaps = [b - a for a, b in zip(times, times[1:])]
    for since, gap in zip(times, gaps):   # each gap at least what the schedule asks for
        assert gap >= min(0.16, max(0.02, 0.5 * (since - t0))) - 0.005
    # 0.02 s gaps to 0.04 s, then growing by half to the cap: about 14 queries (75 without back-off).
    assert 8 <= len(times) <= 17
    late = [g for since, g in zip(times, gaps) if since - t0 > 0.5]
    assert late and statistics.median(late) < 0.32   # at the cap, not growing further
    # A newly submitted job is asked about at once and fast again, together with the old ones.
    before = len(sched.calls)
    w.watch("3")
    await asyncio.sleep(0.3)
    fresh = sched.calls[before:]
    assert len(fresh) >= 5 and all(set(ids) == {"1", "2", "3"} for _, ids in fresh)
    for job_id in ("1", "2", "3"):
        w.unwatch(job_id)


async def test_running_jobs_unwatched_cost_no_query():
    sched = Counting()
    w = JobWatcher(sched, interval=0.05, fast_interval=0.01, max_interval=0.05)
    w.watch("1")
    w.watch("2")
    await next_status(w, "1", JobState.QUEUED)
    w.started("1")
    w.unwatch("1")   # its link answers (Job.quiet)
    await next_status(w, "2", JobState.QUEUED)
    assert sched.calls[-1][1] == ("2",)
    w.unwatch("2")
    await asyncio.sleep(0.2)
    count = len(sched.calls)
    await asyncio.sleep(0.3)
    assert len(sched.calls) == count and w._task is None   # nothing watched: no round, no task


# --- one watcher per loop and settings -------------------------------------------------------

def test_watchers_are_shared_per_loop_and_settings_and_dropped_with_their_loop():
    slurm = Slurm(printing(""))

    async def shared():
        w = JobWatcher.for_scheduler(slurm, interval=1.0)
        assert JobWatcher.for_scheduler(Slurm(slurm.runner), interval=1.0) is w
        assert JobWatcher.for_scheduler(slurm, interval=2.0) is not w
        return w

    first = asyncio.run(shared())
    dropped = weakref.ref(first)
    del first
    # A new loop (whose id may be the closed one's) gets a watcher of its own; the old one is let go.
    for _ in range(3):
        assert asyncio.run(shared()) is not dropped()
    gc.collect()
    assert dropped() is None


def test_runners_of_other_timeouts_get_other_watchers():
    async def two():
        short, long_ = printing(""), printing("")
        long_.where, long_.timeout = short.where, 90.0
        return JobWatcher.for_scheduler(Slurm(short)), JobWatcher.for_scheduler(Slurm(long_))

    a, b = asyncio.run(two())
    assert a is not b and b.scheduler.runner.timeout == 90.0
