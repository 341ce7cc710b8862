"""The wheel `make dist` builds installs on a plain site: an ordinary user puts it in a fresh venv
(Debian's python3.11, pip from the registry) and everything works from there, without this checkout.

The slow part (build, venv, pip install) is one module-scoped fixture shared by the tests below.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
import zipfile
from pathlib import Path

import pytest

from site_helpers import as_user
from slurm_helpers import wait_until

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "remote_kernels" / "kernelspecs"
CLI = [sys.executable, "-m", "remote_kernels"]


@pytest.fixture(scope="module")
def user_venv(cluster):
    """A venv owned by the test user, from /usr/bin/python3.11, with the built wheel and ipykernel."""
    user = cluster["test_user"]
    out = Path(tempfile.mkdtemp(prefix="rk-dist-build-"))
    home = Path(tempfile.mkdtemp(prefix="rk-dist-", dir="/tmp"))
    try:
        # The same builder and arguments as `make dist`.
        built = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
                               capture_output=True, text=True, timeout=300)
        assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
        wheels = sorted(out.glob("remote_kernels-*.whl"))
        assert len(wheels) == 1 and sorted(out.glob("remote_kernels-*.tar.gz")), sorted(out.iterdir())
        wheel = home / wheels[0].name
        shutil.copy(wheels[0], wheel)
        shutil.chown(home, user, user)
        shutil.chown(wheel, user, user)
        venv = home / "venv"
        for argv in (["/usr/bin/python3.11", "-m", "venv", str(venv)],
                     [str(venv / "bin" / "pip"), "install", "-q", str(wheel), "ipykernel"]):
            res = as_user(user, *argv, timeout=300)
            assert res.returncode == 0, (argv, res.stdout, res.stderr)
        yield {"user": user, "venv": venv, "wheel": wheels[0], "bin": venv / "bin"}
    finally:
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)


def test_wheel_carries_what_runs(user_venv):
    names = set(zipfile.ZipFile(user_venv["wheel"]).namelist())
    shipped = {f"remote_kernels/kernelspecs/{p.parent.name}/kernel.json" for p in EXAMPLES.glob("*/kernel.json")}
    assert shipped and shipped <= names
    assert "remote_kernels/launcher.py" in names   # fed to the node's Python by the batch script
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(user_venv["wheel"]).read(entry_points).decode()
    assert "remote-kernels-provisioner = remote_kernels.provisioner:RemoteKernelProvisioner" in text
    assert "remote-kernels = remote_kernels.cli:main" in text


def test_wheel_carries_the_prebuilt_jupyterlab_extension(user_venv):
    """The standard layout: the built labextension under share/jupyter/labextensions/NAME (its
    package.json names the entry point the build made, install.json says who installed it) and
    both server extensions (serverext, adopt) enabled through etc/jupyter/jupyter_server_config.d; no Node needed."""
    wheel = zipfile.ZipFile(user_venv["wheel"])
    names = set(wheel.namelist())
    data = next(n.split("/")[0] for n in names if ".data/" in n)
    ext = f"{data}/data/share/jupyter/labextensions/remote-kernels-jupyterlab"
    meta = json.loads(wheel.read(f"{ext}/package.json"))
    assert f"{ext}/{meta['jupyterlab']['_build']['load']}" in names
    assert json.loads(wheel.read(f"{ext}/install.json"))["packageName"] == "remote-kernels"
    config = json.loads(wheel.read(f"{data}/data/etc/jupyter/jupyter_server_config.d/remote_kernels.json"))
    assert config == {"ServerApp": {"jpserver_extensions": {"remote_kernels.serverext": True,
                                                            "remote_kernels.adopt": True}}}
    assert {"remote_kernels/serverext/__init__.py", "remote_kernels/serverext/handlers.py"} <= names
    # Installed where Jupyter looks, in the user's venv.
    installed = user_venv["venv"] / "share" / "jupyter" / "labextensions" / "remote-kernels-jupyterlab"
    assert (installed / meta["jupyterlab"]["_build"]["load"]).is_file()
    assert (user_venv["venv"] / "etc" / "jupyter" / "jupyter_server_config.d" / "remote_kernels.json").is_file()


def test_help_runs_from_the_wheel(user_venv):
    res = as_user(user_venv["user"], str(user_venv["bin"] / "remote-kernels"), "--help")
    assert res.returncode == 0, res.stderr
    assert "examples:" in res.stdout and "install" in res.stdout
    res = as_user(user_venv["user"], str(user_venv["bin"] / "remote-kernels"), "install", "--help")
    assert res.returncode == 0, res.stderr
    assert all(p.parent.name in res.stdout for p in EXAMPLES.glob("*/kernel.json"))


def test_user_installs_a_shipped_example(user_venv):
    user, rk = user_venv["user"], str(user_venv["bin"] / "remote-kernels")
    name = f"rk-user-gpu-{uuid.uuid4().hex[:12]}"
    spec_dir = Path(f"~{user}").expanduser() / ".local" / "share" / "jupyter" / "kernels" / name
    try:
        # --no-check: the example asks for partition gpu, which the test cluster has not.
        res = as_user(user, rk, "install", "--user", name, "--from", "slurm-gpu", "--no-check", umask=0o077)
        assert res.returncode == 0, res.stderr
        assert res.stderr == ""   # ~/.local/share/jupyter is on Jupyter's path: no warning
        written = json.loads((spec_dir / "kernel.json").read_text())
        shipped = json.loads((EXAMPLES / "slurm-gpu" / "kernel.json").read_text())
        assert written["metadata"]["kernel_provisioner"]["config"] == shipped["metadata"]["kernel_provisioner"]["config"]
        assert Path(written["argv"][0]).parent == user_venv["bin"]   # the venv's Python
        assert oct(spec_dir.stat().st_mode & 0o777) == "0o755"
        assert {oct(p.stat().st_mode & 0o777) for p in spec_dir.iterdir()} == {"0o644"}
        assert spec_dir.stat().st_uid == Path(f"~{user}").expanduser().stat().st_uid

        res = as_user(user, rk, "install", "--user", f"{name}-x", "--from", "nosuch")
        assert res.returncode == 1 and res.stderr.count("\n") == 1
        assert "slurm-gpu" in res.stderr and "shipped examples" in res.stderr

        res = as_user(user, rk, "remove", name)
        assert res.returncode == 0, res.stderr
        assert not spec_dir.exists()
    finally:
        shutil.rmtree(spec_dir, ignore_errors=True)


def _job_gone(user: str, job: str) -> bool:
    out = subprocess.run(["squeue", "-h", "-u", user, "-j", job, "-t", "PENDING,RUNNING,COMPLETING", "-o", "%i"],
                         capture_output=True, text=True)
    return out.returncode == 0 and out.stdout.strip() == ""


def test_system_spec_runs_the_users_kernel_on_a_node(cluster, user_venv):
    """root installs a spec for everyone pointing at the user's venv; the user's `check` runs a cell."""
    from jupyter_core.paths import SYSTEM_JUPYTER_PATH

    user, python = user_venv["user"], str(user_venv["bin"] / "python")
    name = f"rk-site-{uuid.uuid4().hex[:12]}"
    spec_dir = Path(SYSTEM_JUPYTER_PATH[0]) / "kernels" / name
    try:
        res = subprocess.run([*CLI, "install", name, "--python", python, "--time", "00:05:00"],
                             capture_output=True, text=True, umask=0o077)
        assert res.returncode == 0, res.stderr
        listed = as_user(user, str(user_venv["bin"] / "jupyter"), "kernelspec", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        assert json.loads(listed.stdout)["kernelspecs"][name]["resource_dir"] == str(spec_dir)

        res = as_user(user, str(user_venv["bin"] / "remote-kernels"), "check", name, timeout=180)
        assert res.returncode == 0, (res.stdout, res.stderr)
        ran = re.search(r"^Kernel ran on node (\S+) \(job (\d+)\)\.$", res.stdout, re.M)
        assert ran and ran.group(1) in cluster["nodes"], res.stdout
        assert f"launcher ready ({python})" in res.stdout   # the node ran the user's venv
        assert f"OK: {name} works" in res.stdout
        job = ran.group(2)
        record = subprocess.run(["scontrol", "-o", "show", "job", job], capture_output=True, text=True).stdout
        assert f"UserId={user}(" in record, record   # (kept MinJobAge=30 s after the job ends)
        wait_until(f"{user}'s job {job} to leave the queue", lambda: _job_gone(user, job))
    finally:
        shutil.rmtree(spec_dir, ignore_errors=True)
