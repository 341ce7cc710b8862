"""The launch dialog in a real browser (headless Debian Chromium, Selenium), on real jobs: a
user chooses a wall-time and a CPU count within the spec's bounds, the notebook's new kernel
runs in a job with them (``scontrol show job``); a value outside the bounds is refused with
the server's message; the reopened notebook's next kernel gets the same choice.  The same
dialog in Notebook 7.  Screenshots go to tests/artifacts/.
"""

from __future__ import annotations

import json
import time

import pytest

from jupyter_helpers import JupyterServer, ensure_jobs_gone
from slurm_helpers import job_limits, wait_until
from test_jupyterlab_browser import browser, click, current_notebook, indicator, poll, screenshot  # noqa: F401
from test_labext_browser import close_current_tab, notebook7  # noqa: F401
from test_launch_choices import choosing_spec, write_notebook  # noqa: F401


# Seconds a kernel may take to be ready: the spec's launch_timeout (a loaded node starts Python slowly).
READY = 120


@pytest.fixture(scope="module")
def choice_lab(kernelspecs, choosing_spec, tmp_path_factory):
    with JupyterServer(tmp_path_factory.mktemp("lab-choices"), app="lab") as srv:
        yield srv


def open_notebook(driver, server, name: str):
    """The notebook ``name`` in a fresh JupyterLab workspace (Notebook 7: its own page); its
    panel once it shows."""
    if server.app == "notebook":
        driver.get(f"{server.url}/notebooks/{name}?token={server.token}")
    else:
        driver.get(f"{server.url}/lab/workspaces/t{time.monotonic_ns()}/tree/{name}?reset&token={server.token}")
    return poll(f"notebook {name} to open", lambda: current_notebook(driver), timeout=60)


def new_job(server, before: set) -> str:
    [job] = wait_until("the kernel's new job", lambda: [j for j in server.jobs() if j not in before], timeout=30)
    return job


def dialog(driver):
    from selenium.webdriver.common.by import By

    found = [d for d in driver.find_elements(By.CSS_SELECTOR, ".jp-Dialog") if d.is_displayed()
             and d.find_elements(By.CSS_SELECTOR, ".rk-ChoiceForm")]
    return found[0] if found else None


def open_dialog(driver, panel):
    from selenium.webdriver.common.by import By

    click("the notebook's Resources button", lambda: next(
        (b for b in panel.find_elements(By.CSS_SELECTOR, ".rk-ResourcesButton")
         if b.is_displayed()), None))
    return poll("the launch dialog", lambda: dialog(driver), timeout=15)


def field(form, name: str):
    from selenium.webdriver.common.by import By

    return form.find_element(By.CSS_SELECTOR, f"[name='{name}']")


def fill(form, **values) -> None:
    for name, value in values.items():
        element = field(form, name)
        element.clear()
        element.send_keys(str(value))


def press(form, which: str) -> None:
    from selenium.webdriver.common.by import By

    form.find_element(By.CSS_SELECTOR, f".jp-Dialog-button.jp-mod-{which}").click()


def open_and_choose(driver, server, spec: str, name: str, before: set, screenshot, shot: str):
    """Open notebook ``name`` (its first kernel has the spec's own limits), choose 0:20:00 and 2
    CPUs in its launch dialog (prefilled with the spec's own values) and wait for the new kernel:
    its job has them, the first one's is gone, the job line names it.  ``before``: the jobs that
    were there.  (panel, first job, chosen job)."""
    from selenium.webdriver.common.by import By

    panel = open_notebook(driver, server, name)
    first = new_job(server, before)
    assert wait_until(f"job {first}", lambda: job_limits(first))["TimeLimit"] == "01:00:00"   # the spec's own
    poll("the first kernel to be idle", lambda: indicator(panel) == "idle", timeout=READY)

    form = open_dialog(driver, panel)
    assert field(form, "time").get_attribute("value") == "1:00:00"   # the spec's own value, prefilled
    assert "0:10:00 to 1:00:00" in form.text and "1 to 2" in form.text
    fill(form, time="0:20:00", cpus=2)
    screenshot(f"{shot}-choice")
    press(form, "accept")
    chosen = new_job(server, before | {first})
    limits = wait_until(f"job {chosen} in the queue", lambda: job_limits(chosen))
    assert (limits["TimeLimit"], limits["NumCPUs"]) == ("00:20:00", "2"), limits
    ensure_jobs_gone([first], "the kernel the choice replaced")
    saved = json.loads((server.root / name).read_text())["metadata"]["remote_kernels"]["resources"]
    assert saved == {spec: {"time": "00:20:00", "cpus": 2}}, saved
    poll("the chosen kernel to be idle", lambda: indicator(panel) == "idle", timeout=READY)
    poll(f"the job line (status bar; Notebook 7: toolbar) to name job {chosen}", lambda: any(
        f"slurm job {chosen} running on " in e.text for e in driver.find_elements(
            By.CSS_SELECTOR, ".rk-StatusItem, .rk-ToolbarJob") if e.is_displayed()), timeout=15)
    screenshot(f"{shot}-kernel-started")
    return panel, first, chosen


