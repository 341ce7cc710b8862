"""Job logs are pruned: old, not in the registry, and finished for the scheduler; at most hourly."""

from __future__ import annotations

import os
import time

import pytest

from fake_runner import FakeRunner, squeue_listing
from remote_kernels import joblogs
from remote_kernels.registry import Entry
from remote_kernels.runner import CommandRunner
from remote_kernels.schedulers.slurm import Slurm

OLD = time.time() - joblogs.MAX_AGE - 3600


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    return tmp_path


def _logs(d, old=(), new=()):
    d.mkdir(parents=True, exist_ok=True)
    for job_id in (*old, *new):
        (d / f"{job_id}.log").write_text("output\n")
    for job_id in old:
        os.utime(d / f"{job_id}.log", (OLD, OLD))


async def test_only_old_finished_unregistered_logs_are_removed(dirs):
    d = joblogs.job_log_dir()
    _logs(d, old=["11", "12", "13"], new=["14"])
    (d / "notes.txt").write_text("not a log")
    os.utime(d / "notes.txt", (OLD, OLD))
    Entry(session_id="s1", spec="x", scheduler="slurm", job_id="12").save()
    removed = await joblogs.prune(CommandRunner(), Slurm(squeue_listing({"13": "RUNNING"})), remote=False)
    assert removed == ["11"]
    assert sorted(p.name for p in d.iterdir()) == ["12.log", "13.log", "14.log", "notes.txt"]


async def test_nothing_is_removed_when_the_scheduler_does_not_answer(dirs):
    d = joblogs.job_log_dir()
    _logs(d, old=["21"])
    broken = FakeRunner(lambda argv, stdin: (1, "", "slurm_load_jobs error: Unable to contact slurm controller"))
    assert await joblogs.prune(CommandRunner(), Slurm(broken), remote=False) == []
    assert (d / "21.log").exists()


async def test_on_the_login_host_find_and_rm_are_argv_lists_in_the_login_home(dirs, monkeypatch):
    home = dirs / "login-home"
    _logs(home / joblogs.REMOTE_JOB_DIR, old=["31", "32"], new=["33"])
    monkeypatch.chdir(home)   # a local runner stands for the login host: paths relative to its home
    removed = await joblogs.prune(CommandRunner(), Slurm(squeue_listing({"32": "RUNNING"})), remote=True)
    assert removed == ["31"]
    assert sorted(p.name for p in (home / joblogs.REMOTE_JOB_DIR).iterdir()) == ["32.log", "33.log"]


async def test_a_missing_login_dir_prunes_nothing(dirs, monkeypatch):
    monkeypatch.chdir(dirs)
    assert await joblogs.prune(CommandRunner(), Slurm(squeue_listing({})), remote=True) == []


def test_each_place_is_pruned_at_most_hourly(dirs):
    assert joblogs._due("local") and not joblogs._due("local")
    assert joblogs._due("login.example.org")
    stamp = joblogs.job_log_dir() / ".pruned-local"
    os.utime(stamp, (time.time() - joblogs.PRUNE_EVERY - 1,) * 2)
    assert joblogs._due("local")


def test_the_log_dir_is_private_even_if_it_existed(dirs):
    d = dirs / "data" / "remote-kernels" / "jobs"
    d.mkdir(parents=True, mode=0o755)
    d.chmod(0o755)
    assert joblogs.job_log_dir() == d and d.stat().st_mode & 0o777 == 0o700
