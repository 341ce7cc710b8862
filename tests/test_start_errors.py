"""Bad specs fail fast with a one-line message naming the cause, and leave no job behind."""

from __future__ import annotations

import subprocess

import pytest
from jupyter_client.manager import AsyncKernelManager

from kernel_helpers import until
from remote_kernels.session import KernelStartError

pytestmark = pytest.mark.cluster


def _live_jobs(spec: str) -> set[str]:
    """Pending or running jobs of kernels started from ``spec`` (job name rk-SPEC)."""
    out = subprocess.run(["squeue", "-h", "-n", f"rk-{spec}", "-t", "PENDING,RUNNING", "-o", "%i"],
                         capture_output=True, text=True, check=True).stdout
    return set(out.split())


@pytest.mark.parametrize("name, expected", [
    ("rk-bad-partition", "Invalid partition name specified"),
    ("rk-bad-time", "Requested time limit is invalid"),
    ("rk-bad-python", "Python /nonexistent/bin/python3 not found on c"),
    ("rk-bad-setup", "set-up line failed on c"),
    ("rk-no-ipykernel", "ipykernel is not installed for /usr/bin/python3 on c"),
])
async def test_bad_spec_fails_with_clear_message(kernelspecs, name, expected):
    km = AsyncKernelManager(kernel_name=name)
    with pytest.raises(KernelStartError) as err:
        await km.start_kernel()
    message = str(err.value)
    assert expected in message
    assert "\n" not in message
    await km.provisioner.cleanup()
    await until("no job left", lambda: not _live_jobs(name), timeout=10)


@pytest.mark.parametrize("config, expected", [
    ({"partiton": "long"}, "unknown option 'partiton'"),
    ({"time": "soon"}, "time 'soon' is not a wall-time"),
    ({"cpus": "many"}, "cpus"),
])
async def test_malformed_kernel_json_config_names_the_field(make_spec, config, expected):
    from traitlets import TraitError

    make_spec("rk-malformed", **config)
    km = AsyncKernelManager(kernel_name="rk-malformed")
    with pytest.raises(TraitError) as err:
        await km.start_kernel()
    assert expected in str(err.value)
    assert _live_jobs("rk-malformed") == set()
