"""SLURM: sbatch --parsable --export=NONE, one squeue for all jobs (status or time left), scancel.

A job SLURM says can never start (a pending reason below, or a refused submission) is
explained from ``scontrol -o show partition``/``node``/``job`` (and the QOS from
``sacctmgr``), read once when such a reason is first seen.  A request is checked before
any job (``remote-kernels install``) against the same facts plus, where slurmdbd accounting
is on, the user's associations (``sacctmgr``).
"""

from __future__ import annotations

import asyncio
import re

from ..runner import CommandError
from . import JobState, JobStatus, Resources, Scheduler
from . import limits as L
from ._common import _MB, seconds

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
UNSET = ("", "(null)", "N/A", "UNLIMITED", "NONE", "Partition_Limit")
# One "Key=Value" of `scontrol -o` output (a value may hold spaces: OS=Linux 6.1 #1 SMP).
SCONTROL_KEY = re.compile(r"(?:^|\s)([A-Za-z][\w:/.]*)=")


class Slurm(Scheduler):
    name = "slurm"
    # Without it, srun steps started in the job (by the kernel) inherit --export=NONE and get an
    # empty environment; with it they get the kernel's.
    script_env = {"SLURM_EXPORT_ENV": "ALL"}
    checks_requests = True

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
        facts = self.parse_facts(outs.get("partitions", ""), outs.get("nodes", ""), outs.get("job", ""),
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
        results = await asyncio.gather(*(self.runner.run(a, check=False) for a in argvs.values()))
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

    @classmethod
    def parse_facts(cls, partitions: str, nodes: str, job: str = "", qos: str = "") -> L.SiteFacts:
        """SiteFacts from ``scontrol -o show partition``, ``... node``, ``... job ID`` and sacctmgr's QOS."""
        return L.SiteFacts(partitions=parse_partitions(partitions), nodes=parse_nodes(nodes),
                           ask=parse_job(job) if job.strip() else None, qos=parse_qos(qos))


def scontrol_records(text: str) -> list[dict[str, str]]:
    """One dict per line of ``scontrol -o show ...`` output (Key=Value words)."""
    records = []
    for line in text.splitlines():
        keys = list(SCONTROL_KEY.finditer(line))
        if keys:
            records.append({m.group(1): line[m.end():keys[i + 1].start() if i + 1 < len(keys) else len(line)].strip()
                            for i, m in enumerate(keys)})
    return records


def expand_hostlist(text: str) -> list[str]:
    """SLURM host list "c[1-2,05],d7" -> ["c1", "c2", "c05", "d7"]."""
    hosts = []
    for m in re.finditer(r"([^,\[]+)(?:\[([^\]]*)\])?([^,\[]*)", text):
        prefix, ranges, suffix = m.groups()
        if ranges is None:
            hosts.append(prefix + suffix)
            continue
        for part in ranges.split(","):
            first, _, last = part.partition("-")
            width = len(first)
            for n in range(int(first), int(last or first) + 1):
                hosts.append(f"{prefix}{n:0{width}d}{suffix}")
    return [h for h in hosts if h]


def _number(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def _duration(text: str) -> int | None:
    try:
        return None if text in UNSET else seconds(text)
    except ValueError:
        return None


def _mb(text: str) -> int:
    """Megabytes in scontrol's sizes ("4096", "1.50G"); 0 when unset.  Units: _common._MB."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]?)", text or "")
    return round(float(m.group(1)) * _MB[m.group(2) or "M"]) if m else 0


def _value(text: str) -> str:
    return "" if text in UNSET else text


def parse_partitions(text: str) -> dict[str, L.Partition]:
    found = {}
    for r in scontrol_records(text):
        name = r.get("PartitionName", "")
        found[name] = L.Partition(
            name=name, default=r.get("Default") == "YES", max_time=_duration(r.get("MaxTime", "")),
            min_nodes=_number(r.get("MinNodes", "")) or 0, max_nodes=_number(r.get("MaxNodes", "")),
            max_cpus_per_node=_number(r.get("MaxCPUsPerNode", "")),
            max_mem_per_node=_number(r.get("MaxMemPerNode", "")), max_mem_per_cpu=_number(r.get("MaxMemPerCPU", "")),
            nodes=tuple(expand_hostlist(_value(r.get("Nodes", "")))),
            allow_accounts=r.get("AllowAccounts", "ALL"), allow_qos=r.get("AllowQos", "ALL"))
    return found


def parse_nodes(text: str) -> dict[str, L.Node]:
    found = {}
    for r in scontrol_records(text):
        name = r.get("NodeName", "")
        features = _value(r.get("AvailableFeatures", ""))
        found[name] = L.Node(name=name, cpus=_number(r.get("CPUTot", "")) or 0,
                             mem=_number(r.get("RealMemory", "")) or 0,
                             features=tuple(f for f in features.split(",") if f), gpus=gpu_count(r.get("Gres", "")))
    return found


def gpu_count(gres: str) -> int:
    """GPUs in a node's ``Gres=`` ("gpu:2", "gpu:a100:4(S:0-1),gpu:v100:1"; "(null)": none)."""
    total = 0
    for item in re.split(r",(?![^(]*\))", _value(gres)):
        parts = re.sub(r"\(.*\)$", "", item).split(":")
        if parts[0] == "gpu":
            total += int(parts[-1]) if len(parts) > 1 and parts[-1].isdigit() else 1
    return total


def parse_config(text: str) -> dict[str, str]:
    """``scontrol show config``'s "Key = Value" lines."""
    return {k.strip(): v.strip() for k, sep, v in (line.partition(" = ") for line in text.splitlines()) if sep}


def parse_accounting(config: dict[str, str], assoc: str, user: str) -> L.Accounting:
    """The user's accounting from ``scontrol show config``, ``sacctmgr -n -P show assoc user=U
    format=Cluster,Account,Partition,QOS,DefaultQOS`` and ``... show user U format=DefaultAccount``."""
    cluster = config.get("ClusterName", "")
    enforce = frozenset(w for w in config.get("AccountingStorageEnforce", "").lower().split(",") if w and w != "none")
    assocs = []
    for line in assoc.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 5 or not parts[1] or (cluster and parts[0] not in (cluster, "")):
            continue
        assocs.append(L.Association(account=parts[1], partition=parts[2],
                                    qos=tuple(q for q in parts[3].split(",") if q), default_qos=parts[4]))
    return L.Accounting(enforce=enforce, default_account=next(iter(user.split()), ""), assocs=assocs)


def parse_job(text: str) -> L.Ask:
    """The job's effective request from ``scontrol -o show job ID``."""
    r = (scontrol_records(text) or [{}])[0]
    cpus = _number(r.get("CPUs/Task", "")) or _number(r.get("NumCPUs", "")) or 0
    mem = _mb(r.get("MinMemoryNode", "")) or _mb(r.get("MinMemoryCPU", "")) * max(1, cpus)
    return L.Ask(partition=_value(r.get("Partition", "")), account=_value(r.get("Account", "")),
                 qos=_value(r.get("QOS", "")), time=_duration(r.get("TimeLimit", "")), cpus=cpus, mem=mem,
                 nodes=_number(r.get("NumNodes", "").split("-")[0]) or 0,
                 constraint=_value(r.get("Features", "")), reservation=_value(r.get("Reservation", "")))


def parse_qos(text: str) -> dict[str, L.QosLimits]:
    """``sacctmgr -n -P show qos format=Name,MaxWall,MaxTRES,MaxTRESPerNode,MinTRES`` lines."""
    def tres(field: str) -> dict[str, str]:
        return dict(item.split("=", 1) for item in field.split(",") if "=" in item)

    found = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 5 or not parts[0]:
            continue
        name, max_wall, max_tres, per_node, min_tres = parts[:5]
        found[name] = L.QosLimits(name=name, max_wall=_duration(max_wall), max_tres=tres(max_tres),
                                  max_tres_per_node=tres(per_node), min_tres=tres(min_tres))
    return found
