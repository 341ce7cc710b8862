"""Every frontend, for real: each test fails unless that frontend runs code on a compute node.

jupyter_server's REST API and kernel websocket (what JupyterLab and Notebook 7 use),
`jupyter console`, `jupyter nbconvert --execute` and papermill, each as a subprocess
with the test kernelspecs on JUPYTER_PATH.  The browser test is tests/test_jupyterlab_browser.py.
"""

from __future__ import annotations

import concurrent.futures
import json
import signal
import subprocess
import threading
from pathlib import Path

import pexpect
import pytest

from jupyter_helpers import VENV_BIN, JupyterServer, ensure_jobs_gone, frontend_env, submitted_jobs
from kernel_helpers import SLEEPING_CELL, job_in_queue
from slurm_helpers import wait_until

NODES = ("c1", "c2")
WHERE = "import os, socket; print(socket.gethostname(), os.environ['SLURM_JOB_ID'])"


@pytest.fixture(scope="module")
def server(kernelspecs, tmp_path_factory):
    with JupyterServer(tmp_path_factory.mktemp("jupyter-server"), app="server") as srv:
        yield srv


def test_server_rest_and_websocket(server):
    before = set(server.jobs())   # the server is the module's: other tests may have used it
    status, kernel = server.request("POST", "/api/kernels", {"name": "rk-test"})
    assert status == 201, kernel
    kid = kernel["id"]
    try:
        with server.channels(kid) as ws:
            ws.wait_ready()
            reply, out = ws.execute(WHERE + "; marker = 'before restart'")
            assert reply["status"] == "ok", out
            node, job = out.split()
            assert node in NODES
            assert job_in_queue(job)
            assert [j for j in server.jobs() if j not in before] == [job]

            # Interrupt over REST while a cell sleeps.
            reply, out = ws.execute(
                SLEEPING_CELL, timeout=30,
                on_started=lambda: threading.Thread(
                    target=server.request, args=("POST", f"/api/kernels/{kid}/interrupt")).start())
            assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt", out

        # Restart over REST: a fresh interpreter in the same job.
        status, body = server.request("POST", f"/api/kernels/{kid}/restart")
        assert status == 200, body
        with server.channels(kid) as ws:
            ws.wait_ready()
            reply, out = ws.execute(WHERE + "; print('marker' in globals())")
            assert reply["status"] == "ok", out
            assert out.split() == [node, job, "False"]
        assert [j for j in server.jobs() if j not in before] == [job], "restart submitted another job"

        # Delete over REST: the job ends.
        status, body = server.request("DELETE", f"/api/kernels/{kid}")
        assert status == 204, body
        wait_until(f"job {job} to leave the queue", lambda: not job_in_queue(job), timeout=20)
        assert kid not in [k["id"] for k in server.kernels()]
    finally:
        if any(k["id"] == kid for k in server.kernels()):
            server.request("DELETE", f"/api/kernels/{kid}")


def try_where(ws) -> tuple[dict, str] | None:
    """Run WHERE once: (execute_reply content, output), or None if no full answer came.  Right
    after a restart or the stand-in's hand-over, iopub resubscribes (PUB/SUB slow joiner) and
    that one request's messages can be lost; callers retry."""
    try:
        return ws.execute(WHERE, timeout=5)
    except AssertionError:
        return None


def ran_on_a_node(ws) -> list[str] | None:
    """[node, job] once a cell runs on the real kernel, else None."""
    answer = try_where(ws)
    return answer[1].split() if answer and answer[0]["status"] == "ok" else None


@pytest.fixture(scope="module")
def pending_server(kernelspecs, tmp_path_factory):
    with JupyterServer(tmp_path_factory.mktemp("jupyter-server-pending"), app="server",
                       extra_args=("--MappingKernelManager.use_pending_kernels=True",)) as srv:
        yield srv


def execution_state(server, kid: str) -> str:
    status, model = server.request("GET", f"/api/kernels/{kid}")
    assert status == 200, model
    return model["execution_state"]


