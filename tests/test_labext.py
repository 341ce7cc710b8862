"""The JupyterLab extension's installation and its server extension's REST API (unit tier: a real
`jupyter server`, no cluster; scheduler commands fail here, as on a login node whose scheduler is down).

The browser side is in tests/test_labext_browser.py; the REST API against real jobs in
tests/test_labext_jobs.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jupyter_helpers import JupyterServer

VENV_BIN = Path(sys.executable).parent
LABEXT = "remote-kernels-jupyterlab"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def jupyter(*args: str) -> str:
    """`jupyter ARGS` from the venv: its output, colour codes removed, words single-spaced."""
    res = subprocess.run([str(VENV_BIN / "jupyter"), *args], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return " ".join(ANSI.sub("", res.stdout + res.stderr).split())


def test_labextension_is_installed_prebuilt():
    """`jupyter labextension list` shows the extension enabled and OK, from the Python package."""
    out = jupyter("labextension", "list")
    assert f"{LABEXT} v0.1.0 enabled OK (python, remote-kernels)" in out, out
    static = Path(sys.prefix) / "share" / "jupyter" / "labextensions" / LABEXT
    meta = json.loads((static / "package.json").read_text())
    assert (static / meta["jupyterlab"]["_build"]["load"]).is_file()
    assert json.loads((static / "install.json").read_text())["packageName"] == "remote-kernels"


def test_server_extension_is_enabled():
    out = jupyter("server", "extension", "list")
    assert "remote_kernels.serverext enabled - Validating remote_kernels.serverext... remote_kernels.serverext OK" \
        in out, out


# --- views (pure) ------------------------------------------------------------------------

def test_views_say_where_the_job_is():
    from remote_kernels.registry import Entry
    from remote_kernels.schedulers import JobState, JobStatus
    from remote_kernels.serverext.overview import make_view

    queued = make_view(info={"state": "queued", "job_id": "42", "scheduler": "slurm"}, entry=None,
                       status=JobStatus(JobState.QUEUED, reason="BeginTime", start_time="2026-12-02T19:00:00"),
                       kernel_id="k1", spec="rk-test")
    assert queued["phase"] == "queued" and queued["known"]
    assert queued["summary"] == "slurm job 42 queued (BeginTime), estimated start 2026-12-02T19:00:00"
    starting = make_view(info={"state": "connecting", "job_id": "42", "scheduler": "slurm", "node": "c1"},
                         entry=None, status=JobStatus(JobState.RUNNING, node="c1"), kernel_id="k1")
    assert starting["summary"] == "slurm job 42 starting on c1"
    running = make_view(info={"state": "running", "job_id": "42", "scheduler": "slurm", "node": "c2"}, entry=None,
                        status=JobStatus(JobState.RUNNING, node="c2", time_left="1:59:30"), kernel_id="k1")
    assert running["summary"] == "slurm job 42 running on c2, 1:59:30 left"
    assert (running["time_left_seconds"], running["warn"]) == (7170, False)
    ending = make_view(info={"state": "running", "job_id": "42", "scheduler": "slurm", "node": "c2"}, entry=None,
                       status=JobStatus(JobState.RUNNING, node="c2", time_left="4:59"), kernel_id="k1", warn_before=300)
    assert (ending["time_left_seconds"], ending["warn"]) == (299, True)
    assert not make_view(info={"state": "running", "job_id": "42", "scheduler": "slurm"}, entry=None,
                         status=JobStatus(JobState.RUNNING, time_left="4:59"), warn_before=0)["warn"]
    # A registry entry alone (another server's kernel): the scheduler's state is the phase.
    entry = Entry(session_id="s1", spec="rk-test", scheduler="slurm", job_id="7", kernel_id="k7", owner_pid=1)
    orphan = make_view(info=None, entry=entry, status=JobStatus(JobState.QUEUED, reason="Priority"), server="dead")
    assert (orphan["phase"], orphan["known"], orphan["kernel_id"], orphan["job_id"]) == ("queued", False, "k7", "7")
    assert orphan["summary"] == "slurm job 7 queued (Priority)"
    unknown = make_view(info=None, entry=entry, status=None)
    assert unknown["phase"] == "unknown"


async def test_job_facts_batch_and_cache(monkeypatch):
    """One status query per scheduler for all its jobs, time left only for running ones, and none
    again within the cache's ttl."""
    from remote_kernels.schedulers import JobState, JobStatus
    from remote_kernels.serverext import overview

    calls = []

    class FakeScheduler:
        async def status(self, ids):
            calls.append(("status", tuple(sorted(ids))))
            return {i: JobStatus(JobState.RUNNING if i == "1" else JobState.QUEUED, reason="" if i == "1" else "Priority")
                    for i in ids}

        async def time_left(self, ids):
            calls.append(("time_left", tuple(ids)))
            return {i: JobStatus(JobState.RUNNING, time_left="9:59") for i in ids}

    monkeypatch.setattr(overview, "get_scheduler", lambda name, runner=None: FakeScheduler())
    now = [100.0]
    facts = overview.JobFacts(ttl=3, clock=lambda: now[0])
    keys = [overview.JobKey("slurm", "1"), overview.JobKey("slurm", "2")]
    got = await facts.get(keys)
    assert got[keys[0]].time_left == "9:59" and got[keys[1]].reason == "Priority"
    assert calls == [("status", ("1", "2")), ("time_left", ("1",))]
    now[0] += 2
    await facts.get(keys)
    assert len(calls) == 2   # cached
    now[0] += 2
    await facts.get(keys[:1])
    assert calls[2:] == [("status", ("1",)), ("time_left", ("1",))]


