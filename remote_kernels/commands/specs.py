"""``remote-kernels list``, ``show`` and ``remove``: the installed compute-node kernelspecs."""

from __future__ import annotations

import json
import sys

from jupyter_client.kernelspec import KernelSpecManager
from traitlets import TraitError

from .. import script
from ..kernelspec import BadSpec, broken_specs, remote_spec, remote_specs, spec_config
from ..options import KernelOptions, option_names
from ..schedulers import get_scheduler
from . import CommandFailed, table

LIST_FIELDS = ("scheduler", "partition", "time", "cpus", "mem", "gpus")
PLACEHOLDER_SESSION = "SESSION"


def find_spec(name: str) -> dict:
    """kernel.json of compute-node kernelspec ``name``; CommandFailed naming what is wrong otherwise."""
    try:
        return remote_spec(name)
    except BadSpec as e:
        raise CommandFailed(e.args[0]) from None
    except KeyError as e:
        if name in KernelSpecManager().find_kernel_specs():
            raise CommandFailed(f"{name!r} is not a compute-node kernelspec; "
                                f"see `jupyter kernelspec list`") from None
        raise CommandFailed(e.args[0]) from None


def _show(value) -> str:
    if isinstance(value, (list, dict)):
        return json.dumps(value) if value else "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value) if value != "" else "-"


def list_specs(as_json: bool = False) -> int:
    """Print the compute-node kernelspecs: a table, or JSON."""
    defaults = {f: KernelOptions.class_traits()[f].default_value for f in LIST_FIELDS}
    rows = [{"name": name, "display_name": spec.get("display_name", ""),
             **{f: spec_config(spec).get(f, defaults[f]) for f in LIST_FIELDS}, "resource_dir": spec["resource_dir"]}
            for name, spec in remote_specs().items()]
    for why in broken_specs().values():
        print(f"remote-kernels list: skipped {why}", file=sys.stderr)
    if as_json:
        print(json.dumps(rows, indent=1))
    elif not rows:
        print("No compute-node kernelspecs installed; see `remote-kernels install --help`.")
    else:
        headers = ["name", "display name", *LIST_FIELDS]
        print(table(headers, [[r["name"], r["display_name"], *(_show(r[f] or "") for f in LIST_FIELDS)]
                              for r in rows]))
    return 0


def show(name: str) -> int:
    """Print the effective options of spec ``name`` (RK_* overrides applied) and its batch script."""
    from ..joblogs import job_log_dir

    spec = find_spec(name)
    config = spec_config(spec)
    try:
        opts = KernelOptions(**config)
    except TraitError as e:
        raise CommandFailed(f"kernelspec {name}: {e}") from None
    print(f"kernelspec {name} ({spec.get('display_name', '')}) in {spec['resource_dir']}\n")
    rows = []
    for option in option_names():
        if option in opts.from_environment:
            source = f"environment {opts.from_environment[option]}"
            if option in config:
                source += f" (spec: {_show(config[option])})"
        else:
            source = "spec" if option in config else "default"
        rows.append([option, _show(getattr(opts, option)), source])
    print(table(["option", "value", "from"], rows))
    try:
        scheduler = get_scheduler(opts.scheduler)
    except ValueError as e:
        raise CommandFailed(f"kernelspec {name}: {e}") from None
    res = opts.resources(job_name=f"rk-{name}"[:64], output=str(job_log_dir() / "%j.log"))
    text = script.render(scheduler, opts, res, session=PLACEHOLDER_SESSION)
    print(f"\nBatch script submitted at each start ({PLACEHOLDER_SESSION} stands for the session id). "
          "It never contains the kernel's key: that reaches the launcher over SSH once the job runs.\n")
    print(text, end="")
    return 0


def remove(name: str) -> int:
    """Delete compute-node kernelspec ``name`` (no prompt, like `jupyter kernelspec remove -f`)."""
    find_spec(name)
    try:
        path = KernelSpecManager().remove_kernel_spec(name)
    except OSError as e:
        raise CommandFailed(f"cannot remove kernelspec {name}: {e}") from None
    print(f"Removed kernelspec {name} from {path}")
    return 0
