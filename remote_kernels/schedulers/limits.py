"""Why a job can never start, in one line: the site facts such a line names, and the lines.

An adapter maps what its scheduler says (a pending reason, a refused submission, an error
state) to a *kind* of limit (``TIME``, ``CPUS``...).  ``explain(kind, said, res, facts)``
turns that kind, the request and the site's facts into the line the user reads, naming
the limit and the fix.  ``broken(res, facts)`` finds, without a job, the limit a request
breaks (what ``remote-kernels install`` checks), for the same ``explain``.  Pure: the
adapter's ``site_facts`` gathers the facts (the one place doing I/O); a fact that is
missing only makes the line less specific, or the check silent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from . import Resources
from ._common import megabytes, seconds

# Kinds of limit a job can never get past.
TIME, CPUS, MEM, MEM_PER, NODES, PARTITION, PARTITION_CONFIG = (
    "time", "cpus", "mem", "mem-per", "nodes", "partition", "partition-config")
ACCOUNT, QOS, QOS_LIMIT, ASSOC_LIMIT = "account", "qos", "qos-limit", "assoc-limit"
CONSTRAINT, NODELIST, GRES, RESERVATION, DEPENDENCY, NEVER = (
    "constraint", "nodelist", "gres", "reservation", "dependency", "never")
REQUEST = "request"   # site_facts for checking a request without a job: everything broken() reads


@dataclass
class Partition:
    """A partition (queue) and the limits it puts on each job; None: unlimited."""

    name: str
    default: bool = False
    max_time: int | None = None          # seconds
    min_nodes: int = 0
    max_nodes: int | None = None
    max_cpus_per_node: int | None = None
    max_mem_per_node: int | None = None  # MB
    max_mem_per_cpu: int | None = None   # MB
    nodes: tuple[str, ...] = ()
    allow_accounts: str = "ALL"
    allow_qos: str = "ALL"


@dataclass
class Node:
    name: str
    cpus: int = 0
    mem: int = 0                         # MB
    features: tuple[str, ...] = ()
    gpus: int = 0


@dataclass
class QosLimits:
    """A QOS's per-job limits: MaxWall (seconds) and TRES (name -> value as printed)."""

    name: str
    max_wall: int | None = None
    max_tres: dict[str, str] = field(default_factory=dict)
    max_tres_per_node: dict[str, str] = field(default_factory=dict)
    min_tres: dict[str, str] = field(default_factory=dict)


@dataclass
class Ask:
    """What the scheduler's own record says the job asks for (its effective request)."""

    partition: str = ""
    account: str = ""
    qos: str = ""
    time: int | None = None              # seconds
    cpus: int = 0
    mem: int = 0                         # MB per node
    nodes: int = 0
    constraint: str = ""
    reservation: str = ""
    gpus: int = 0


@dataclass
class Association:
    """One of the user's associations: an account (on one partition, "": all) and its QOS."""

    account: str
    partition: str = ""
    qos: tuple[str, ...] = ()
    default_qos: str = ""


@dataclass
class Accounting:
    """The user's accounting, where the site enforces it (``enforce``: SLURM's words)."""

    enforce: frozenset[str] = frozenset()
    default_account: str = ""
    assocs: list[Association] = field(default_factory=list)


@dataclass
class SiteFacts:
    partitions: dict[str, Partition] = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict)
    qos: dict[str, QosLimits] = field(default_factory=dict)
    ask: Ask | None = None
    detail: str = ""                     # the scheduler's own account of it (SGE's error reason...)
    accounting: Accounting | None = None  # None: no accounting, or it could not be read


def hint(option: str) -> str:
    """How a user sets option: the install flag and the per-launch variable."""
    return f"--{option} or RK_{option.upper()}"


def wall(total: int) -> str:
    """Seconds as SLURM prints a limit: H:MM:SS, or D-HH:MM:SS from a day on."""
    d, rest = divmod(total, 86400)
    h, rest = divmod(rest, 3600)
    return (f"{d}-{h:02d}" if d else f"{h}") + f":{rest // 60:02d}:{rest % 60:02d}"


def size(mb: int) -> str:
    return f"{mb // 1024}G" if mb >= 1024 and mb % 1024 == 0 else f"{mb}M"


def effective(res: Resources, facts: SiteFacts) -> Ask:
    """The request: the scheduler's record where it has a value, else the spec's options."""
    a = facts.ask or Ask()
    part = a.partition or res.partition or next((p.name for p in facts.partitions.values() if p.default), "")
    return Ask(partition=part, account=a.account or res.account, qos=a.qos or res.qos,
               time=a.time if a.time is not None else (seconds(res.time) if res.time else None),
               cpus=a.cpus or res.cpus, mem=a.mem or (megabytes(res.mem) if res.mem else 0),
               nodes=a.nodes or 1, constraint=a.constraint or res.constraint,
               reservation=a.reservation or res.reservation, gpus=a.gpus or res.gpus)


