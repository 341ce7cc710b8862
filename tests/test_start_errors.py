"""Bad specs fail fast with a one-line message naming the cause, and leave no job behind."""

from __future__ import annotations

import subprocess

import pytest
from jupyter_client.manager import AsyncKernelManager

from remote_kernels.session import KernelStartError

pytestmark = pytest.mark.cluster


def _my_jobs() -> set[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i|%j"], capture_output=True, text=True, check=True).stdout
    return {line for line in out.splitlines()}


@pytest.mark.parametrize("name, expected", [
    ("rk-bad-partition", "Invalid partition name specified"),
    ("rk-bad-time", "Requested time limit is invalid"),
    ("rk-bad-python", "Python /nonexistent/bin/python3 not found on c"),
    ("rk-bad-setup", "set-up line failed on c"),
    ("rk-no-ipykernel", "ipykernel is not installed for /usr/bin/python3 on c"),
])
async def test_bad_spec_fails_with_clear_message(kernelspecs, name, expected):
    before = _my_jobs()
    km = AsyncKernelManager(kernel_name=name)
    with pytest.raises(KernelStartError) as err:
        await km.start_kernel()
    message = str(err.value)
    assert expected in message
    assert "\n" not in message
    await km.provisioner.cleanup()
    assert _my_jobs() - before == set()


@pytest.mark.parametrize("config, expected", [
    ({"partiton": "long"}, "unknown option 'partiton'"),
    ({"time": "soon"}, "time 'soon' is not a wall-time"),
    ({"cpus": "many"}, "cpus"),
])
async def test_malformed_kernel_json_config_names_the_field(make_spec, config, expected):
    from traitlets import TraitError

    make_spec("rk-malformed", **config)
    before = _my_jobs()
    km = AsyncKernelManager(kernel_name="rk-malformed")
    with pytest.raises(TraitError) as err:
        await km.start_kernel()
    assert expected in str(err.value)
    assert _my_jobs() - before == set()
