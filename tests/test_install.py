"""`remote-kernels install` writes kernelspecs for both ways in, and rejects bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from site_helpers import as_user

CLI = [sys.executable, "-m", "remote_kernels"]


def install(tmp_path, *args):
    """--no-check: checking against the site asks the scheduler (tests/test_sitecheck.py)."""
    return subprocess.run([*CLI, "install", *args, "--no-check", "--prefix", str(tmp_path)], capture_output=True,
                          text=True)


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


def test_install_with_no_scheduler_commands_installs_as_given_and_says_so(tmp_path):
    """Where the scheduler's commands are missing (no SLURM here), the check cannot run: one
    note names what failed, and the spec is written."""
    env = dict(os.environ, PATH=str(tmp_path / "no-commands"))
    res = subprocess.run([*CLI, "install", "cn", "--prefix", str(tmp_path)], capture_output=True, text=True,
                         env=env)
    assert res.returncode == 0, res.stderr
    [note] = [line for line in res.stderr.splitlines() if "note:" in line]
    assert note.startswith("remote-kernels install: note: not checked against the site (`scontrol ")
    assert "scontrol: command not found" in note and note.endswith("); installed as given")
    assert (tmp_path / "share" / "jupyter" / "kernels" / "cn" / "kernel.json").is_file()


def test_provisioner_is_registered():
    from jupyter_client.provisioning import KernelProvisionerFactory

    names = [ep.name for ep in KernelProvisionerFactory.instance()._get_all_provisioners()]
    assert "remote-kernels-provisioner" in names


def test_example_kernelspecs_are_valid():
    from remote_kernels.options import KernelOptions

    examples = sorted((Path(__file__).parent.parent / "remote_kernels" / "kernelspecs").glob("*/kernel.json"))
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


def _modes(top: Path) -> dict[str, str]:
    """'relative path' -> octal permission bits of top and everything under it."""
    return {str(p.relative_to(top)): oct(p.stat().st_mode & 0o777) for p in [top, *sorted(top.rglob("*"))]}


def test_prefix_install_is_readable_by_all_whatever_the_umask_and_warns_off_the_path(tmp_path):
    prefix = tmp_path / "new" / "site"   # neither exists: install creates them
    env = {k: v for k, v in os.environ.items() if k != "JUPYTER_PATH"}
    res = subprocess.run([*CLI, "install", "cn", "--no-check", "--prefix", str(prefix)], capture_output=True,
                         text=True, env=env, umask=0o077)
    assert res.returncode == 0, res.stderr
    spec_dir = prefix / "share" / "jupyter" / "kernels" / "cn"
    modes = _modes(tmp_path / "new")
    files = {f"site/share/jupyter/kernels/cn/{p.name}" for p in spec_dir.iterdir()}
    assert "site/share/jupyter/kernels/cn/kernel.json" in files
    assert modes == {**{d: "0o755" for d in (".", "site", "site/share", "site/share/jupyter",
                                             "site/share/jupyter/kernels", "site/share/jupyter/kernels/cn")},
                     **{f: "0o644" for f in files}}
    # One line on stderr names the directory and the JUPYTER_PATH that makes Jupyter look there.
    assert res.stderr.count("\n") == 1, res.stderr
    assert res.stderr.startswith("remote-kernels install: warning: ")
    assert f"set JUPYTER_PATH={prefix}/share/jupyter " in res.stderr
    # Where Jupyter looks, no warning.
    res = subprocess.run([*CLI, "install", "cn", "--no-check", "--replace", "--prefix", str(prefix)],
                         capture_output=True, text=True, env=dict(env, JUPYTER_PATH=str(prefix / "share" / "jupyter")))
    assert res.returncode == 0 and res.stderr == "", res.stderr


def _spec_dir(where: str, name: str, prefix: Path) -> tuple[list[str], Path]:
    """(install arguments, resulting spec directory) for one place a spec can go."""
    if where == "system":
        from jupyter_core.paths import SYSTEM_JUPYTER_PATH

        return [], Path(SYSTEM_JUPYTER_PATH[0]) / "kernels" / name
    if where == "sys-prefix":
        return ["--sys-prefix"], Path(sys.prefix) / "share" / "jupyter" / "kernels" / name
    return ["--prefix", str(prefix)], prefix / "share" / "jupyter" / "kernels" / name


@pytest.mark.parametrize("where", ["system", "sys-prefix", "prefix"])
def test_spec_installed_by_root_is_seen_by_other_users(cluster, where):
    """The admin (root, umask 077) installs; the ordinary user's `jupyter kernelspec list` finds the spec."""
    name = f"rk-shared-{uuid.uuid4().hex[:12]}"
    prefix = Path("/tmp") / name   # readable by rkuser once install made it 0755
    args, spec_dir = _spec_dir(where, name, prefix)
    env = {k: v for k, v in os.environ.items() if k != "JUPYTER_PATH"}
    try:
        res = subprocess.run([*CLI, "install", name, *args, "--display-name", f"Shared {name}"],
                             capture_output=True, text=True, env=env, umask=0o077)
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip().endswith(f" in {spec_dir}")
        # Only --prefix (not on Jupyter's path) warns.
        assert ("JUPYTER_PATH=" in res.stderr) == (where == "prefix"), res.stderr
        assert _modes(spec_dir) == \
            {".": "0o755", **{p.name: "0o644" for p in spec_dir.iterdir()}}

        user_env = {"JUPYTER_PATH": str(prefix / "share" / "jupyter")} if where == "prefix" else {}
        listed = as_user(cluster["test_user"], str(Path(sys.executable).parent / "jupyter"), "kernelspec", "list",
                         "--json", env=user_env)
        assert listed.returncode == 0, listed.stderr
        specs = json.loads(listed.stdout)["kernelspecs"]
        assert name in specs, f"{cluster['test_user']} does not see {spec_dir}: {sorted(specs)}"
        assert specs[name]["resource_dir"] == str(spec_dir)
        assert specs[name]["spec"]["display_name"] == f"Shared {name}"   # kernel.json was readable
    finally:
        shutil.rmtree(prefix if where == "prefix" else spec_dir, ignore_errors=True)