@pytest.mark.parametrize("mode", ["default", "pending_kernels"])
# (the login side's transport and the link are independent: tcp with direct adds nothing but time)
@pytest.mark.parametrize("transport, link", [("ipc", "ssh"), ("tcp", "ssh"), ("ipc", "direct")])
def test_a_queued_kernel_is_starting_keeps_its_cells_and_runs_them_on_the_node(request, make_spec, mode, transport,
                                                                              link):
    """Under jupyter_server, in either mode, a kernel whose job waits in the queue is listed at
    once, as starting (never idle); a restart keeps the job (and its place in the queue; pending
    kernels refuse restarts until the start has returned, DEFER_AFTER s at most); a cell
    sent while queued runs on the node once the job starts, its reply to the same websocket; the
    server then sees the kernel idle.  With either login-side transport (tcp: the forwards take
    over the ports the stand-in listened on), and over either transport (``link``; direct: the
    relay takes over the stand-in's endpoints)."""
    server = request.getfixturevalue("server" if mode == "default" else "pending_server")
    name = make_spec(f"rk-held-{transport}-{link}", directives=["--begin=now+1hour"], login_transport=transport,
                     transport=link)
    before = set(server.jobs())
    status, kernel = server.request("POST", "/api/kernels", {"name": name}, timeout=30)
    assert status == 201, kernel
    kid = kernel["id"]
    [job] = wait_until("the kernel's job to be submitted", lambda: [j for j in server.jobs() if j not in before])
    try:
        assert job_state(job) == "PENDING", "the start waited for the queue"   # held for an hour
        assert execution_state(server, kid) == "starting"
        if mode == "default":   # pending kernels refuse a restart until the start has returned
            status, body = server.request("POST", f"/api/kernels/{kid}/restart")
            assert status == 200, body
            assert [j for j in server.jobs() if j not in before] == [job], "the restart submitted a job"
        with server.channels(kid) as ws:
            cell = ws.send_cell(WHERE)
            states = {execution_state(server, kid) for _ in range(5)}
            assert states == {"starting"} and job_state(job) == "PENDING", states
            subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)
            reply, out = ws.result(cell, timeout=60)
            assert reply["status"] == "ok", out
            node, ran_in = out.split()
            assert node in NODES and ran_in == job
            wait_until("the server to see the kernel idle", lambda: execution_state(server, kid) == "idle",
                       timeout=2)
        status, body = server.request("DELETE", f"/api/kernels/{kid}")
        assert status == 204, body
        wait_until(f"job {job} to leave the queue", lambda: not job_in_queue(job), timeout=20)
    finally:
        subprocess.run(["scancel", job], capture_output=True)
        if any(k["id"] == kid for k in server.kernels()):
            server.request("DELETE", f"/api/kernels/{kid}")


# The job's sitecustomize (PYTHONPATH): an ipykernel starting marks STARTING, then waits until
# GO exists (at most 120 s); other Pythons of the job (the launcher) pass through.
GATED_KERNEL_START = """import os, time
if "ipykernel" in open("/proc/self/cmdline").read():
    open({starting!r}, "a").close()
    deadline = time.monotonic() + 120
    while not os.path.exists({go!r}) and time.monotonic() < deadline:
        time.sleep(0.05)
"""


def login_side_sockets(server, kernel_id: str) -> dict[Path, int]:
    """The kernel's login-side ipc socket files (the forwards' ends) -> their inode numbers."""
    info = json.loads((Path(server.env["JUPYTER_RUNTIME_DIR"]) / f"kernel-{kernel_id}.json").read_text())
    assert info["transport"] == "ipc", info
    paths = [Path(f"{info['ip']}-{info[ch]}") for ch in ("shell_port", "iopub_port", "stdin_port", "control_port",
                                                         "hb_port")]
    return {p: p.stat().st_ino for p in paths if p.is_socket()}


def replaced_or_gone(sockets: dict[Path, int]) -> bool:
    """Some of these socket files were removed (jupyter_client's clean-up does) or made anew."""
    for path, inode in sockets.items():
        try:
            if path.stat().st_ino != inode:
                return True
        except FileNotFoundError:
            return True
    return False


