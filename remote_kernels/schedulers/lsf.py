"""IBM Spectrum LSF: ``bsub -env none -L /bin/bash`` (script on stdin), one ``bjobs -json -o FIELDS IDS``,
bkill."""

from __future__ import annotations

import json
import re

from . import JobState, JobStatus, Resources
from ._common import StatusOnly, directive_lines, first_host, last_match, megabytes, output_path, query, seconds

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


class LSF(StatusOnly):
    name = "lsf"

    def header(self, res: Resources) -> list[str]:
        opts = [f"-J {res.job_name}"] if res.job_name else []
        opts += [f"-q {res.partition}"] if res.partition else []
        opts += [f"-P {res.account}"] if res.account else []
        if res.time:   # -W [hours:]minutes, rounded up
            minutes = -(-seconds(res.time) // 60)
            opts.append(f"-W {minutes // 60}:{minutes % 60:02d}")
        opts += [f"-n {res.cpus}", '-R "span[hosts=1]"'] if res.cpus else []
        if res.mem:
            mb = megabytes(res.mem)
            opts += [f"-M {mb}MB", f'-R "rusage[mem={mb}MB]"']
        opts += [f'-gpu "num={res.gpus}"'] if res.gpus else []
        opts += ["-rn"]   # never rerun a kernel job
        # -o without -e: stderr goes to the same file.
        opts += [f"-o {output_path(res.output, '%J')}"] if res.output else []
        return directive_lines("#BSUB", opts, res.directives)

    @staticmethod
    def parse_job_id(stdout: str) -> str:
        return last_match(stdout, JOB_ID, "bsub")

    async def submit(self, script: str) -> str:
        _, out, _ = await self.runner.run(SUBMIT, stdin=script)
        return self.parse_job_id(out)

    @staticmethod
    def parse_status(stdout: str) -> dict[str, JobStatus]:
        """``bjobs -json -o FIELDS``: {"RECORDS": [{"JOBID", "STAT", ...} or {"ERROR": ...}]}."""
        if not stdout.strip():
            return {}
        found = {}
        for rec in json.loads(stdout).get("RECORDS", []):
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
                state=state, native=native, reason=reason, node=first_host(rec.get("EXEC_HOST", "")),
                start_time=_value(rec.get("START_TIME", "")) or None,
                time_left=_value(rec.get("TIME_LEFT", "")).split(" ")[0] if state is JobState.RUNNING else "")
        return found

    async def status(self, job_ids: list[str]) -> dict[str, JobStatus]:
        argv = ["bjobs", "-json", "-o", FIELDS, *job_ids]
        return await query(self.runner, argv, self.parse_status, job_ids, NOT_FOUND)

    async def cancel(self, job_id: str) -> None:
        await self.runner.run(["bkill", job_id])
