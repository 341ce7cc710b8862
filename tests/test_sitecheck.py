"""`remote-kernels install` checks a request against the site before writing it, as the
ordinary user rkuser installs for themselves: what SLURM would never run is refused with the
start-time line and nothing written; `--no-check` writes it; a good spec installs.

The test cluster: partition debug (MaxTime 4:00:00, nodes c1/c2 of 8 CPUs, 4096 MB, no GPUs),
long, urgent.  With its slurmdbd accounting: rkuser in accounts physics (QOS normal, short) and
chemistry (QOS normal); QOS short has MaxWall 00:30:00.
"""

from __future__ import annotations

import json
import re

import pytest

from site_helpers import VENV_BIN, as_user, home, unique

USER = "rkuser"
RK = str(VENV_BIN / "remote-kernels")
PREFIX = "remote-kernels install: slurm would never run this request: "
SUFFIX = " (--no-check installs it anyway)"

PARTITION_CASES = [
    (["--partition", "debug", "--time", "10:00:00"],
     "partition debug allows at most 4:00:00 (asked for 10:00:00); ask for less with --time or RK_TIME, or use "
     "partition long"),
    (["--cpus", "16"], "no node of partition debug has 16 CPUs (the largest has 8); ask for fewer with --cpus or "
     "RK_CPUS"),
    (["--partition", "long", "--mem", "8G"], "no node of partition long has 8G of memory for a job (the largest "
     "has 4G); ask for less with --mem or RK_MEM"),
    (["--gpus", "1"], "no node of partition debug has the GPUs or GRES asked for; change --gpus or RK_GPUS"),
    (["--partition", "nosuch"], "partition nosuch does not exist; choose one of debug, long, urgent with "
     "--partition or RK_PARTITION"),
]
ACCOUNT_CASES = [
    (["--account", "nosuch"], "account nosuch is not one you may use here; set one of yours with --account or "
     "RK_ACCOUNT (`sacctmgr show assoc user=$USER format=account,partition` lists them)"),
    (["--qos", "nosuch"], "QOS nosuch is not valid for you here (the QOS are normal, short); set one you may use "
     "with --qos or RK_QOS (`sacctmgr show assoc user=$USER format=qos` lists them)"),
    (["--account", "chemistry", "--qos", "short"], "QOS short is not valid for you here (the QOS are normal, "
     "short); set one you may use with --qos or RK_QOS (`sacctmgr show assoc user=$USER format=qos` lists them)"),
    (["--account", "physics", "--qos", "short", "--time", "01:00:00"], "QOS short allows wall time up to 0:30:00 "
     "per job; ask for less with --time or RK_TIME, or use another QOS with --qos or RK_QOS"),
]


@pytest.fixture
def spec_dirs():
    """spec_dir(name): where rkuser's --user spec goes; all removed afterwards."""
    import shutil

    made = []

    def spec_dir(name):
        made.append(home(USER) / ".local/share/jupyter/kernels" / name)
        return made[-1]

    yield spec_dir
    for path in made:
        shutil.rmtree(path, ignore_errors=True)


def _install(name: str, *args: str):
    return as_user(USER, RK, "install", name, "--user", *args, timeout=90)


def _refused_then_written(spec_dirs, args, line):
    name = unique("rk-sitecheck")
    res = _install(name, *args)
    assert res.returncode == 1, res.stdout + res.stderr
    assert res.stderr == PREFIX + line + SUFFIX + "\n"
    assert not spec_dirs(name).exists() and res.stdout == ""

    res = _install(name, "--no-check", *args)
    assert res.returncode == 0, res.stderr
    config = json.loads((spec_dirs(name) / "kernel.json").read_text())["metadata"]["kernel_provisioner"]["config"]
    flags = dict(zip(args[::2], args[1::2]))
    assert {f"--{k}": str(config[k]) for k in ("partition", "time", "cpus", "mem", "gpus", "account", "qos")
            if f"--{k}" in flags} == flags


@pytest.mark.parametrize("args, line", PARTITION_CASES, ids=[" ".join(a) for a, _ in PARTITION_CASES])
def test_install_refuses_what_the_partition_never_runs(cluster, spec_dirs, args, line):
    _refused_then_written(spec_dirs, args, line)


@pytest.mark.parametrize("args, line", ACCOUNT_CASES, ids=[" ".join(a) for a, _ in ACCOUNT_CASES])
def test_install_refuses_what_accounting_never_runs(accounting, spec_dirs, args, line):
    _refused_then_written(spec_dirs, args, line)


@pytest.mark.parametrize("args", [
    ["--partition", "debug", "--time", "04:00:00", "--cpus", "8", "--mem", "4G"],   # exactly the limits
    ["--partition", "long", "--time", "2-00:00:00"],
    ["--directive=--partition=long", "--time", "2-00:00:00"],   # over debug's, but the directive picks long
])
def test_install_writes_a_request_the_site_runs(cluster, spec_dirs, args):
    name = unique("rk-sitecheck-ok")
    res = _install(name, *args)
    assert res.returncode == 0, res.stderr
    assert (spec_dirs(name) / "kernel.json").is_file()
    assert ("not checked" in res.stderr) == any(a.startswith("--directive") for a in args), res.stderr


def test_install_writes_a_request_within_the_qos(accounting, spec_dirs):
    name = unique("rk-sitecheck-qos")
    res = _install(name, "--account", "physics", "--qos", "short", "--time", "00:20:00")
    assert res.returncode == 0 and res.stderr == "", res.stderr
    assert (spec_dirs(name) / "kernel.json").is_file()


def test_login_host_spec_is_checked_on_that_host(cluster):
    """From the laptop (no SLURM commands there), as the tcsh user: the queries run on the login host."""
    name = unique("rk-sitecheck-laptop")
    lh = cluster["laptop"]["login_host"]
    args = ("install", name, "--user", "--login-host", lh, "--partition", "debug", "--time", "10:00:00")
    spec_dir = home("rkcsh") / ".local/share/jupyter/kernels" / name
    try:
        res = as_user("rkcsh", RK, *args, netns=cluster["laptop"]["netns"], timeout=90)
        assert res.returncode == 1 and res.stderr == PREFIX + PARTITION_CASES[0][1] + SUFFIX + "\n", res.stderr
        assert not spec_dir.exists()
        res = as_user("rkcsh", RK, *args, "--no-check", netns=cluster["laptop"]["netns"], timeout=90)
        assert res.returncode == 0 and spec_dir.is_dir(), res.stderr
    finally:
        import shutil
        shutil.rmtree(spec_dir, ignore_errors=True)
