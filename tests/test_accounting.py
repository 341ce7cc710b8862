"""Accounts and QOS (the test cluster's slurmdbd accounting): requests SLURM will never run
end `remote-kernels check` at submit or from the job's pending reason (not a queue timeout), as
the ordinary user rkuser, with one line naming the limit and the fix, and leave no job.

Associations on the test cluster: rkuser in accounts chemistry (QOS normal) and physics
(QOS normal, short); QOS short has MaxWall 00:30:00; AccountingStorageEnforce
associations,limits,qos.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from site_helpers import UserSpecs, as_user, user_jobs, VENV_BIN
from slurm_helpers import wait_until

USER = "rkuser"
RK = str(VENV_BIN / "remote-kernels")


@pytest.fixture
def specs():
    made = UserSpecs()
    yield made
    made.remove_all()


def _check(spec: str) -> subprocess.CompletedProcess:
    """`remote-kernels check` as the user, with a queue timeout past the patience of as_user
    (120 s): a check that ends did so at submit or from the job's pending reason."""
    return as_user(USER, RK, "check", spec, "--queue-timeout", "600", timeout=120)


@pytest.mark.parametrize("args, expected", [
    (["--account", "nosuch"],
     r"FAILED at submit: slurm refused the job \(Invalid account or account/partition combination specified\): "
     r"account nosuch is not one you may use here; set one of yours with --account or RK_ACCOUNT \(.*\)"),
    (["--qos", "nosuch"],
     r"FAILED at submit: slurm refused the job \(Invalid qos specification\): QOS nosuch is not valid for you "
     r"here \(the QOS are normal, short\); set one you may use with --qos or RK_QOS \(.*\)"),
    (["--account", "chemistry", "--qos", "short"],   # short exists, but not for rkuser in chemistry
     r"FAILED at submit: slurm refused the job \(Invalid qos specification\): QOS short is not valid for you "
     r"here \(the QOS are normal, short\); set one you may use with --qos or RK_QOS \(.*\)"),
])
def test_unknown_account_or_qos_fails_at_submit_with_one_line(accounting, specs, args, expected):
    spec = specs.install(USER, "rk-acct", "--no-check", *args)   # install would refuse it
    res = _check(spec)
    assert res.returncode == 1, res.stdout + res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and re.fullmatch(expected, res.stderr.strip()), res.stderr
    assert user_jobs(USER, f"rk-{spec}") == []


def test_qos_wall_time_limit_fails_at_once_with_the_qos_max_wall(accounting, specs):
    """sbatch accepts a job over its QOS's MaxWall (no DenyOnLimit); it would pend for ever."""
    spec = specs.install(USER, "rk-qoswall", "--no-check", "--account", "physics", "--qos", "short", "--time", "01:00:00")
    res = _check(spec)
    assert res.returncode == 1, res.stdout + res.stderr
    m = re.fullmatch(r"FAILED at queue wait: slurm job (\d+) can never start \(QOSMaxWallDurationPerJobLimit\): "
                     r"QOS short allows wall time up to 0:30:00 per job; ask for less with --time or RK_TIME, or "
                     r"use another QOS with --qos or RK_QOS", res.stderr.strip())
    assert m, res.stderr
    job = m.group(1)

    def gone():
        out = subprocess.run(["squeue", "-h", "-u", USER, "-j", job, "-t", "PENDING,RUNNING,COMPLETING", "-o", "%i"],
                             capture_output=True, text=True).stdout
        return job not in out.split()

    wait_until(f"{USER}'s job {job} to leave the queue", gone, timeout=10)
    assert user_jobs(USER, f"rk-{spec}") == []
