"""``remote-kernels install``: write a compute-node kernelspec, optionally starting from one."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from traitlets import TraitError

from ..choices import default_outside, largest_choices
from ..examples import shipped_examples
from ..job import interactive
from ..kernelspec import PROVISIONER, install, on_search_path
from ..options import KernelOptions
from ..schedulers import get_scheduler
from . import CommandFailed
from .sitecheck import site_problem


def resolve_from(value: str) -> Path:
    """``--from``'s directory: an existing directory, else the shipped example of that name."""
    if Path(value).is_dir():
        return Path(value)
    examples = shipped_examples()
    if value in examples:
        return examples[value]
    raise CommandFailed(f"--from {value}: no such directory nor shipped example; "
                        f"the shipped examples are {', '.join(examples)}")


def load_spec_dir(path: str | Path) -> tuple[dict, str, dict]:
    """(provisioner config, display name, env stanza) of the compute-node kernelspec in directory ``path``."""
    file = Path(path) / "kernel.json"
    try:
        spec = json.loads(file.read_text())
    except OSError as e:
        raise CommandFailed(f"--from {path}: cannot read {file}: {e.strerror}") from None
    except ValueError as e:
        raise CommandFailed(f"--from {path}: {file} is not valid JSON ({e})") from None
    prov = spec.get("metadata", {}).get("kernel_provisioner", {}) if isinstance(spec, dict) else {}
    if prov.get("provisioner_name") != PROVISIONER:
        raise CommandFailed(f"--from {path}: not a compute-node kernelspec (no {PROVISIONER} in {file})")
    env = spec.get("env") or {}
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise CommandFailed(f"--from {path}: \"env\" in {file} must map names to strings")
    return dict(prov.get("config", {})), spec.get("display_name", ""), dict(env)


def install_spec(name: str, given: dict, *, from_dir: str | None = None, display_name: str | None = None,
                 user: bool = False, prefix: str | None = None, replace: bool = False, check: bool = True) -> str:
    """Validate, check against the site (unless not ``check``: sitecheck.py), then install;
    ``given`` (options set on the command line) overrides ``from_dir``'s config; ``from_dir``'s
    env stanza is kept."""
    config, from_display, env = load_spec_dir(resolve_from(from_dir)) if from_dir else ({}, "", {})
    config.update(given)
    config.setdefault("scheduler", "slurm")
    config.setdefault("python", sys.executable)
    try:
        opts = KernelOptions(environ={}, **config)   # the spec is validated as written, without RK_* overrides
        interactive(opts, get_scheduler(config["scheduler"]))   # ValueError for a dispatch it cannot have
    except (TraitError, ValueError) as e:
        raise CommandFailed(str(e)) from None
    if problem := default_outside(opts.user_choices, {f: getattr(opts, f) for f in opts.user_choices}):
        raise CommandFailed(f"{problem}; widen the bounds (--user-choice) or change the spec's value")
    if opts.unsupported():
        raise CommandFailed(opts.unsupported())
    if check:
        problem, note = asyncio.run(site_problem(opts, largest_choices(opts.user_choices)))
        if problem:
            raise CommandFailed(f"{problem} (--no-check installs it anyway)")
        if note:
            print(f"remote-kernels install: note: {note}", file=sys.stderr)
    config = {k: v for k, v in config.items() if v not in ("", 0, [], {})}   # unset: the defaults apply
    display = display_name or from_display or f"Python 3 ({name})"
    try:
        dest = install(name, display, config, env=env, user=user, prefix=prefix, replace=replace)
    except (ValueError, OSError) as e:   # existing spec, invalid name, no write access
        raise CommandFailed(str(e)) from None
    print(f"Installed kernelspec {name} ({display}) in {dest}")
    if not on_search_path(dest):
        data_dir = os.path.dirname(os.path.dirname(dest))
        print(f"remote-kernels install: warning: Jupyter does not look in {os.path.dirname(dest)}; "
              f"set JUPYTER_PATH={data_dir} for the servers that should find {name}", file=sys.stderr)
    return dest
