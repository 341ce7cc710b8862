"""`remote-kernels check`, `ps` and `cancel` against the test cluster."""

from __future__ import annotations

import getpass
import json
import os
import re
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from kernel_helpers import job_in_queue
from slurm_helpers import jobs_named, wait_until

OWNER = Path(__file__).parent / "kernel_owner.py"
PHASES = ["submit", "queue wait", "job start -> launcher ready", "kernel ready", "first execute", "shutdown", "total"]


@pytest.fixture
def cli(cluster, tmp_path):
    """cli(*args, **env) -> CompletedProcess, with a private spec prefix (on JUPYTER_PATH) and registry."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RK_")}
    env.update(JUPYTER_PATH=str(tmp_path / "share" / "jupyter"), JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"))

    def run(*args: str, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "remote_kernels", *args], capture_output=True, text=True,
                              env=dict(env, **extra), timeout=120)

    def install(name: str, *args: str) -> str:
        res = run("install", name, "--prefix", str(tmp_path), *args)
        assert res.returncode == 0, res.stderr
        return name

    run.install, run.env = install, env
    return run


@pytest.fixture
def owners(cli):
    """owner(spec) -> (process, ids): a separate server process holding a kernel; all ended afterwards."""
    procs = []

    def start(spec: str):
        proc = subprocess.Popen([sys.executable, str(OWNER), spec], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True, env=cli.env)
        procs.append(proc)
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        line = proc.stdout.readline() if ready else ""
        assert line, f"the owner process did not start a kernel of {spec} (exit code {proc.poll()})"
        return proc, json.loads(line)

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.stdin.close()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def ps(cli) -> dict[str, dict]:
    res = cli("ps", "--json")
    assert res.returncode == 0, res.stderr
    return {e["job_id"]: e for e in json.loads(res.stdout)}


def test_check_good_spec_reports_node_and_timings(cli):
    cli.install("rkc-good", "--time", "00:10:00")
    res = cli("check", "rkc-good")
    assert res.returncode == 0, res.stdout + res.stderr
    m = re.search(r"^Kernel ran on node (c[12]) \(job (\d+)\)\.$", res.stdout, re.M)
    assert m, res.stdout
    node, job = m.groups()
    assert f"\n{node}\n" in res.stdout   # the cell's output: the kernel's hostname
    table = {line.rsplit(None, 1)[0]: line.rsplit(None, 1)[1] for line in res.stdout.splitlines()
             if line.startswith(tuple(PHASES))}
    assert list(table) == PHASES
    assert all(float(v) >= 0 for v in table.values())
    assert float(table["total"]) >= sum(float(table[p]) for p in PHASES[:-1]) - 0.05
    wait_until(f"job {job} to leave the queue", lambda: not job_in_queue(job), timeout=15)


def test_check_of_a_shared_spec_runs_in_the_users_live_allocation(cli, owners):
    cli.install("rkc-shared-check", "--time", "00:10:00", "--allocation", "shared")
    proc, ids = owners("rkc-shared-check")
    res = cli("check", "rkc-shared-check")
    assert res.returncode == 0, res.stdout + res.stderr
    assert re.search(rf"^Kernel ran on node {ids['node']} \(job {ids['job_id']}\)\.$", res.stdout, re.M), res.stdout
    assert job_in_queue(ids["job_id"])   # check's kernel ended; the owner's goes on


def test_check_unknown_partition_fails_at_submit_with_slurms_message(cli):
    cli.install("rkc-nopart", "--no-check", "--partition", "nosuch")
    before = jobs_named("rk-rkc-nopart")
    res = cli("check", "rkc-nopart")
    assert res.returncode == 1
    assert res.stderr.startswith("FAILED at submit: ") and "Invalid partition name specified" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert jobs_named("rk-rkc-nopart") == before


def _users_job_listed(job: str) -> bool:
    """True while this user's job ``job`` (an id parsed from the output) is live in squeue."""
    out = subprocess.run(["squeue", "-h", "-u", getpass.getuser(), "-j", job, "-t", "PENDING,RUNNING,COMPLETING",
                          "-o", "%i"], capture_output=True, text=True).stdout
    return job in out.split()


