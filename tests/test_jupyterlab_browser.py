"""JupyterLab in a real browser (headless Debian Chromium, driven by Selenium).

A user's path: open JupyterLab, click the compute-node kernel's launcher card, type a cell,
Shift+Enter, see the compute node's name.  And with pending kernels, the UI stays usable
while a kernel's job waits in the queue.  Screenshots go to tests/artifacts/.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from jupyter_helpers import JupyterServer, ensure_jobs_gone
from kernel_helpers import job_in_queue
from slurm_helpers import wait_until

ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
TEST_KERNEL = "Python 3 (compute node, test)"
CELL = "import socket; print(socket.gethostname())"
NODES = ("c1", "c2")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Debian Chromium through Debian's chromedriver (nothing is downloaded)."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not shutil.which(path):
            pytest.fail(f"{path} missing: apt-get install chromium chromium-driver (make deps does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}", "--window-size=1400,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def lab(kernelspecs, tmp_path_factory):
    with JupyterServer(tmp_path_factory.mktemp("lab"), app="lab") as srv:
        yield srv


@pytest.fixture(scope="module")
def pending_lab(kernelspecs, tmp_path_factory):
    with JupyterServer(tmp_path_factory.mktemp("lab-pending"), app="lab",
                       extra_args=("--MappingKernelManager.use_pending_kernels=True",)) as srv:
        yield srv


@pytest.fixture
def screenshot(browser, request):
    """screenshot(name) saves tests/artifacts/NAME.png; a failing test also leaves one."""
    ARTIFACTS.mkdir(exist_ok=True)

    def save(name: str) -> Path:
        path = ARTIFACTS / f"{name}.png"
        browser.save_screenshot(str(path))
        return path

    failed_before = request.session.testsfailed
    yield save
    if request.session.testsfailed > failed_before:   # this test's call phase failed
        save(f"{request.node.name}-failed")
    browser.get("about:blank")   # no page keeps websockets to a server that is being stopped


# --- driving JupyterLab ----------------------------------------------------------------

def poll(what: str, cond, timeout: float = 30):
    """wait_until that treats a stale/missing element as 'not yet'."""
    from selenium.common.exceptions import WebDriverException

    def attempt():
        try:
            return cond()
        except WebDriverException:
            return None

    return wait_until(what, attempt, timeout=timeout, interval=0.1)


def open_lab(driver, server) -> None:
    """JupyterLab in a fresh workspace (no tabs restored from an earlier test)."""
    workspace = f"t{time.monotonic_ns()}"
    driver.get(f"{server.url}/lab/workspaces/{workspace}?reset&token={server.token}")
    poll("the JupyterLab launcher", lambda: launcher_card(driver, TEST_KERNEL), timeout=60)


def launcher_card(driver, display_name: str):
    """The Notebook card for a kernel in the launcher that is showing."""
    from selenium.webdriver.common.by import By

    for card in driver.find_elements(By.CSS_SELECTOR, ".jp-LauncherCard[data-category='Notebook']"):
        if card.get_attribute("title") == display_name and card.is_displayed():
            return card
    return None


def current_notebook(driver):
    from selenium.webdriver.common.by import By

    for panel in driver.find_elements(By.CSS_SELECTOR, ".jp-NotebookPanel"):
        if panel.is_displayed():
            return panel
    return None


def click(what: str, find) -> None:
    """Click the element find() returns, retrying while it is missing, stale or covered (a
    click that raised did not happen, so retrying never clicks twice)."""
    poll(what, lambda: (element := find()) is not None and (element.click() or True))


def new_notebook(driver, display_name: str, previous: int = 0):
    """Click the launcher card; return the notebook panel that opens (the previous-th + 1 one)."""
    from selenium.webdriver.common.by import By

    click(f"launcher card {display_name!r}", lambda: launcher_card(driver, display_name))
    poll("a new notebook", lambda: len(driver.find_elements(By.CSS_SELECTOR, ".jp-NotebookPanel")) > previous)
    return poll("the new notebook to show", lambda: current_notebook(driver))


def run_first_cell(driver, server, spec: str, panel, code: str, ready_timeout: float = 60) -> None:
    """Type code into the notebook's first cell and press Shift+Enter, once the notebook is
    connected to its kernel: the server counts the browser's websocket to the kernel and the
    toolbar shows it idle.  (The toolbar alone says idle before the websocket exists, and a
    cell run then is occasionally dropped without a word.)"""
    poll(f"the browser to connect to the {spec} kernel",
         lambda: any(k["connections"] >= 1 for k in kernels_of(server, spec)), timeout=ready_timeout)
    poll("the notebook's kernel to be idle", lambda: indicator(panel) == "idle", timeout=ready_timeout)
    type_and_run(driver, panel, code)


def indicator(panel) -> str | None:
    """The kernel state the notebook's toolbar shows (its execution indicator's data-status)."""
    from selenium.webdriver.common.by import By

    found = panel.find_elements(By.CSS_SELECTOR, ".jp-Notebook-ExecutionIndicator")
    return found[0].get_attribute("data-status") if found else None


def type_and_run(driver, panel, code: str, cell: int = 0) -> None:
    """Type code into the notebook's first cell (``cell``: another, by index; -1 the last), which
    is empty, and press Shift+Enter."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    def typed():
        editors = panel.find_elements(By.CSS_SELECTOR, ".jp-Cell .cm-content[contenteditable='true']")
        if not editors:
            return False
        editor = editors[cell]
        if not editor.text:
            editor.click()
            editor.send_keys(code)
        return editor.text == code

    poll(f"the first cell to read {code!r}", typed, timeout=15)
    ActionChains(driver).key_down(Keys.SHIFT).send_keys(Keys.ENTER).key_up(Keys.SHIFT).perform()


