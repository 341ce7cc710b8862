"""Write compute-node kernelspecs (kernel.json + logos), like ``python -m ipykernel install``."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from jupyter_client.kernelspec import KernelSpecManager

PROVISIONER = "remote-kernels-provisioner"


def kernel_json(name: str, display_name: str, config: dict, env: dict | None = None) -> dict:
    """kernel.json for both ways in: the provisioner stanza and the argv-mode command.

    ``env``: the kernelspec's own env stanza (sent to the kernel over the launcher's control
    channel, never written into the batch script)."""
    spec = {
        "argv": [sys.executable, "-m", "remote_kernels", "run", "--kernel", name, "-f", "{connection_file}"],
        "display_name": display_name,
        "language": "python",
        "interrupt_mode": "message",
        "metadata": {
            "debugger": False,
            # The kernel serves the Curve keys jupyter_client provisions (transport_encryption).
            "supported_encryption": ["curve"],
            "kernel_provisioner": {"provisioner_name": PROVISIONER, "config": config},
        },
    }
    if env:
        spec["env"] = dict(env)
    return spec


def _logos() -> list[Path]:
    try:
        import ipykernel
    except ImportError:
        return []
    res = Path(ipykernel.__file__).parent / "resources"
    return sorted(p for p in res.glob("logo-*") if p.is_file())


def install(name: str, display_name: str, config: dict, *, env: dict | None = None, user: bool = False,
            prefix: str | None = None, replace: bool = False) -> str:
    """Install the spec; return its directory.  FileExistsError if it exists and not replace.

    The spec's directory, and any directory created to hold it, is made 0755 and its files
    0644 whatever the umask, so that every user's Jupyter can read a shared spec.
    """
    ksm = KernelSpecManager()
    dest = Path(ksm._get_destination_dir(name, user=user, prefix=prefix))
    if dest.exists() and not replace:
        raise FileExistsError(f"kernelspec {name!r} already exists at {dest}; use --replace to overwrite it")
    created = _missing_parents(dest)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "kernel.json").write_text(json.dumps(kernel_json(name, display_name, config, env), indent=1) + "\n")
        for logo in _logos():
            shutil.copy(logo, tmp)
        installed = ksm.install_kernel_spec(tmp, name, user=user, prefix=prefix)
    _make_readable(Path(installed), created)
    return installed


def _missing_parents(path: Path) -> list[Path]:
    """The ancestors of ``path`` that do not exist yet, nearest first."""
    missing = []
    for parent in path.parents:
        if parent.exists():
            break
        missing.append(parent)
    return missing


def _make_readable(spec_dir: Path, created: list[Path]) -> None:
    """Directories 0755 (the spec's, its subdirectories and ``created``), files 0644."""
    for parent in created:
        parent.chmod(0o755)
    for root, _dirs, files in os.walk(spec_dir):
        os.chmod(root, 0o755)
        for f in files:
            os.chmod(os.path.join(root, f), 0o644)


def on_search_path(spec_dir: str) -> bool:
    """Whether Jupyter (with this environment's JUPYTER_PATH) looks for kernelspecs where ``spec_dir`` is."""
    where = os.path.realpath(os.path.dirname(spec_dir))
    return any(os.path.realpath(d) == where for d in KernelSpecManager().kernel_dirs)


class BadSpec(KeyError):
    """A kernelspec exists by that name but its kernel.json is unusable; args[0] says why and what to do."""


def _read_specs() -> tuple[dict[str, dict], dict[str, str]]:
    """(name -> kernel.json of each usable compute-node spec, name -> why each unusable spec is so)."""
    found, broken = {}, {}
    for name, path in sorted(KernelSpecManager().find_kernel_specs().items()):
        file = Path(path) / "kernel.json"
        fix = (f"fix it, reinstall it (`remote-kernels install {name} --replace ...`) "
               f"or remove it (`jupyter kernelspec remove {name}`)")
        try:
            spec = json.loads(file.read_text())
        except OSError as e:
            broken[name] = f"kernelspec {name!r}: cannot read {file}: {e.strerror}"
            continue
        except ValueError as e:
            broken[name] = f"kernelspec {name!r}: {file} is not valid JSON ({e}); {fix}"
            continue
        prov = spec.get("metadata", {}).get("kernel_provisioner", {}) if isinstance(spec, dict) else {}
        if not isinstance(prov, dict) or prov.get("provisioner_name") != PROVISIONER:
            continue
        if not isinstance(prov.get("config", {}), dict):
            broken[name] = f"kernelspec {name!r}: metadata.kernel_provisioner.config in {file} is not a mapping; {fix}"
            continue
        found[name] = dict(spec, resource_dir=path)
    return found, broken


def remote_specs() -> dict[str, dict]:
    """name -> kernel.json of every installed kernelspec that uses our provisioner (usable ones)."""
    return _read_specs()[0]


def broken_specs() -> dict[str, str]:
    """name -> one line saying why that installed kernelspec's kernel.json cannot be used."""
    return _read_specs()[1]


def remote_spec(name: str) -> dict:
    """kernel.json (plus ``resource_dir``) of compute-node kernelspec ``name``.

    BadSpec if its kernel.json is unusable, KeyError if there is no such compute-node spec."""
    specs, broken = _read_specs()
    if name in broken:
        raise BadSpec(broken[name])
    if name not in specs:
        raise KeyError(f"no compute-node kernelspec named {name!r}; see `remote-kernels list`")
    return specs[name]


def spec_config(spec: dict) -> dict:
    """The provisioner config of a compute-node kernel.json (as remote_spec returns it)."""
    return spec["metadata"]["kernel_provisioner"].get("config", {})
