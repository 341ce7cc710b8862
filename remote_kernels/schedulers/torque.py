"""Torque: qsub (id on stdout), one ``qstat -x IDS`` (XML), qdel, qsig.  Header as PBS, nodes=1:ppn=N."""

from __future__ import annotations

import datetime
import xml.etree.ElementTree as ET

from ._common import hms, host_list, megabytes, xml_root
from .model import JobState, JobStatus, Resources
from .pbs import PBS_OPTIONS, STATES, PBSFamily, exit_state, left

# Torque's job states: PBS's, plus C (completed, kept for keep_completed seconds).
TORQUE_FINISHED = ("C",)
# exit_status values Torque sets when it kills a job (JOB_EXEC_OVERLIMIT_*), and 256 + signal.
TORQUE_EXIT_STATES = {-11: JobState.TIMEOUT, -10: JobState.OOM,
                      256 + 15: JobState.CANCELLED, 256 + 9: JobState.CANCELLED}


def _text(job: ET.Element, path: str) -> str:
    return (job.findtext(path) or "").strip()


def nodes(res: Resources) -> list[str]:
    """``-l nodes=1:ppn=N:gpus=G`` when CPUs or GPUs are asked for."""
    spec = "nodes=1" + (f":ppn={res.cpus}" if res.cpus else "") + (f":gpus={res.gpus}" if res.gpus else "")
    return [f"-l {spec}"] if res.cpus or res.gpus else []


class Torque(PBSFamily):
    name = "torque"
    exit_states = TORQUE_EXIT_STATES
    resource_options = PBS_OPTIONS + (("", nodes), ("mem", lambda res: f"-l mem={megabytes(res.mem)}mb"))

    def status_argv(self, job_ids: list[str]) -> list[str]:
        return ["qstat", "-x", *job_ids]

    @classmethod
    def parse_status(cls, stdout: str) -> dict[str, JobStatus]:
        """``qstat -x`` output: <Data><Job><Job_Id/><job_state/>...</Job>...</Data>."""
        if not stdout.strip():
            return {}
        found = {}
        for job in xml_root(stdout).iter("Job"):
            native = _text(job, "job_state")
            comment = _text(job, "comment")
            if native in TORQUE_FINISHED:
                code = _text(job, "exit_status")
                state = exit_state(int(code) if code.lstrip("-").isdigit() else None, cls.exit_states, comment)
            else:
                state = STATES.get(native, JobState.UNKNOWN)
            remaining = _text(job, "Walltime/Remaining")
            time_left = hms(int(remaining)) if remaining.isdigit() else left(
                _text(job, "Resource_List/walltime"), _text(job, "resources_used/walltime"))
            start = _text(job, "start_time")
            found[_text(job, "Job_Id")] = JobStatus(
                state=state, native=native, reason="" if state is JobState.RUNNING else comment,
                nodes=host_list(_text(job, "exec_host")),
                start_time=datetime.datetime.fromtimestamp(int(start)).isoformat() if start.isdigit() else None,
                time_left=time_left if state is JobState.RUNNING else "")
        return found
