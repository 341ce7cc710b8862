"""The JupyterLab extension in a real browser (headless Debian Chromium, Selenium), on real jobs:
the status bar shows a queued job with the scheduler's reason; the panel lists the user's remote
kernels, also once no notebook shows them, and its Cancel button withdraws the job from squeue.
Screenshots go to tests/artifacts/.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from jupyter_helpers import ensure_jobs_gone
from kernel_helpers import job_in_queue
from slurm_helpers import wait_until
from test_jupyterlab_browser import (NODES, TEST_KERNEL, browser, click, current_notebook, first_output,  # noqa: F401
                                     lab, launcher_card, new_notebook, open_lab, pending_lab, poll, run_first_cell,
                                     screenshot)

HELD_SPEC = "rk-held-ui"


def status_item(driver):
    from selenium.webdriver.common.by import By

    items = [e for e in driver.find_elements(By.CSS_SELECTOR, ".rk-StatusItem") if e.is_displayed()]
    return items[0] if items else None


def open_panel(driver):
    """Click the remote kernels panel's tab in the left side bar; return the panel."""
    from selenium.webdriver.common.by import By

    click("the remote kernels panel's side bar tab",
          lambda: next(iter(driver.find_elements(By.CSS_SELECTOR, ".jp-SideBar li[data-id='rk-kernels-panel']")), None))
    return poll("the remote kernels panel", lambda: (p := driver.find_element(By.ID, "rk-kernels-panel")).is_displayed()
                and p)


def panel_row(driver, job: str):
    from selenium.webdriver.common.by import By

    rows = driver.find_elements(By.CSS_SELECTOR, f"#rk-kernels-panel tr.rk-KernelRow[data-job='{job}']")
    return rows[0] if rows else None


def close_current_tab(driver) -> None:
    from selenium.webdriver.common.by import By

    click("the notebook tab's close icon", lambda: next(
        (e for e in driver.find_elements(By.CSS_SELECTOR, "#jp-main-dock-panel .lm-TabBar-tab.lm-mod-current "
                                                          ".lm-TabBar-tabCloseIcon") if e.is_displayed()), None))

    def closed():
        if current_notebook(driver) is None:
            return True
        for button in driver.find_elements(By.CSS_SELECTOR, ".jp-Dialog button"):   # "Save your work?"
            if button.text.strip() == "Discard" and button.is_displayed():
                button.click()
        return False

    poll("the notebook to close", closed, timeout=15)


@pytest.mark.parametrize("mode", ["default", "pending_kernels"])
def test_status_bar_and_panel_for_a_queued_job(mode, browser, make_spec, screenshot, request):
    """Within 5 s of the notebook opening, the status bar says queued, the job id and SLURM's
    reason.  The notebook closed, the panel still lists the job; its Cancel removes it from squeue."""
    server = request.getfixturevalue("lab" if mode == "default" else "pending_lab")
    make_spec(HELD_SPEC, directives=["--begin=now+1hour"])
    before = set(server.jobs())
    open_lab(browser, server)
    click("the held kernel's launcher card", lambda: launcher_card(browser, f"Python 3 ({HELD_SPEC})"))
    poll("the held notebook to open", lambda: current_notebook(browser))
    opened = time.monotonic()
    held = None
    try:
        text = poll("the status bar to say queued with the reason",
                    lambda: (item := status_item(browser)) and "queued" in item.text and "BeginTime" in item.text
                    and item.text, timeout=5)
        took = time.monotonic() - opened
        [held] = [j for j in server.jobs() if j not in before]
        assert f"job {held} queued (BeginTime)" in text, text
        assert took <= 5, took
        screenshot(f"labext-status-queued-{mode}")

        panel = open_panel(browser)
        row = poll(f"the panel to list job {held}", lambda: panel_row(browser, held), timeout=10)
        assert "queued (BeginTime)" in row.text and HELD_SPEC in row.text, row.text
        close_current_tab(browser)
        row = poll(f"the panel to still list job {held} with no notebook open", lambda: panel_row(browser, held),
                   timeout=10)
        screenshot(f"labext-panel-queued-{mode}")
        assert job_in_queue(held)
        from selenium.webdriver.common.by import By

        click("the panel's Cancel button", lambda: panel_row(browser, held).find_element(By.CSS_SELECTOR, "button.rk-cancel"))
        wait_until(f"job {held} to leave squeue", lambda: not job_in_queue(held), timeout=20)
        poll(f"the panel to drop job {held}", lambda: panel_row(browser, held) is None, timeout=20)
        poll("the server to forget the held kernel",
             lambda: all(k["name"] != HELD_SPEC for k in server.kernels()), timeout=20)
    finally:
        if held is None:
            held_jobs = [j for j in server.jobs() if j not in before]
        else:
            held_jobs = [held]
        subprocess.run(["scancel", *held_jobs], capture_output=True) if held_jobs else None
        ensure_jobs_gone(held_jobs, "the held notebook")


