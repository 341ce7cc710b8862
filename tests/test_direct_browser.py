"""JupyterLab in a real browser on a ``transport: direct`` kernel whose job ends (scancel): the
restart that follows lands in a new job, on a node and ports of its own, and the same notebook
tab, never reloaded, runs its next cell there.

The connection info jupyter_client holds is then the new kernel's node endpoints (the server's
connection file is rewritten); JupyterLab opens a new websocket after every restart (a user's,
and the server's auto-restart, whose status 'restarting' it answers with a reconnect) and
jupyter_server makes that websocket's ZMQ sockets from the current connection info.
Screenshots go to tests/artifacts/.
"""

from __future__ import annotations

import getpass
import json
import subprocess
from pathlib import Path

import pytest

from jupyter_helpers import JupyterServer, ensure_jobs_gone
from test_jupyterlab_browser import (NODES, browser, click, delete_kernel, indicator, kernels_of,  # noqa: F401
                                     lab, new_notebook, open_lab, poll, run_first_cell, screenshot, type_and_run)

SPEC, DISPLAY = "rk-direct", "Python 3 (rk-direct)"
# One line: the node, the job, and the address and ports the kernel itself listens on (its own
# connection file on the node).
CELL = ("import os, socket, json, ipykernel.connect as c; i = json.load(open(c.get_connection_file())); "
        "print(socket.gethostname(), os.environ['SLURM_JOB_ID'], i['ip'], i['shell_port'], i['iopub_port'])")
CHANNELS = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")


@pytest.fixture(scope="module")
def manual_lab(kernelspecs, tmp_path_factory):
    """No restarter: a kernel whose job ended stays so until the user restarts it."""
    with JupyterServer(tmp_path_factory.mktemp("lab-direct-manual"), app="lab",
                       extra_args=("--ServerKernelManager.autorestart=False",)) as srv:
        yield srv


def output_of(panel, cell: int) -> str | None:
    """The text of the first output of the notebook's cell ``cell`` (None while it has none)."""
    from selenium.webdriver.common.by import By

    cells = panel.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell")
    if len(cells) <= cell:
        return None
    outputs = cells[cell].find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output")
    return outputs[0].text.strip() if outputs else None


def ran_where(panel, cell: int) -> dict | None:
    """What CELL printed in cell ``cell``: node, job, ip and ports; None until it printed that."""
    words = (output_of(panel, cell) or "").split()
    if len(words) != 5 or words[0] not in NODES:
        return None
    node, job, ip, shell, iopub = words
    return {"node": node, "job": job, "ip": ip, "shell_port": int(shell), "iopub_port": int(iopub)}


def users_jobs(job: str) -> list[str]:
    """``job`` if squeue lists it as this user's (pending, running or completing), else []."""
    out = subprocess.run(["squeue", "-h", "-u", getpass.getuser(), "-j", job, "-o", "%i"],
                         capture_output=True, text=True).stdout
    return [j for j in out.split() if j == job]


def connection_file(server, kernel_id: str) -> dict | None:
    """The connection file the server holds for the kernel; None while it is missing or half-written."""
    try:
        return json.loads((Path(server.env["JUPYTER_RUNTIME_DIR"]) / f"kernel-{kernel_id}.json").read_text())
    except (OSError, ValueError):
        return None


def websockets_opened(server, kernel_id: str) -> int:
    """How many websockets to the kernel the server has accepted (its log says each)."""
    return server.log().count(f"Connecting to kernel {kernel_id}.")


def dialog(driver):
    """The dialog showing, or None."""
    from selenium.webdriver.common.by import By

    found = [d for d in driver.find_elements(By.CSS_SELECTOR, ".jp-Dialog") if d.is_displayed()]
    return found[0] if found else None


def restart_from_kernel_menu(driver) -> None:
    """Kernel > Restart Kernel…, then Restart in the dialog that asks."""
    from selenium.webdriver.common.by import By

    def item(selector: str, label: str):
        return next((e for e in driver.find_elements(By.CSS_SELECTOR, selector)
                     if e.is_displayed() and e.text.strip() == label), None)

    click("the Kernel menu", lambda: item(".lm-MenuBar-itemLabel", "Kernel"))
    click("Restart Kernel… in the Kernel menu", lambda: item(".lm-Menu-itemLabel", "Restart Kernel…"))
    click("Restart in the confirm dialog",
          lambda: (d := dialog(driver)) and d.find_element(By.CSS_SELECTOR, ".jp-Dialog-button.jp-mod-accept"))
    poll("the confirm dialog to close", lambda: dialog(driver) is None, timeout=10)


