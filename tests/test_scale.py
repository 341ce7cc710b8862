"""Many kernels from one server: batched status queries, none for running kernels, no collisions,
no leftovers.  How often an idle server queries is measured by `make bench` (squeue/min at
scale), not asserted here."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest
from jupyter_client.manager import AsyncKernelManager

from kernel_helpers import processes_mentioning, remote, until, value_of

SQUEUE_SHIM = """#!/bin/sh
# Counts the provisioner's status queries; fails them while $RK_SQUEUE_FAIL exists.
echo "$*" >> "$RK_SQUEUE_LOG"
if [ -e "$RK_SQUEUE_FAIL.hang" ]; then
    exec sleep 60
fi
if [ -e "$RK_SQUEUE_FAIL" ]; then
    echo "slurm_load_jobs error: Socket timed out on send/recv operation" >&2
    exit 1
fi
exec /usr/bin/squeue "$@"
"""


@pytest.fixture
def counted_squeue(tmp_path, monkeypatch):
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "squeue").write_text(SQUEUE_SHIM)
    (shim / "squeue").chmod(0o755)
    log, fail = tmp_path / "squeue.log", tmp_path / "fail"
    monkeypatch.setenv("PATH", f"{shim}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("RK_SQUEUE_LOG", str(log))
    monkeypatch.setenv("RK_SQUEUE_FAIL", str(fail))
    log.touch()
    return log, fail


async def _start_all(name: str, n: int):
    managers = [AsyncKernelManager(kernel_name=name) for _ in range(n)]
    await asyncio.gather(*(km.start_kernel() for km in managers))
    clients = [km.client() for km in managers]
    for kc in clients:
        kc.start_channels()
    await asyncio.gather(*(kc.wait_for_ready(timeout=120) for kc in clients))
    return managers, clients


async def _stop_all(managers, clients):
    for kc in clients:
        kc.stop_channels()
    await asyncio.gather(*(km.shutdown_kernel() for km in managers), return_exceptions=True)


async def test_waiting_kernels_share_one_status_query_and_running_ones_need_none(make_spec, counted_squeue):
    """While jobs wait, one query asks about all of them, and failing or hanging queries end no
    start; once eight of the nine kernels run, their links' traffic says they live: the queries,
    still going for the one that waits, leave them out."""
    log, fail = counted_squeue
    make_spec("rk-poll", poll_interval=0.5, queue_poll_max=0.5, command_timeout=1, directives=["--hold"])
    managers = [AsyncKernelManager(kernel_name="rk-poll") for _ in range(9)]
    starts = [asyncio.ensure_future(km.start_kernel()) for km in managers]
    clients = []
    try:
        await until("nine held jobs", lambda: len(_jobs_in(log)) == 9, 30)
        jobs = _jobs_in(log)
        log.write_text("")
        await until("four queries", lambda: len(log.read_text().splitlines()) >= 4, 15)
        for q in log.read_text().splitlines():   # every query asks about all nine jobs at once
            assert _ids(q) == jobs
        # Thirteen failed queries in a row, then three hanging ones (killed after command_timeout):
        # no start gives up, for a failed query is not a job that left the queue.
        fail.touch()
        before = len(log.read_text().splitlines())
        await until("ten failed queries", lambda: len(log.read_text().splitlines()) >= before + 10, 15)
        fail.unlink()
        hang = fail.with_name(fail.name + ".hang")
        hang.touch()
        hung_before = len(log.read_text().splitlines())
        await until("three hung queries", lambda: len(log.read_text().splitlines()) >= hung_before + 3, 15)
        hang.unlink()
        assert not any(t.done() for t in starts)
        *released, waiting = sorted(jobs)
        subprocess.run(["scontrol", "release", ",".join(released)], check=True)
        await until("eight starts to finish", lambda: sum(t.done() for t in starts) == 8, 120)
        running = [km for km, t in zip(managers, starts) if t.done() and t.result() is None]
        assert len(running) == 8
        clients = [km.client() for km in running]
        for kc in clients:
            kc.start_channels()
        await asyncio.gather(*(kc.wait_for_ready(timeout=120) for kc in clients))
        log.write_text("")
        # A cell in every running kernel, and four queries of the server: all for the waiting job only.
        assert [await value_of(kc, "'alive'") for kc in clients] == ["alive"] * 8
        queries = await until("four queries", lambda: len(q := log.read_text().splitlines()) >= 4 and q, 15)
        assert [_ids(q) for q in queries] == [{waiting}] * len(queries)
        for km in running:
            assert await km.provisioner.poll() is None
    finally:
        for t in starts:
            t.cancel()
        await asyncio.gather(*starts, return_exceptions=True)
        await _stop_all(managers, clients)


def _ids(query: str) -> set[str]:
    """The job ids one logged squeue command line asks about (its -j list)."""
    return set(query.split("-j ")[1].split()[0].split(","))


def _jobs_in(log: Path) -> set[str]:
    """The job ids of the last status query in the shim's log."""
    lines = log.read_text().splitlines()
    return _ids(lines[-1]) if lines else set()


async def test_sixteen_kernels_at_once_then_nothing_left(kernelspecs):
    managers, clients = await _start_all("rk-test", 16)
    sessions = [await remote(km) for km in managers]
    jobs = [s["job_id"] for s in sessions]
    try:
        hosts = await asyncio.gather(*(value_of(kc, "__import__('socket').gethostname()") for kc in clients))
        assert set(hosts) <= {"c1", "c2"}
        assert len({km.connection_file for km in managers}) == 16
        assert len({(await remote(km))["login_dir"] for km in managers}) == 16
        assert len({s["node_dir"] for s in sessions}) == 16
    finally:
        await _stop_all(managers, clients)

    def none_left() -> bool:
        out = subprocess.run(["squeue", "-h", "-j", ",".join(jobs), "-o", "%i"], capture_output=True, text=True)
        return out.stdout.strip() == ""
    await until("all 16 jobs to leave the queue", none_left, timeout=30)
    for s in sessions:
        assert processes_mentioning(s["session_id"]) == []
        assert not Path(s["node_dir"]).exists()
