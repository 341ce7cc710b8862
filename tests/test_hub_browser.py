"""Under JupyterHub, as centres deploy it (#20): a compute-node kernel outlives its user's server.

A real JupyterHub runs as root on the login side (PAMAuthenticator, LocalProcessSpawner: the
user's server runs as the user; configurable-http-proxy from npm), tests/hub_helpers.py.  The
user logs in through the browser (headless Chromium), starts their server, opens a notebook
on a compute-node spec with ``persist`` (installed for themselves) and runs ``x = 42``; the
admin stops the user's server through the hub's REST API and starts it again (or the hub
itself restarts, stopping the servers, and the user launches theirs again); the reopened
notebook finds the same kernel, in the same job, and ``x`` is 42.  The hub's token
(JUPYTERHUB_API_TOKEN) and the other secrets of the user's server are in no part of the job.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from hub_helpers import TestHub, user_password
from jupyter_helpers import KernelWebsocket
from site_helpers import UserSpecs, as_user, home, unique
from slurm_helpers import wait_until
from test_job_env import proc_environ, slurm_records
from test_jupyterlab_browser import (browser, click, current_notebook, indicator, kernels_of, poll, screenshot,  # noqa: F401
                                     type_and_run)

# In the kernel: its node, pid and whole environment (its launcher's pid: JPY_PARENT_PID), and x.
PROBE = ("import json, os, socket; print(json.dumps({'node': socket.gethostname(), 'pid': os.getpid(), "
         "'env': dict(os.environ), 'x': globals().get('x')}))")


def user_job(user: str, job: str) -> bool:
    """Whether the queue, filtered by user and job id, lists the job."""
    out = subprocess.run(["squeue", "-h", "-u", user, "-j", job, "-o", "%i"], capture_output=True, text=True).stdout
    return job in out.split()


def environ_of(pid: int | str) -> dict[str, str]:
    items = (item.split("=", 1) for item in proc_environ(pid).decode(errors="replace").split("\0") if "=" in item)
    return dict(items)


def server_secrets(pid: int) -> dict[str, str]:
    """The secrets in a user's server's environment (the hub sets them): JUPYTERHUB_API_TOKEN
    (also as JPY_API_TOKEN) and any other JUPYTERHUB_* value that looks like a token."""
    env = environ_of(pid)
    assert env.get("JUPYTERHUB_API_TOKEN"), f"the hub gave the user's server no JUPYTERHUB_API_TOKEN: {sorted(env)}"
    return {k: v for k, v in env.items() if k in ("JUPYTERHUB_API_TOKEN", "JPY_API_TOKEN")
            or (k.startswith("JUPYTERHUB_") and len(v) >= 32 and v.isalnum())}


def hub_variables(env: dict[str, str]) -> list[str]:
    return sorted(k for k in env if k.startswith("JUPYTERHUB_") or k in ("JPY_API_TOKEN", "CONFIGPROXY_AUTH_TOKEN"))


def log_in(driver, hub: TestHub, password: str) -> None:
    """The hub's login page, as a user fills it in: a mistyped password first (PAM refuses it),
    then theirs (the hub then starts their server: it has no options form)."""
    from selenium.webdriver.common.by import By

    def submit(with_password: str) -> None:
        driver.get(f"{hub.url}/hub/login")
        poll("the hub's login form", lambda: driver.find_element(By.ID, "username_input"))
        driver.find_element(By.ID, "username_input").send_keys(hub.user)
        driver.find_element(By.ID, "password_input").send_keys(with_password)
        driver.find_element(By.ID, "login_submit").click()

    submit(password[::-1] + "x")
    poll("the hub to refuse the wrong password",
         lambda: "Invalid username or password" in driver.find_element(By.TAG_NAME, "body").text, timeout=30)
    assert not hub.server()
    submit(password)
    poll("the login to take the user past the login page",
         lambda: "/hub/login" not in driver.current_url and driver.current_url, timeout=30)


def cells(panel):
    from selenium.webdriver.common.by import By

    return panel.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell")


def run_in_last_cell(driver, panel, code: str) -> int:
    """Type code into the notebook's last cell (empty, as Shift+Enter leaves it) and run it; its index."""
    index = len(cells(panel)) - 1
    type_and_run(driver, panel, code, cell=-1)
    return index


