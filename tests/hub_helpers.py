"""A real JupyterHub on the test cluster's login side, run as a centre runs it.

``TestHub`` writes a per-run config and state directory (sqlite database, cookie secret, pid
files: root's, 0700), and runs ``jupyterhub`` as root with PAMAuthenticator (the user's
password, set by ``user_password``), LocalProcessSpawner (each user's
``jupyterhub-singleuser`` from the project's venv, started as that user) and
configurable-http-proxy from tests/hub/ (``make hub-proxy``).  The test acts as the admin
through a service whose token has the admin scopes it needs.  ``stop()`` ends the hub, which
stops the users' servers and its proxy; it fails if any of them is left.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import signal
import socket
import subprocess
from contextlib import contextmanager
from pathlib import Path

from jupyter_helpers import rest
from proc_helpers import running, stat
from site_helpers import USER_ENV, VENV_BIN
from slurm_helpers import wait_until

PROXY = Path(__file__).parent / "hub" / "node_modules" / ".bin" / "configurable-http-proxy"
ADMIN_SERVICE = "rk-test-admin"
# What the test does as the admin: start and stop servers, read their state (the server's
# pid), and use the user's server's API (sessions, kernels, contents).
ADMIN_SCOPES = ["admin:servers", "admin:server_state", "access:servers", "list:users", "read:users"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def user_password(user: str):
    """A random password for ``user`` while the block runs (as a site's account has one, for
    PAM); the account's previous password field is put back afterwards."""
    shadow = subprocess.run(["getent", "shadow", user], capture_output=True, text=True, check=True).stdout
    previous = shadow.split(":")[1]
    password = secrets.token_urlsafe(18)
    subprocess.run(["chpasswd"], input=f"{user}:{password}\n", text=True, check=True)   # stdin: not in argv
    try:
        yield password
    finally:
        subprocess.run(["usermod", "-p", previous, user], check=True)


def process(pid: int) -> tuple[int, str] | None:
    """The live process pid as (pid, start time) (proc_helpers), None if there is none."""
    st = stat(pid) if pid else None
    return (pid, st[2]) if st is not None and st[1] != "Z" else None


def gone(proc: tuple[int, str] | None, timeout: float = 15) -> bool:
    """Whether the process ends (or is a zombie) within timeout."""
    try:
        wait_until(f"process {proc} to end", lambda: proc is None or not running(proc), timeout=timeout)
    except AssertionError:
        return False
    return True


