"""Kernels that outlive their Jupyter server (option ``persist``) and are re-adopted (#20).

A real jupyter_server subprocess (the ``remote_kernels.adopt`` extension enabled by the
package's own server config, as installed) starts a
compute-node kernel, sets ``x = 42`` and goes away (SIGKILL, or SIGTERM with persist); a
new server with the same Jupyter runtime directory lists the same kernel id and its
websocket answers ``x`` with 42, in the same job.  A kernel nobody adopts ends its job
after ``persist``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from jupyter_helpers import JupyterServer, KernelWebsocket
from kernel_helpers import job_in_queue
from site_helpers import VENV_BIN, as_user
from slurm_helpers import wait_until

class LaptopServer(JupyterServer):
    """A server in the laptop's namespace (off the cluster), listening on its end of the link
    to the login host, where this test reaches it."""

    def __init__(self, home: Path, laptop: dict):
        super().__init__(home, app="server")
        self.addr = laptop["addr"]
        argv = [f"--ServerApp.ip={self.addr}" if a == "--ServerApp.ip=127.0.0.1" else a for a in self.argv]
        self.argv = ["nsenter", f"--net=/run/netns/{laptop['netns']}", *argv]   # nsenter execs: same pid

    @property
    def url(self) -> str:
        return f"http://{self.addr}:{self.port}"

    def channels(self, kernel_id: str) -> KernelWebsocket:
        return KernelWebsocket(f"ws://{self.addr}:{self.port}/api/kernels/{kernel_id}/channels", self.token)


def server(home: Path, like: JupyterServer | None = None, laptop: dict | None = None,
           extra_args: tuple[str, ...] = ()) -> JupyterServer:
    """A server with the extension; ``like``: the next server of the same user as that one
    (its runtime directory and root directory); ``extra_args``: more of its command line."""
    srv = LaptopServer(home, laptop) if laptop else JupyterServer(home, app="server", extra_args=extra_args)
    if like is not None:
        srv.env["JUPYTER_RUNTIME_DIR"] = like.env["JUPYTER_RUNTIME_DIR"]
        srv.root = like.root
        srv.argv = [f"--ServerApp.root_dir={like.root}" if a.startswith("--ServerApp.root_dir=") else a
                    for a in srv.argv]
    return srv.start()


def end_server(srv: JupyterServer, sig: int) -> None:
    """Send sig to the server's process group's leader and wait for it to exit; its kernels'
    jobs are the test's to check (JupyterServer.stop would require them gone)."""
    srv.proc.send_signal(sig)
    srv.proc.wait(60)
    srv._log.close()
    srv.proc = None


def start_x(srv: JupyterServer, spec: str) -> tuple[str, str]:
    """A notebook's kernel of spec (session nb.ipynb, as JupyterLab opens it) with x = 42 set;
    (kernel id, job id)."""
    status, body = srv.request("POST", "/api/sessions", {"path": "nb.ipynb", "name": "nb.ipynb", "type": "notebook",
                                                         "kernel": {"name": spec}})
    assert status == 201, body
    kid = body["kernel"]["id"]
    with srv.channels(kid) as ws:
        ws.wait_ready()
        reply, _ = ws.execute("x = 42")
        assert reply["status"] == "ok", reply
    job = wait_until("the kernel's job", lambda: srv.jobs() and srv.jobs()[-1])
    return kid, job


def records(runtime: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in (runtime / "remote-kernels" / "persist").glob("*.json")]


@pytest.fixture
def cleanup_jobs():
    jobs: list[str] = []
    yield jobs
    left = [j for j in jobs if job_in_queue(j)]
    if left:
        subprocess.run(["scancel", *left], capture_output=True)


# SIGINT with no terminal (as JupyterHub's spawners first stop a server): jupyter_server exits
# without its shutdown_all; the kernel is detached at interpreter exit.
@pytest.mark.parametrize("how, where", [(signal.SIGKILL, "here"), (signal.SIGTERM, "here"), (signal.SIGINT, "here"),
                                        (signal.SIGKILL, "laptop"), (signal.SIGTERM, "laptop")],
                         ids=["sigkill", "sigterm", "sigint", "laptop-sigkill", "laptop-sigterm"])
