"""`remote-kernels install` writes kernelspecs for both ways in, and rejects bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

CLI = [sys.executable, "-m", "remote_kernels"]


def install(tmp_path, *args):
    return subprocess.run([*CLI, "install", *args, "--prefix", str(tmp_path)], capture_output=True, text=True)


def test_install_writes_provisioner_and_argv(tmp_path):
    res = install(tmp_path, "cn", "--display-name", "Python 3 (compute node)", "--partition", "long",
                  "--time", "02:00:00", "--mem", "4G", "--setup", "module load x", "--env", "A=b c")
    assert res.returncode == 0, res.stderr
    spec_dir = tmp_path / "share" / "jupyter" / "kernels" / "cn"
    spec = json.loads((spec_dir / "kernel.json").read_text())
    assert spec["display_name"] == "Python 3 (compute node)"
    assert spec["interrupt_mode"] == "message"
    prov = spec["metadata"]["kernel_provisioner"]
    assert prov["provisioner_name"] == "remote-kernels-provisioner"
    assert prov["config"] == {"scheduler": "slurm", "partition": "long", "time": "02:00:00", "mem": "4G",
                              "python": sys.executable, "setup": ["module load x"], "env": {"A": "b c"}}
    assert spec["argv"][1:] == ["-m", "remote_kernels", "run", "--kernel", "cn", "-f", "{connection_file}"]
    assert (spec_dir / "logo-64x64.png").exists()


def test_install_refuses_to_overwrite_without_replace(tmp_path):
    assert install(tmp_path, "cn").returncode == 0
    res = install(tmp_path, "cn")
    assert res.returncode != 0 and "--replace" in res.stderr
    assert install(tmp_path, "cn", "--replace").returncode == 0


@pytest.mark.parametrize("args, message", [
    (["--time", "tomorrow"], "time 'tomorrow' is not a wall-time"),
    (["--mem", "lots"], "mem 'lots' is not a size"),
    (["--scheduler", "nosuch"], "unknown scheduler 'nosuch'"),
])
def test_install_rejects_bad_input_without_writing(tmp_path, args, message):
    res = install(tmp_path, "bad", *args)
    assert res.returncode != 0
    assert message in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "share" / "jupyter" / "kernels" / "bad").exists()


def test_provisioner_is_registered():
    from jupyter_client.provisioning import KernelProvisionerFactory

    names = [ep.name for ep in KernelProvisionerFactory.instance()._get_all_provisioners()]
    assert "remote-kernels-provisioner" in names


def test_example_kernelspecs_are_valid():
    from pathlib import Path

    from remote_kernels.options import KernelOptions

    examples = sorted((Path(__file__).parent.parent / "kernelspecs").glob("*/kernel.json"))
    assert examples
    for path in examples:
        spec = json.loads(path.read_text())
        prov = spec["metadata"]["kernel_provisioner"]
        assert prov["provisioner_name"] == "remote-kernels-provisioner"
        KernelOptions(**prov["config"])   # raises on a bad field
        assert spec["argv"][-4:] == ["--kernel", path.parent.name, "-f", "{connection_file}"]


def test_unknown_config_field_is_named():
    from traitlets import TraitError

    from remote_kernels.options import KernelOptions

    with pytest.raises(TraitError, match="unknown option 'partiton'"):
        KernelOptions(partiton="long")
