"""Resources a user chose in the launch dialog, on real jobs: the server extension tells the
dialog a spec's bounds and checks a choice; a notebook's stored choice reaches that notebook's
kernel only (``scontrol show job``), whichever way the kernel starts; one outside the bounds
fails the start in one line and submits nothing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from jupyter_helpers import JupyterServer, ensure_jobs_gone
from site_helpers import unique
from slurm_helpers import job_limits, wait_until

BOUNDS = ("--user-choice", "time=0:10:00..1:00:00", "--user-choice", "cpus=1..2",
          "--user-choice", "partition=debug,urgent")


@pytest.fixture(scope="module")
def choosing_spec(kernelspecs) -> str:
    """A spec with user choices, installed as an admin does (the CLI, into the test prefix)."""
    name = unique("rk-choose")
    prefix = kernelspecs.parent.parent.parent
    res = subprocess.run([sys.executable, "-m", "remote_kernels", "install", name, "--prefix", str(prefix),
                          "--python", sys.executable, "--time", "1:00:00", "--cpus", "1", *BOUNDS],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return name


@pytest.fixture(scope="module")
def server(kernelspecs, choosing_spec, tmp_path_factory):
    with JupyterServer(tmp_path_factory.mktemp("choices"), app="server") as srv:
        yield srv


def write_notebook(server, spec: str, resources: dict | None) -> str:
    name = f"{unique('nb')}.ipynb"
    meta = {"kernelspec": {"name": spec, "display_name": spec, "language": "python"}}
    if resources is not None:
        meta["remote_kernels"] = {"resources": {spec: resources}}
    (server.root / name).write_text(json.dumps({"cells": [], "metadata": meta, "nbformat": 4, "nbformat_minor": 5}))
    return name


def open_session(server, path: str, spec: str):
    return server.request("POST", "/api/sessions", {"path": path, "name": path, "type": "notebook",
                                                    "kernel": {"name": spec}})


def test_the_dialog_gets_the_specs_bounds_and_defaults(server, choosing_spec):
    status, body = server.request("GET", f"/remote-kernels/specs/{choosing_spec}/choices")
    assert status == 200, body
    assert body["choices"] == {"time": {"min": "0:10:00", "max": "1:00:00"}, "cpus": {"min": 1, "max": 2},
                               "partition": {"choices": ["debug", "urgent"]}}
    assert body["defaults"]["time"] == "1:00:00" and body["defaults"]["cpus"] == 1
    assert server.request("GET", "/remote-kernels/specs/rk-test/choices")[1]["choices"] == {}
    assert server.request("GET", "/remote-kernels/specs/no-such-spec/choices")[0] == 404


def test_the_server_checks_a_choice_against_the_bounds(server, choosing_spec):
    path = f"/remote-kernels/specs/{choosing_spec}/choices"
    status, body = server.request("POST", path, {"resources": {"time": "0:20:00", "cpus": 2}})
    assert (status, body) == (200, {"resources": {"time": "00:20:00", "cpus": 2}})
    status, body = server.request("POST", path, {"resources": {"time": "5:00:00"}})
    assert status == 400 and "time 5:00:00 is above this spec's maximum 1:00:00" in body["message"], body
    status, body = server.request("POST", path, {"resources": {"mem": "4G"}})
    assert status == 400 and "mem cannot be chosen for this spec" in body["message"], body
    status, body = server.request("POST", path, {"resources": {"time": "5%d %s"}})   # no format
    assert (status, body) == (400, {"message": "time '5%d %s' is not a wall-time; use [D-]HH:MM:SS or minutes"})


def test_a_notebooks_choice_applies_to_its_kernel_only(server, choosing_spec):
    chosen = write_notebook(server, choosing_spec, {"time": "0:20:00", "cpus": 2, "partition": "urgent"})
    plain = write_notebook(server, choosing_spec, None)
    before = set(server.jobs())
    sessions = []
    try:
        for path in (chosen, plain):
            status, session = open_session(server, path, choosing_spec)
            assert status == 201, session
            sessions.append(session["id"])
        jobs = wait_until("both kernels' jobs", lambda: len(new := [j for j in server.jobs() if j not in before]) == 2
                          and new)
        limits = [wait_until(f"job {j} in the queue", lambda j=j: job_limits(j)) for j in jobs]
        by_cpus = sorted(limits, key=lambda f: f["NumCPUs"])
        assert [(f["TimeLimit"], f["NumCPUs"], f["Partition"]) for f in by_cpus] == [
            ("01:00:00", "1", "debug"), ("00:20:00", "2", "urgent")], limits
    finally:
        for sid in sessions:
            server.request("DELETE", f"/api/sessions/{sid}")
        ensure_jobs_gone([j for j in server.jobs() if j not in before], "the notebooks' kernels")


@pytest.fixture(scope="module")
def pending_server(kernelspecs, choosing_spec, tmp_path_factory):
    with JupyterServer(tmp_path_factory.mktemp("choices-pending"), app="server",
                       extra_args=("--MappingKernelManager.use_pending_kernels=True",)) as srv:
        yield srv


@pytest.mark.parametrize("mode", ["default", "pending_kernels"])
def test_a_choice_outside_the_bounds_fails_the_start_and_submits_nothing(mode, choosing_spec, request):
    """Edited by hand: the start fails naming the bound and the fix, in the session's reply
    (default server) or the server's log (pending kernels, whose start goes on after the reply)."""
    server = request.getfixturevalue("server" if mode == "default" else "pending_server")
    path = write_notebook(server, choosing_spec, {"cpus": 8})
    before = set(server.jobs())
    status, body = open_session(server, path, choosing_spec)
    if mode == "default":
        assert status >= 400, body
        message = body["message"] if isinstance(body, dict) else body
    else:
        message = wait_until("the refusal in the server's log", lambda: next(
            (line for line in server.log().splitlines() if path in line and "refused" in line), None), timeout=20)
    assert "cpus 8 is above this spec's maximum 2" in message and path in message, message
    assert f"metadata.remote_kernels.resources.{choosing_spec}" in message
    assert [j for j in server.jobs() if j not in before] == []
    if mode == "default":
        assert all(k["name"] != choosing_spec for k in server.kernels())
        assert "\n" not in message, message
    elif isinstance(body, dict) and body.get("id"):
        server.request("DELETE", f"/api/sessions/{body['id']}")


@pytest.mark.parametrize("bounds, line", [
    (["--user-choice", "time=0:10:00..8:00:00"],
     "slurm would never run the largest request users may choose (time 8:00:00): partition debug allows at most "
     "4:00:00 (asked for 8:00:00)"),
    (["--user-choice", "partition=debug,urgent", "--user-choice", "time=0:10:00..2:00:00"],
     "slurm would never run the largest request users may choose (partition urgent, time 2:00:00): partition "
     "urgent allows at most 1:00:00"),
    (["--user-choice", "cpus=1..16"], "(cpus 16): no node of partition debug has 16 CPUs (the largest has 8)"),
])
def test_install_refuses_bounds_the_site_would_never_run(cluster, tmp_path, bounds, line):
    """The admin's bounds are checked against the site as the spec's own request is."""
    name = unique("rk-choose-big")
    res = subprocess.run([sys.executable, "-m", "remote_kernels", "install", name, "--prefix", str(tmp_path),
                          "--python", sys.executable, *bounds], capture_output=True, text=True)
    assert res.returncode == 1 and line in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not (tmp_path / "share" / "jupyter" / "kernels" / name).exists()