def test_a_new_server_re_adopts_the_kernel_with_its_state(cluster, kernelspecs, make_spec, tmp_path, cleanup_jobs,
                                                         how, where):
    """On the cluster, and from the laptop in login-host mode (both servers there)."""
    laptop = cluster["laptop"] if where == "laptop" else None
    extra = {"login_host": laptop["login_host"]} if laptop else {}
    spec = make_spec(f"rk-persist-{where}", persist=120, time="00:10:00", **extra)
    first = server(tmp_path / "first", laptop=laptop)
    runtime = Path(first.env["JUPYTER_RUNTIME_DIR"])
    kid, job = start_x(first, spec)
    cleanup_jobs.append(job)
    [record] = records(runtime)
    assert record["kernel_id"] == kid and record["job_id"] == job
    assert record["notebook"] == str(first.root / "nb.ipynb"), record["notebook"]
    path = runtime / "remote-kernels" / "persist" / f"{kid}.json"
    assert path.stat().st_mode & 0o777 == 0o600
    assert (path.parent.stat().st_mode & 0o777) == 0o700
    end_server(first, how)
    if how == signal.SIGTERM:
        assert "detached; it waits 120s for the next server" in first.log(), first.log()[-3000:]
    if how == signal.SIGINT:
        assert "detached at exit; it waits 120s for the next server" in first.log(), first.log()[-3000:]
    assert job_in_queue(job), f"the job ended with its server:\n{first.log()[-3000:]}"

    second = server(tmp_path / "second", first, laptop=laptop)
    try:
        # Polled meanwhile, /api/kernels may fail once: jupyter_server lists a kernel whose start
        # has just returned before it sets its last_activity (a window of one loop iteration).
        wait_until("the server's re-adoption", lambda: "re-adoption done (1 kernel)" in second.log(), timeout=60)
        assert [k["id"] for k in second.kernels()] == [kid], second.log()[-3000:]
        # The reopened notebook finds its kernel: its session is there again.
        status, found = second.request("GET", "/api/sessions")
        assert status == 200 and [(s["path"], s["kernel"]["id"]) for s in found] == [("nb.ipynb", kid)], found
        with second.channels(kid) as ws:
            ws.wait_ready()
            reply, out = ws.execute("print(x)")
        assert reply["status"] == "ok" and out == "42\n", (reply, out)
        assert second.jobs() == []   # nothing submitted
        assert job_in_queue(job)
        [record] = records(runtime)
        assert record["job_id"] == job
    finally:
        second.stop()   # deletes the kernel: its job ends
    wait_until(f"job {job} to end with its kernel", lambda: not job_in_queue(job), timeout=30)
    assert records(runtime) == []


def test_an_adopted_kernel_keeps_its_curve_keys(kernelspecs, make_spec, tmp_path, cleanup_jobs):
    """Both servers with ``transport_encryption=required``: the record keeps the kernel's Curve
    keypair, the next server's connection file holds the same one, and its websocket reaches
    the kernel's state (a client without the kernel's keys would hear nothing)."""
    required = ("--ServerKernelManager.transport_encryption=required",)
    spec = make_spec("rk-persist-curve", persist=120, time="00:10:00")
    first = server(tmp_path / "first", extra_args=required)
    runtime = Path(first.env["JUPYTER_RUNTIME_DIR"])
    kid, job = start_x(first, spec)
    cleanup_jobs.append(job)
    public = json.loads((runtime / f"kernel-{kid}.json").read_text())["curve_publickey"]
    assert len(public) == 40
    end_server(first, signal.SIGTERM)
    assert job_in_queue(job), f"the job ended with its server:\n{first.log()[-3000:]}"
    second = server(tmp_path / "second", first, extra_args=required)
    try:
        wait_until("the server's re-adoption", lambda: "re-adoption done (1 kernel)" in second.log(), timeout=60)
        assert json.loads((runtime / f"kernel-{kid}.json").read_text())["curve_publickey"] == public
        with second.channels(kid) as ws:
            ws.wait_ready()
            reply, out = ws.execute("print(x)")
        assert reply["status"] == "ok" and out == "42\n", (reply, out)
        assert second.jobs() == []
    finally:
        second.stop()
    wait_until(f"job {job} to end with its kernel", lambda: not job_in_queue(job), timeout=30)


def test_a_detached_kernel_nobody_adopts_ends_its_job_after_persist(kernelspecs, make_spec, tmp_path, cleanup_jobs):
    spec = make_spec("rk-persist-short", persist=8, grace=2, time="00:10:00")
    first = server(tmp_path / "first")
    kid, job = start_x(first, spec)
    cleanup_jobs.append(job)
    end_server(first, signal.SIGKILL)
    t0 = time.monotonic()
    # Outliving grace cannot be shown by a condition: the job must still run a few graces on.
    time.sleep(4)
    assert job_in_queue(job)
    wait_until(f"job {job} to end after persist", lambda: not job_in_queue(job), timeout=60)
    assert time.monotonic() - t0 >= 6


