"""Grid Engine (SGE, Son of Grid Engine, Open Cluster Scheduler): ``qsub -terse``, one
``qstat -xml`` (all of the user's jobs; finished jobs leave it), qdel.  qsub never gets ``-V``:
the job has the execution daemon's environment, SGE's variables and SGE_O_* copies of a few
submitter variables, not the server's environment.  Grid Engine has no command that sends a
job a signal of one's choosing (``qmod -s``/``-us`` suspend and resume, ``qdel`` ends it)."""

from __future__ import annotations

import re

from ._common import first_host, hms, last_match, megabytes, output_path, seconds, xml_root
from .base import Scheduler
from .limits import NEVER as NEVER_STARTS, SiteFacts
from .model import JobState, JobStatus, Resources

# State letters combine (qstat(1)): d(eletion) E(rror) h(old) r(unning) R(estarted)
# s/S/T (suspended by user/subordination/threshold) t(ransferring) w(aiting) q(ueued).
# The first rule whose letters appear wins.
STATE_RULES = [
    ("E", JobState.HELD, "error state; `qstat -j ID` says why"),
    ("h", JobState.HELD, "on hold"),
    ("sST", JobState.SUSPENDED, ""),
    ("rt", JobState.RUNNING, ""),       # dr: still running while being deleted
    ("d", JobState.CANCELLED, "deleted"),
    ("qw", JobState.QUEUED, ""),
]
# qsub -terse prints the id alone; "123.1-10:1" for an array job.
JOB_ID = re.compile(r"(?P<id>\d+)(?:\.\d+-\d+:\d+)?")
# qstat -j's "error reason    1:  <why>" lines of a job in error state.
ERROR_REASON = re.compile(r"^error reason\s+\d+:\s*(.+)$", re.MULTILINE)
# The parallel environment kernels with several CPUs ask for (a site's own name may differ:
# use a directive, e.g. "-pe threads 4", and leave cpus unset).
PE = "smp"


def sge_state(letters: str) -> tuple[JobState, str]:
    for chars, state, reason in STATE_RULES:
        if any(c in letters for c in chars):
            return state, reason
    return JobState.UNKNOWN, ""


class SGE(Scheduler):
    name = "sge"
    prefix = "#$"
    fixed_options = ("-S /bin/bash", "-r n", "-j y")
    resource_options = (
        ("job_name", "-N {}"), ("partition", "-q {}"), ("account", "-A {}"),
        ("time", lambda res: f"-l h_rt={hms(seconds(res.time))}"), ("cpus", f"-pe {PE} {{}}"),
        # h_vmem is per slot: the kernel's memory divided among its CPUs.
        ("mem", lambda res: f"-l h_vmem={max(1, megabytes(res.mem) // max(1, res.cpus))}M"),
        ("gpus", "-l gpu={}"), ("output", lambda res: f"-o {output_path(res.output, '$JOB_ID')}"))
    submit_argv = ("qsub", "-terse")
    # gone: none.  qstat -xml lists what exists; any stderr line is a failure.
    no_signal = "Grid Engine has no command to send a job a signal (qmod suspends, qdel ends it)"

    @staticmethod
    def parse_job_id(stdout: str) -> str:
        return last_match(stdout, JOB_ID, "qsub -terse")

    def status_argv(self, job_ids: list[str]) -> list[str]:
        return ["qstat", "-xml"]

    @staticmethod
    def parse_status(stdout: str) -> dict[str, JobStatus]:
        """``qstat -xml``: <job_list> elements under queue_info (running) and job_info (pending)."""
        found = {}
        for job in xml_root(stdout).iter("job_list"):
            letters = (job.findtext("state") or "").strip()
            state, reason = sge_state(letters)
            found[(job.findtext("JB_job_number") or "").strip()] = JobStatus(
                state=state, native=letters, reason=reason, node=first_host(job.findtext("queue_name") or ""),
                start_time=job.findtext("JAT_start_time") or None)
        return found

    def cancel_argv(self, job_id: str) -> list[str]:
        return ["qdel", job_id]

    def never(self, status: JobStatus) -> str | None:
        """A job in error state (E) stays there until someone clears it (qmod -cj): it never starts."""
        return NEVER_STARTS if "E" in status.native and not status.state.finished else None

    async def site_facts(self, job_id: str | None, kind: str) -> SiteFacts:
        if not job_id:
            return SiteFacts()
        code, out, _ = await self._run(["qstat", "-j", job_id], check=False)
        return SiteFacts(detail=self.parse_error_reason(out) if code == 0 else "")

    @staticmethod
    def parse_error_reason(stdout: str) -> str:
        """The "error reason" of ``qstat -j ID`` (why the job went to error state), on one line."""
        reasons = [m.group(1).strip() for m in ERROR_REASON.finditer(stdout)]
        return " | ".join(reasons)
