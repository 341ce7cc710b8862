"""PBS Professional / OpenPBS: qsub (id on stdout), one ``qstat -f -F json -x IDS``, qdel.

``PBSFamily`` holds what PBS Pro and Torque (torque.py) share: the ``#PBS`` header,
qsub's output, qdel, and the meaning of a finished job's exit status.  qsub never gets
``-V``: the job then carries only PBS_O_* copies of a few submitter variables (HOME, PATH,
LANG...) and starts in the user's login shell on the node, not in the server's environment.
"""

from __future__ import annotations

import json
import re

from . import JobState, JobStatus, Resources
from .limits import NEVER
from ._common import (StatusOnly, directive_lines, first_host, hms, last_match, log_redirect,
                      megabytes, query, seconds)

# job_state letters (PBS Pro 2022 reference guide, "Job States").  F (finished, with -x) and
# X (finished subjob) are resolved from the exit status.
STATES = {
    "Q": JobState.QUEUED, "W": JobState.QUEUED, "T": JobState.QUEUED, "M": JobState.QUEUED,
    "H": JobState.HELD, "S": JobState.SUSPENDED, "U": JobState.SUSPENDED,
    # E (exiting) is not final: the exit status arrives with F.
    "R": JobState.RUNNING, "B": JobState.RUNNING, "E": JobState.RUNNING,
}
FINISHED = ("F", "X")
# Exit_status values PBS Pro sets when it kills a job (JOB_EXEC_KILL_*), and 256 + signal.
EXIT_STATES = {-29: JobState.TIMEOUT, -27: JobState.OOM, -26: JobState.OOM,
               256 + 15: JobState.CANCELLED, 256 + 9: JobState.CANCELLED}
# qsub prints the id alone: 123.server, 123[].server (array), 123 (no server suffix).
JOB_ID = re.compile(r"(?P<id>\d+(?:\[\d*\])?(?:\.[A-Za-z0-9_.-]+)?)")
# The scheduler's comment on a job it will never run ("Not Running: ..." is one that waits).
NEVER_RUN = "Can Never Run"
# qstat's complaint about an id it no longer knows (purged from history).
UNKNOWN = re.compile(r"Unknown Job Id", re.IGNORECASE)


def exit_state(code: int | None, exit_states: dict[int, JobState], comment: str = "") -> JobState:
    """A finished job's state from its exit status (None: never ran)."""
    if code is None:
        return JobState.CANCELLED if "delet" in comment.lower() else JobState.FAILED
    if code == 0:
        return JobState.COMPLETED
    return exit_states.get(code, JobState.FAILED)


def left(limit: str, used: str) -> str:
    """Wall time left, from the limit and the used time (HH:MM:SS each); '' if unknown."""
    try:
        return hms(max(0, seconds(limit) - seconds(used or "0:0")))
    except ValueError:
        return ""


class PBSFamily(StatusOnly):
    """qsub/qstat/qdel schedulers writing ``#PBS`` directives."""

    exit_states: dict[int, JobState] = EXIT_STATES

    def resource_lines(self, res: Resources) -> list[str]:
        raise NotImplementedError

    def header(self, res: Resources) -> list[str]:
        opts = [f"-N {res.job_name}"] if res.job_name else []
        opts += [f"-q {res.partition}"] if res.partition else []
        opts += [f"-A {res.account}"] if res.account else []
        opts += [f"-l walltime={hms(seconds(res.time))}"] if res.time else []
        opts += self.resource_lines(res)
        # Never rerun a kernel job; stdout/stderr go to the log file named after the job id
        # (qsub -o cannot), so PBS's own spool copy is discarded.
        opts += ["-r n", "-j oe", "-o /dev/null"]
        return directive_lines("#PBS", opts, res.directives) + log_redirect(res.output, "$PBS_JOBID")

    @staticmethod
    def parse_job_id(stdout: str) -> str:
        return last_match(stdout, JOB_ID, "qsub")

    async def submit(self, script: str) -> str:
        _, out, _ = await self.runner.run(["qsub"], stdin=script)
        return self.parse_job_id(out)

    async def status(self, job_ids: list[str]) -> dict[str, JobStatus]:
        return await query(self.runner, self.status_argv(job_ids), self.parse_status, job_ids, UNKNOWN)

    async def cancel(self, job_id: str) -> None:
        await self.runner.run(["qdel", job_id])


class PBSPro(PBSFamily):
    name = "pbs"

    def never(self, status: JobStatus) -> str | None:
        queued = status.state in (JobState.QUEUED, JobState.HELD)
        return NEVER if queued and status.reason.startswith(NEVER_RUN) else None

    def resource_lines(self, res: Resources) -> list[str]:
        chunk = [f"ncpus={res.cpus}"] if res.cpus else []
        chunk += [f"mem={megabytes(res.mem)}mb"] if res.mem else []
        chunk += [f"ngpus={res.gpus}"] if res.gpus else []
        return [f"-l select=1:{':'.join(chunk)}"] if chunk else []

    @staticmethod
    def status_argv(job_ids: list[str]) -> list[str]:
        return ["qstat", "-f", "-F", "json", "-x", *job_ids]

    @classmethod
    def parse_status(cls, stdout: str) -> dict[str, JobStatus]:
        """``qstat -f -F json -x`` output: {"Jobs": {id: {attribute: value}}}."""
        if not stdout.strip():
            return {}
        jobs = json.loads(stdout).get("Jobs", {})
        found = {}
        for job_id, job in jobs.items():
            native = job.get("job_state", "")
            comment = job.get("comment", "")
            if native in FINISHED:
                state = exit_state(job.get("Exit_status"), cls.exit_states, comment)
            else:
                state = STATES.get(native, JobState.UNKNOWN)
            limit = job.get("Resource_List", {}).get("walltime", "")
            used = job.get("resources_used", {}).get("walltime", "")
            estimated = job.get("estimated", {}).get("start_time")
            found[job_id] = JobStatus(
                state=state, native=native, reason="" if state is JobState.RUNNING else comment,
                node=first_host(job.get("exec_host", "")), start_time=job.get("stime") or estimated,
                time_left=left(limit, used) if state is JobState.RUNNING and limit else "")
        return found
