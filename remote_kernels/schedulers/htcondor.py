"""HTCondor: ``condor_submit -terse -`` (description on stdin), ``condor_q -json`` for the
queue and ``condor_history -json`` for jobs that left it, ``condor_rm``.

HTCondor runs an executable, not a script with directives.  The submit description is
made from the Resources (``commands``): the header shows it as ``#HTCONDOR key = value``
lines, and submitting is two commands: install the script next to the job's log
(``initialdir``), then ``condor_submit`` that description plus ``executable`` and
``queue``.  Job ids are ``Cluster.Proc``.  HTCondor has no command that signals a running
job (``condor_vacate_job`` would put it back in the queue).
"""

from __future__ import annotations

import datetime
import hashlib
import posixpath
import re

from ._common import SUBMITTER_ENV, host_list, json_doc, last_match, log_redirect, megabytes, options, seconds
from .base import Command, Scheduler
from .model import JobState, JobStatus, Resources

PREFIX = "#HTCONDOR "
# JobStatus codes (HTCondor manual, "Job ClassAd Attributes").
STATES = {1: JobState.QUEUED, 2: JobState.RUNNING, 3: JobState.CANCELLED, 4: JobState.COMPLETED,
          5: JobState.HELD, 6: JobState.RUNNING, 7: JobState.SUSPENDED}
NATIVE = {1: "Idle", 2: "Running", 3: "Removed", 4: "Completed", 5: "Held", 6: "Transferring Output",
          7: "Suspended"}
ATTRIBUTES = ("ClusterId,ProcId,JobStatus,RemoteHost,LastRemoteHost,HoldReason,RemoveReason,ExitCode,"
              "JobCurrentStartDate,LastVacateTime")
# condor_submit -terse: "FIRST - LAST" job ids of the cluster it made.
JOB_ID = re.compile(r"(?P<id>\d+\.\d+) - \d+\.\d+")
# The wall-time limit: periodic_remove with this phrase in RemoveReason means "timed out".
TIME_LIMIT = "PeriodicRemove"
# The job gets none of condor_submit's environment (getenv, false by default, said here so no
# site default changes it), and none of its own either: the variables below only, SUBMITTER_ENV's
# values taken by condor_submit ($ENV).  RK_JOB_ID names the log, which the script writes itself
# (one file for stdout and stderr, named after the id).
ENVIRONMENT = ["RK_JOB_ID=$(ClusterId).$(ProcId)", *(f"{name}='$ENV({name})'" for name in SUBMITTER_ENV)]
FIXED = ("universe = vanilla", "getenv = false", f'environment = "{" ".join(ENVIRONMENT)}"')
RESOURCE_COMMANDS = (
    ("job_name", "batch_name = {}"), ("account", "accounting_group = {}"), ("cpus", "request_cpus = {}"),
    ("mem", lambda res: f"request_memory = {megabytes(res.mem)}"), ("gpus", "request_gpus = {}"),
    ("time", lambda res: f"periodic_remove = JobStatus == 2 && time() - EnteredCurrentStatus > {seconds(res.time)}"),
    ("output", lambda res: f"initialdir = {log_dir(res)}"))


def log_dir(res: Resources) -> str:
    """The job's log directory: initialdir, where the script is installed too."""
    return posixpath.dirname(res.output) or "."


def _start(epoch) -> str | None:
    return datetime.datetime.fromtimestamp(int(epoch)).isoformat() if isinstance(epoch, int) and epoch > 0 else None


class HTCondor(Scheduler):
    name = "htcondor"
    no_signal = "HTCondor has no command to signal a running job (condor_vacate_job would requeue it)"

    @staticmethod
    def commands(res: Resources) -> list[str]:
        """The submit-description commands for res (directives are commands, written bare)."""
        extra = [d[len(PREFIX):] if d.startswith(PREFIX) else d for d in res.directives]
        return [*FIXED, *options(res, RESOURCE_COMMANDS), *extra]

    def header(self, res: Resources) -> list[str]:
        return [PREFIX + c for c in self.commands(res)] + log_redirect(res.output, "$RK_JOB_ID")

    @classmethod
    def description(cls, res: Resources, executable: str) -> str:
        """The submit description: the commands, the executable, queue."""
        return "\n".join([*cls.commands(res), f"executable = {executable}", "queue"]) + "\n"

    @staticmethod
    def script_path(text: str, res: Resources) -> str:
        """Where the script is installed: in initialdir (the log directory), named by its hash."""
        return posixpath.join(log_dir(res), f"rk-{hashlib.sha256(text.encode()).hexdigest()[:16]}.sh")

    def submit_commands(self, text: str, res: Resources) -> list[Command]:
        path = self.script_path(text, res)
        return [Command(["install", "-m", "700", "/dev/stdin", path], text),
                Command(["condor_submit", "-terse", "-"], self.description(res, path))]

    @staticmethod
    def parse_job_id(stdout: str) -> str:
        return last_match(stdout, JOB_ID, "condor_submit -terse")

    def status_argv(self, job_ids: list[str]) -> list[str]:
        return ["condor_q", "-json", "-attributes", ATTRIBUTES, *job_ids]

    def history_argv(self, job_ids: list[str]) -> list[str]:
        return ["condor_history", "-json", "-attributes", ATTRIBUTES, "-limit", str(len(job_ids)), *job_ids]

    @staticmethod
    def parse_status(stdout: str) -> dict[str, JobStatus]:
        """``condor_q -json`` / ``condor_history -json``: a JSON list of job ads (nothing if none)."""
        found = {}
        for ad in json_doc(stdout, []):
            code = ad.get("JobStatus")
            state = STATES.get(code, JobState.UNKNOWN)
            if state is JobState.CANCELLED and TIME_LIMIT in ad.get("RemoveReason", ""):
                state = JobState.TIMEOUT
            if state is JobState.COMPLETED and ad.get("ExitCode") not in (0, None):
                state = JobState.FAILED
            reason = ad.get("HoldReason", "") if state is JobState.HELD else ad.get("RemoveReason", "")
            host = ad.get("RemoteHost") or (ad.get("LastRemoteHost") if state.finished else None)
            found[f"{ad['ClusterId']}.{ad['ProcId']}"] = JobStatus(
                state=state, native=NATIVE.get(code, str(code)), reason=reason,
                nodes=host_list(host or ""), start_time=_start(ad.get("JobCurrentStartDate")))
        return found

    def cancel_argv(self, job_id: str) -> list[str]:
        return ["condor_rm", job_id]
