"""A malformed kernel.json gives one line naming the file and the fix, in every command."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

OURS = "remote-kernels-provisioner"


@pytest.fixture
def specs(tmp_path):
    kernels = tmp_path / "kernels"
    for name, text in {
        "bad-json": '{"argv": [',
        "bad-config": json.dumps({"argv": ["x"], "display_name": "b", "metadata": {
            "kernel_provisioner": {"provisioner_name": OURS, "config": "oops"}}}),
        "no-config": json.dumps({"argv": ["x"], "display_name": "n", "metadata": {
            "kernel_provisioner": {"provisioner_name": OURS}}}),
    }.items():
        (kernels / name).mkdir(parents=True)
        (kernels / name / "kernel.json").write_text(text)
    return tmp_path


def _cli(specs, *args):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(specs), "JUPYTER_PATH": str(specs),
           "JUPYTER_DATA_DIR": str(specs / "data"), "JUPYTER_RUNTIME_DIR": str(specs / "runtime")}
    return subprocess.run([sys.executable, "-m", "remote_kernels", *args], env=env, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("command", ["show", "check", "remove"])
@pytest.mark.parametrize("name, why", [("bad-json", "is not valid JSON"),
                                       ("bad-config", "metadata.kernel_provisioner.config")])
def test_one_line_naming_the_file_and_the_fix(specs, command, name, why):
    res = _cli(specs, command, name)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert why in lines[0] and str(specs / "kernels" / name / "kernel.json") in lines[0]
    assert f"remote-kernels install {name} --replace" in lines[0]


def test_run_with_a_malformed_spec_says_so(specs):
    conn = specs / "c.json"
    conn.write_text(json.dumps({"key": "k", "transport": "tcp", "ip": "127.0.0.1", **{
        f"{c}_port": 1 for c in ("shell", "iopub", "stdin", "control", "hb")}}))
    res = _cli(specs, "run", "--kernel", "bad-config", "-f", str(conn))
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert "is not a mapping" in res.stderr.strip().splitlines()[-1]


def test_list_shows_the_usable_specs_and_one_line_per_malformed_one(specs):
    res = _cli(specs, "list")
    assert res.returncode == 0, res.stderr
    assert "no-config" in res.stdout and "bad-" not in res.stdout
    assert sorted(line.split("'")[1] for line in res.stderr.strip().splitlines()) == ["bad-config", "bad-json"]
    assert "Traceback" not in res.stderr