class HeldKernel:
    """A kernel POSTed to a pending-kernels server, its job held in the queue (``--begin``);
    ``with`` ends it (DELETE, then the job must leave the queue) and cancels its jobs whatever
    happened.  ``job``: its first job; ``jobs``: all it was given (restarts append)."""

    def __init__(self, server, name: str):
        self.server, self.before = server, set(server.jobs())
        status, kernel = server.request("POST", "/api/kernels", {"name": name})
        assert status == 201, kernel
        self.kid = kernel["id"]
        [self.job] = wait_until("the kernel's job to be submitted", self.new_jobs)
        self.jobs = [self.job]

    def new_jobs(self) -> list[str]:
        return [j for j in self.server.jobs() if j not in self.before]

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc) -> None:
        try:
            if exc_type is None:
                status, body = self.server.request("DELETE", f"/api/kernels/{self.kid}")
                assert status == 204, body
                last = self.jobs[-1]
                wait_until(f"job {last} to leave the queue", lambda: not job_in_queue(last), timeout=20)
        finally:
            subprocess.run(["scancel", *self.jobs], capture_output=True)
            if any(k["id"] == self.kid for k in self.server.kernels()):
                self.server.request("DELETE", f"/api/kernels/{self.kid}")


def test_pending_kernel_restarted_while_its_kernel_starts_keeps_the_job(pending_server, make_spec, tmp_path):
    """A restart that lands after the job left the queue, while its kernel is starting (held
    here until the restart has reached jupyter_client's clean-up, which removes the login-side
    socket files) and the forwards already exist, lets that start finish, then restarts the
    kernel in the same job; the frontend reaches it on the same endpoints."""
    server = pending_server
    starting, go = tmp_path / "kernel-starting", tmp_path / "kernel-go"
    (tmp_path / "sitecustomize.py").write_text(GATED_KERNEL_START.format(starting=str(starting), go=str(go)))
    name = make_spec("rk-held-slow", directives=["--begin=now+1hour"], setup=[f"export PYTHONPATH={tmp_path}"],
                     login_transport="ipc")
    with HeldKernel(server, name) as k, server.channels(k.kid) as ws, concurrent.futures.ThreadPoolExecutor(1) as pool:
        try:
            subprocess.run(["scontrol", "update", f"JobId={k.job}", "StartTime=now"], check=True)
            wait_until("the kernel to be starting in the job", starting.exists, timeout=30)
            sockets = login_side_sockets(server, k.kid)
            assert len(sockets) == 5, sockets   # the forwards are in place
            restart = pool.submit(server.request, "POST", f"/api/kernels/{k.kid}/restart", timeout=120)
            wait_until("the restart to reach jupyter_client's clean-up", lambda: replaced_or_gone(sockets),
                       timeout=60)
        finally:
            go.touch()   # the kernel's start goes on
        status, body = restart.result(timeout=120)
        assert status == 200, body
        node, ran_in = wait_until("a cell to run on the compute node", lambda: ran_on_a_node(ws), timeout=60)
        assert node in NODES and ran_in == k.job
        assert k.new_jobs() == [k.job], "the restart submitted a job"


# Logged by jupyter_client's restarter at each poll of a kernel (with KernelRestarter.debug), and
# when a poll decides to restart it.
RESTARTER_POLL, RESTARTER_RESTARTS = "Polling kernel...", "Restarter: restarting kernel"


@pytest.fixture
def polled_server(kernelspecs, tmp_path):
    """A pending-kernels server of the test's own (its polls are its one kernel's) whose log shows
    every poll of its restarter."""
    with JupyterServer(tmp_path / "polled", app="server",
                       extra_args=("--MappingKernelManager.use_pending_kernels=True", "--KernelRestarter.debug=True",
                                   "--ServerApp.log_level=DEBUG")) as srv:
        yield srv