def test_another_runtime_dir_sees_nothing_and_ps_shows_the_kernel_detached_until_cancel(cluster, kernelspecs,
                                                                                        make_spec, tmp_path,
                                                                                        cleanup_jobs):
    """The records live in the user's runtime dir only: a server with another one (as another
    user's is) lists no kernel and submits nothing; the kernel stays for its own user, whose
    `remote-kernels ps` lists it as detached and `cancel` ends it."""
    spec = make_spec("rk-persist", persist=120, time="00:10:00")
    first = server(tmp_path / "first")
    kid, job = start_x(first, spec)
    cleanup_jobs.append(job)
    end_server(first, signal.SIGKILL)
    other = server(tmp_path / "other")
    try:
        wait_until("the server's re-adoption", lambda: "re-adoption done (0 kernels)" in other.log())
        assert other.kernels() == [] and other.jobs() == []
    finally:
        other.stop()
    assert job_in_queue(job)
    # Another user sees no record, in their own runtime dir or pointed at this user's, and cannot attach.
    other, runtime = cluster["test_user"], first.env["JUPYTER_RUNTIME_DIR"]
    count = "from remote_kernels import persisted; print(len(persisted.records()))"
    for extra in ({}, {"JUPYTER_RUNTIME_DIR": runtime}):
        res = as_user(other, str(VENV_BIN / "python"), "-c", count, env=extra)
        assert res.returncode == 0 and res.stdout == "0\n", res
    res = as_user(other, str(VENV_BIN / "remote-kernels"), "attach", kid)
    assert res.returncode == 1 and "no kernel that can outlive its server has id" in res.stderr, res
    env = dict(first.env)
    ps = subprocess.run(["remote-kernels", "ps"], env=env, capture_output=True, text=True, timeout=60)
    [line] = [line for line in ps.stdout.splitlines() if line.startswith(kid)]
    assert job in line.split() and "detached, at most 2m00s left" in line, ps.stdout
    res = subprocess.run(["remote-kernels", "cancel", kid], env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and f"job {job} of kernel {kid} (spec {spec}) cancelled" in res.stdout, res
    assert records(Path(env["JUPYTER_RUNTIME_DIR"])) == []
    wait_until(f"job {job} to leave the queue", lambda: not job_in_queue(job), timeout=30)


def test_attach_and_detach_by_hand_then_a_server_adopts_it(kernelspecs, make_spec, tmp_path, cleanup_jobs):
    from jupyter_client import BlockingKernelClient

    spec = make_spec("rk-persist", persist=120, time="00:10:00")
    first = server(tmp_path / "first")
    env = dict(first.env)
    kid, job = start_x(first, spec)
    cleanup_jobs.append(job)
    end_server(first, signal.SIGKILL)
    conn = tmp_path / "attached.json"
    proc = subprocess.Popen(["remote-kernels", "attach", kid, "-f", str(conn)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        assert f"attaching to kernel {kid} (job {job}" in proc.stdout.readline()
        assert conn.stat().st_mode & 0o777 == 0o600
        kc = BlockingKernelClient()
        kc.load_connection_file(str(conn))
        kc.start_channels()
        try:
            kc.wait_for_ready(timeout=60)
            out = []
            reply = kc.execute_interactive("print(x)", timeout=60,
                                           output_hook=lambda m: out.append(m["content"].get("text", "")))
            assert reply["content"]["status"] == "ok" and "".join(out) == "42\n"
        finally:
            kc.stop_channels()
        res = subprocess.run(["remote-kernels", "detach", kid], env=env, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0 and f"asked process {proc.pid} to detach kernel {kid}" in res.stdout, res
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert job_in_queue(job) and not conn.exists()
    second = server(tmp_path / "second", first)
    try:
        wait_until("the server's re-adoption", lambda: "re-adoption done (1 kernel)" in second.log(), timeout=60)
        with second.channels(kid) as ws:
            ws.wait_ready()
            assert ws.execute("print(x)")[1] == "42\n"
    finally:
        second.stop()
    wait_until(f"job {job} to end with its kernel", lambda: not job_in_queue(job), timeout=30)
