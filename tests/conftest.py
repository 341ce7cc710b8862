"""Shared fixtures.  Tests that need the test cluster fail (never skip) under CI=true.

Two tiers: a test that uses the ``cluster`` fixture (directly or through another fixture) is
marked ``cluster``; the others are the unit tier (`make unit`: ``-m "not cluster"``), which
runs as any user with no cluster and none of its commands.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CLUSTER_JSON = Path(os.environ.get("RK_CLUSTER_STATE", "/var/lib/rk-cluster")) / "cluster.json"
CLUSTER_SCRIPT = Path(__file__).parent / "cluster" / "cluster.py"


def unavailable(what: str):
    """Skip the test, or fail it under CI=true: ``what`` says what it needs is missing and the fix."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{what} [CI=true: not skipped]")
    pytest.skip(what)


def _missing(reason: str):
    unavailable(f"test cluster missing: {reason} (run `make cluster`)")


@pytest.fixture(scope="session")
def cluster() -> dict:
    """The running test cluster's description (cluster.json), checked to be alive."""
    if not CLUSTER_JSON.exists():
        _missing(f"{CLUSTER_JSON} not found")
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True)
    if ping.returncode != 0 or "UP" not in ping.stdout:
        _missing(f"slurmctld does not answer: {ping.stdout.strip()} {ping.stderr.strip()}")
    return json.loads(CLUSTER_JSON.read_text())


@pytest.fixture(scope="session")
def accounting(cluster) -> dict:
    """The cluster's slurmdbd accounting answers and has rkuser's associations: {account: QOS list}."""
    res = subprocess.run(["sacctmgr", "-n", "-P", "show", "assoc", "user=rkuser", "format=Account,QOS"],
                         capture_output=True, text=True, timeout=30)
    assocs = dict(line.split("|", 1) for line in res.stdout.split() if "|" in line)
    if res.returncode != 0 or "short" not in assocs.get("physics", ""):
        _missing(f"no slurmdbd accounting with rkuser in account physics, QOS short: {res.stdout}{res.stderr}")
    return assocs


@pytest.hookimpl(tryfirst=True)   # before -m selects by the marks
def pytest_collection_modifyitems(config, items):
    """Mark every test that uses the cluster fixture (``fixturenames`` is transitive) as
    ``cluster``; run the tests that take the cluster down and up again after all the others."""
    for item in items:
        if "cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cluster)
    items.sort(key=lambda item: item.get_closest_marker("disruptive") is not None)


# Commands of the test cluster and of its site (SLURM, Grid Engine, users, namespaces, the
# browser).  A unit test finds them failing, so one that needs the cluster without asking for
# the fixture fails in the unit tier even on a machine that has the cluster.
CLUSTER_COMMANDS = ("sbatch", "squeue", "scontrol", "scancel", "sinfo", "sacct", "sacctmgr", "srun", "salloc",
                    "qsub", "qstat", "qdel", "qconf", "runuser", "nsenter", "chromium", "chromedriver")
NOT_IN_UNIT = """#!/bin/sh
echo "$(basename "$0"): a unit test ran a command of the test cluster; give the test the cluster fixture" >&2
exit 127
"""


@pytest.fixture(scope="session")
def _cluster_command_stubs(tmp_path_factory) -> Path:
    stubs = tmp_path_factory.mktemp("not-in-unit")
    for name in CLUSTER_COMMANDS:
        (stubs / name).write_text(NOT_IN_UNIT)
        (stubs / name).chmod(0o755)
    return stubs


@pytest.fixture(autouse=True)
def _unit_tests_stay_off_the_cluster(request, monkeypatch):
    """For a test not marked ``cluster``: CLUSTER_COMMANDS first on PATH, each failing."""
    if request.node.get_closest_marker("cluster") is None:
        stubs = request.getfixturevalue("_cluster_command_stubs")
        monkeypatch.setenv("PATH", f"{stubs}{os.pathsep}{os.environ.get('PATH', '')}")


