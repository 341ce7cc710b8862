"""The scheduler layer: one base that runs every command, one module of data and parsers per scheduler.

An adapter turns a structured request (``Resources``) into job-script header lines,
submits a script (returning the job id), asks about many jobs in one command, and
cancels or signals a job; every adapter reports states from the one enum ``JobState``.
The I/O is all in ``base.Scheduler``; see docs/schedulers.md, "The adapter interface".

No job inherits the submitting process's environment (the Jupyter server's, with its
secrets): each adapter submits so that the job starts from the environment its scheduler
gives a job of its own on the node (docs/schedulers.md, "The job's environment").
"""

from __future__ import annotations

from ..runner import CommandRunner
from .base import Command, Scheduler, UnreadableOutput
from .model import JobState, JobStatus, Resources

__all__ = ["Command", "JobState", "JobStatus", "Resources", "Scheduler", "UnreadableOutput", "get_scheduler"]


def get_scheduler(name: str, runner: CommandRunner | None = None) -> Scheduler:
    """The adapter called ``name``; ValueError naming the known ones otherwise."""
    from .flux import Flux
    from .htcondor import HTCondor
    from .lsf import LSF
    from .pbs import PBSPro
    from .sge import SGE
    from .slurm import Slurm
    from .ssh import SSH
    from .torque import Torque

    adapters = {a.name: a for a in (Slurm, PBSPro, Torque, LSF, HTCondor, Flux, SGE, SSH)}
    try:
        return adapters[name](runner)
    except KeyError:
        raise ValueError(f"unknown scheduler {name!r}; known: {', '.join(sorted(adapters))}") from None