def first_output(panel) -> str | None:
    from selenium.webdriver.common.by import By

    outputs = panel.find_elements(By.CSS_SELECTOR, ".jp-Cell .jp-OutputArea-output")
    return outputs[0].text.strip() if outputs else None


def kernels_of(server, spec: str) -> list[dict]:
    """The kernels of the server's sessions (notebooks) that run this kernelspec."""
    status, sessions = server.request("GET", "/api/sessions")
    assert status == 200, sessions
    return [s["kernel"] for s in sessions if s["kernel"]["name"] == spec]


def delete_kernel(server, kernel_id: str, timeout: float = 30) -> None:
    status, body = server.request("DELETE", f"/api/kernels/{kernel_id}", timeout=timeout)
    assert status == 204, body


# --- the tests -------------------------------------------------------------------------

def test_jupyterlab_runs_a_cell_on_a_compute_node(browser, lab, screenshot):
    jobs_before = set(lab.jobs())   # the server is the module's: other tests may have used it
    kernels_before = {k["id"] for k in kernels_of(lab, "rk-test")}
    open_lab(browser, lab)
    panel = new_notebook(browser, TEST_KERNEL)
    run_first_cell(browser, lab, "rk-test", panel, CELL)
    node = poll("the cell's output to name a compute node", lambda: first_output(panel) in NODES and first_output(panel),
                timeout=60)
    shot = screenshot("jupyterlab-compute-node")
    assert shot.stat().st_size > 0
    assert node in NODES
    [kernel] = [k for k in kernels_of(lab, "rk-test") if k["id"] not in kernels_before]
    [job] = [j for j in lab.jobs() if j not in jobs_before]
    assert job_in_queue(job)
    delete_kernel(lab, kernel["id"])
    wait_until(f"job {job} to leave the queue", lambda: not job_in_queue(job), timeout=20)


def job_state(job: str) -> str:
    return subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True).stdout.strip()


