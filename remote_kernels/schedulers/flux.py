"""Flux: ``flux batch`` (script on stdin, ``#flux:`` directives), one ``flux jobs -n -o FORMAT IDS``,
``flux cancel``, ``flux job kill --signal=SIG``.  Job ids are kept in decimal (flux batch prints F58, e.g. ``ƒ2jFzN7bq``)."""

from __future__ import annotations

import datetime
import re

from ._common import SUBMITTER_ENV, hms, host_list, last_match, output_path, seconds, split_lines
from .base import Scheduler
from .limits import NEVER
from .model import JobState, JobStatus

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


class Flux(Scheduler):
    name = "flux"
    prefix = "#flux:"
    fixed_options = ("-N1", "-n1")
    resource_options = (
        ("job_name", "--job-name={}"), ("cpus", "-c{}"), ("gpus", "-g{}"), ("partition", "-q {}"),
        ("account", "--setattr=system.bank={}"), ("time", lambda res: f"-t {seconds(res.time)}s"),
        ("output", lambda res: f"--output={output_path(res.output, '{{id.dec}}')}"))
    submit_argv = SUBMIT
    gone = UNKNOWN

    @staticmethod
    def parse_job_id(stdout: str) -> str:
        return decimal_id(last_match(stdout, JOB_ID, "flux batch"))

    def status_argv(self, job_ids: list[str]) -> list[str]:
        return ["flux", "jobs", "-n", "-o", FORMAT, *job_ids]

    @staticmethod
    def parse_status(stdout: str) -> dict[str, JobStatus]:
        """``flux jobs -n -o FORMAT``: one '|'-separated line per job."""
        found = {}
        for job_id, native, result, urgency, nodes, t_run, remaining, note in split_lines(stdout, 8):
            if not job_id.isdigit():
                continue
            state = RESULTS.get(result, JobState.FAILED) if native == "INACTIVE" else \
                STATES.get(native, JobState.UNKNOWN)
            if state is JobState.QUEUED and urgency.strip() == "0":
                state = JobState.HELD
            started = _seconds(t_run)
            found[job_id] = JobStatus(
                state=state, native=result or native, reason=note.strip(), nodes=host_list(nodes),
                start_time=datetime.datetime.fromtimestamp(started).isoformat() if started > 0 else None,
                time_left=hms(int(_seconds(remaining))) if state is JobState.RUNNING and _seconds(remaining) else "")
        return found

    def cancel_argv(self, job_id: str) -> list[str]:
        return ["flux", "cancel", job_id]

    def signal_argv(self, job_id: str, name: str) -> list[str]:
        return ["flux", "job", "kill", f"--signal=SIG{name}", job_id]

    def never(self, status: JobStatus) -> str | None:
        return NEVER if UNSATISFIABLE.search(status.reason) else None
