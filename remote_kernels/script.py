"""Render the batch script that runs the launcher on a compute node.

The script carries resources, environment and set-up lines, and the launcher
itself (fed to Python on stdin), so nothing of remote-kernels must be installed
on the node.  It never contains the kernel's key.
"""

from __future__ import annotations

import shlex
from importlib import resources as ilr

from .options import KernelOptions
from .schedulers import Resources, Scheduler

# Who the user is and where home is, from the node's user database where the scheduler set
# none (HTCondor and Flux start jobs with no environment; elsewhere this changes nothing).
IDENTITY = ('export USER="${USER:-$(id -un)}" LOGNAME="${LOGNAME:-$(id -un)}" '
            'HOME="${HOME:-$(getent passwd "$(id -un)" | cut -d: -f6)}"')
EXIT_SETUP_FAILED = 97
EXIT_NO_PYTHON = 98
LAUNCHER_EOF = "RK_LAUNCHER_EOF"


# The line of launcher.py that launcher_source() fills with kernel_magic.py's source.
MAGIC_SLOT = "KERNEL_MAGIC = None\n"


def launcher_source() -> str:
    """launcher.py as the node runs it, carrying the %remote_kernel magic (kernel_magic.py)."""
    files = ilr.files("remote_kernels")
    src = files.joinpath("launcher.py").read_text()
    if src.count(MAGIC_SLOT) != 1:
        raise RuntimeError("launcher.py has no single KERNEL_MAGIC slot")
    return src.replace(MAGIC_SLOT, f"KERNEL_MAGIC = {files.joinpath('kernel_magic.py').read_text()!r}\n")


def render(scheduler: Scheduler, opts: KernelOptions, res: Resources, *, session: str,
           interactive: bool = False) -> str:
    """The complete job script for one kernel session: ``res`` (``opts.resources(...)``, the
    same that is then given to ``scheduler.submit``) as the header, then opts' environment,
    set-up lines and the launcher.

    ``interactive``: for ``scheduler.dispatch`` (the resources are on its command line): no
    header, and the script ends the job (``scheduler.end_line``) when it exits, whatever
    became of the command that started it."""
    q = shlex.quote
    lines = ["#!/bin/bash", *([] if interactive else scheduler.header(res))]
    lines.append(f"# remote-kernels session {session}: the launcher below starts the kernel")
    if interactive:
        lines.append(f"trap {q(scheduler.end_line)} EXIT")
    lines.append(IDENTITY)
    # The pre-end signal (SLURM --signal=B:USR1@N) ignored until the launcher, which inherits this
    # across exec, sets its own handler: arriving early, it must not end the job.
    lines.append("trap '' USR1")
    lines += [f"export {k}={q(v)}" for k, v in sorted({**scheduler.script_env, **opts.env}.items())]
    for line in opts.setup:
        lines.append(f'{line} || {{ rc=$?; echo "remote-kernels: set-up line failed on $(hostname) '
                     f'(exit $rc):" {q(line)} >&2; exit {EXIT_SETUP_FAILED}; }}')
    py = q(opts.python)
    lines.append(
        f"command -v {py} >/dev/null 2>&1 || {{ echo \"remote-kernels: Python {opts.python} not found on "
        f"$(hostname); set the kernel's python to a path that exists on the compute nodes\" >&2; "
        f"exit {EXIT_NO_PYTHON}; }}")
    shared = f" {opts.linger:g} {opts.max_kernels}" if opts.shared else ""   # the launcher's LINGER MAX
    if opts.direct:   # the key directory: its name only, the keys stay in the 0600 files in it
        from .direct import key_dir
        shared += f" --direct {q(str(key_dir(session)))}"
    lines.append(f"{'' if interactive else 'exec '}{py} - {q(session)} {opts.grace:g} {q(opts.runtime_base)} {opts.contact_timeout:g}"
                 f"{shared} <<'{LAUNCHER_EOF}'")
    src = launcher_source()
    if LAUNCHER_EOF in src.splitlines():
        raise RuntimeError("launcher source contains the heredoc terminator")
    return "\n".join(lines) + "\n" + src.rstrip("\n") + f"\n{LAUNCHER_EOF}\n"
