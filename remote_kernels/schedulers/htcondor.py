"""HTCondor: ``condor_submit -terse -`` (description on stdin), ``condor_q -json`` for the
queue and ``condor_history -json`` for jobs that left it, ``condor_rm``.

HTCondor runs an executable, not a script with directives, so the header holds
submit-description commands as ``#HTCONDOR key = value`` lines; submit() writes the
script next to the job's log (``initialdir``) and submits a description made of those
lines plus ``executable`` and ``queue``.  Job ids are ``Cluster.Proc``.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import posixpath
import re

from . import JobState, JobStatus, Resources
from ._common import SUBMITTER_ENV, StatusOnly, last_match, log_redirect, megabytes, parse_or_gone, query, seconds

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
NEVER = re.compile(r"(?!)")
# The wall-time limit: periodic_remove with this phrase in RemoveReason means "timed out".
TIME_LIMIT = "PeriodicRemove"


def _start(epoch) -> str | None:
    return datetime.datetime.fromtimestamp(int(epoch)).isoformat() if isinstance(epoch, int) and epoch > 0 else None


class HTCondor(StatusOnly):
    name = "htcondor"

    def header(self, res: Resources) -> list[str]:
        cmds = ["universe = vanilla"]
        cmds += [f"batch_name = {res.job_name}"] if res.job_name else []
        cmds += [f"accounting_group = {res.account}"] if res.account else []
        cmds += [f"request_cpus = {res.cpus}"] if res.cpus else []
        cmds += [f"request_memory = {megabytes(res.mem)}"] if res.mem else []
        cmds += [f"request_gpus = {res.gpus}"] if res.gpus else []
        if res.time:
            cmds.append(f"periodic_remove = JobStatus == 2 && time() - EnteredCurrentStatus > {seconds(res.time)}")
        # The job gets none of condor_submit's environment (getenv, false by default, said here
        # so no site default changes it), and none of its own either: the variables below only,
        # SUBMITTER_ENV's values taken by condor_submit ($ENV).  RK_JOB_ID names the log, which
        # the script writes itself (one file for stdout and stderr, named after the id).
        env = ["RK_JOB_ID=$(ClusterId).$(ProcId)", *(f"{name}='$ENV({name})'" for name in SUBMITTER_ENV)]
        cmds += ["getenv = false", f'environment = "{" ".join(env)}"']
        if res.output:
            cmds.append(f"initialdir = {posixpath.dirname(res.output) or '.'}")
        cmds += list(res.directives)
        return [PREFIX + c for c in cmds] + log_redirect(res.output, "$RK_JOB_ID")

    @staticmethod
    def description(script: str, executable: str) -> str:
        """The submit description: the script's #HTCONDOR lines, the executable, queue."""
        cmds = [l[len(PREFIX):] for l in script.splitlines() if l.startswith(PREFIX)]
        return "\n".join([*cmds, f"executable = {executable}", "queue"]) + "\n"

    @staticmethod
    def script_path(script: str) -> str:
        """Where the script is written: initialdir (the log directory), named by its hash."""
        dirs = [l.split("=", 1)[1].strip() for l in script.splitlines() if l.startswith(PREFIX + "initialdir")]
        name = f"rk-{hashlib.sha256(script.encode()).hexdigest()[:16]}.sh"
        return posixpath.join(dirs[-1] if dirs else ".", name)

    @staticmethod
    def parse_job_id(stdout: str) -> str:
        return last_match(stdout, JOB_ID, "condor_submit -terse")

    async def submit(self, script: str) -> str:
        path = self.script_path(script)
        await self.runner.run(["install", "-m", "700", "/dev/stdin", path], stdin=script)
        _, out, _ = await self.runner.run(["condor_submit", "-terse", "-"], stdin=self.description(script, path))
        return self.parse_job_id(out)

    @staticmethod
    def parse_status(stdout: str) -> dict[str, JobStatus]:
        """``condor_q -json`` / ``condor_history -json``: a JSON list of job ads (nothing if none)."""
        if not stdout.strip():
            return {}
        found = {}
        for ad in json.loads(stdout):
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
                node=host.split("@")[-1] if host else None, start_time=_start(ad.get("JobCurrentStartDate")))
        return found

    async def status(self, job_ids: list[str]) -> dict[str, JobStatus]:
        """condor_q for all ids; condor_history only for those that left the queue."""
        if not job_ids:
            return {}
        found = await query(self.runner, ["condor_q", "-json", "-attributes", ATTRIBUTES, *job_ids],
                            self.parse_status, job_ids, NEVER)
        left = [j for j, st in found.items() if st.state is JobState.GONE]
        if left:
            argv = ["condor_history", "-json", "-attributes", ATTRIBUTES, "-limit", str(len(left)), *left]
            found.update(await query(self.runner, argv, self.parse_status, left, NEVER))
        return parse_or_gone(job_ids, found)

    async def cancel(self, job_id: str) -> None:
        await self.runner.run(["condor_rm", job_id])
