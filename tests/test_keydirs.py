"""Transport direct's key directories are pruned only when their job has ended (keydirs.py).

The cluster side (a killed server's queued job cancelled, the next start removing its
directory while a running kernel's stays) is tests/test_failures.py's."""

from __future__ import annotations

import json
import os
import socket
import time

import pytest

from fake_runner import FakeRunner, squeue_listing
from remote_kernels import background, direct, keydirs
from remote_kernels.keydirs import MIN_AGE, KeyDir, candidates
from remote_kernels.schedulers.slurm import Slurm

NOW = 1_800_000_000.0
OLD = NOW - MIN_AGE - 1


def _dir(session: str, *, job_id: str = "7", scheduler: str = "slurm", host: str = "login1", recorded: float = OLD):
    return KeyDir(session, job_id, scheduler, host, recorded)


def test_only_old_records_of_this_host_and_scheduler_not_this_process_s_are_asked_about():
    found = [_dir("a"), _dir("young", recorded=NOW - MIN_AGE + 5), _dir("elsewhere", host="login2"),
             _dir("pbs", scheduler="pbs"), _dir("mine"), _dir("nojob", job_id=""),
             _dir("just", recorded=NOW - MIN_AGE)]
    picked = candidates(found, scheduler="slurm", host="login1", mine={"mine"}, now=NOW)
    assert [d.session for d in picked] == ["a", "just"]


@pytest.fixture
def data(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    return tmp_path


def _key_dir(session: str, job_id: str | None, age: float = MIN_AGE + 60) -> None:
    """A key directory as prepare() and record_job() leave it (no record: job_id None)."""
    path = direct.key_dir(session)
    path.mkdir(parents=True)
    (path / "launcher.json").write_text("{}")
    if job_id is not None:
        direct.record_job(session, job_id, "slurm")
        then = time.time() - age
        os.utime(path / direct.JOB_RECORD, (then, then))


async def test_a_directory_is_removed_only_when_its_job_has_left_the_queue(data):
    for session, job in (("gone", "11"), ("running", "12"), ("pending", "13"), ("young", "14"), ("norecord", None)):
        _key_dir(session, job, age=60 if session == "young" else MIN_AGE + 60)
    runner = squeue_listing({"12": "RUNNING", "13": "PENDING"})
    assert await keydirs.prune(Slurm(runner)) == ["gone"]
    assert sorted(p.name for p in direct.key_root().iterdir()) == ["norecord", "pending", "running", "young"]
    assert sorted(p.name for p in direct.key_dir("running").iterdir()) == ["job.json", "launcher.json"]
    assert "14" not in runner.calls[0].argv[runner.calls[0].argv.index("-j") + 1].split(",")


async def test_nothing_is_removed_when_the_scheduler_does_not_answer(data):
    _key_dir("stale", "21")
    broken = FakeRunner(lambda argv, stdin: (1, "", "slurm_load_jobs error: Unable to contact slurm controller"))
    assert await keydirs.prune(Slurm(broken)) == []
    assert direct.key_dir("stale").exists()


async def test_this_process_s_own_directory_is_not_asked_about(data):
    _key_dir("ours", "31")
    path = str(direct.key_dir("ours"))
    background.remove_at_exit(path)
    try:
        runner = squeue_listing({})
        assert await keydirs.prune(Slurm(runner)) == []
        assert direct.key_dir("ours").exists() and runner.calls == []
    finally:
        background.forget_removal(path)


def test_the_record_names_the_job_scheduler_and_host_privately(data):
    direct.key_dir("s").mkdir(parents=True)
    direct.record_job("s", "41", "slurm")
    record = direct.key_dir("s") / direct.JOB_RECORD
    assert record.stat().st_mode & 0o777 == 0o600
    assert json.loads(record.read_text()) == {"job_id": "41", "scheduler": "slurm", "host": socket.gethostname()}