@pytest.mark.parametrize("restart", ["auto", "user"])
def test_a_notebook_goes_on_in_the_new_job_after_its_job_ended(restart, browser, cluster, screenshot, request):
    """scancel the notebook's job; the server's restarter (``auto``), or the user from the Kernel
    menu with no restarter (``user``), restarts it into a new job; the next cell, in the same tab,
    runs there, and the server's connection file names that job's node and the kernel's ports."""
    from selenium.webdriver.common.by import By

    server = request.getfixturevalue("lab" if restart == "auto" else "manual_lab")   # lab: the restarter on
    jobs_before = set(server.jobs())
    kernels_before = {k["id"] for k in kernels_of(server, SPEC)}
    open_lab(browser, server)
    panel = new_notebook(browser, DISPLAY)
    run_first_cell(browser, server, SPEC, panel, CELL)
    first = poll("the first cell to print its node and job", lambda: ran_where(panel, 0), timeout=60)
    [kernel] = [k["id"] for k in kernels_of(server, SPEC) if k["id"] not in kernels_before]
    [old_job] = [j for j in server.jobs() if j not in jobs_before]
    jobs = [old_job]
    try:
        assert first["job"] == old_job
        before = connection_file(server, kernel)
        assert (before["ip"], before["shell_port"], before["iopub_port"]) == (
            cluster["nodes"][first["node"]], first["shell_port"], first["iopub_port"])
        screenshot(f"direct-{restart}-first-job")

        assert users_jobs(old_job) == [old_job]
        opened = websockets_opened(server, kernel)
        subprocess.run(["scancel", "-u", getpass.getuser(), old_job], check=True)
        poll(f"job {old_job} to leave the queue", lambda: not users_jobs(old_job), timeout=20)
        if restart == "auto":
            # The restarter sees the kernel dead and restarts it; JupyterLab tells the user.
            box = poll("JupyterLab's Kernel Restarting dialog", lambda: dialog(browser), timeout=30)
            assert "Kernel Restarting" in box.text and "restart automatically" in box.text, box.text
            screenshot("direct-auto-restarting-dialog")
            click("Ok in the Kernel Restarting dialog",
                  lambda: box.find_element(By.CSS_SELECTOR, ".jp-Dialog-button.jp-mod-accept"))
            poll("the dialog to close", lambda: dialog(browser) is None, timeout=10)
        else:
            restart_from_kernel_menu(browser)
        new_job = poll("the restart's new job", lambda: [j for j in server.jobs() if j not in jobs_before | {old_job}],
                       timeout=30)
        jobs += new_job
        [new_job] = new_job
        # (While the restart runs, it names the login-side endpoints a moment.)
        after = poll("the server's connection file to name other node endpoints", lambda: (
            (info := connection_file(server, kernel)) and info != before
            and info["ip"] in cluster["nodes"].values() and info), timeout=30)
        # JupyterLab's new websocket, made once the new kernel runs (its ZMQ sockets are then
        # made from the connection info just written).  The toolbar is no sign: after any
        # auto-restart it stays 'starting' or 'unknown' (JupyterLab ignores the status of the
        # kernel_info requests it sends), until a cell runs.
        poll("JupyterLab to open a websocket to the restarted kernel",
             lambda: websockets_opened(server, kernel) > opened
             and any(k["connections"] >= 1 for k in kernels_of(server, SPEC) if k["id"] == kernel), timeout=30)
        [active] = [k["last_activity"] for k in kernels_of(server, SPEC) if k["id"] == kernel]
        type_and_run(browser, panel, CELL, cell=1)
        second = poll("the second cell to print its node and job", lambda: ran_where(panel, 1), timeout=30)
        poll("the toolbar to show the kernel idle", lambda: indicator(panel) == "idle", timeout=10)
        screenshot(f"direct-{restart}-new-job")
        # The server watches the new kernel's activity (its culler and /api/status go by it).
        poll("the server to see the cell's activity on the new kernel", lambda: [
            k for k in kernels_of(server, SPEC) if k["id"] == kernel and k["last_activity"] > active], timeout=10)
        assert second["job"] == new_job != old_job
        assert second["node"] in NODES
        assert (after["ip"], after["shell_port"], after["iopub_port"]) == (
            cluster["nodes"][second["node"]], second["shell_port"], second["iopub_port"])
        assert [after[ch] for ch in CHANNELS] != [before[ch] for ch in CHANNELS]
        assert after["key"] == before["key"]
    finally:
        delete_kernel(server, kernel)
        ensure_jobs_gone(jobs, f"the {restart}-restarted direct notebook")