def _members(p: Partition, facts: SiteFacts) -> list[Node]:
    return [facts.nodes[n] for n in p.nodes if n in facts.nodes]


def _largest(p: Partition, facts: SiteFacts, attr: str) -> int:
    """The most CPUs (or MB) one node of p offers a job, within the partition's per-node cap."""
    best = max((getattr(n, attr) for n in _members(p, facts)), default=0)
    cap = {"cpus": p.max_cpus_per_node, "mem": p.max_mem_per_node}.get(attr)
    return min(best, cap) if cap and best else (cap or best)


def _elsewhere(facts: SiteFacts, here: str, fits) -> str:
    """', or use partition X' for the other partitions where fits(partition) holds."""
    names = [p.name for p in facts.partitions.values() if p.name != here and fits(p)]
    return f", or use partition {' or '.join(names)}" if names else ""


def _time(a: Ask, p: Partition | None, facts: SiteFacts) -> str:
    if p is None or p.max_time is None:
        return f"the time limit asked for is more than the partition allows; ask for less with {hint('time')}"
    asked = f" (asked for {wall(a.time)})" if a.time else ""
    return (f"partition {p.name} allows at most {wall(p.max_time)}{asked}; ask for less with {hint('time')}"
            + _elsewhere(facts, p.name, lambda q: q.max_time is None or q.max_time >= (a.time or p.max_time + 1)))


def _cpus(a: Ask, p: Partition | None, facts: SiteFacts) -> str:
    most = _largest(p, facts, "cpus") if p else 0
    if not most:
        return f"no node can give the job {a.cpus or 'the'} CPUs asked for; ask for fewer with {hint('cpus')}"
    return (f"no node of partition {p.name} has {a.cpus or 'the'} CPUs (the largest has {most}); ask for fewer "
            f"with {hint('cpus')}" + _elsewhere(facts, p.name, lambda q: _largest(q, facts, "cpus") >= a.cpus > 0))


def _mem(a: Ask, p: Partition | None, facts: SiteFacts) -> str:
    most = _largest(p, facts, "mem") if p else 0
    asked = size(a.mem) if a.mem else "the memory asked for"
    if not most:
        return f"no node can give the job {asked}; ask for less with {hint('mem')}"
    return (f"no node of partition {p.name} has {asked} of memory for a job (the largest has {size(most)}); "
            f"ask for less with {hint('mem')}" + _elsewhere(facts, p.name, lambda q: _largest(q, facts, "mem") >= a.mem > 0))


def _mem_per(a: Ask, p: Partition | None, facts: SiteFacts) -> str:
    caps = [f"{size(v)} per {w}" for v, w in ((p.max_mem_per_node, "node"), (p.max_mem_per_cpu, "CPU")) if v] if p else []
    where = f"partition {p.name}" if p else "the partition"
    return f"{where} allows at most {' and '.join(caps) or 'less memory per node or CPU'}; ask for less with {hint('mem')}"


def _nodes(a: Ask, p: Partition | None, facts: SiteFacts) -> str:
    if p is None:
        return "the node count asked for is outside the partition's limits; remove --nodes from the spec's directives"
    most = "unlimited" if p.max_nodes is None else str(p.max_nodes)
    return (f"partition {p.name} takes jobs of {p.min_nodes or 1} to {most} nodes (asked for {a.nodes}); a kernel "
            f"needs one node: remove --nodes from the spec's directives" + _elsewhere(
                facts, p.name, lambda q: q.min_nodes <= a.nodes <= (q.max_nodes or a.nodes)))


def _partition(a: Ask, p: Partition | None, facts: SiteFacts) -> str:
    names = ", ".join(facts.partitions) or "those `sinfo` lists"
    return f"partition {a.partition or '(default)'} does not exist; choose one of {names} with {hint('partition')}"


def _listed(allowed: str, value: str) -> bool:
    return allowed in ("ALL", "") or value in allowed.split(",")


def _account(a: Ask, p: Partition | None, facts: SiteFacts) -> str:
    only = f"; partition {p.name} takes only {p.allow_accounts}" if p and not _listed(p.allow_accounts, a.account) else ""
    return (f"account {a.account or '(your default)'} is not one you may use here{only}; set one of yours with "
            f"{hint('account')} (`sacctmgr show assoc user=$USER format=account,partition` lists them)")


