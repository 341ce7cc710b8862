"""Flux: ``flux batch`` (script on stdin, ``#flux:`` directives), one ``flux jobs -n -o FORMAT IDS``,
``flux cancel``.  Job ids are kept in decimal (flux batch prints F58, e.g. ``ƒ2jFzN7bq``)."""

from __future__ import annotations

import datetime
import re

from . import JobState, JobStatus, Resources
from ._common import (SUBMITTER_ENV, StatusOnly, directive_lines, first_host, hms, last_match, output_path,
                      query, seconds)
from .limits import NEVER

# flux jobs {state}; INACTIVE jobs are resolved from {result} (flux-jobs(1)).
STATES = {"NEW": JobState.QUEUED, "DEPEND": JobState.QUEUED, "PRIORITY": JobState.QUEUED,
          "SCHED": JobState.QUEUED, "RUN": JobState.RUNNING, "CLEANUP": JobState.RUNNING}
RESULTS = {"COMPLETED": JobState.COMPLETED, "FAILED": JobState.FAILED, "CANCELED": JobState.CANCELLED,
           "TIMEOUT": JobState.TIMEOUT}
FORMAT = "{id.dec}|{state}|{result}|{urgency}|{nodelist}|{t_run}|{t_remaining}|{exception.note}"
F58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
# flux batch prints the id alone: F58 ("ƒ" prefix, "f" in a non-UTF-8 locale) or decimal.
JOB_ID = re.compile(rf"(?P<id>[fƒ][{F58}]+|\d+)")
# A job exception note saying the scheduler can never allocate the request (sched-simple and
# Fluxion deny such a job at once with an "alloc" exception).
UNSATISFIABLE = re.compile(r"unsatisfiable", re.IGNORECASE)
UNKNOWN = re.compile(r"unknown job id|job not found|No such file", re.IGNORECASE)
# flux batch copies the submitter's whole environment by default: start from none (env rule
# ``-*``) and copy only SUBMITTER_ENV, the rules applied in this order (flux-submit(1), ENV RULES).
SUBMIT = ["flux", "batch", "--env-remove=*", *(f"--env={name}" for name in SUBMITTER_ENV)]


def decimal_id(job_id: str) -> str:
    """A Flux job id in decimal (F58 ids decoded)."""
    if job_id.isdigit():
        return job_id
    n = 0
    for ch in job_id[1:]:
        n = n * 58 + F58.index(ch)
    return str(n)


def _seconds(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 0.0


class Flux(StatusOnly):
    name = "flux"

    def header(self, res: Resources) -> list[str]:
        opts = [f"--job-name={res.job_name}"] if res.job_name else []
        opts += ["-N1", "-n1"] + ([f"-c{res.cpus}"] if res.cpus else []) + ([f"-g{res.gpus}"] if res.gpus else [])
        opts += [f"-q {res.partition}"] if res.partition else []
        opts += [f"--setattr=system.bank={res.account}"] if res.account else []
        opts += [f"-t {seconds(res.time)}s"] if res.time else []
        opts += [f"--output={output_path(res.output, '{{id.dec}}')}"] if res.output else []
        return directive_lines("#flux:", opts, res.directives)

    @staticmethod
    def parse_job_id(stdout: str) -> str:
        return decimal_id(last_match(stdout, JOB_ID, "flux batch"))

    async def submit(self, script: str) -> str:
        _, out, _ = await self.runner.run(SUBMIT, stdin=script)
        return self.parse_job_id(out)

    @staticmethod
    def parse_status(stdout: str) -> dict[str, JobStatus]:
        """``flux jobs -n -o FORMAT``: one '|'-separated line per job."""
        found = {}
        for line in stdout.splitlines():
            parts = line.strip().split("|", 7)
            if len(parts) != 8 or not parts[0].isdigit():
                continue
            job_id, native, result, urgency, nodes, t_run, remaining, note = parts
            state = RESULTS.get(result, JobState.FAILED) if native == "INACTIVE" else \
                STATES.get(native, JobState.UNKNOWN)
            if state is JobState.QUEUED and urgency.strip() == "0":
                state = JobState.HELD
            started = _seconds(t_run)
            found[job_id] = JobStatus(
                state=state, native=result or native, reason=note.strip(), node=first_host(nodes),
                start_time=datetime.datetime.fromtimestamp(started).isoformat() if started > 0 else None,
                time_left=hms(int(_seconds(remaining))) if state is JobState.RUNNING and _seconds(remaining) else "")
        return found

    async def status(self, job_ids: list[str]) -> dict[str, JobStatus]:
        argv = ["flux", "jobs", "-n", "-o", FORMAT, *job_ids]
        return await query(self.runner, argv, self.parse_status, job_ids, UNKNOWN)

    async def cancel(self, job_id: str) -> None:
        await self.runner.run(["flux", "cancel", job_id])

    def never(self, status: JobStatus) -> str | None:
        return NEVER if UNSATISFIABLE.search(status.reason) else None
