"""Helpers for tests that run real Jupyter frontends (jupyter server / lab, console, nbconvert...).

``JupyterServer`` starts ``jupyter server`` or ``jupyter lab`` as a subprocess on 127.0.0.1
with a token and a free port, in a private config/runtime/settings set-up, and knows how
to talk to it over REST and the kernel websocket.  Everything it starts is stopped by
``stop()``; the SLURM jobs its kernels submitted are read from its log
("submitted slurm job N") so a test can check that none is left behind.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from kernel_helpers import job_in_queue
from slurm_helpers import wait_until

VENV_BIN = Path(sys.executable).parent
SUBMITTED = re.compile(r"submitted slurm job (\d+)")


def frontend_env(home: Path) -> dict[str, str]:
    """The test process's environment (JUPYTER_PATH from the kernelspecs fixture) with
    private Jupyter config, runtime and JupyterLab settings/workspaces dirs, so nothing of
    the machine's own set-up (or a previous run's open tabs) leaks into a frontend."""
    env = dict(os.environ)
    for var, sub in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_RUNTIME_DIR", "runtime"),
                     ("JUPYTERLAB_SETTINGS_DIR", "lab-settings"), ("JUPYTERLAB_WORKSPACES_DIR", "lab-workspaces"),
                     ("IPYTHONDIR", "ipython")):
        (home / sub).mkdir(parents=True, exist_ok=True)
        env[var] = str(home / sub)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def submitted_jobs(text: str) -> list[str]:
    return SUBMITTED.findall(text)


def ensure_jobs_gone(jobs, what: str, timeout: float = 20) -> None:
    """Wait until none of jobs is in squeue; if some stay, cancel them (so nothing is left)
    and fail naming them."""
    jobs = list(jobs)
    try:
        wait_until(f"jobs {jobs} of {what} to leave the queue",
                   lambda: not any(job_in_queue(j) for j in jobs), timeout=timeout)
    except AssertionError:
        left = [j for j in jobs if job_in_queue(j)]
        if left:
            subprocess.run(["scancel", *left], capture_output=True)
        raise AssertionError(f"{what} left SLURM jobs {left} in the queue (now cancelled)") from None


def rest(method: str, url: str, token: str, body=None, timeout: float = 60):
    """A JSON request with ``Authorization: token TOKEN``: (status, decoded JSON body, None
    when empty, or the text of a body that is not JSON).  OSError when nothing answers."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Authorization": f"token {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


class JupyterServer:
    """A real `jupyter server` / `jupyter lab` process.  Use as a context manager."""

    def __init__(self, home: Path, app: str = "server", extra_args: tuple[str, ...] = ()):
        self.home = Path(home)
        self.root = self.home / "root"
        self.root.mkdir(parents=True, exist_ok=True)
        self.app = app
        self.port = 0   # the server's own choice; read back from its runtime file once it runs
        self.token = secrets.token_hex(16)
        self.log_path = self.home / f"jupyter-{app}.log"
        self.env = frontend_env(self.home)
        self.argv = [
            str(VENV_BIN / "jupyter"), app, "--no-browser", "--ServerApp.ip=127.0.0.1",
            "--ServerApp.port=0", "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.root}",
            "--ServerApp.open_browser=False", *extra_args,
        ]
        if os.geteuid() == 0:   # the test machine runs as root
            self.argv.append("--allow-root")
        self.proc: subprocess.Popen | None = None

    # --- life cycle ----------------------------------------------------------------
    def start(self, timeout: float = 60) -> "JupyterServer":
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.argv, cwd=self.root, env=self.env, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True, stdin=subprocess.DEVNULL)

        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"jupyter {self.app} exited with {self.proc.returncode}:\n{self.log()}")
            if not self.port:
                info = Path(self.env["JUPYTER_RUNTIME_DIR"]) / f"jpserver-{self.proc.pid}.json"
                try:
                    self.port = json.loads(info.read_text())["port"]
                except (OSError, ValueError, KeyError):
                    return False
            try:
                return self.request("GET", "/api/status", timeout=2)[0] == 200
            except OSError:
                return False

        try:
            wait_until(f"jupyter {self.app} to answer", up, timeout=timeout, interval=0.2)
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Delete every kernel over REST, stop the server (SIGTERM, then SIGKILL), and fail if
        a SLURM job it submitted is still queued after that."""
        if self.proc is None:
            return
        errors = []
        try:
            if self.proc.poll() is None:
                try:
                    for kernel in self.request("GET", "/api/kernels")[1] or []:
                        self.request("DELETE", f"/api/kernels/{kernel['id']}", timeout=30)
                    # With pending kernels DELETE returns before the kernel is gone, and a
                    # SIGTERM meanwhile makes jupyter_server's shutdown fail on the vanished kernel.
                    wait_until("the server's kernels to be gone", lambda: not self.request("GET", "/api/kernels")[1],
                               timeout=30)
                except (OSError, AssertionError) as e:
                    errors.append(f"could not delete kernels: {e}")
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(10)
                    errors.append(f"jupyter {self.app} ignored SIGTERM for 30s")
        finally:
            self._log.close()
            self.proc = None
            ensure_jobs_gone(self.jobs(), f"jupyter {self.app}")
        if errors:
            tail = "\n".join(self.log().splitlines()[-40:])
            raise AssertionError("; ".join(errors) + f"\n--- end of the jupyter {self.app} log:\n{tail}")

    def __enter__(self) -> "JupyterServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def jobs(self) -> list[str]:
        """The SLURM jobs this server's kernels submitted, in order."""
        return submitted_jobs(self.log())

    # --- REST ------------------------------------------------------------------------
    def request(self, method: str, path: str, body=None, timeout: float = 60):
        """(status, decoded JSON body or None)."""
        return rest(method, self.url + path, self.token, body, timeout)

    def kernels(self) -> list[dict]:
        status, body = self.request("GET", "/api/kernels")
        assert status == 200, body
        return body

    def channels(self, kernel_id: str) -> "KernelWebsocket":
        return KernelWebsocket(f"ws://127.0.0.1:{self.port}/api/kernels/{kernel_id}/channels", self.token)