def output_of(panel, index: int) -> str | None:
    from selenium.webdriver.common.by import By

    found = cells(panel)[index].find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output")
    return found[0].text.strip() if found else None


def connected(driver, hub: TestHub, spec: str, kernel_id: str | None = None):
    """The notebook that shows, once the browser's websocket reaches its kernel (of spec, or
    kernel_id) and the toolbar says idle."""
    def ready():
        kernels = [k for k in kernels_of(hub_server(hub), spec) if kernel_id in (None, k["id"])]
        panel = current_notebook(driver)
        return kernels and kernels[0]["connections"] >= 1 and panel is not None and indicator(panel) == "idle" \
            and (kernels[0]["id"], panel)

    return poll(f"the notebook to connect to its {spec} kernel", ready, timeout=90)


class hub_server:
    """What test_jupyterlab_browser's helpers call on a server (``request``): the user's
    server through the hub, as the admin."""

    def __init__(self, hub: TestHub):
        self.hub = hub

    def request(self, method: str, path: str, body=None, timeout: float = 60):
        return self.hub.user_api(method, path, body, timeout)


def probe(hub: TestHub, kernel_id: str) -> dict:
    """The kernel's pid and environment, asked over its websocket (as the admin)."""
    url = f"ws://127.0.0.1:{hub.port}/user/{hub.user}/api/kernels/{kernel_id}/channels"
    with KernelWebsocket(url, hub.admin_token) as ws:
        ws.wait_ready()
        reply, out = ws.execute(PROBE)
    assert reply["status"] == "ok", (reply, out)
    return json.loads(out)


def assert_no_secret_in_the_job(job: str, kernel: dict, secrets: dict[str, str]) -> None:
    """Neither the kernel's environment, nor its launcher's (the job's own process on the node,
    read as root), nor SLURM's records of the job hold a JupyterHub variable or a secret's value."""
    launcher_pid = kernel["env"]["JPY_PARENT_PID"]
    places = {"the kernel's os.environ": kernel["env"], f"/proc/{kernel['pid']}/environ": environ_of(kernel["pid"]),
              f"/proc/{launcher_pid}/environ (launcher)": environ_of(launcher_pid)}
    for where, env in places.items():
        assert not hub_variables(env), f"{where} has {hub_variables(env)}"
        text = "\0".join(f"{k}={v}" for k, v in env.items())
        assert not [name for name, value in secrets.items() if value in text], where
    for where, text in slurm_records(job, batch=True).items():
        assert not [name for name, value in secrets.items() if value in text], where
        assert "JUPYTERHUB_" not in text, where


def restart(hub: TestHub, how: str, driver, notebook_url: str) -> int:
    """Stop the user's server and start it again; the new server's pid.  ``server``: the admin
    stops and starts it through the REST API (LocalProcessSpawner: SIGINT, which the server
    exits on).  ``hub``: the hub itself restarts (SIGTERM; it stops the servers as it exits,
    `cleanup_servers`), and the user, opening their notebook, gets the hub's "not running"
    page and launches their server, which then opens the notebook."""
    if how == "server":
        hub.stop_server()
        return hub.start_server()
    hub.stop()
    hub.start()
    driver.get(notebook_url)
    click("the hub's Launch Server button", lambda: driver.find_element("id", "start"))
    return hub.wait_ready()


