"""The server extension's REST API (/remote-kernels/) against real jobs of the test cluster."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from jupyter_helpers import JupyterServer, ensure_jobs_gone
from kernel_helpers import job_in_queue
from slurm_helpers import wait_until


@pytest.fixture(scope="module")
def pending_server(kernelspecs, tmp_path_factory):
    with JupyterServer(tmp_path_factory.mktemp("rest-pending"), app="server",
                       extra_args=("--MappingKernelManager.use_pending_kernels=True",)) as srv:
        yield srv


def view_of(server, kernel_id: str) -> dict | None:
    status, body = server.request("GET", f"/remote-kernels/kernels/{kernel_id}")
    return body if status == 200 else None


def test_queued_kernel_shows_its_job_and_reason_then_cancel_withdraws_it(pending_server, make_spec):
    make_spec("rk-held", directives=["--begin=now+1hour"])
    before = set(pending_server.jobs())
    t0 = time.monotonic()
    status, kernel = pending_server.request("POST", "/api/kernels", {"name": "rk-held"})
    assert status == 201, kernel
    [job] = wait_until("the held kernel's job", lambda: [j for j in pending_server.jobs() if j not in before])
    try:
        view = wait_until("the REST view to say queued with the reason",
                          lambda: (v := view_of(pending_server, kernel["id"])) and v["reason"] and v, timeout=10)
        assert time.monotonic() - t0 < 5, "the job's state should be known within 5 s"
        assert (view["phase"], view["job_id"], view["reason"], view["known"]) == ("queued", job, "BeginTime", True)
        assert view["summary"].startswith(f"slurm job {job} queued (BeginTime)")
        assert view["start_time"]   # SLURM knows when --begin lets it start
        [listed] = [v for v in pending_server.request("GET", "/remote-kernels/kernels")[1]["kernels"]
                    if v["job_id"] == job]
        assert listed["server"] == "this" and listed["kernel_id"] == kernel["id"]

        status, body = pending_server.request("POST", f"/remote-kernels/kernels/{job}/cancel")
        assert status == 200, body
        wait_until(f"job {job} to leave squeue", lambda: not job_in_queue(job), timeout=20)
        wait_until("the server to forget the kernel",
                   lambda: all(k["id"] != kernel["id"] for k in pending_server.kernels()), timeout=20)
        wait_until("the panel's list to drop it", lambda: all(
            v["job_id"] != job for v in pending_server.request("GET", "/remote-kernels/kernels")[1]["kernels"]))
    finally:
        subprocess.run(["scancel", job], capture_output=True)
        ensure_jobs_gone([job], "the held kernel")


def test_running_kernel_shows_node_and_time_left(pending_server):
    status, kernel = pending_server.request("POST", "/api/kernels", {"name": "rk-test"})
    assert status == 201, kernel
    try:
        view = wait_until("the kernel to run with its time left",
                          lambda: (v := view_of(pending_server, kernel["id"])) and v["phase"] == "running"
                          and v["time_left"] and v, timeout=60)
        assert view["node"] in ("c1", "c2") and view["summary"] == \
            f"slurm job {view['job_id']} running on {view['node']}, {view['time_left']} left"
        status, body = pending_server.request("POST", f"/remote-kernels/kernels/{kernel['id']}/shutdown")
        assert status == 200, body
        wait_until(f"job {view['job_id']} to leave squeue", lambda: not job_in_queue(view["job_id"]), timeout=30)
    finally:
        pending_server.request("DELETE", f"/api/kernels/{kernel['id']}")


def test_warn_signals_a_batch_job_near_its_wall_time(pending_server, make_spec):
    """POST warn (what the notification does) sends the pre-end signal through the scheduler:
    the launcher says so in the job log (once, whether SLURM's own came first or not).  Refused
    while the job is not near its end."""
    make_spec("rk-short-rest", time="2", walltime_warning=110, dispatch="batch")
    status, kernel = pending_server.request("POST", "/api/kernels", {"name": "rk-short-rest"})
    assert status == 201, kernel
    try:
        view = wait_until("the kernel to run", lambda: (v := view_of(pending_server, kernel["id"]))
                          and v["phase"] == "running" and v["time_left"] and v, timeout=60)
        if not view["warn"]:
            status, body = pending_server.request("POST", f"/remote-kernels/kernels/{kernel['id']}/warn")
            assert status == 409 and "not near its wall-time" in body["message"], body
        wait_until("the view to say warn", lambda: view_of(pending_server, kernel["id"])["warn"], timeout=30)
        status, body = pending_server.request("POST", f"/remote-kernels/kernels/{kernel['id']}/warn")
        assert status == 200 and body["message"] == f"job {view['job_id']} told that its wall-time is near", body
        log = Path(view_of(pending_server, kernel["id"])["log_file"] or "")
        wait_until("the launcher to log the warning", lambda: "wall-time is near" in log.read_text(), timeout=20)
        assert log.read_text().count("wall-time is near") == 1
    finally:
        pending_server.request("DELETE", f"/api/kernels/{kernel['id']}")
        wait_until("the kernel to be gone", lambda: all(k["id"] != kernel["id"] for k in pending_server.kernels()),
                   timeout=30)