class KernelWebsocket:
    """The kernel's channels over jupyter_server's websocket (JSON messages, the default
    protocol when no subprotocol is asked for), as JupyterLab uses them."""

    def __init__(self, url: str, token: str, timeout: float = 30):
        import websocket   # websocket-client

        self.session = uuid.uuid4().hex
        self.ws = websocket.create_connection(f"{url}?session_id={self.session}",
                                              header=[f"Authorization: token {token}"], timeout=timeout)

    def close(self) -> None:
        self.ws.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, msg_type: str, content: dict, channel: str = "shell") -> str:
        msg_id = uuid.uuid4().hex
        self.ws.send(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": msg_type, "username": "test", "session": self.session,
                       "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "version": "5.3"},
            "parent_header": {}, "metadata": {}, "content": content, "channel": channel, "buffers": [],
        }))
        return msg_id

    def recv(self, deadline: float) -> dict:
        import websocket

        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no message from the kernel websocket before the deadline")
            self.ws.settimeout(left)
            try:
                raw = self.ws.recv()
            except websocket.WebSocketTimeoutException:
                continue
            if isinstance(raw, str):
                return json.loads(raw)

    def execute(self, code: str, timeout: float = 60, on_started=None) -> tuple[dict, str]:
        """Run code; return (execute_reply content, stdout+stderr+traceback text).
        on_started() is called once with the request's first output (a cell that prints before
        it blocks is then surely running its own code)."""
        return self.result(self.send_cell(code), timeout, on_started)

    def send_cell(self, code: str) -> str:
        """Send an execute_request as JupyterLab does for a cell; its msg_id."""
        return self.send("execute_request", {"code": code, "silent": False, "store_history": True,
                                             "user_expressions": {}, "allow_stdin": False, "stop_on_error": True})

    def result(self, msg_id: str, timeout: float = 60, on_started=None) -> tuple[dict, str]:
        """(execute_reply content, output text) of a cell sent, once its reply and idle came."""
        deadline = time.monotonic() + timeout
        out: list[str] = []
        reply = idle = None
        while reply is None or not idle:
            msg = self.recv(deadline)
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = msg["msg_type"]
            if kind == "stream":
                out.append(msg["content"]["text"])
                if on_started is not None:
                    on_started()
                    on_started = None
            elif kind == "error":
                out.append("\n".join(msg["content"]["traceback"]))
            elif kind == "execute_reply":
                reply = msg["content"]
            elif kind == "status" and msg["content"]["execution_state"] == "idle":
                idle = True
        return reply, "".join(out)

    def wait_ready(self, timeout: float = 60) -> None:
        """kernel_info_request until a reply comes, as JupyterLab does after a (re)start."""
        deadline = time.monotonic() + timeout
        while True:
            msg_id = self.send("kernel_info_request", {})
            per_try = min(deadline, time.monotonic() + 2)
            try:
                while True:
                    msg = self.recv(per_try)
                    if msg["msg_type"] == "kernel_info_reply" and msg["parent_header"].get("msg_id") == msg_id:
                        return
            except AssertionError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"no kernel_info_reply over the websocket within {timeout}s") from None