@pytest.mark.parametrize("how", ["server", "hub"], ids=["server-restarted", "hub-restarted"])
def test_a_hub_users_notebook_finds_its_kernel_again_after_their_server_restarts(cluster, browser, screenshot,
                                                                                 tmp_path, how):
    user, specs, job = cluster["test_user"], UserSpecs(), ""
    notebooks = home(user) / unique("rk-hub-notebooks")
    lab_dirs = {"JUPYTERLAB_WORKSPACES_DIR": str(notebooks / ".lab-workspaces"),
                "JUPYTERLAB_SETTINGS_DIR": str(notebooks / ".lab-settings")}
    hub = TestHub(tmp_path / "hub", user, notebooks, lab_dirs)
    try:
        spec = specs.install(user, "rk-hub-persist", "--persist", "120", "--time", "00:10:00")
        res = as_user(user, "mkdir", "-m", "0700", str(notebooks))
        assert res.returncode == 0, res.stderr
        with user_password(user) as password:
            hub.start()
            log_in(browser, hub, password)
            first_pid = hub.wait_ready()
            secrets = {**server_secrets(first_pid), "the admin's token": hub.admin_token}
            workspace = unique("hub")
            browser.get(f"{hub.user_url}/lab/workspaces/{workspace}?reset")
            click(f"the launcher card of {spec}",
                  lambda: browser.find_element("css selector", f".jp-LauncherCard[title='Python 3 ({spec})']"))
            kernel_id, panel = connected(browser, hub, spec)
            [path] = [s["path"] for s in hub.user_api("GET", "/api/sessions")[1] if s["kernel"]["id"] == kernel_id]
            set_x = run_in_last_cell(browser, panel, "x = 42")
            poll("`x = 42` to run", lambda: len(cells(panel)) > set_x + 1 and indicator(panel) == "idle", timeout=60)
            kernel = probe(hub, kernel_id)
            job = kernel["env"]["SLURM_JOB_ID"]
            assert kernel["x"] == 42 and kernel["node"] in cluster["nodes"], {k: kernel[k] for k in ("x", "node")}
            assert user_job(user, job)
            assert_no_secret_in_the_job(job, kernel, secrets)
            screenshot(f"hub-notebook-before-{how}-restart")

            notebook_url = f"{hub.user_url}/lab/workspaces/{workspace}/tree/{path}"
            second_pid = restart(hub, how, browser, notebook_url)
            assert second_pid != first_pid
            assert user_job(user, job), f"job {job} ended with the user's server:\n{hub.log()[-3000:]}"
            assert "detached at exit; it waits 120s for the next server" in hub.log(), hub.log()[-3000:]
            wait_until("the new server to re-adopt the kernel",
                       lambda: kernel_id in [k["id"] for k in hub.user_api("GET", "/api/kernels")[1] or []],
                       timeout=60)

            # The user opens the notebook again: it finds its kernel, whose state is kept.
            browser.get(notebook_url)
            found, panel = connected(browser, hub, spec, kernel_id)
            assert found == kernel_id
            shown = run_in_last_cell(browser, panel, "x")
            assert poll("`x` to show its value", lambda: output_of(panel, shown), timeout=60) == "42"
            assert user_job(user, job)
            status, sessions = hub.user_api("GET", "/api/sessions")
            assert status == 200 and [s["kernel"]["id"] for s in sessions] == [kernel_id], sessions
            poll("the file browser to list the notebook",
                 lambda: path in [e.text for e in browser.find_elements("css selector", ".jp-DirListing-itemText")])
            screenshot(f"hub-notebook-after-{how}-restart")
            # The same job; the second server's secrets did not reach it either.
            kernel = probe(hub, kernel_id)
            assert kernel["env"]["SLURM_JOB_ID"] == job
            assert_no_secret_in_the_job(job, kernel, server_secrets(second_pid))

            status, body = hub.user_api("DELETE", f"/api/kernels/{kernel_id}")
            assert status == 204, body
            wait_until(f"job {job} to end with its kernel", lambda: not user_job(user, job), timeout=30)
    except BaseException:
        screenshot(f"hub-notebook-{how}-restart-failed")   # before the hub goes
        print(f"browser at {browser.current_url}\n--- end of the hub's log:\n{hub.log()[-6000:]}")
        raise
    finally:
        try:
            hub.stop()
        finally:
            if job and user_job(user, job):
                subprocess.run(["scancel", job], capture_output=True)
            specs.remove_all()
            shutil.rmtree(notebooks, ignore_errors=True)
