"""The launch dialog's side of the server: a spec's choosable resources, and checking a choice.

The dialog asks before it stores a choice in the notebook, so the user sees a refusal at once;
the provisioner checks the stored choice again at each start (chosen.py), so a notebook
edited by hand gains nothing.
"""

from __future__ import annotations

from jupyter_client.utils import ensure_async
from traitlets import TraitError

from .. import choices
from ..kernelspec import PROVISIONER
from ..options import KernelOptions
from .overview import NotFound, Refused


async def spec_options(kernel_spec_manager, name: str) -> KernelOptions:
    """The options of compute-node kernelspec ``name`` as a start would see them (RK_*
    overrides of this server's environment included).  NotFound; Refused for a broken spec."""
    try:
        spec = await ensure_async(kernel_spec_manager.get_kernel_spec(name))
    except Exception:   # jupyter_client raises NoSuchKernel (a KeyError) or others of its managers
        raise NotFound(f"no kernelspec {name!r}") from None
    prov = (spec.metadata or {}).get("kernel_provisioner", {})
    if prov.get("provisioner_name") != PROVISIONER:
        raise NotFound(f"kernelspec {name!r} is not a compute-node kernelspec")
    try:
        return KernelOptions(**prov.get("config", {}))
    except TraitError as e:
        raise Refused(f"kernelspec {name!r}: {e}") from None


async def choosable(kernel_spec_manager, name: str) -> dict:
    """{"spec", "choices": the spec's user_choices, "defaults": its own value of each choosable
    resource ("" or 0: the scheduler's default)}."""
    opts = await spec_options(kernel_spec_manager, name)
    return {"spec": name, "choices": opts.user_choices,
            "defaults": {f: getattr(opts, f) for f in choices.FIELDS}}


async def check(kernel_spec_manager, name: str, resources) -> dict:
    """The option values ``resources`` (a choice) gives a kernel of ``name``; Refused naming the bound."""
    opts = await spec_options(kernel_spec_manager, name)
    try:
        return choices.resolve(opts.user_choices, resources)
    except choices.Refused as e:
        raise Refused(str(e)) from None