class TestHub:
    """One JupyterHub for ``user``; the user's servers start in ``notebook_dir`` with
    ``environment`` added (Spawner.environment)."""

    __test__ = False   # not a pytest class

    def __init__(self, state: Path, user: str, notebook_dir: Path, environment: dict[str, str]):
        if not PROXY.exists():
            raise AssertionError(f"{PROXY} missing: run `make hub-proxy` (npm ci in tests/hub)")
        self.state, self.user = Path(state), user
        self.state.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_token = secrets.token_hex(32)
        self.log_path = self.state / "jupyterhub.log"
        self.proxy_pid_file = self.state / "proxy.pid"
        config = {
            "JupyterHub": {
                "bind_url": f"{self.url}/",
                "hub_bind_url": f"http://127.0.0.1:{free_port()}",
                "db_url": f"sqlite:///{self.state / 'jupyterhub.sqlite'}",
                "cookie_secret_file": str(self.state / "cookie_secret"),
                "pid_file": str(self.state / "jupyterhub.pid"),
                "authenticator_class": "pam",
                "spawner_class": "localprocess",
                "services": [{"name": ADMIN_SERVICE, "api_token": self.admin_token}],
                "load_roles": [{"name": ADMIN_SERVICE, "scopes": ADMIN_SCOPES, "services": [ADMIN_SERVICE]}],
            },
            "Authenticator": {"allowed_users": [user]},
            "ConfigurableHTTPProxy": {
                "command": [str(PROXY)],
                "api_url": f"http://127.0.0.1:{free_port()}",
                "pid_file": str(self.proxy_pid_file),
            },
            "Spawner": {
                "cmd": [str(VENV_BIN / "jupyterhub-singleuser")],
                "notebook_dir": str(notebook_dir),
                "default_url": "/lab",
                "environment": environment,
            },
        }
        self.config = self.state / "jupyterhub_config.json"
        self.config.write_text(json.dumps(config, indent=1))
        self.config.chmod(0o600)
        self.proc: subprocess.Popen | None = None
        self.server_pids: set[int] = set()   # of every server of the user's that was ready

    # --- life cycle ------------------------------------------------------------------
    def start(self, timeout: float = 60) -> "TestHub":
        """Run the hub (root, a service's clean environment: the venv's bin first on PATH)."""
        env = {**USER_ENV, "PATH": f"{VENV_BIN}:{USER_ENV['PATH']}", "HOME": "/root"}
        self._log = open(self.log_path, "a")   # a restarted hub's log follows the first one's
        self.proc = subprocess.Popen([str(VENV_BIN / "jupyterhub"), "-f", str(self.config)], cwd=self.state, env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
                                     stdin=subprocess.DEVNULL)

        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"jupyterhub exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            try:
                return self.api("GET", "/")[0] == 200
            except OSError:
                return False

        try:
            wait_until("jupyterhub to answer", up, timeout=timeout, interval=0.2)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """SIGTERM the hub (it stops the users' servers and its proxy) and fail if the hub, the
        proxy or a user's server is still running after that."""
        if self.proc is None:
            return
        server = process(self.server_pid())
        proxy = process(int(self.proxy_pid_file.read_text()) if self.proxy_pid_file.exists() else 0)
        left = []
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(60)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(10)
                    left.append("jupyterhub (ignored SIGTERM for 60s)")
            for what, proc in (("the user's server", server), ("configurable-http-proxy", proxy)):
                if not gone(proc):
                    os.kill(proc[0], signal.SIGKILL)
                    left.append(f"{what} (pid {proc[0]})")
        finally:
            self._log.close()
            self.proc = None
            self._remove_server_files()
        if left:
            raise AssertionError(f"left running after the hub stopped: {', '.join(left)} (now killed)\n"
                                 f"{self.log()[-3000:]}")

    def _remove_server_files(self) -> None:
        """The user's servers' info files (jpserver-PID.json, -open.html in their Jupyter
        runtime dir): jupyter_server leaves them when SIGINT ends it (that path skips its
        clean-up), as the spawner stops it."""
        runtime = Path(pwd.getpwnam(self.user).pw_dir) / ".local/share/jupyter/runtime"
        for pid in self.server_pids:
            for name in (f"jpserver-{pid}.json", f"jpserver-{pid}-open.html"):
                (runtime / name).unlink(missing_ok=True)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    # --- the hub's REST API, as the admin ------------------------------------------------
    def request(self, method: str, path: str, body=None, timeout: float = 60):
        """(status, decoded JSON body or text) of a request through the proxy, with the admin's token."""
        return rest(method, self.url + path, self.admin_token, body, timeout)

    def api(self, method: str, path: str, body=None, timeout: float = 60):
        return self.request(method, f"/hub/api{path}", body, timeout)

    def server(self) -> dict:
        """The user's default server as the hub reports it ({} when it has none)."""
        status, model = self.api("GET", f"/users/{self.user}")
        assert status == 200, model
        return model["servers"].get("", {})

    def server_pid(self) -> int:
        return int(self.server().get("state", {}).get("pid") or 0)

    def wait_ready(self, timeout: float = 90) -> int:
        """Until the user's server is ready; its pid."""
        wait_until(f"{self.user}'s server to be ready", lambda: self.server().get("ready"), timeout=timeout)
        pid = self.server_pid()
        self.server_pids.add(pid)
        return pid

    def stop_server(self, timeout: float = 60) -> None:
        """Stop the user's server as the admin does (DELETE .../server), until it is gone."""
        server = process(self.server_pid())
        status, body = self.api("DELETE", f"/users/{self.user}/server")
        assert status in (202, 204), body
        wait_until(f"{self.user}'s server to stop", lambda: not self.server(), timeout=timeout)
        assert gone(server), f"{self.user}'s server {server} still runs after the hub stopped it"

    def start_server(self, timeout: float = 90) -> int:
        """Start the user's server as the admin does (POST .../server); its pid once ready."""
        status, body = self.api("POST", f"/users/{self.user}/server")
        assert status in (201, 202), body
        return self.wait_ready(timeout)

    # --- the user's server, through the proxy -----------------------------------------------
    @property
    def user_url(self) -> str:
        return f"{self.url}/user/{self.user}"

    def user_api(self, method: str, path: str, body=None, timeout: float = 60):
        return self.request(method, f"/user/{self.user}{path}", body, timeout)
