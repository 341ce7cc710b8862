"""`remote-kernels install --from/--grace/--queue-timeout`, `list`, `show`, `remove` and the RK_*
per-launch overrides; no cluster needed (show renders the script, it submits nothing; installs
pass --no-check: the site check asks the scheduler, tests/test_sitecheck.py tests it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from traitlets import TraitError

from remote_kernels.options import KernelOptions
from remote_kernels.schedulers import JobState
from remote_kernels.schedulers.slurm import Slurm

EXAMPLES = Path(__file__).resolve().parent.parent / "remote_kernels" / "kernelspecs"


@pytest.fixture
def cli(tmp_path):
    """cli(*args, **env) -> CompletedProcess; specs under tmp_path, which is on JUPYTER_PATH."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("RK_")}
    base.update(JUPYTER_PATH=str(tmp_path / "share" / "jupyter"), JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"))

    def run(*args: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "remote_kernels", *args], capture_output=True, text=True,
                              env=dict(base, **env), timeout=60)

    run.prefix = tmp_path
    return run


def spec(cli, name: str) -> dict:
    return json.loads((cli.prefix / "share" / "jupyter" / "kernels" / name / "kernel.json").read_text())


def test_install_from_a_spec_dir_overrides_given_fields(cli):
    res = cli("install", "gpu", "--no-check", "--from", str(EXAMPLES / "slurm-gpu"), "--partition", "debug",
              "--setup", "module load cuda/12", "--grace", "600", "--queue-timeout", "120", "--prefix", str(cli.prefix))
    assert res.returncode == 0, res.stderr
    written = spec(cli, "gpu")
    assert written["display_name"] == "Python 3 (GPU node)"
    assert written["argv"][0] == sys.executable and written["argv"][-3] == "gpu"
    assert written["metadata"]["kernel_provisioner"]["config"] == {
        "scheduler": "slurm", "partition": "debug", "time": "02:00:00", "cpus": 4, "mem": "16G", "gpus": 1,
        "python": "python3", "setup": ["module load cuda/12"], "grace": 600.0, "queue_timeout": 120.0}


def test_install_from_a_shipped_example_by_name(cli):
    names = sorted(p.name for p in EXAMPLES.iterdir() if (p / "kernel.json").is_file())
    assert "slurm-gpu" in names
    for example in names:
        res = cli("install", f"by-name-{example}", "--no-check", "--from", example, "--prefix", str(cli.prefix))
        assert res.returncode == 0, res.stderr
        shipped = json.loads((EXAMPLES / example / "kernel.json").read_text())
        written = spec(cli, f"by-name-{example}")
        assert written["display_name"] == shipped["display_name"]
        assert written["metadata"]["kernel_provisioner"]["config"] == {
            k: v for k, v in shipped["metadata"]["kernel_provisioner"]["config"].items() if v not in ("", 0, [], {})}
    # --help names them, so a user with only the wheel can find them.
    help_text = " ".join(cli("install", "--help").stdout.split())
    assert f"shipped example ({', '.join(names)})" in help_text


@pytest.mark.parametrize("args, message", [
    (["--time", "tomorrow"], "time 'tomorrow' is not a wall-time"),
    (["--from", "nosuch"], "--from nosuch: no such directory nor shipped example; the shipped examples are "
                           "slurm-conda, slurm-gpu, slurm-python3"),
    (["--grace", "0"], "grace 0 is out of range; use a positive number of seconds"),
    (["--queue-timeout", "-5"], "queue_timeout -5 is out of range"),
    (["--cpus", "-1"], "cpus -1 is negative"),
    (["--persist", "-1"], "persist -1 is negative; use seconds (0: off)"),
    (["--persist", "60", "--dispatch", "interactive"], "a kernel that persists is submitted as a batch job"),
    (["--persist", "60", "--allocation", "shared"], "persist applies to per-kernel allocations"),
    (["--transport", "direct", "--allocation", "shared"], "transport 'direct' does not support allocation shared yet"),
    (["--transport", "direct", "--persist", "60"], "transport 'direct' does not support persist on yet"),
    (["--transport", "direct", "--login-host", "login"], "transport 'direct' does not support login_host set yet"),
    (["--from", str(EXAMPLES)], "cannot read"),
    (["--from", str(EXAMPLES / "slurm-gpu"), "--time", "soon"], "time 'soon' is not a wall-time"),
])
def test_install_rejects_bad_input_without_writing(cli, args, message):
    res = cli("install", "bad", *args, "--prefix", str(cli.prefix))
    assert res.returncode == 1
    assert res.stderr.startswith("remote-kernels install: ") and message in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (cli.prefix / "share" / "jupyter" / "kernels" / "bad").exists()