def stays_failed(k: HeldKernel, ws) -> str:
    """Wait until the stand-in says the start failed; then until two whole polls of the server's
    restarter (polled_server's) have passed since: none restarted the kernel (a poll logs that
    it does), the kernel's job is still its only one (the server did not resubmit by itself) and
    the stand-in says so again.  Returns what it said."""
    def explained():
        try:
            reply, _ = ws.execute(WHERE, timeout=10)
        except AssertionError:   # no answer: asked while the kernel's start had the endpoints
            return None
        return reply["evalue"] if "could not start" in reply["evalue"] else None
    why = wait_until("the stand-in to say the start failed", explained, timeout=60)
    polls = k.server.log().count(RESTARTER_POLL)   # a third begun: the second has decided
    wait_until("two polls of the server's restarter", lambda: k.server.log().count(RESTARTER_POLL) >= polls + 3,
               timeout=30)
    assert RESTARTER_RESTARTS not in k.server.log()
    assert k.new_jobs() == [k.job], "the server resubmitted by itself"
    assert explained() == why
    return why


def test_pending_kernel_that_fails_to_start_in_its_job_is_not_resubmitted(polled_server, make_spec):
    """B1: the job runs, the kernel cannot start (no ipykernel for that Python).  The stand-in,
    closed for the start, comes back saying why: the server sees no dead kernel, so its
    restarter does not resubmit the job (it used to, up to five times)."""
    server = polled_server
    name = make_spec("rk-held-no-ipykernel", python="/usr/bin/python3", directives=["--begin=now+1hour"])
    with HeldKernel(server, name) as k, server.channels(k.kid) as ws:
        subprocess.run(["scontrol", "update", f"JobId={k.job}", "StartTime=now"], check=True)
        why = stays_failed(k, ws)
        assert "ipykernel is not installed" in why and "restart the kernel" in why


def test_pending_kernel_whose_job_ends_in_the_queue_says_so_and_restarts_only_when_asked(polled_server,
                                                                                         make_spec):
    """A queued job cancelled from outside: the stand-in now explains, the server does not
    resubmit on its own, a restart by the user submits one new job on the same endpoints."""
    server = polled_server
    make_spec("rk-held", directives=["--begin=now+1hour"])
    with HeldKernel(server, "rk-held") as k, server.channels(k.kid) as ws:
        subprocess.run(["scancel", k.job], check=True)
        why = stays_failed(k, ws)
        assert f"job {k.job} ended before the kernel started" in why and "restart the kernel" in why

        status, body = server.request("POST", f"/api/kernels/{k.kid}/restart")
        assert status == 200, body
        k.jobs = wait_until("the restart's job", lambda: len(new := k.new_jobs()) == 2 and new)
        assert job_in_queue(k.jobs[1])
        wait_until("the restarted kernel to be listed as starting",
                   lambda: execution_state(server, k.kid) == "starting", timeout=10)


def test_server_stopped_with_four_running_kernels_ends_all_their_jobs(kernelspecs, tmp_path):
    """SIGTERM with four running kernels: the server shuts them down, all at once, and its exit
    awaits every job's end still going on in the background (registry entries are removed
    only once a job has ended).  Not combined with the queued case below: jupyter_server's
    shutdown_all then fails on the kernel whose start is pending (404) and the server hangs."""
    srv = JupyterServer(tmp_path, app="server").start()
    jobs = []
    try:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:   # each POST answers once its kernel runs
            answers = list(pool.map(lambda _: srv.request("POST", "/api/kernels", {"name": "rk-test"}), range(4)))
        assert [status for status, _ in answers] == [201] * 4, answers
        jobs = wait_until("the kernels' jobs", lambda: len(srv.jobs()) == 4 and srv.jobs())
        assert all(job_in_queue(j) for j in jobs)
        sigterm_ends(srv, jobs)
        registry = Path(srv.env["JUPYTER_RUNTIME_DIR"]) / "remote-kernels"
        assert not list(registry.glob("*.json")), f"the server exited before its jobs ended:\n{srv.log()[-3000:]}"
        assert "left open at exit" not in srv.log()   # all four were shut down, none abandoned
    finally:
        stop_and_cancel(srv, jobs)


