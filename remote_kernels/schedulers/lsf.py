"""IBM Spectrum LSF: ``bsub -env none -L /bin/bash`` (script on stdin), one ``bjobs -json -o FIELDS IDS``,
bkill (``bkill -s SIG`` to signal)."""

from __future__ import annotations

import re

from ._common import host_list, json_doc, last_match, megabytes, output_path, seconds
from .base import Scheduler
from .model import JobState, JobStatus, Resources

# bjobs STAT values (LSF 10.1 "job states").  EXIT is resolved from the exit reason.
STATES = {
    "PEND": JobState.QUEUED, "WAIT": JobState.QUEUED, "PROV": JobState.QUEUED,
    "PSUSP": JobState.HELD, "RUN": JobState.RUNNING,
    "USUSP": JobState.SUSPENDED, "SSUSP": JobState.SUSPENDED,
    "DONE": JobState.COMPLETED, "EXIT": JobState.FAILED, "UNKWN": JobState.UNKNOWN, "ZOMBI": JobState.UNKNOWN,
}
# EXIT_REASON prefixes (LSF's TERM_* termination reasons) that say more than "failed".
EXIT_REASONS = {
    "TERM_OWNER": JobState.CANCELLED, "TERM_ADMIN": JobState.CANCELLED, "TERM_FORCE_OWNER": JobState.CANCELLED,
    "TERM_FORCE_ADMIN": JobState.CANCELLED, "TERM_RUNLIMIT": JobState.TIMEOUT, "TERM_DEADLINE": JobState.TIMEOUT,
    "TERM_MEMLIMIT": JobState.OOM, "TERM_SWAP": JobState.OOM, "TERM_PREEMPT": JobState.PREEMPTED,
    "TERM_HOST_UNREACH": JobState.NODE_FAIL,
}
FIELDS = "jobid stat exec_host pend_reason exit_reason start_time time_left"
# "Job <123> is submitted to queue <normal>." / "... to default queue <normal>."
JOB_ID = re.compile(r"Job <(?P<id>\d+)> is submitted to (?:default )?queue <[^>]*>\.?")
NOT_FOUND = re.compile(r"Job <[^>]+> is not found")
# bsub's default is -env all (the server's whole environment).  -env none submits none of it;
# -L initialises the job's environment as a login on the execution host does (profile, PATH, modules).
SUBMIT = ["bsub", "-env", "none", "-L", "/bin/bash"]


def _value(text: str) -> str:
    return "" if text in ("-", "") else text


def run_limit(res: Resources) -> str:
    """-W [hours:]minutes, rounded up."""
    minutes = -(-seconds(res.time) // 60)
    return f"-W {minutes // 60}:{minutes % 60:02d}"


def memory(res: Resources) -> list[str]:
    mb = megabytes(res.mem)
    return [f"-M {mb}MB", f'-R "rusage[mem={mb}MB]"']


class LSF(Scheduler):
    name = "lsf"
    prefix = "#BSUB"
    fixed_options = ("-rn",)   # never rerun a kernel job
    resource_options = (
        ("job_name", "-J {}"), ("partition", "-q {}"), ("account", "-P {}"), ("time", run_limit),
        ("cpus", lambda res: [f"-n {res.cpus}", '-R "span[hosts=1]"']), ("mem", memory), ("gpus", '-gpu "num={}"'),
        # -o without -e: stderr goes to the same file.
        ("output", lambda res: f"-o {output_path(res.output, '%J')}"))
    submit_argv = SUBMIT
    gone = NOT_FOUND

    @staticmethod
    def parse_job_id(stdout: str) -> str:
        return last_match(stdout, JOB_ID, "bsub")

    def status_argv(self, job_ids: list[str]) -> list[str]:
        return ["bjobs", "-json", "-o", FIELDS, *job_ids]

    @staticmethod
    def parse_status(stdout: str) -> dict[str, JobStatus]:
        """``bjobs -json -o FIELDS``: {"RECORDS": [{"JOBID", "STAT", ...} or {"ERROR": ...}]}."""
        found = {}
        for rec in json_doc(stdout, {}).get("RECORDS", []):
            if rec.get("ERROR") or not rec.get("JOBID"):
                continue   # "Job <ID> is not found": gone
            native = rec.get("STAT", "")
            state = STATES.get(native, JobState.UNKNOWN)
            exit_reason = _value(rec.get("EXIT_REASON", ""))
            if native == "EXIT":
                state = EXIT_REASONS.get(exit_reason.split(":")[0].strip(), JobState.FAILED)
            reason = _value(rec.get("PEND_REASON", "")).rstrip(";") if state in (JobState.QUEUED, JobState.HELD) \
                else exit_reason
            found[rec["JOBID"]] = JobStatus(
                state=state, native=native, reason=reason, nodes=host_list(rec.get("EXEC_HOST", "")),
                start_time=_value(rec.get("START_TIME", "")) or None,
                time_left=_value(rec.get("TIME_LEFT", "")).split(" ")[0] if state is JobState.RUNNING else "")
        return found

    def cancel_argv(self, job_id: str) -> list[str]:
        return ["bkill", job_id]

    def signal_argv(self, job_id: str, name: str) -> list[str]:
        return ["bkill", "-s", name, job_id]