@pytest.mark.parametrize("mode", ["default", "pending_kernels"])
def test_jupyterlab_usable_while_a_job_is_queued(mode, browser, make_spec, screenshot, request):
    """A notebook whose job is held in the queue (--begin=now+1hour) must not block the UI: a
    second launcher opens and another notebook runs a cell on a compute node meanwhile.  Then the
    held job is cancelled and the server forgets that kernel."""
    from selenium.webdriver.common.by import By

    server = request.getfixturevalue("lab" if mode == "default" else "pending_lab")
    make_spec("rk-pending", directives=["--begin=now+1hour"])
    before = set(server.jobs())   # the servers are the module's: other tests may have used them
    kernels_before = {k["id"] for k in kernels_of(server, "rk-test")}
    open_lab(browser, server)
    click("launcher card for the held kernel", lambda: launcher_card(browser, "Python 3 (rk-pending)"))
    [held] = poll("the held kernel's job to be submitted", lambda: [j for j in server.jobs() if j not in before])
    try:
        assert poll(f"job {held} to be listed as pending", lambda: job_state(held) == "PENDING")
        poll("the held notebook to open", lambda: current_notebook(browser))
        # A second launcher, from the "+" of the main area's tab bar, while the job waits.
        click("the new-launcher button",
              lambda: next((b for b in browser.find_elements(By.CSS_SELECTOR, "#jp-main-dock-panel .lm-TabBar-addButton")
                            if b.is_displayed()), None))
        second = new_notebook(browser, TEST_KERNEL, previous=1)
        run_first_cell(browser, server, "rk-test", second, CELL, ready_timeout=15)
        poll("the second notebook's output to name a compute node", lambda: first_output(second) in NODES,
             timeout=30)
        screenshot(f"jupyterlab-queued-kernel-{mode}")
        assert job_state(held) == "PENDING", "the held job should still wait"

        [running] = [k for k in kernels_of(server, "rk-test") if k["id"] not in kernels_before]
        ran = [j for j in server.jobs() if j not in before and j != held]
        delete_kernel(server, running["id"])
        ensure_jobs_gone(ran, "the second notebook's kernel")
    finally:
        # Deleting a pending kernel over REST hangs (see test_delete_pending_kernel_cancels_its_job):
        # cancel its job, which fails the start once the provisioner sees it; the default server
        # then forgets the kernel, a pending-kernels server keeps it until DELETE (now at once).
        subprocess.run(["scancel", held], capture_output=True)
        ensure_jobs_gone([held], "the held notebook")
        poll("the server to see the held job end",
             lambda: f"job {held} ended before the kernel started" in server.log())
        for kernel in server.kernels():
            if kernel["name"] == "rk-pending":
                delete_kernel(server, kernel["id"], timeout=15)
        poll("the held kernel to be gone", lambda: all(k["name"] != "rk-pending" for k in server.kernels()),
             timeout=15)


@pytest.mark.parametrize("mode", ["default", "pending_kernels"])
def test_a_cell_run_while_the_job_is_queued_shows_its_output_once_it_starts(mode, browser, make_spec, screenshot,
                                                                          request):
    """The notebook of a queued kernel never shows it idle; a cell run meanwhile waits, then
    shows the compute node's name once the job starts, and the kernel shows idle."""
    server = request.getfixturevalue("lab" if mode == "default" else "pending_lab")
    make_spec("rk-held-cell", directives=["--begin=now+1hour"])
    before = set(server.jobs())
    open_lab(browser, server)
    panel = new_notebook(browser, "Python 3 (rk-held-cell)")
    [held] = poll("the held kernel's job to be submitted", lambda: [j for j in server.jobs() if j not in before])
    try:
        assert poll(f"job {held} to be listed as pending", lambda: job_state(held) == "PENDING")
        poll("the browser to connect to the queued kernel",
             lambda: any(k["connections"] >= 1 for k in kernels_of(server, "rk-held-cell")), timeout=30)
        type_and_run(browser, panel, CELL)
        seen = set()
        for _ in range(10):   # while queued: the toolbar and the server never say idle
            seen |= {indicator(panel)} | {k["execution_state"] for k in kernels_of(server, "rk-held-cell")}
        assert "idle" not in seen and job_state(held) == "PENDING", seen
        screenshot(f"jupyterlab-cell-while-queued-{mode}")
        subprocess.run(["scontrol", "update", f"JobId={held}", "StartTime=now"], check=True)
        poll("the cell's output to name a compute node", lambda: first_output(panel) in NODES, timeout=90)
        poll("the toolbar to show the kernel idle", lambda: indicator(panel) == "idle", timeout=10)
        screenshot(f"jupyterlab-cell-ran-after-queue-{mode}")
        for kernel in kernels_of(server, "rk-held-cell"):
            delete_kernel(server, kernel["id"])
        ensure_jobs_gone([held], "the held notebook's kernel")
    finally:
        subprocess.run(["scancel", held], capture_output=True)
        ensure_jobs_gone([held], "the held notebook")