VENV_BIN = Path(sys.executable).parent
# Kernelspecs the kernel tests install with the real `remote-kernels install`.
TEST_SPECS = {
    "rk-test": ["--display-name", "Python 3 (compute node, test)"],
    "rk-long": ["--partition", "long", "--time", "00:30:00"],
    "rk-env": ["--setup", "export RK_FROM_SETUP=set-up-ran", "--env", "RK_FROM_SPEC=spec value"],
    "rk-direct": ["--transport", "direct"],   # rk-test's twin over transport direct
    # Specs that must fail with a clear message and leave nothing behind (--no-check: install
    # would refuse most of them).
    "rk-bad-partition": ["--no-check", "--partition", "nosuch"],
    "rk-bad-time": ["--no-check", "--partition", "debug", "--time", "10:00:00"],   # over debug's MaxTime 4:00:00
    "rk-bad-cpus": ["--no-check", "--partition", "debug", "--cpus", "16"],          # nodes have 8 CPUs
    "rk-bad-mem": ["--no-check", "--partition", "debug", "--mem", "8G"],            # nodes have 4096 MB
    "rk-bad-python": ["--no-check", "--python", "/nonexistent/bin/python3"],
    "rk-bad-setup": ["--setup", "module load nosuch"],
    "rk-no-ipykernel": ["--python", "/usr/bin/python3"],   # Debian's Python, without ipykernel
}


@pytest.fixture(scope="session")
def kernelspecs(cluster, tmp_path_factory):
    """Install the test kernelspecs under a private prefix and put it on JUPYTER_PATH."""
    prefix = tmp_path_factory.mktemp("specs")
    for name, args in TEST_SPECS.items():
        subprocess.run([str(VENV_BIN / "remote-kernels"), "install", name, "--prefix", str(prefix), *args],
                       check=True, capture_output=True, text=True)
    old = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(prefix / "share" / "jupyter"), old]))
    yield prefix / "share" / "jupyter" / "kernels"
    if old is None:
        os.environ.pop("JUPYTER_PATH", None)
    else:
        os.environ["JUPYTER_PATH"] = old


@pytest.fixture
async def start_kernel(kernelspecs):
    """start_kernel(name, **kw) -> (km, kc), started and ready; all shut down afterwards."""
    from jupyter_client.manager import AsyncKernelManager

    started = []

    async def start(name: str = "rk-test", **kw):
        km = AsyncKernelManager(kernel_name=name)
        await km.start_kernel(**kw)
        started.append(km)
        kc = km.client()
        kc.start_channels()
        km._test_client = kc
        await kc.wait_for_ready(timeout=60)
        return km, kc

    yield start
    for km in started:
        km._test_client.stop_channels()
        if km.has_kernel or km.provisioner is not None:
            await km.shutdown_kernel(now=True)
    from kernel_helpers import until_ended

    for km in started:
        await until_ended(km)


# The kernel lifecycle suite runs over both transports (option transport): these specs.
TRANSPORT_SPECS = {"ssh": "rk-test", "direct": "rk-direct"}


@pytest.fixture(params=sorted(TRANSPORT_SPECS))
def transport(request) -> str:
    """Each transport in turn (a lifecycle test runs over both)."""
    return request.param


@pytest.fixture
def any_spec(kernelspecs, transport) -> str:
    """The test spec of each transport in turn."""
    return TRANSPORT_SPECS[transport]


@pytest.fixture
def make_spec(kernelspecs):
    """make_spec(name, stanza=None, **config): install a compute-node spec with exactly this
    provisioner config (and ``stanza`` as kernel.json's own "env")."""
    from remote_kernels.kernelspec import install

    prefix = kernelspecs.parent.parent.parent

    def make(name: str, stanza: dict | None = None, **config) -> str:
        config.setdefault("python", sys.executable)
        install(name, f"Python 3 ({name})", config, env=stanza, prefix=str(prefix), replace=True)
        return name

    return make


# A variable only the server's (the test process's) environment has: no job may see it.
SERVER_MARKER = "RK_SERVER_ONLY_MARKER"


@pytest.fixture
def server_secret(monkeypatch) -> str:
    """A unique value set as SERVER_MARKER in this process's environment for the test."""
    import uuid

    value = f"server-secret-{uuid.uuid4().hex}"
    monkeypatch.setenv(SERVER_MARKER, value)
    return value
