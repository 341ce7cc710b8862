"""job.Job with a scheduler whose commands are slow fakes (no cluster): what a start leaves behind."""

from __future__ import annotations

import asyncio
import logging

import pytest

from remote_kernels.errors import KernelStartError
from remote_kernels.job import Job
from remote_kernels.options import KernelOptions
from remote_kernels.runner import CommandError, CommandRunner
from remote_kernels.schedulers.base import Dispatched
from remote_kernels.schedulers.limits import SiteFacts
from remote_kernels.schedulers.slurm import Slurm


class SlowSbatch(Slurm):
    """SLURM whose submit (if ``held``) lasts until ``release`` is set; records what it was asked to do.
    Batch dispatch only (SlowSrun: the interactive path)."""

    dispatch_prefix = ()

    def __init__(self, refuse: str = "", held: bool = False):
        super().__init__(CommandRunner(timeout=5))
        self.refuse = refuse
        self.submitted: list[str] = []
        self.cancelled: list[str] = []
        self.submitting, self.release = asyncio.Event(), asyncio.Event()
        if not held:
            self.release.set()

    async def submit(self, *args) -> str:
        self.submitting.set()
        await self.release.wait()
        if self.refuse:
            raise CommandError(["sbatch"], 1, "", self.refuse)
        self.submitted.append(str(len(self.submitted) + 1000))
        return self.submitted[-1]

    async def cancel(self, job_id: str) -> None:
        self.cancelled.append(job_id)

    async def status(self, job_ids):
        return {}

    async def site_facts(self, job_id, kind):
        return SiteFacts()   # a site that tells nothing: the real SLURM (if any) is not asked


class SlowSrun(SlowSbatch):
    """The same through the interactive path: dispatch() is the held submission, its command a
    real process that ends when the job is cancelled."""

    dispatch_prefix = Slurm.dispatch_prefix

    async def dispatch(self, text, res):
        job_id = await self.submit()
        proc = await asyncio.create_subprocess_exec("sleep", "30", stderr=asyncio.subprocess.PIPE)
        self.procs = getattr(self, "procs", []) + [proc]
        return Dispatched(job_id, proc, ["sleep"])

    async def cancel(self, job_id: str) -> None:
        await super().cancel(job_id)
        for proc in self.procs:
            proc.terminate()


def make_job(scheduler, tmp_path, monkeypatch) -> Job:
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    return Job(KernelOptions(python="/usr/bin/python3"), scheduler, scheduler.runner, name="t",
               session_id="s1", kernel_id="", log=logging.getLogger("test"))


@pytest.mark.parametrize("kind", [SlowSbatch, SlowSrun])
async def test_a_start_cancelled_twice_during_submit_still_cancels_the_job_it_made(kind, tmp_path, monkeypatch):
    """B14: a re-awaited wait_for around the submission killed it mid-flight (a job nobody knew of)."""
    scheduler = kind(held=True)   # the submission lasts until released: both cancels land during it
    job = make_job(scheduler, tmp_path, monkeypatch)
    start = asyncio.ensure_future(job.submit())
    await scheduler.submitting.wait()
    start.cancel()
    await asyncio.sleep(0.05)   # the first cancellation reaches submit(), whose clean-up waits for the submission
    start.cancel()   # the caller gives up again meanwhile
    scheduler.release.set()
    with pytest.raises(asyncio.CancelledError):
        await start
    assert scheduler.submitted == ["1000"] and scheduler.cancelled == ["1000"]
    assert job.entry is None   # never recorded as a live kernel
    assert all(p.returncode is not None for p in getattr(scheduler, "procs", []))   # srun reaped


async def test_a_refused_submission_is_one_line_naming_the_scheduler(tmp_path, monkeypatch):
    scheduler = SlowSbatch(refuse="sbatch: error: Batch job submission failed: "
                           "Invalid account or account/partition combination specified")
    job = make_job(scheduler, tmp_path, monkeypatch)
    with pytest.raises(KernelStartError, match=r"^slurm refused the job") as e:
        await job.submit()
    assert "\n" not in str(e.value) and scheduler.cancelled == []


@pytest.mark.parametrize("kind", [SlowSbatch, SlowSrun])
async def test_end_cancels_once(kind, tmp_path, monkeypatch):
    scheduler = kind()
    job = make_job(scheduler, tmp_path, monkeypatch)
    await job.submit()
    assert job.entry is not None and job.entry.path.exists()
    path = job.entry.path
    await asyncio.gather(job.end(said_bye=False), job.end(said_bye=False))
    assert scheduler.cancelled == ["1000"] and not path.exists()
    assert all(p.returncode is not None for p in getattr(scheduler, "procs", []))