def _qos(a: Ask, p: Partition | None, facts: SiteFacts) -> str:
    only = f"; partition {p.name} takes only {p.allow_qos}" if p and not _listed(p.allow_qos, a.qos) else ""
    known = f" (the QOS are {', '.join(facts.qos)})" if facts.qos else ""
    return (f"QOS {a.qos or '(your default)'} is not valid for you here{only}{known}; set one you may use with "
            f"{hint('qos')} (`sacctmgr show assoc user=$USER format=qos` lists them)")


def _over(a: Ask, p: Partition, facts: SiteFacts) -> str | None:
    """The kind of partition limit (or node size) request a breaks in p; None if none is known broken."""
    checks = [(p.max_time is not None and a.time is not None and a.time > p.max_time, TIME),
              (a.cpus > 0 and 0 < _largest(p, facts, "cpus") < a.cpus, CPUS),
              (a.mem > 0 and 0 < _largest(p, facts, "mem") < a.mem, MEM),
              (a.gpus > 0 and bool(_members(p, facts)) and _largest(p, facts, "gpus") < a.gpus, GRES),
              (not p.min_nodes <= a.nodes <= (p.max_nodes or a.nodes), NODES),
              # Unset account/QOS: the user's defaults apply, which only the job record knows.
              (bool(a.account) and not _listed(p.allow_accounts, a.account), ACCOUNT),
              (bool(a.qos) and not _listed(p.allow_qos, a.qos), QOS)]
    return next((kind for broken, kind in checks if broken), None)


def _partition_config(a: Ask, p: Partition | None, facts: SiteFacts) -> str:
    """SLURM's "PartitionConfig": find the partition limit the request breaks, from the facts."""
    if p is None:
        return _partition(a, p, facts) if facts.partitions else \
            "the partition does not take this job as asked; change the spec's request (`scontrol show partition` shows its limits)"
    kind = _over(a, p, facts)
    if kind is not None:
        return explain(kind, "PartitionConfig", Resources(), replace(facts, ask=a))
    return (f"partition {p.name} does not take this job as asked (its access or size limits); change the "
            f"spec's request (`scontrol show partition {p.name}` shows them)")


# The resource a QOS/association limit's name is about (SLURM's reason words) -> (words, option).
TRES_WORDS = [("WallDuration", "wall time", "time"), ("CpuMinutes", "CPU-minutes (CPUs x time)", "cpus"),
              ("Cpu", "CPUs", "cpus"), ("Memory", "memory", "mem"), ("Mem", "memory", "mem"),
              ("Node", "nodes", "nodes"), ("GRES", "GPUs and other GRES", "gpus"),
              ("Billing", "billing units", "cpus"), ("License", "licenses", ""), ("BB", "burst buffer", ""),
              ("Energy", "energy", ""), ("Unknown", "TRES", "")]
TRES_KEYS = {"cpus": "cpu", "mem": "mem", "nodes": "node", "gpus": "gres/gpu"}


def _tres(said: str) -> tuple[str, str]:
    body = re.sub(r"^(QOS|Assoc)(Max|Min)?", "", said)
    return next(((w, o) for key, w, o in TRES_WORDS if body.startswith(key)), ("resources", ""))


def _limit(a: Ask, said: str, facts: SiteFacts, owner: str, other: str) -> str:
    words, option = _tres(said)
    minimum = re.match(r"^(QOS|Assoc)Min", said) is not None
    q = facts.qos.get(a.qos) if owner.startswith("QOS") else None
    value = ""
    if q is not None:
        if option == "time" and q.max_wall:
            value = wall(q.max_wall)
        else:
            table = q.min_tres if minimum else (q.max_tres_per_node if "PerNode" in said else q.max_tres)
            value = table.get(TRES_KEYS.get(option, ""), "")
    per = "per node" if "PerNode" in said else "per job"
    bound = f"{'at least' if minimum else 'up to'} {value}" if value else f"within a limit ({said})"
    limit = f"{owner} {'requires' if minimum else 'allows'} {words} {bound} {per}"
    change = f"ask for {'more' if minimum else 'less'} with {hint(option)}" if option and option != "nodes" \
        else "change the request"
    return f"{limit}; {change}, or use another {other} with {hint(other.lower())}"


