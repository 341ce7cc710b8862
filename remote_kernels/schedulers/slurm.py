"""SLURM: sbatch --parsable --export=NONE, one squeue for all jobs (status or time left), scancel
(``scancel --batch --signal=SIG`` to signal the launcher).

A job SLURM says can never start (a pending reason below, or a refused submission) is
explained from ``scontrol -o show partition``/``node``/``job`` (and the QOS from
``sacctmgr``), read once when such a reason is first seen.  A request is checked before
any job (``remote-kernels install``) against the same facts plus, where slurmdbd accounting
is on, the user's associations (``sacctmgr``).
"""

from __future__ import annotations

import asyncio
import re
import shlex

from . import limits as L
from ._common import expand_hostlist, host_list, options, split_lines
from .base import Scheduler
from .model import JobState, JobStatus, Resources
from .slurm_facts import parse_accounting, parse_config, parse_facts, parse_qos

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
SQUEUE_FORMAT = "%i|%T|%r|%N|%S"   # %N: a host list, "c[1-2]"
TIME_LEFT_FORMAT = "%i|%T|%L"
NO_TIME_LEFT = ("INVALID", "NOT_SET", "N/A")
# sbatch's default is --export=ALL (the server's whole environment, recorded by slurmctld).
# --export=NONE: SLURM_* only, and slurmd loads the user's login environment on the node
# (`su - USER -c env`: HOME, PATH, LANG, MODULEPATH, an exported `module` function).  On the
# command line, so that neither SBATCH_EXPORT nor an #SBATCH line can undo it.
SUBMIT = ["sbatch", "--parsable", "--export=NONE"]

# Interactive dispatch: srun makes the job and runs the script (on its stdin) as its first step
# at once: batch jobs wait for the next scheduling pass (batch_sched_delay, 3 s by default),
# allocations do not.  --overlap: the kernel's own srun steps may share the step's resources.
# --verbose: srun names the job even when it is granted at once.
SRUN = ("srun", "--verbose", "--nodes=1", "--ntasks=1", "--overlap")
# srun's stderr: "srun: job 36 queued and waiting for resources" (pending), or with --verbose
# "srun: jobid 36: nodes(1):`c2', cpu counts: 1(x1)" (granted).
DISPATCHED = re.compile(r"^srun: (?:job (?P<queued>\d+) queued and waiting for resources"
                        r"|jobid (?P<granted>\d+): nodes\(|Granted job allocation (?P<alloc>\d+)$)")

# Pending reasons (squeue %r, SLURM 22.05's job_reason_string) that say the job, as asked, can
# never start -> the limit.  Everything else (Resources, Priority, Dependency, BeginTime,
# Grp*, *PerUser*, *PerAccount*, PartitionDown, Reservation...) clears with time: waited out.
NEVER_REASONS = {
    "PartitionTimeLimit": L.TIME, "PartitionNodeLimit": L.NODES, "PartitionConfig": L.PARTITION_CONFIG,
    "MaxMemPerLimit": L.MEM_PER, "BadConstraints": L.CONSTRAINT, "InvalidAccount": L.ACCOUNT,
    "AccountNotAllowed": L.ACCOUNT, "InvalidQOS": L.QOS, "QOSNotAllowed": L.QOS,
    "DependencyNeverSatisfied": L.DEPENDENCY, "ReservationDeleted": L.RESERVATION,
}
# A QOS's or association's limit on one job (or on a job's share of a node): QOSMax*PerJob*,
# QOSMax*PerNode, QOSMin*, AssocMax*PerJob*, AssocMax*PerNode (and the older prefix-less
# Max*PerJob* names).  A job over it never starts.
PER_JOB_LIMIT = re.compile(r"^(?P<owner>QOS|Assoc)?Max\w*Per(?:Job|Node)\w*$|^(?P<min>QOS)Min\w+$")
# "ReqNodeNotAvail, UnavailableNodes:c[1-2]": never only if a node it names does not exist.
UNAVAILABLE_NODES = re.compile(r"^ReqNodeNotAvail, UnavailableNodes:(?P<nodes>\S+)$")
# sbatch's refusals (slurm_errno.c's messages, sbatch's own CPU/memory checks) -> the limit;
# the first phrase found wins (sbatch prints its specific line before the generic one).
REFUSALS = (
    ("Invalid partition name specified", L.PARTITION),
    ("Requested time limit is invalid", L.TIME),
    ("CPU count per node can not be satisfied", L.CPUS),
    ("More processors requested than permitted", L.CPUS),
    ("Memory specification can not be satisfied", L.MEM),
    ("Memory required by task is not available", L.MEM),
    ("Node count specification invalid", L.NODES),
    ("Invalid account or account/partition combination specified", L.ACCOUNT),
    ("Invalid qos specification", L.QOS),
    ("Invalid feature specification", L.CONSTRAINT),
    ("Invalid node name specified", L.NODELIST),
    ("Invalid generic resource (gres) specification", L.GRES),
    ("Requested reservation is invalid", L.RESERVATION),
    ("Requested node configuration is not available", L.PARTITION_CONFIG),
    ("Requested partition configuration not available now", L.PARTITION_CONFIG),
)
FACTS_ARGV = {"partitions": ["scontrol", "-o", "show", "partition"], "nodes": ["scontrol", "-o", "show", "node"]}
SACCTMGR_QOS = ["sacctmgr", "-n", "-P", "show", "qos", "format=Name,MaxWall,MaxTRES,MaxTRESPerNode,MinTRES"]
# Checking a request without a job also reads: the accounting set-up, then who the user is.
CONFIG_ARGV = ["scontrol", "show", "config"]
WHOAMI = ["id", "-un"]
ASSOC_FORMAT = "format=Cluster,Account,Partition,QOS,DefaultQOS"
# sbatch options in a spec's directives that change what a request check reads: not checked then.
CHECKED_FLAGS = re.compile(r"^(?:#SBATCH\s+)?(?:--(?:partition|time|cpus-per-task|mem|mem-per-cpu|gpus|gres|"
                           r"account|qos|nodes|ntasks|ntasks-per-node)\b|-[ptcAqNn](?:\s|\d|$|[a-z]))")