def sigterm_ends(srv, jobs: list[str]) -> None:
    """SIGTERM the server: it must exit at once (30 s) and its jobs leave the queue."""
    srv.proc.send_signal(signal.SIGTERM)
    wait_until("the server to exit at the first SIGTERM", lambda: srv.proc.poll() is not None, timeout=30)
    wait_until(f"jobs {jobs} of the stopped server to leave the queue",
               lambda: not any(job_in_queue(j) for j in jobs), timeout=15)


def stop_and_cancel(srv, jobs: list[str]) -> None:
    """A test's clean-up: cancel what is left of its jobs and stop its server."""
    left = [j for j in jobs if job_in_queue(j)]
    if left:
        subprocess.run(["scancel", *left], capture_output=True)
    srv.stop()


def test_server_stopped_while_a_job_is_queued_cancels_it(kernelspecs, make_spec, tmp_path):
    make_spec("rk-held", directives=["--begin=now+1hour"])
    srv = JupyterServer(tmp_path, app="server").start()
    held = []
    try:
        # POST /api/kernels answers only once the kernel runs: send it and let it hang.
        threading.Thread(target=lambda: _ignore_errors(srv.request, "POST", "/api/kernels", {"name": "rk-held"}),
                         daemon=True).start()
        held = wait_until("the held kernel's job to be submitted", srv.jobs)
        wait_until(f"job {held[0]} to be queued", lambda: job_in_queue(held[0]))
        srv.proc.send_signal(signal.SIGTERM)   # what Ctrl-C (twice) or a logout does
        wait_until("the server to exit", lambda: srv.proc.poll() is not None, timeout=20)
        wait_until(f"job {held[0]} of the stopped server to be cancelled", lambda: not job_in_queue(held[0]), timeout=10)
    finally:
        if held:
            subprocess.run(["scancel", *held], capture_output=True)
        srv.stop()


def test_server_stopped_with_a_running_and_a_queued_kernel_ends_both_jobs(kernelspecs, make_spec, tmp_path):
    """SIGTERM while one kernel runs and another's job waits in the queue.  jupyter_server's
    shutdown_all fails (404) on a kernel whose start has not returned, and the server then
    never exits: the queued kernel's start returns within seconds (hosted.DEFER_AFTER), after
    which the first SIGTERM ends the server and both jobs."""
    make_spec("rk-held", directives=["--begin=now+1hour"])
    srv = JupyterServer(tmp_path, app="server").start()
    jobs = []
    try:
        status, body = srv.request("POST", "/api/kernels", {"name": "rk-test"})
        assert status == 201, body
        status, held = srv.request("POST", "/api/kernels", {"name": "rk-held"}, timeout=30)
        assert status == 201, held
        assert {k["id"] for k in srv.kernels()} == {body["id"], held["id"]}
        jobs = srv.jobs()
        assert len(jobs) == 2 and "PENDING" in {job_state(j) for j in jobs}, jobs
        sigterm_ends(srv, jobs)
    finally:
        stop_and_cancel(srv, jobs)


def job_state(job: str) -> str:
    return subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True).stdout.strip()


def _ignore_errors(fn, *args):
    try:
        fn(*args)
    except OSError:
        pass


def _run(argv, tmp_path, timeout=120, **kw):
    res = subprocess.run(argv, cwd=tmp_path, env=frontend_env(tmp_path / "home"), capture_output=True,
                         text=True, timeout=timeout, **kw)
    return res, submitted_jobs(res.stdout + res.stderr)