def explain(kind: str, said: str, res: Resources, facts: SiteFacts) -> str:
    """The one-line why-and-fix for a job that can never start.

    kind: the limit (a constant above); said: the scheduler's own words (its reason);
    res: the spec's request; facts: what the adapter read about the site.
    """
    a = effective(res, facts)
    p = facts.partitions.get(a.partition)
    if kind == QOS_LIMIT:
        return _limit(a, said, facts, f"QOS {a.qos}" if a.qos else "your QOS", "QOS")
    if kind == ASSOC_LIMIT:
        return _limit(a, said, facts, f"account {a.account}'s association" if a.account else "your association",
                      "account")
    simple = {TIME: _time, CPUS: _cpus, MEM: _mem, MEM_PER: _mem_per, NODES: _nodes, PARTITION: _partition,
              PARTITION_CONFIG: _partition_config, ACCOUNT: _account, QOS: _qos}
    if kind in simple:
        return simple[kind](a, p, facts)
    if kind == CONSTRAINT:
        have = sorted({f for n in (_members(p, facts) if p else facts.nodes.values()) for f in n.features})
        return (f"no node{' of partition ' + p.name if p else ''} has the features {a.constraint or 'asked for'} "
                f"(they have: {', '.join(have) or 'none'}); change {hint('constraint')}")
    if kind == NODELIST:
        return (f"the spec names nodes that do not exist ({said}; the nodes are {', '.join(facts.nodes) or 'unknown'}); "
                "fix the node list in the spec's directives")
    if kind == GRES:
        return f"no node{' of partition ' + p.name if p else ''} has the GPUs or GRES asked for; change {hint('gpus')}"
    if kind == RESERVATION:
        return (f"reservation {a.reservation or '(asked for)'} does not exist or was deleted; set another with "
                f"{hint('reservation')} (`scontrol show reservation` lists them)")
    if kind == DEPENDENCY:
        return "its dependency can never be satisfied; fix or remove --dependency in the spec's directives"
    detail = f"{facts.detail}; " if facts.detail else ""
    return f"{detail}change the spec's request (`remote-kernels show NAME` prints its batch script)"


@dataclass
class Broken:
    """A limit a request breaks: its kind, the scheduler's word for it, and the facts to explain
    it with (the user's default account and QOS filled in)."""

    kind: str
    said: str
    facts: SiteFacts


# A QOS's per-job limit -> (SLURM's reason word, the request's field, the TRES key).
# The reason SLURM gives for each per-job QOS maximum, by request field (TRES key: TRES_KEYS).
QOS_CHECKS = (("QOSMaxCpuPerJobLimit", "cpus"), ("QOSMaxMemoryPerJob", "mem"), ("QOSMaxGRESPerJob", "gpus"))


def _tres_amount(value: str, key: str) -> int | None:
    try:
        return megabytes(value) if key == "mem" else int(value)
    except ValueError:
        return None


def _qos_broken(a: Ask, q: QosLimits) -> str | None:
    """SLURM's reason word for the per-job limit of QOS q that request a exceeds, or None."""
    if q.max_wall is not None and a.time is not None and a.time > q.max_wall:
        return "QOSMaxWallDurationPerJobLimit"
    for said, attr in QOS_CHECKS:
        key = TRES_KEYS[attr]
        most = _tres_amount(q.max_tres.get(key, ""), key)
        if most is not None and getattr(a, attr) > most:
            return said
    least = _tres_amount(q.min_tres.get("cpu", ""), "cpu")
    return "QOSMinCpuNotSatisfied" if least is not None and 0 < a.cpus < least else None


def _association(a: Ask, acct: Accounting) -> Association | None:
    """The user's association for a's account on a's partition (a partition's own first)."""
    mine = [x for x in acct.assocs if x.account == a.account and x.partition in (a.partition, "")]
    return max(mine, key=lambda x: x.partition != "", default=None)


def broken(res: Resources, facts: SiteFacts) -> Broken | None:
    """The first limit the request ``res`` is known to break at this site, without a job; None
    when none is (or the facts cannot tell).  Partitions, their nodes' sizes, then (when
    ``facts.accounting`` says accounting is enforced) the account, the QOS and its limits."""
    a = effective(res, facts)
    if a.partition and facts.partitions and a.partition not in facts.partitions:
        return Broken(PARTITION, "partition", facts)
    p = facts.partitions.get(a.partition)
    kind = _over(a, p, facts) if p else None
    if kind is not None:
        return Broken(kind, "partition", facts)
    acct = facts.accounting
    if acct is None or not acct.enforce & {"associations", "qos", "limits", "safe"}:
        return None
    a.account = a.account or acct.default_account
    assoc = _association(a, acct)
    if assoc is None:
        return Broken(ACCOUNT, "account", replace(facts, ask=Ask(account=res.account)))
    if not a.qos:
        a.qos = assoc.default_qos or ("normal" if "normal" in assoc.qos else "")
    known = replace(facts, ask=Ask(account=a.account, qos=a.qos))
    if a.qos and a.qos not in assoc.qos and "qos" in acct.enforce:
        return Broken(QOS, "qos", replace(known, ask=Ask(account=a.account, qos=res.qos)))
    q = facts.qos.get(a.qos)
    said = _qos_broken(a, q) if q is not None and acct.enforce & {"limits", "safe"} else None
    return Broken(QOS_LIMIT, said, known) if said else None