def test_check_of_a_spec_that_can_never_run_fails_from_the_reason_with_the_limit(cli):
    """The pending reason decides, not the queue timeout: with one longer than the CLI's patience
    (120 s), only the reason can end the check, and the line names the limit."""
    cli.install("rkc-never", "--no-check", "--partition", "debug", "--time", "10:00:00")   # debug's MaxTime is 4:00:00
    res = cli("check", "rkc-never", "--queue-timeout", "600")
    assert res.returncode == 1, res.stdout + res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    m = re.match(r"FAILED at queue wait: slurm job (\d+) can never start \(Partition\w+\): partition debug allows "
                 r"at most 4:00:00 \(asked for 10:00:00\); ask for less with --time or RK_TIME, or use partition "
                 r"long$", res.stderr.strip())
    assert m, res.stderr
    wait_until(f"job {m.group(1)} to leave the queue", lambda: not _users_job_listed(m.group(1)), timeout=10)


def test_check_gives_up_after_its_queue_timeout_and_says_so(cli):
    cli.install("rkc-later", "--directive=--begin=now+1hour")   # pends (BeginTime), which clears with time
    res = cli("check", "rkc-later", "--queue-timeout", "2")
    assert res.returncode == 1
    m = re.match(r"FAILED at queue wait: job (\d+) still queued after \d+s \(reason: BeginTime\); cancelled it\. "
                 r".* \(check waits at most 2s in the queue: --queue-timeout\)$", res.stderr.strip())
    assert m, res.stderr
    wait_until(f"job {m.group(1)} to leave the queue", lambda: not _users_job_listed(m.group(1)), timeout=10)


def test_check_names_the_phase_that_failed(cli):
    cli.install("rkc-nopy", "--no-check", "--python", "/nonexistent/bin/python3")
    res = cli("check", "rkc-nopy")
    assert res.returncode == 1
    assert res.stderr.startswith("FAILED at job start -> launcher ready: job ")
    assert "Python /nonexistent/bin/python3 not found on c" in res.stderr


def test_rk_override_applies_at_launch(cli):
    cli.install("rkc-debug", "--partition", "debug", "--time", "00:10:00")
    res = cli("check", "rkc-debug", RK_PARTITION="long")   # only c2 is in partition long
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Kernel ran on node c2 " in res.stdout


def test_ps_lists_a_kernel_of_another_server(cli, owners):
    cli.install("rkc-ps", "--time", "00:10:00")
    proc, ids = owners("rkc-ps")
    entry = ps(cli)[ids["job_id"]]
    assert entry["kernel_id"] == ids["kernel_id"] and entry["spec"] == "rkc-ps" and entry["node"] == ids["node"]
    assert entry["state"] == "running" and entry["owner"] == "alive" and entry["owner_pid"] == proc.pid
    assert re.fullmatch(r"\d+:\d\d", entry["time_left"]), entry["time_left"]
    row = next(l for l in cli("ps").stdout.splitlines() if l.startswith(ids["kernel_id"]))
    assert row.split()[1:6] == ["rkc-ps", ids["job_id"], "-", ids["node"], "running"]   # "-": not shared
    assert row.split()[-2:] == [str(proc.pid), "alive"]

    proc.stdin.close()   # the server shuts its kernel down
    assert proc.wait(timeout=30) == 0
    assert ids["job_id"] not in ps(cli)
    wait_until(f"job {ids['job_id']} to leave the queue", lambda: not job_in_queue(ids["job_id"]), timeout=15)


def test_cancel_orphans_ends_only_the_jobs_of_dead_servers(cli, owners):
    cli.install("rkc-orphan", "--time", "00:10:00")
    dead, orphan = owners("rkc-orphan")
    alive, kept = owners("rkc-orphan")
    dead.send_signal(signal.SIGKILL)   # no clean-up runs: its registry entry and job remain
    dead.wait(timeout=10)
    assert ps(cli)[orphan["job_id"]]["owner"] == "dead"
    assert job_in_queue(orphan["job_id"])

    res = cli("cancel", "--orphans")
    assert res.returncode == 0, res.stderr
    assert f"job {orphan['job_id']} of kernel {orphan['kernel_id']} (spec rkc-orphan) cancelled" in res.stdout
    assert re.findall(r"^job (\S+) of kernel", res.stdout, re.M) == [orphan["job_id"]]   # not the kept one
    wait_until(f"job {orphan['job_id']} to leave the queue", lambda: not job_in_queue(orphan["job_id"]), timeout=15)
    assert set(ps(cli)) == {kept["job_id"]}
    assert job_in_queue(kept["job_id"])
    assert "No orphaned remote kernels" in cli("cancel", "--orphans").stdout

    res = cli("cancel", kept["job_id"])   # by job id; the live server's kernel ends with its job
    assert res.returncode == 0, res.stderr
    assert f"job {kept['job_id']} of kernel {kept['kernel_id']} (spec rkc-orphan) cancelled" in res.stdout
    wait_until(f"job {kept['job_id']} to leave the queue", lambda: not job_in_queue(kept["job_id"]), timeout=15)
    assert ps(cli) == {}