def test_install_persist_writes_the_option(cli):
    res = cli("install", "keep", "--no-check", "--persist", "3600", "--prefix", str(cli.prefix))
    assert res.returncode == 0, res.stderr
    assert spec(cli, "keep")["metadata"]["kernel_provisioner"]["config"]["persist"] == 3600.0


def test_install_ignores_rk_variables(cli):
    res = cli("install", "plain", "--no-check", "--time", "01:00:00", "--prefix", str(cli.prefix),
              RK_TIME="bogus", RK_PARTITION="x")
    assert res.returncode == 0, res.stderr
    assert spec(cli, "plain")["metadata"]["kernel_provisioner"]["config"]["time"] == "01:00:00"


def test_list_shows_compute_node_specs_only(cli):
    assert cli("install", "cn-a", "--no-check", "--partition", "long", "--time", "00:30:00", "--cpus", "2",
               "--mem", "1G", "--prefix", str(cli.prefix)).returncode == 0
    assert cli("install", "cn-b", "--no-check", "--display-name", "B kernel",
               "--prefix", str(cli.prefix)).returncode == 0
    plain = cli.prefix / "share" / "jupyter" / "kernels" / "local-py"
    plain.mkdir(parents=True)
    (plain / "kernel.json").write_text(json.dumps({"argv": ["python3"], "display_name": "local", "language": "python"}))

    rows = {r["name"]: r for r in json.loads(cli("list", "--json").stdout)}
    assert "local-py" not in rows
    assert {k: rows["cn-a"][k] for k in ("scheduler", "partition", "time", "cpus", "mem", "gpus")} == \
        {"scheduler": "slurm", "partition": "long", "time": "00:30:00", "cpus": 2, "mem": "1G", "gpus": 0}
    assert rows["cn-b"]["display_name"] == "B kernel" and rows["cn-b"]["partition"] == ""

    lines = cli("list").stdout.splitlines()
    assert lines[0].split() == ["name", "display", "name", "scheduler", "partition", "time", "cpus", "mem", "gpus"]
    assert next(l for l in lines if l.startswith("cn-a ")).split() == \
        ["cn-a", "Python", "3", "(cn-a)", "slurm", "long", "00:30:00", "2", "1G", "-"]
    assert not any(l.startswith("local-py") for l in lines)


def test_show_renders_the_script_with_rk_overrides(cli):
    assert cli("install", "cn", "--no-check", "--partition", "debug", "--time", "01:00:00",
               "--prefix", str(cli.prefix)).returncode == 0
    plain = cli("show", "cn")
    assert plain.returncode == 0, plain.stderr
    assert "#SBATCH --partition=debug" in plain.stdout and "#SBATCH --time=01:00:00" in plain.stdout
    assert "#SBATCH --mem" not in plain.stdout
    assert "never contains the kernel's key" in plain.stdout

    res = cli("show", "cn", RK_PARTITION="long", RK_TIME="00:10:00", RK_MEM="2G")
    assert res.returncode == 0, res.stderr
    script = res.stdout[res.stdout.index("#!/bin/bash"):]
    header = [l for l in script.splitlines() if l.startswith("#SBATCH")]
    assert {"#SBATCH --partition=long", "#SBATCH --time=00:10:00", "#SBATCH --mem=2G"} <= set(header)
    assert "#SBATCH --partition=debug" not in header
    rows = {l.split()[0]: l for l in res.stdout.splitlines() if l and not l.startswith(("#", " "))}
    assert rows["partition"].split()[1:] == ["long", "environment", "RK_PARTITION", "(spec:", "debug)"]
    assert rows["mem"].split()[1:] == ["2G", "environment", "RK_MEM"]
    assert rows["cpus"].split()[1:] == ["0", "default"]


