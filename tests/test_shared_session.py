"""A session of a shared-allocation spec with fakes of its parts (no cluster): join a
published allocation or submit and publish one, and end the job only when the allocation's
last kernel ends.  The real parts run in tests/test_shared_alloc.py on the test cluster."""

from __future__ import annotations

import asyncio

import pytest

from remote_kernels import allocations
from remote_kernels.errors import KernelStartError
from remote_kernels.link import AllocationFull
from remote_kernels.options import KernelOptions
from remote_kernels.session import RemoteKernelSession, State
from test_session_states import FakeJob, FakeLink


@pytest.fixture(autouse=True)
def private_registry(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))


class SharedJob(FakeJob):
    entry = None

    def adopt(self, job_id, node, allocation):
        self.calls.append(f"adopt({job_id})")
        self.id = job_id

    async def end(self, said_bye, keep=False):
        self.calls.append(f"end(bye={said_bye}, keep={keep})")


class SharedLink(FakeLink):
    """A launcher of a shared allocation: ``join_error`` fails join(); ``left`` is the
    kernels its shutdown reply says are left."""

    join_error: Exception | None = None
    left = 0

    def __init__(self, *a, slot="", **kw):
        super().__init__(*a, **kw)
        self.slot = slot

    async def join(self):
        self.calls.append("join")
        if self.join_error is not None:
            raise self.join_error
        self.hello = {"event": "hello", "host": "c1", "kernel": None}
        return self.hello

    async def request(self, msg, timeout=30.0):
        reply = await super().request(msg, timeout)
        return dict(reply, kernels=self.left) if msg["op"] == "shutdown" else reply


def session(linger: float = 0) -> tuple[RemoteKernelSession, SharedJob, list[State]]:
    job = SharedJob()
    s = RemoteKernelSession(KernelOptions(allocation="shared", linger=linger, environ={}), name="t", job=job,
                            link_factory=SharedLink)

    async def no_scheduler(ids):   # the jobs' states: all running (the unit tier has no scheduler)
        return {}

    s.scheduler.status = no_scheduler
    seen = [s.state]
    real_to = s._to
    s._to = lambda new: (real_to(new), seen.append(new))
    return s, job, seen


def published(job_id: str = "7", allocation: str = "a1b2") -> allocations.Allocation:
    alloc = allocations.Allocation(allocation=allocation, fingerprint=allocations.fingerprint("t", KernelOptions(
        allocation="shared", environ={})), spec="t", scheduler="slurm", job_id=job_id, node="c2", runtime_base="/tmp")
    alloc.publish()
    return alloc


async def test_with_no_allocation_to_join_it_submits_and_publishes_one():
    s, job, seen = session()
    await s.start_job()
    assert seen == [State.NEW, State.JOINING, State.SUBMITTING, State.QUEUED, State.CONNECTING, State.READY]
    [alloc] = allocations.published()
    assert (alloc.allocation, alloc.job_id, alloc.node) == (s.session_id, "42", "c1")
    assert FakeLink.made[-1].slot == s.session_id and s.kernel_dir == f"/tmp/rk-{s.session_id}/s-{s.session_id}"
    await s.close()   # the last kernel, no linger: the job ends, the record goes
    assert "end(bye=True, keep=False)" in job.calls and allocations.published() == []


async def test_a_published_allocation_is_joined_without_a_submission():
    alloc = published()
    s, job, seen = session()
    await s.start_job()
    assert seen == [State.NEW, State.JOINING, State.READY] and "submit" not in job.calls
    assert job.calls[0] == "adopt(7)" and s.joined and s.node == "c2"
    assert s.node_dir == alloc.node_dir and s.kernel_dir == f"{alloc.node_dir}/s-{s.session_id}"
    await s.forward({"shell_port": 1})
    await s.start_kernel(b"key")
    assert s.state is State.RUNNING
    FakeLink.made[-1].left = 1   # another kernel is still in the allocation: its job stays
    await s.close()
    assert "end(bye=True, keep=True)" in job.calls and allocations.published() == [alloc]


async def test_a_lingering_allocation_is_kept_after_its_last_kernel():
    s, job, _ = session(linger=30)
    await s.start_job()
    await s.close()
    assert "end(bye=True, keep=True)" in job.calls and len(allocations.published()) == 1


@pytest.mark.parametrize("error, kept", [(AllocationFull("full"), True), (KernelStartError("gone"), False)],
                         ids=["full", "launcher-gone"])
async def test_an_allocation_that_cannot_be_joined_means_a_job_of_its_own(monkeypatch, error, kept):
    alloc = published()
    monkeypatch.setattr(SharedLink, "join_error", error)
    s, job, seen = session()
    await s.start_job()
    assert seen[:3] == [State.NEW, State.JOINING, State.SUBMITTING] and "submit" in job.calls and not s.joined
    assert s.node_dir == f"/tmp/rk-{s.session_id}"
    assert (alloc in allocations.published()) is kept   # a full one stays for later; a gone one is withdrawn
    await s.close()