def test_status_bar_shows_node_and_time_left(browser, lab, screenshot):
    before = set(lab.jobs())
    open_lab(browser, lab)
    panel = new_notebook(browser, TEST_KERNEL)
    run_first_cell(browser, lab, "rk-test", panel, "import socket; print(socket.gethostname())")
    node = poll("the cell to name its node", lambda: first_output(panel) in NODES and first_output(panel), timeout=60)
    text = poll("the status bar to say running with the time left",
                lambda: (item := status_item(browser)) and " left" in item.text and item.text, timeout=10)
    [job] = [j for j in lab.jobs() if j not in before]
    assert text.startswith(f"slurm job {job} running on {node}, "), text
    screenshot("labext-status-running")


def test_short_wall_time_warns_in_a_notification_and_the_notebook(browser, lab, make_spec, screenshot):
    """A batch job of 2 minutes with walltime_warning 110 s: JupyterLab shows the warning
    notification, and SLURM's pre-end signal (--signal=B:USR1@110) puts a warning line under the
    cell run last, both before the job ends."""
    from selenium.webdriver.common.by import By

    spec = make_spec("rk-short", time="2", walltime_warning=110, dispatch="batch")
    before = set(lab.jobs())
    open_lab(browser, lab)
    panel = new_notebook(browser, f"Python 3 ({spec})")
    run_first_cell(browser, lab, spec, panel, "print('before the end')")
    outputs = lambda: [o.text for o in panel.find_elements(By.CSS_SELECTOR, ".jp-Cell .jp-OutputArea-output")]  # noqa: E731
    poll("the cell's output", lambda: "before the end" in outputs(), timeout=60)   # (the warning may come first)
    [job] = [j for j in lab.jobs() if j not in before]
    record = subprocess.run(["scontrol", "-o", "show", "job", job], capture_output=True, text=True).stdout
    assert "TimeLimit=00:02:00" in record, record
    toast = poll("the wall-time notification", lambda: next(
        (t for t in browser.find_elements(By.CSS_SELECTOR, ".Toastify__toast")
         if "reaches its wall-time" in t.text and job in t.text), None), timeout=90)
    line = poll("the warning line in the notebook", lambda: next(
        (text for text in outputs() if "remote-kernels warning" in text), None), timeout=90)
    assert f"slurm job {job} reaches its wall-time soon" in line, line
    assert job_in_queue(job), "the warnings should come before the job ends"
    screenshot("labext-walltime-warning")
    assert "save your work" in toast.text.lower()


@pytest.fixture(scope="module")
def notebook7(kernelspecs, tmp_path_factory):
    from jupyter_helpers import JupyterServer

    with JupyterServer(tmp_path_factory.mktemp("notebook7"), app="notebook") as srv:
        yield srv


def test_notebook7_shows_the_queued_job_in_the_toolbar(browser, notebook7, make_spec, screenshot):
    """Notebook 7 has no status bar: within 5 s of opening a notebook whose job is queued, its
    toolbar says queued, the job id and the reason; the panel is in the left area."""
    import json

    from selenium.webdriver.common.by import By

    make_spec(HELD_SPEC, directives=["--begin=now+1hour"])
    name = f"held-{time.monotonic_ns()}.ipynb"
    (notebook7.root / name).write_text(json.dumps({
        "cells": [], "nbformat": 4, "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": HELD_SPEC, "display_name": f"Python 3 ({HELD_SPEC})", "language": "python"}}}))
    before = set(notebook7.jobs())
    browser.get(f"{notebook7.url}/notebooks/{name}?token={notebook7.token}")
    held = []
    try:
        poll("the notebook to open", lambda: browser.find_element(By.CSS_SELECTOR, ".jp-NotebookPanel-toolbar"),
             timeout=30)
        opened = time.monotonic()
        text = poll("the toolbar to say queued with the reason", lambda: next(
            (e.text for e in browser.find_elements(By.CSS_SELECTOR, ".rk-ToolbarJob")
             if e.is_displayed() and "queued (BeginTime)" in e.text), None), timeout=5)
        assert time.monotonic() - opened <= 5
        held = [j for j in notebook7.jobs() if j not in before]
        assert len(held) == 1 and f"slurm job {held[0]} queued (BeginTime)" in text, (held, text)
        assert browser.find_element(By.ID, "rk-kernels-panel")   # in the (hidden) left area
        screenshot("labext-notebook7")
    finally:
        browser.get("about:blank")   # first: the page would open a new session once the start failed
        if held:
            subprocess.run(["scancel", *held], capture_output=True)
            ensure_jobs_gone(held, "the Notebook 7 notebook")
            poll("the server to see the held job end", lambda: f"job {held[0]} ended before the kernel started"
                 in notebook7.log(), timeout=20)
