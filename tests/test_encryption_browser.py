"""JupyterLab in a real browser with ``ServerKernelManager.transport_encryption = "required"``: cells
run on a compute node over either transport, and the connection file the server holds for the kernel carries Curve keys
(every channel between the server's jupyter_client and the kernel is CurveZMQ-encrypted).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jupyter_helpers import JupyterServer
from kernel_helpers import job_in_queue
from slurm_helpers import wait_until
from test_jupyterlab_browser import (NODES, TEST_KERNEL, browser, delete_kernel, first_output,  # noqa: F401
                                     kernels_of, new_notebook, open_lab, poll, run_first_cell, screenshot)

CELL = "import socket; print(socket.gethostname())"


@pytest.fixture(scope="module")
def encrypted_lab(kernelspecs, tmp_path_factory):
    with JupyterServer(tmp_path_factory.mktemp("lab-curve"), app="lab",
                       extra_args=("--ServerKernelManager.transport_encryption=required",)) as srv:
        yield srv


@pytest.mark.parametrize("spec, display", [("rk-test", TEST_KERNEL), ("rk-direct", "Python 3 (rk-direct)")],
                         ids=["ssh", "direct"])
def test_jupyterlab_runs_cells_on_a_compute_node_over_curve_encrypted_channels(browser, encrypted_lab, screenshot,
                                                                              spec, display):
    lab = encrypted_lab
    jobs_before = set(lab.jobs())
    open_lab(browser, lab)
    panel = new_notebook(browser, display)
    run_first_cell(browser, lab, spec, panel, CELL)
    node = poll("the cell's output to name a compute node", lambda: first_output(panel) in NODES and first_output(panel),
                timeout=60)
    screenshot(f"jupyterlab-curve-{spec}")
    assert node in NODES
    [kernel] = kernels_of(lab, spec)
    info = json.loads((Path(lab.env["JUPYTER_RUNTIME_DIR"]) / f"kernel-{kernel['id']}.json").read_text())
    assert len(info["curve_publickey"]) == len(info["curve_secretkey"]) == 40
    [job] = [j for j in lab.jobs() if j not in jobs_before]
    delete_kernel(lab, kernel["id"])
    wait_until(f"job {job} to leave the queue", lambda: not job_in_queue(job), timeout=20)
