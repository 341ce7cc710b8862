"""The launch dialog's choice for one kernel: kept in its notebook's metadata, checked against
its spec's ``user_choices`` (choices.py) and applied to that kernel's options only.

The notebook keeps, per kernelspec name, the resources last chosen for it::

    "metadata": {"remote_kernels": {"resources": {"SPEC": {"time": "00:20:00", "cpus": 2}}}}

Under jupyter_server a kernel's environment has JPY_SESSION_NAME, the notebook's file path:
``apply_choice`` (the provisioner's pre_launch) reads the choice from that file, so it applies
however the kernel is started (the dialog, reopening the notebook, a kernel change).  Kernels
started for no notebook (argv mode, nbclient, scripts) get none.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

from .choices import Refused, resolve
from .errors import KernelStartError
from .options import KernelOptions

METADATA_KEY = "remote_kernels"


def stored_choice(notebook: dict, spec: str) -> Any:
    """The choice a notebook (its JSON) keeps for kernelspec ``spec``; None if it keeps none."""
    meta = notebook.get("metadata") if isinstance(notebook, dict) else None
    ours = meta.get(METADATA_KEY) if isinstance(meta, dict) else None
    resources = ours.get("resources") if isinstance(ours, dict) else None
    return resources.get(spec) if isinstance(resources, dict) else None


def read_notebook(path: str) -> dict:
    """The notebook file at ``path`` as JSON; {} when there is none or it is no JSON notebook
    (an unsaved or non-.ipynb document keeps no choice)."""
    if not path or not path.endswith(".ipynb"):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            found = json.load(f)
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def apply_choice(options: KernelOptions, spec: str, env: Mapping[str, str], base: dict | None = None) -> dict:
    """Set the resources the kernel's notebook chose on ``options`` (this kernel's provisioner),
    over ``base`` (the values before any choice; returned, for the next call: a restart).
    KernelStartError, before anything is submitted, for a choice outside the spec's bounds."""
    fields = ("partition", "time", "cpus", "mem", "gpus")
    base = base if base is not None else {f: getattr(options, f) for f in fields}
    notebook = env.get("JPY_SESSION_NAME", "")
    choice = stored_choice(read_notebook(notebook), spec)
    try:
        values = resolve(options.user_choices, choice)
    except Refused as e:
        raise KernelStartError(
            f"notebook {os.path.basename(notebook)}: the resources chosen for {spec} are refused: {e}; "
            f"choose again (Remote Kernels: Choose Resources) or delete metadata.{METADATA_KEY}.resources."
            f"{spec} from the notebook") from None
    for field in fields:
        setattr(options, field, values.get(field, base[field]))
    if values:
        options.log.info("remote kernel %s: resources chosen in %s: %s", spec, notebook,
                         " ".join(f"{k}={v}" for k, v in values.items()))
    return base