def session_of(server, path: str) -> dict | None:
    status, sessions = server.request("GET", "/api/sessions")
    assert status == 200, sessions
    return next((s for s in sessions if s["path"] == path), None)


def end_sessions(server, name: str, before: set) -> None:
    """Delete the sessions of notebook ``name`` (JupyterLab first opens one under a temporary
    path of the same session name) and wait for their jobs to leave the queue."""
    status, sessions = server.request("GET", "/api/sessions")
    for session in sessions if status == 200 else []:
        if name in (session["path"], session["name"]):
            server.request("DELETE", f"/api/sessions/{session['id']}")
    ensure_jobs_gone([j for j in server.jobs() if j not in before], f"notebook {name}")


def test_the_launch_dialog_starts_a_kernel_with_the_chosen_limits_refuses_others_and_reuses_them(
        browser, choice_lab, choosing_spec, screenshot):
    from selenium.webdriver.common.by import By

    server, spec = choice_lab, choosing_spec
    name = write_notebook(server, spec, None)
    before = set(server.jobs())
    try:
        panel, first, chosen = open_and_choose(browser, server, spec, name, before, screenshot, "launch-dialog")

        # Outside the bounds: the server's message in the dialog, and no new job.
        form = open_dialog(browser, panel)
        assert field(form, "time").get_attribute("value") == "00:20:00"   # the stored choice
        assert field(form, "cpus").get_attribute("value") == "2"
        fill(form, cpus=3)
        press(form, "accept")
        message = poll("the refusal in the dialog", lambda: (d := dialog(browser)) and next(
            (e.text for e in d.find_elements(By.CSS_SELECTOR, ".rk-ChoiceError") if e.text), None), timeout=15)
        assert message == "cpus 3 is above this spec's maximum 2", message
        screenshot("launch-dialog-refused")
        press(dialog(browser), "reject")
        poll("the dialog to close", lambda: dialog(browser) is None, timeout=10)
        assert [j for j in server.jobs() if j not in before] == [first, chosen]

        # Reopened after its kernel was shut down: the next kernel has the same choice.
        close_current_tab(browser)
        status, _ = server.request("DELETE", f"/api/sessions/{session_of(server, name)['id']}")
        assert status == 204
        ensure_jobs_gone([chosen], "the closed notebook's kernel")
        panel = open_notebook(browser, server, name)
        again = new_job(server, before | {first, chosen})
        limits = wait_until(f"job {again} in the queue", lambda: job_limits(again))
        assert (limits["TimeLimit"], limits["NumCPUs"]) == ("00:20:00", "2"), limits
        poll("the reopened notebook's kernel to be idle", lambda: indicator(panel) == "idle", timeout=READY)
        screenshot("launch-dialog-reopened")
    finally:
        screenshot("launch-dialog-last")   # (a failure's state, before the page goes)
        browser.get("about:blank")
        end_sessions(server, name, before)


def test_a_spec_without_choices_has_no_resources_button(browser, choice_lab, screenshot):
    from selenium.webdriver.common.by import By

    name = write_notebook(choice_lab, "rk-test", None)
    before = set(choice_lab.jobs())
    try:
        panel = open_notebook(browser, choice_lab, name)
        new_job(choice_lab, before)
        wait_until("the notebook's session", lambda: session_of(choice_lab, name), timeout=30)
        poll("the kernel to be idle", lambda: indicator(panel) == "idle", timeout=READY)
        buttons = panel.find_elements(By.CSS_SELECTOR, ".rk-ResourcesButton")
        assert buttons and not any(b.is_displayed() for b in buttons)
    finally:
        browser.get("about:blank")
        end_sessions(choice_lab, name, before)


def test_notebook7_launch_dialog_starts_a_kernel_with_the_chosen_limits(browser, choosing_spec, notebook7,
                                                                        screenshot):
    """The same Resources… button and dialog on Notebook 7's notebook page."""
    server, spec = notebook7, choosing_spec
    name = write_notebook(server, spec, None)
    before = set(server.jobs())
    try:
        _, first, chosen = open_and_choose(browser, server, spec, name, before, screenshot, "launch-dialog-notebook7")
        assert [j for j in server.jobs() if j not in before] == [first, chosen]   # one job per kernel, no more
    finally:
        screenshot("launch-dialog-notebook7-last")   # (a failure's state, before the page goes)
        browser.get("about:blank")
        end_sessions(server, name, before)