async def test_a_start_waits_for_another_start_of_the_spec_and_joins_its_job():
    """The per-spec lock: held by the first start until its job is published."""
    first, job1, _ = session()
    job1.run.clear()   # its job waits in the queue
    starting = asyncio.ensure_future(first.start_job())
    await asyncio.sleep(0.1)
    second, job2, seen2 = session()
    joining = asyncio.ensure_future(second.start_job())
    await asyncio.sleep(0.2)
    assert second.state is State.JOINING and not joining.done()   # waiting for the first's job
    job1.run.set()
    await asyncio.wait_for(asyncio.gather(starting, joining), 5)
    assert second.joined and job2.calls[0] == "adopt(42)" and "submit" not in job2.calls
    await second.close()
    await first.close()


# --- the options, the spec and the script ---------------------------------------------------

def test_install_writes_the_sharing_options(tmp_path):
    import json
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "remote_kernels", "install", "cn", "--allocation", "shared",
                          "--linger", "120", "--max-kernels", "3", "--no-check", "--prefix", str(tmp_path)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    spec = json.loads((tmp_path / "share/jupyter/kernels/cn/kernel.json").read_text())
    config = spec["metadata"]["kernel_provisioner"]["config"]
    assert (config["allocation"], config["linger"], config["max_kernels"]) == ("shared", 120.0, 3)


@pytest.mark.parametrize("config, message", [
    ({"allocation": "pooled"}, "allocation 'pooled' is not one of per-kernel, shared"),
    ({"linger": -1.0}, "linger -1 is negative"),
    ({"max_kernels": -2}, "max_kernels -2 is negative"),
])
def test_bad_sharing_options_are_refused_in_one_line(config, message):
    from traitlets import TraitError

    with pytest.raises(TraitError, match=message):
        KernelOptions(environ={}, **config)


def test_the_script_gives_a_shared_launcher_its_linger_and_max_and_per_kernel_nothing_new():
    from remote_kernels.schedulers.slurm import Slurm
    from remote_kernels.script import render

    def launcher_line(**config) -> str:
        opts = KernelOptions(environ={}, grace=600, contact_timeout=45, **config)
        text = render(Slurm(), opts, opts.resources("rk-t", "/tmp/%j.log"), session="abc")
        return next(line for line in text.splitlines() if " - abc " in line)

    assert launcher_line().endswith(" - abc 600 /tmp 45 <<'RK_LAUNCHER_EOF'")
    assert launcher_line(allocation="shared", linger=30, max_kernels=4).endswith(
        " - abc 600 /tmp 45 30 4 <<'RK_LAUNCHER_EOF'")


def test_install_refuses_a_shared_allocation_with_interactive_dispatch(tmp_path):
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "remote_kernels", "install", "cn", "--allocation", "shared",
                          "--dispatch", "interactive", "--no-check", "--prefix", str(tmp_path)],
                         capture_output=True, text=True)
    assert res.returncode != 0 and not (tmp_path / "share").exists()
    assert "a shared allocation is submitted as a batch job; set dispatch to batch or auto" in res.stderr


def test_a_shared_allocation_is_a_batch_job():
    from remote_kernels.job import interactive
    from remote_kernels.schedulers.slurm import Slurm

    assert interactive(KernelOptions(environ={}), Slurm())   # per kernel: srun where it can
    assert not interactive(KernelOptions(environ={}, allocation="shared"), Slurm())
    with pytest.raises(ValueError, match="a shared allocation is submitted as a batch job"):
        interactive(KernelOptions(environ={}, allocation="shared", dispatch="interactive"), Slurm())


def test_only_the_same_spec_with_the_same_resources_shares():
    base = allocations.fingerprint("s", KernelOptions(environ={}, allocation="shared", cpus=2))
    assert allocations.fingerprint("s", KernelOptions(environ={}, allocation="shared", cpus=2)) == base
    assert allocations.fingerprint("other", KernelOptions(environ={}, allocation="shared", cpus=2)) != base
    assert allocations.fingerprint("s", KernelOptions(environ={}, allocation="shared", cpus=4)) != base
    assert allocations.fingerprint("s", KernelOptions(environ={"RK_MEM": "2G"}, allocation="shared", cpus=2)) != base


async def test_records_of_ended_jobs_are_withdrawn_before_any_join():
    import logging

    from remote_kernels.schedulers import JobState, JobStatus

    live, ended = published("7"), published("8", "c3d4")

    class Scheduler:
        name = "slurm"

        async def status(self, ids):
            return {"7": JobStatus(JobState.RUNNING), "8": JobStatus(JobState.COMPLETED)}

    assert await allocations.running(Scheduler(), allocations.published(), logging.getLogger()) == [live]
    assert [a.allocation for a in allocations.published()] == ["a1b2"]


async def test_the_spec_lock_gives_up_after_its_wait():
    held = allocations.SpecLock("fp")
    assert await held.acquire()
    t0 = asyncio.get_running_loop().time()
    assert not await allocations.SpecLock("fp").acquire(wait=0.3)
    assert asyncio.get_running_loop().time() - t0 >= 0.3
    assert await allocations.SpecLock("other").acquire(wait=0)   # another spec's lock is another file
    held.release()
    assert await allocations.SpecLock("fp").acquire(wait=0)