@pytest.mark.parametrize("mode", ["default", "pending_kernels"])
def test_a_closed_notebooks_queued_kernel_stays_listed_and_its_shutdown_withdraws_the_job(mode, browser, make_spec,
                                                                                          screenshot, request):
    """Nothing queued that the user cannot see: a notebook closed while its job waits leaves its
    kernel in JupyterLab's running-kernels panel, and shutting it down there cancels the job."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    server = request.getfixturevalue("lab" if mode == "default" else "pending_lab")
    make_spec("rk-held-close", directives=["--begin=now+1hour"])
    before = set(server.jobs())
    open_lab(browser, server)
    new_notebook(browser, "Python 3 (rk-held-close)")
    [held] = poll("the held kernel's job to be submitted", lambda: [j for j in server.jobs() if j not in before])
    try:
        assert poll(f"job {held} to be listed as pending", lambda: job_state(held) == "PENDING")
        kid = poll("the kernel to be listed", lambda: next(
            (k["id"] for k in server.kernels() if k["name"] == "rk-held-close"), None), timeout=30)
        click("the notebook tab's close icon", lambda: next(
            (icon for icon in browser.find_elements(By.CSS_SELECTOR, "#jp-main-dock-panel .lm-TabBar-tab.lm-mod-current "
                                                                      ".lm-TabBar-tabCloseIcon") if icon.is_displayed()),
            None))
        click("Save in the save-your-work dialog",   # a new notebook has unsaved metadata
              lambda: browser.find_element(By.CSS_SELECTOR, ".jp-Dialog .jp-Dialog-button.jp-mod-accept"))
        poll("the notebook to close", lambda: current_notebook(browser) is None, timeout=15)
        click("the running-kernels sidebar", lambda: browser.find_element(
            By.CSS_SELECTOR, ".lm-TabBar-tab[data-id='jp-running-sessions']"))
        item = poll("the queued kernel in the running-kernels panel", lambda: next(
            (i for i in browser.find_elements(By.CSS_SELECTOR, ".jp-RunningSessions-item")
             if "rk-held-close" in i.text and i.is_displayed()), None), timeout=15)
        assert job_state(held) == "PENDING"
        screenshot(f"jupyterlab-queued-kernel-listed-{mode}")
        ActionChains(browser).move_to_element(item).perform()   # its shut-down button shows on hover
        click("the kernel's shut-down button", lambda: item.find_element(By.CSS_SELECTOR,
                                                                         ".jp-RunningSessions-itemShutdown"))
        wait_until(f"job {held} to be withdrawn", lambda: not job_in_queue(held), timeout=20)
        poll("the kernel to be gone", lambda: all(k["id"] != kid for k in server.kernels()), timeout=15)
    finally:
        subprocess.run(["scancel", held], capture_output=True)
        ensure_jobs_gone([held], "the closed notebook's kernel")


def test_delete_pending_kernel_cancels_its_job(pending_lab, make_spec):
    make_spec("rk-pending", directives=["--begin=now+1hour"])
    before = set(pending_lab.jobs())
    status, kernel = pending_lab.request("POST", "/api/kernels", {"name": "rk-pending"})
    assert status == 201, kernel
    [held] = poll("the pending kernel's job to be submitted", lambda: [j for j in pending_lab.jobs() if j not in before])
    try:
        assert poll(f"job {held} to be listed as pending", lambda: job_state(held) == "PENDING")
        delete_kernel(pending_lab, kernel["id"])   # answers while the job still waits (it would for an hour)
        wait_until(f"job {held} to be cancelled", lambda: not job_in_queue(held), timeout=20)
        # A pending-kernels server forgets a kernel once its shutdown has finished, after DELETE answered.
        poll("the kernel to be forgotten", lambda: all(k["id"] != kernel["id"] for k in pending_lab.kernels()),
             timeout=15)
    finally:
        subprocess.run(["scancel", held], capture_output=True)
        ensure_jobs_gone([held], "the pending kernel")
