"""PBS Professional / OpenPBS: qsub (id on stdout), one ``qstat -f -F json -x IDS``, qdel, qsig.

``PBSFamily`` holds what PBS Pro and Torque (torque.py) share: the ``#PBS`` header,
qsub's output, qdel, qsig (to the job's session leader: the launcher), and the meaning
of a finished job's exit status.  qsub never gets
``-V``: the job then carries only PBS_O_* copies of a few submitter variables (HOME, PATH,
LANG...) and starts in the user's login shell on the node, not in the server's environment.
"""

from __future__ import annotations

import re

from ._common import hms, host_list, json_doc, last_match, megabytes, seconds
from .base import Scheduler
from .limits import NEVER
from .model import JobState, JobStatus, Resources

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


def walltime(res: Resources) -> str:
    return f"-l walltime={hms(seconds(res.time))}"


# The header rows PBS Pro and Torque share; each adds its own for CPUs, memory and GPUs.
PBS_OPTIONS = (("job_name", "-N {}"), ("partition", "-q {}"), ("account", "-A {}"), ("time", walltime))


class PBSFamily(Scheduler):
    """qsub/qstat/qdel/qsig schedulers writing ``#PBS`` directives; subclasses add their
    resource_options (PBS_OPTIONS and more), status_argv and parse_status."""

    exit_states: dict[int, JobState] = EXIT_STATES
    prefix = "#PBS"
    # Never rerun a kernel job; stdout/stderr go to the log file named after the job id
    # (qsub -o cannot), so PBS's own spool copy is discarded.
    fixed_options = ("-r n", "-j oe", "-o /dev/null")
    log_variable = "$PBS_JOBID"
    submit_argv = ("qsub",)
    gone = UNKNOWN

    @staticmethod
    def parse_job_id(stdout: str) -> str:
        return last_match(stdout, JOB_ID, "qsub")

    def cancel_argv(self, job_id: str) -> list[str]:
        return ["qdel", job_id]

    def signal_argv(self, job_id: str, name: str) -> list[str]:
        return ["qsig", "-s", f"SIG{name}", job_id]


def select(res: Resources) -> list[str]:
    """PBS Pro's one chunk: ``-l select=1:ncpus=N:mem=Mmb:ngpus=G`` (what is set of it)."""
    chunk = [f"ncpus={res.cpus}"] if res.cpus else []
    chunk += [f"mem={megabytes(res.mem)}mb"] if res.mem else []
    chunk += [f"ngpus={res.gpus}"] if res.gpus else []
    return [f"-l select=1:{':'.join(chunk)}"] if chunk else []


class PBSPro(PBSFamily):
    name = "pbs"
    resource_options = PBS_OPTIONS + (("", select),)

    def never(self, status: JobStatus) -> str | None:
        queued = status.state in (JobState.QUEUED, JobState.HELD)
        return NEVER if queued and status.reason.startswith(NEVER_RUN) else None

    def status_argv(self, job_ids: list[str]) -> list[str]:
        return ["qstat", "-f", "-F", "json", "-x", *job_ids]

    @classmethod
    def parse_status(cls, stdout: str) -> dict[str, JobStatus]:
        """``qstat -f -F json -x`` output: {"Jobs": {id: {attribute: value}}}."""
        found = {}
        for job_id, job in json_doc(stdout, {}).get("Jobs", {}).items():
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
                nodes=host_list(job.get("exec_host", "")), start_time=job.get("stime") or estimated,
                time_left=left(limit, used) if state is JobState.RUNNING and limit else "")
        return found