# squeue's complaint when every id it was asked about is unknown (purged): exit 1.
GONE = re.compile(r"Invalid job id")


class Slurm(Scheduler):
    name = "slurm"
    # Without it, srun steps started in the job (by the kernel) inherit --export=NONE and get an
    # empty environment; with it they get the kernel's.
    script_env = {"SLURM_EXPORT_ENV": "ALL"}
    checks_requests = True
    prefix = "#SBATCH"
    # A requeued kernel job would start a launcher nobody talks to: never requeue.
    fixed_options = ("--nodes=1", "--ntasks=1", "--no-requeue")
    resource_options = (
        ("job_name", "--job-name={}"), ("partition", "--partition={}"), ("account", "--account={}"),
        ("qos", "--qos={}"), ("time", "--time={}"), ("cpus", "--cpus-per-task={}"), ("mem", "--mem={}"),
        ("gpus", "--gpus={}"), ("constraint", "--constraint={}"), ("reservation", "--reservation={}"),
        ("output", "--output={}"))
    # The pre-end signal to the batch shell alone (which execs the launcher: launcher.WALLTIME_SIGNAL).
    # Not for srun (interactive dispatch), which has no B: and would signal every process of the step.
    batch_options = (("warn_before", "--signal=B:USR1@{}"),)
    submit_argv = SUBMIT
    gone = GONE
    dispatch_prefix = SRUN
    # Inputs srun reads from its environment (a server in a job of its own has SLURM_JOB_ID...).
    dispatch_drop = ("SLURM_", "SRUN_", "SALLOC_", "SBATCH_")
    dispatch_keep = ("SLURM_CONF",)
    # An allocation made by srun lives on if srun dies (its server was killed): the step ends it
    # when the launcher did not end on the login side's word (shutdown: srun, alive, completes it).
    end_line = '[ $? = 0 ] || scancel --quiet "$SLURM_JOB_ID"'

    @staticmethod
    def parse_job_id(stdout: str) -> str:
        lines = [l.strip() for l in stdout.strip().splitlines() if l.strip()]
        m = JOB_ID.match(lines[-1]) if lines else None
        if not m:
            raise ValueError(f"sbatch --parsable printed no job id: {stdout.strip()!r}")
        return m.group("id")

    def dispatch_argv(self, res: Resources, user: str, home: str) -> list[str]:
        # The job gets only who the user is (and SLURM_*), from no value of the server's; a
        # login shell then reads the site's and the user's profile, as sbatch --export=NONE does.
        # (--export with NAME=value items and no ALL: those and SLURM_* only.)
        export = f"--export=HOME={home},USER={user},LOGNAME={user}" if "," not in home else "--export=NONE"
        extra = [w for d in res.directives for w in shlex.split(d.removeprefix(self.prefix))]
        return [*self.dispatch_prefix, export, *options(res, self.resource_options), *extra,
                "/bin/bash", "-l", "-s"]

    @staticmethod
    def parse_dispatched(line: str) -> str | None:
        m = DISPATCHED.match(line.strip())
        return next((g for g in m.groups() if g), None) if m else None

    def status_argv(self, job_ids: list[str]) -> list[str]:
        return ["squeue", "-h", "-t", "all", "-j", ",".join(job_ids), "-o", SQUEUE_FORMAT]

    @staticmethod
    def parse_status(stdout: str) -> dict[str, JobStatus]:
        found = {}
        for job_id, native, reason, nodes, start in split_lines(stdout, 5):
            state = STATES.get(native, JobState.UNKNOWN)
            if state is JobState.QUEUED and reason in HELD_REASONS:
                state = JobState.HELD
            found[job_id] = JobStatus(
                state=state, native=native, reason="" if reason == "None" else reason,
                nodes=host_list(nodes), start_time=None if start in ("N/A", "") else start)
        return found

    def time_left_argv(self, job_ids: list[str]) -> list[str]:
        return ["squeue", "-h", "-j", ",".join(job_ids), "-o", TIME_LEFT_FORMAT]

    @staticmethod
    def parse_time_left(stdout: str) -> dict[str, JobStatus]:
        return {job_id: JobStatus(state=STATES.get(native, JobState.UNKNOWN), native=native,
                                  time_left="" if left in NO_TIME_LEFT else left)
                for job_id, native, left in split_lines(stdout, 3)}

    def cancel_argv(self, job_id: str) -> list[str]:
        return ["scancel", job_id]

    def signal_argv(self, job_id: str, name: str) -> list[str]:
        # --batch: the batch step only (the launcher), not the job's other steps.
        return ["scancel", "--batch", f"--signal={name}", job_id]

    # --- jobs that can never start -----------------------------------------------------

    def never(self, status: JobStatus) -> str | None:
        if status.state not in (JobState.QUEUED, JobState.HELD):
            return None
        reason = status.reason
        if reason in NEVER_REASONS:
            return NEVER_REASONS[reason]
        m = PER_JOB_LIMIT.match(reason)
        if m:
            return L.ASSOC_LIMIT if m.group("owner") == "Assoc" else L.QOS_LIMIT
        return L.NODELIST if UNAVAILABLE_NODES.match(reason) else None

    def refused(self, error: str) -> tuple[str, str] | None:
        return next(((kind, phrase) for phrase, kind in REFUSALS if phrase in error), None)

    async def site_facts(self, job_id: str | None, kind: str) -> L.SiteFacts:
        argvs = dict(FACTS_ARGV)
        if job_id:
            argvs["job"] = ["scontrol", "-o", "show", "job", job_id]
        if kind in (L.QOS, L.QOS_LIMIT):
            argvs["qos"] = SACCTMGR_QOS
        if kind == L.REQUEST:
            argvs.update(config=CONFIG_ARGV, user=WHOAMI)
        outs = await self._outputs(argvs)
        facts = parse_facts(outs.get("partitions", ""), outs.get("nodes", ""), outs.get("job", ""),
                            outs.get("qos", ""))
        config = parse_config(outs.get("config", ""))
        user = outs.get("user", "").strip()
        if kind == L.REQUEST and user and config.get("AccountingStorageType") == "accounting_storage/slurmdbd":
            more = await self._outputs({"qos": SACCTMGR_QOS, "assoc": [
                "sacctmgr", "-n", "-P", "show", "assoc", f"user={user}", ASSOC_FORMAT],
                "user": ["sacctmgr", "-n", "-P", "show", "user", user, "format=DefaultAccount"]})
            if "assoc" in more and "user" in more:
                facts.qos = parse_qos(more.get("qos", ""))
                facts.accounting = parse_accounting(config, more["assoc"], more["user"])
        return facts

    async def _outputs(self, argvs: dict[str, list[str]]) -> dict[str, str]:
        """Each argv's stdout, run at once; a failed one is left out."""
        results = await asyncio.gather(*(self._run(a, check=False) for a in argvs.values()))
        return {k: out for k, (code, out, _) in zip(argvs, results) if code == 0}

    def checkable(self, res: Resources) -> str | None:
        """Why a request check would read the wrong request (a directive sets what it checks), or None."""
        flags = [d for d in res.directives if CHECKED_FLAGS.match(d.strip())]
        return f"the directives set {' '.join(flags)}" if flags else None

    def explain(self, kind: str, said: str, res: Resources, facts: L.SiteFacts) -> str | None:
        m = UNAVAILABLE_NODES.match(said)
        if m:
            missing = [n for n in expand_hostlist(m.group("nodes")) if n not in facts.nodes]
            if not facts.nodes or not missing:
                return None   # down, drained or reserved nodes that exist: they come back
            said = f"{', '.join(missing)} unknown to SLURM"
        return L.explain(kind, said, res, facts)

    parse_facts = staticmethod(parse_facts)