# jupyter console drives jupyter_client's synchronous KernelManager and BlockingKernelClient,
# which run an event loop only inside each call: the forwards must not depend on it.
def test_jupyter_console(kernelspecs, tmp_path):
    """`jupyter console` typed into on a terminal (a pty; piped stdin leaves it waiting forever)."""
    console = pexpect.spawn(
        str(VENV_BIN / "jupyter"),
        ["console", "--kernel", "rk-test", "--simple-prompt", "--Application.log_level=INFO",
         "--ZMQTerminalInteractiveShell.kernel_timeout=60"],
        cwd=str(tmp_path), env=frontend_env(tmp_path / "home"), encoding="utf-8", timeout=60,
        dimensions=(50, 200))
    transcript: list[str] = []
    console.logfile_read = _Collect(transcript)
    try:
        console.expect(r"In \[1\]: ")
        console.sendline(WHERE)
        console.expect(r"In \[2\]: ", timeout=10)
        printed = [line.split() for line in console.before.splitlines()]
        printed = [words for words in printed if len(words) == 2 and words[0] in NODES]
        assert len(printed) == 1, console.before
        node, job = printed[0]
        assert job_in_queue(job)
        assert submitted_jobs("".join(transcript)) == [job]
        console.sendline("exit")
        console.expect(pexpect.EOF)
        console.close()
        assert console.exitstatus == 0, "".join(transcript)
        wait_until(f"job {job} to leave the queue", lambda: not job_in_queue(job), timeout=20)
    finally:
        if console.isalive():
            console.terminate(force=True)
        # A console that failed cannot end its job: cancel it now rather than wait for the grace.
        left = [j for j in submitted_jobs("".join(transcript)) if job_in_queue(j)]
        if left:
            subprocess.run(["scancel", *left], capture_output=True)
        ensure_jobs_gone(left, "jupyter console")


class _Collect:
    """A file-like logfile for pexpect that keeps everything the console printed."""

    def __init__(self, into: list):
        self.into = into

    def write(self, text: str) -> None:
        self.into.append(text)

    def flush(self) -> None:
        pass


# nbformat is imported where used: importing it takes seconds (its JSON schema checks), which
# every run of the unit tier would pay at collection.
def _notebook(*cells) -> nbformat.NotebookNode:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = list(cells)
    nb.metadata["kernelspec"] = {"name": "rk-test", "display_name": "Python 3 (compute node, test)",
                                 "language": "python"}
    return nb


def _stdout(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def test_nbconvert_execute(kernelspecs, tmp_path):
    import nbformat

    nb_path = tmp_path / "where.ipynb"
    nbformat.write(_notebook(nbformat.v4.new_code_cell(WHERE)), nb_path)
    argv = [str(VENV_BIN / "jupyter"), "nbconvert", "--to", "notebook", "--execute",
            "--ExecutePreprocessor.kernel_name=rk-test", "--ExecutePreprocessor.timeout=60",
            "--Application.log_level=INFO", "--output", "executed.ipynb", str(nb_path)]
    res, jobs = _run(argv, tmp_path)
    try:
        assert res.returncode == 0, res.stderr
        out = nbformat.read(tmp_path / "executed.ipynb", as_version=4)
        node, job = _stdout(out.cells[0]).split()
        assert node in NODES
        assert jobs == [job], res.stderr
    finally:
        ensure_jobs_gone(jobs, "nbconvert --execute")


def test_papermill_parameters(kernelspecs, tmp_path):
    import nbformat

    params = nbformat.v4.new_code_cell("value = 0")
    params.metadata["tags"] = ["parameters"]
    nbformat.write(_notebook(params, nbformat.v4.new_code_cell(WHERE + "; print(f'value={value}')")),
                   tmp_path / "params.ipynb")
    argv = [str(VENV_BIN / "papermill"), "params.ipynb", "out.ipynb", "-k", "rk-test", "-p", "value", "7",
            "--log-level", "INFO"]
    res, jobs = _run(argv, tmp_path)
    try:
        assert res.returncode == 0, res.stderr
        out = nbformat.read(tmp_path / "out.ipynb", as_version=4)
        injected = [c for c in out.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert len(injected) == 1 and "value = 7" in injected[0].source
        node, job, value = _stdout(out.cells[-1]).split()
        assert node in NODES
        assert value == "value=7"
        assert out.metadata["papermill"]["parameters"] == {"value": 7}
        assert jobs == [job], res.stderr
        # Our progress lines at INFO, not asyncssh's line per SSH channel (55 per run before).
        assert "launcher ready on" in res.stderr and "asyncssh" not in res.stderr, res.stderr
    finally:
        ensure_jobs_gone(jobs, "papermill")