def test_bad_rk_variable_is_named(cli):
    assert cli("install", "cn", "--no-check", "--prefix", str(cli.prefix)).returncode == 0
    res = cli("show", "cn", RK_TIME="tomorrow")
    assert res.returncode == 1
    assert "environment variable RK_TIME: time 'tomorrow' is not a wall-time" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_show_and_remove_refuse_other_specs(cli):
    plain = cli.prefix / "share" / "jupyter" / "kernels" / "local-py"
    plain.mkdir(parents=True)
    (plain / "kernel.json").write_text(json.dumps({"argv": ["python3"], "display_name": "local", "language": "python"}))
    for command in ("show", "remove", "check"):
        res = cli(command, "local-py")
        assert res.returncode == 1
        assert res.stderr == f"remote-kernels {command}: 'local-py' is not a compute-node kernelspec; " \
                             "see `jupyter kernelspec list`\n"
    assert plain.exists()
    res = cli("remove", "nosuch")
    assert res.returncode == 1 and "no compute-node kernelspec named 'nosuch'" in res.stderr


def test_remove_deletes_the_spec(cli):
    assert cli("install", "cn", "--no-check", "--prefix", str(cli.prefix)).returncode == 0
    res = cli("remove", "cn")
    assert res.returncode == 0, res.stderr
    assert not (cli.prefix / "share" / "jupyter" / "kernels" / "cn").exists()
    assert "cn" not in [r["name"] for r in json.loads(cli("list", "--json").stdout)]


def test_options_take_rk_overrides_from_the_environment():
    opts = KernelOptions(partition="debug", cpus=1, environ={"RK_PARTITION": "long", "RK_CPUS": "4", "RK_QOS": "",
                                                           "RK_PYTHON": "/ignored"})
    assert (opts.partition, opts.cpus, opts.qos, opts.python) == ("long", 4, "", "python3")
    assert opts.from_environment == {"partition": "RK_PARTITION", "cpus": "RK_CPUS"}
    assert KernelOptions(partition="debug", environ={}).partition == "debug"
    with pytest.raises(TraitError, match=r"^environment variable RK_GPUS='two': gpus must be a whole number$"):
        KernelOptions(environ={"RK_GPUS": "two"})


# squeue -h -j 231,232,1 -o '%i|%T|%L' on the test cluster (a running and a pending job).
CAPTURED_TIME_LEFT = "231|RUNNING|9:59\n232|PENDING|1-00:00:00\n233|RUNNING|INVALID\n"


def test_parse_time_left():
    found = Slurm.parse_time_left(CAPTURED_TIME_LEFT)
    assert (found["231"].state, found["231"].time_left) == (JobState.RUNNING, "9:59")
    assert (found["232"].state, found["232"].time_left) == (JobState.QUEUED, "1-00:00:00")
    assert found["233"].time_left == ""


MOUNTS = "/dev/sda1 / ext4 rw 0 0\nnfs1:/apps /apps nfs4 rw 0 0\nfs:/home /shared\\040home lustre rw 0 0\n"


def test_python_is_refused_only_when_the_login_side_can_tell():
    from remote_kernels.commands.sitecheck import mount_of, python_problem

    assert mount_of("/apps/py/bin/python3", MOUNTS) == ("/apps", "nfs4")
    assert mount_of("/shared home/u/bin/python", MOUNTS) == ("/shared home", "lustre")
    assert mount_of("/appsx/python", MOUNTS) == ("/", "ext4")
    assert python_problem("/apps/py/bin/python3", False, MOUNTS, "the login node") == (
        "Python /apps/py/bin/python3 not found on the login node (in /apps, a shared nfs4 filesystem the compute "
        "nodes see too); set --python to a path that exists on the compute nodes")
    assert python_problem("/apps/py/bin/python3", True, MOUNTS, "login") is None      # there
    assert python_problem("/opt/py/bin/python3", False, MOUNTS, "login") is None      # local: nodes may have it
    assert python_problem("python3", False, MOUNTS, "login") is None                  # found on the node's PATH


def test_install_no_check_is_offered_in_help(cli):
    text = " ".join(cli("install", "--help").stdout.split())
    assert "--no-check" in text and "Other schedulers are not checked" in text