def test_kernels_sharing_a_job_are_shown_and_cancelling_it_ends_them_all(cli, owners):
    cli.install("rkc-shared", "--time", "00:10:00", "--allocation", "shared")
    dead, a = owners("rkc-shared")
    alive, b = owners("rkc-shared")   # another server of the same user: the same job
    job = a["job_id"]
    assert b["job_id"] == job
    listed = {e["kernel_id"]: e for e in json.loads(cli("ps", "--json").stdout)}
    assert listed[a["kernel_id"]]["shared_with"] == [b["kernel_id"]] and listed[b["kernel_id"]]["shared_with"] == [a["kernel_id"]]
    row = next(l for l in cli("ps").stdout.splitlines() if l.startswith(b["kernel_id"]))
    assert row.split()[1:5] == ["rkc-shared", job, "2", "kernels"]

    dead.send_signal(signal.SIGKILL)   # one server gone: its kernel is forgotten, the job kept for the other
    dead.wait(timeout=10)
    res = cli("cancel", "--orphans")
    assert res.returncode == 0, res.stderr
    assert f"its job {job} is kept for the kernel(s) it shares with ({b['kernel_id']})" in res.stdout
    assert job_in_queue(job) and [e["kernel_id"] for e in json.loads(cli("ps", "--json").stdout)] == [b["kernel_id"]]

    third, c = owners("rkc-shared")
    assert c["job_id"] == job
    res = cli("cancel", job)
    assert res.returncode == 0, res.stderr
    assert re.fullmatch(rf"job {job} of kernel \S+ \(spec rkc-shared\) cancelled; it ended the 1 other kernel\(s\) "
                        rf"sharing it: \S+\n", res.stdout), res.stdout
    named = set(re.findall(r"of kernel (\S+) \(", res.stdout)) | set(res.stdout.strip().rsplit(": ", 1)[1].split(", "))
    assert named == {b["kernel_id"], c["kernel_id"]}
    wait_until(f"job {job} to leave the queue", lambda: not job_in_queue(job), timeout=15)
    assert json.loads(cli("ps", "--json").stdout) == []


def test_a_lingering_allocation_is_listed_and_can_be_cancelled(cli, owners):
    cli.install("rkc-linger", "--time", "00:10:00", "--allocation", "shared", "--linger", "600")
    proc, ids = owners("rkc-linger")
    proc.stdin.close()   # its only kernel shut down: the allocation lingers
    assert proc.wait(timeout=30) == 0
    assert job_in_queue(ids["job_id"])
    [row] = json.loads(cli("ps", "--json").stdout)
    assert (row["job_id"], row["kernel_id"], row["owner"], row["state"]) == (ids["job_id"], "", "none", "running")
    line = next(l for l in cli("ps").stdout.splitlines() if f" {ids['job_id']} " in l)
    assert line.split()[2:4] == [ids["job_id"], "lingering"] and line.split()[-1] == "-"
    assert "No orphaned remote kernels" in cli("cancel", "--orphans").stdout   # nobody's orphan
    res = cli("cancel", ids["job_id"])
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"job {ids['job_id']} of the lingering shared allocation (spec rkc-linger) cancelled\n"
    wait_until(f"job {ids['job_id']} to leave the queue", lambda: not job_in_queue(ids["job_id"]), timeout=15)
    assert json.loads(cli("ps", "--json").stdout) == []


def test_cancel_orphans_says_when_a_job_had_already_ended(cli, owners):
    cli.install("rkc-ended", "--time", "00:10:00")
    dead, orphan = owners("rkc-ended")
    dead.send_signal(signal.SIGKILL)
    dead.wait(timeout=10)
    subprocess.run(["scancel", orphan["job_id"]], check=True)
    wait_until(f"job {orphan['job_id']} to end", lambda: not job_in_queue(orphan["job_id"]), timeout=15)
    res = cli("cancel", "--orphans")
    assert res.returncode == 0, res.stderr
    assert f"job {orphan['job_id']} of kernel {orphan['kernel_id']} (spec rkc-ended) had already ended" in res.stdout
    assert orphan["job_id"] not in ps(cli)


def test_cancel_unknown_id_is_refused(cli):
    res = cli("cancel", "no-such-kernel")
    assert res.returncode == 1
    assert res.stderr == ("remote-kernels cancel: no remote kernel with kernel, session or job id "
                          "'no-such-kernel'; see `remote-kernels ps`\n")
