"""SLURM: sbatch --parsable --export=NONE, one squeue for all jobs (status or time left), scancel."""

from __future__ import annotations

import re

from ..runner import CommandError
from . import JobState, JobStatus, Resources, Scheduler

# squeue's %T words -> our states (SLURM 22.05+ job_state_string).
STATES = {
    "PENDING": JobState.QUEUED, "CONFIGURING": JobState.QUEUED, "REQUEUED": JobState.QUEUED,
    "REQUEUE_FED": JobState.QUEUED, "REQUEUE_HOLD": JobState.HELD, "RESV_DEL_HOLD": JobState.HELD,
    # COMPLETING is not final: the job's end state (COMPLETED, CANCELLED, TIMEOUT...) follows.
    "RUNNING": JobState.RUNNING, "COMPLETING": JobState.RUNNING, "STAGE_OUT": JobState.RUNNING,
    "SIGNALING": JobState.RUNNING, "RESIZING": JobState.RUNNING,
    "SUSPENDED": JobState.SUSPENDED, "STOPPED": JobState.SUSPENDED,
    "COMPLETED": JobState.COMPLETED, "FAILED": JobState.FAILED, "BOOT_FAIL": JobState.NODE_FAIL,
    "DEADLINE": JobState.TIMEOUT, "CANCELLED": JobState.CANCELLED, "REVOKED": JobState.CANCELLED,
    "SPECIAL_EXIT": JobState.FAILED, "TIMEOUT": JobState.TIMEOUT, "NODE_FAIL": JobState.NODE_FAIL,
    "PREEMPTED": JobState.PREEMPTED, "OUT_OF_MEMORY": JobState.OOM,
}
HELD_REASONS = ("JobHeldUser", "JobHeldAdmin")
# `sbatch --parsable` prints "JOBID" or "JOBID;CLUSTER" alone on its last line.
JOB_ID = re.compile(r"^(?P<id>\d+(?:_\d+)?)(?:;(?P<cluster>[\w.-]+))?$")
SQUEUE_FORMAT = "%i|%T|%r|%N|%S"
TIME_LEFT_FORMAT = "%i|%T|%L"
NO_TIME_LEFT = ("INVALID", "NOT_SET", "N/A")
# sbatch's default is --export=ALL (the server's whole environment, recorded by slurmctld).
# --export=NONE: SLURM_* only, and slurmd loads the user's login environment on the node
# (`su - USER -c env`: HOME, PATH, LANG, MODULEPATH, an exported `module` function).  On the
# command line, so that neither SBATCH_EXPORT nor an #SBATCH line can undo it.
SUBMIT = ["sbatch", "--parsable", "--export=NONE"]


class Slurm(Scheduler):
    name = "slurm"
    # Without it, srun steps started in the job (by the kernel) inherit --export=NONE and get an
    # empty environment; with it they get the kernel's.
    script_env = {"SLURM_EXPORT_ENV": "ALL"}

    def header(self, res: Resources) -> list[str]:
        opts = [("job-name", res.job_name), ("partition", res.partition), ("account", res.account),
                ("qos", res.qos), ("time", res.time), ("cpus-per-task", res.cpus or ""),
                ("mem", res.mem), ("gpus", res.gpus or ""), ("constraint", res.constraint),
                ("reservation", res.reservation), ("output", res.output)]
        # A requeued kernel job would start a launcher nobody talks to: never requeue.
        lines = ["#SBATCH --nodes=1", "#SBATCH --ntasks=1", "#SBATCH --no-requeue"]
        lines += [f"#SBATCH --{k}={v}" for k, v in opts if v != ""]
        lines += [d if d.startswith("#SBATCH") else f"#SBATCH {d}" for d in res.directives]
        return lines

    @staticmethod
    def parse_job_id(stdout: str) -> str:
        lines = [l.strip() for l in stdout.strip().splitlines() if l.strip()]
        m = JOB_ID.match(lines[-1]) if lines else None
        if not m:
            raise ValueError(f"sbatch --parsable printed no job id: {stdout.strip()!r}")
        return m.group("id")

    async def submit(self, script: str) -> str:
        _, out, _ = await self.runner.run(SUBMIT, stdin=script)
        return self.parse_job_id(out)

    @staticmethod
    def parse_status(stdout: str) -> dict[str, JobStatus]:
        found = {}
        for line in stdout.splitlines():
            parts = line.strip().split("|")
            if len(parts) != 5:
                continue
            job_id, native, reason, node, start = parts
            state = STATES.get(native, JobState.UNKNOWN)
            if state is JobState.QUEUED and reason in HELD_REASONS:
                state = JobState.HELD
            found[job_id] = JobStatus(
                state=state, native=native, reason="" if reason == "None" else reason,
                node=node or None, start_time=None if start in ("N/A", "") else start)
        return found

    async def status(self, job_ids: list[str]) -> dict[str, JobStatus]:
        return await self._squeue(["-t", "all"], SQUEUE_FORMAT, self.parse_status, job_ids)

    @staticmethod
    def parse_time_left(stdout: str) -> dict[str, JobStatus]:
        found = {}
        for line in stdout.splitlines():
            parts = line.strip().split("|")
            if len(parts) != 3:
                continue
            job_id, native, left = parts
            found[job_id] = JobStatus(state=STATES.get(native, JobState.UNKNOWN), native=native,
                                      time_left="" if left in NO_TIME_LEFT else left)
        return found

    async def time_left(self, job_ids: list[str]) -> dict[str, JobStatus]:
        return await self._squeue([], TIME_LEFT_FORMAT, self.parse_time_left, job_ids)

    async def _squeue(self, args: list[str], fmt: str, parse, job_ids: list[str]) -> dict[str, JobStatus]:
        """One squeue for all job_ids, parsed; a job squeue does not list is GONE."""
        if not job_ids:
            return {}
        argv = ["squeue", "-h", *args, "-j", ",".join(job_ids), "-o", fmt]
        code, out, err = await self.runner.run(argv, check=False)
        if code != 0:
            # All ids purged: "Invalid job id specified" (exit 1).  Anything else is a failed query.
            if "Invalid job id" in err:
                return {j: JobStatus(JobState.GONE) for j in job_ids}
            raise CommandError(argv, code, out, err)
        found = parse(out)
        return {j: found.get(j, JobStatus(JobState.GONE)) for j in job_ids}

    async def cancel(self, job_id: str) -> None:
        await self.runner.run(["scancel", job_id])