# --- the REST API on a real server ----------------------------------------------------------

@pytest.fixture
def server(tmp_path):
    with JupyterServer(tmp_path, app="server") as srv:
        yield srv


def _register(server, **fields) -> dict:
    """An entry in the server's user's registry, as a kernel of another (gone) server leaves it."""
    entry = {"session_id": "0123456789abcdef", "spec": "rk-test", "scheduler": "slurm", "job_id": "424242",
             "kernel_id": "kernel-of-a-gone-server", "node": "", "owner_pid": 2 ** 22 + 1,
             "owner_host": os.uname().nodename, "started": time.time(), **fields}
    reg = Path(server.env["JUPYTER_RUNTIME_DIR"]) / "remote-kernels"
    reg.mkdir(mode=0o700, exist_ok=True)
    (reg / f"{entry['session_id']}.json").write_text(json.dumps(entry))
    return entry


def test_rest_lists_the_users_kernels_including_orphans(server):
    status, body = server.request("GET", "/remote-kernels/kernels")
    assert status == 200 and body == {"kernels": []}
    entry = _register(server)
    status, body = server.request("GET", "/remote-kernels/kernels")
    assert status == 200, body
    [view] = body["kernels"]
    assert (view["job_id"], view["kernel_id"], view["spec"], view["server"], view["known"]) == \
        ("424242", "kernel-of-a-gone-server", "rk-test", "dead", False)
    assert view["phase"] == "unknown"   # squeue fails here
    status, body = server.request("GET", f"/remote-kernels/kernels/{entry['kernel_id']}")
    assert status == 200 and body["job_id"] == "424242"
    status, body = server.request("GET", "/remote-kernels/kernels/nosuch")
    assert status == 404 and "nosuch" in body["message"]


def test_rest_needs_the_token(server):
    import urllib.error
    import urllib.request

    for method in ("GET", "POST"):
        req = urllib.request.Request(f"{server.url}/remote-kernels/kernels/x/cancel" if method == "POST"
                                     else f"{server.url}/remote-kernels/kernels", method=method, data=b"" if method == "POST" else None)
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=10)
        assert e.value.code == 403, (method, e.value.code)


def test_rest_acts_only_on_the_users_own(server):
    entry = _register(server)
    status, body = server.request("POST", "/remote-kernels/kernels/999999/cancel")
    assert status == 404 and "no remote kernel or job '999999' of yours" in body["message"]
    status, body = server.request("POST", f"/remote-kernels/kernels/{entry['kernel_id']}/shutdown")
    assert status == 409 and "cancel its job instead" in body["message"]
    # The user's own orphan: cancelled through the scheduler, which here fails with its reason.
    status, body = server.request("POST", f"/remote-kernels/kernels/{entry['job_id']}/cancel")
    assert status == 502 and "cannot cancel job 424242" in body["message"], body
    status, body = server.request("POST", f"/remote-kernels/kernels/{entry['kernel_id']}/warn")
    assert status == 404 and "of this server" in body["message"]   # another server's kernel: not signalled
    status, body = server.request("POST", "/remote-kernels/kernels/x/reboot")
    assert status == 404
