"""SLURM's facts for why-never messages and request checks: ``scontrol -o show partition``,
``node`` and ``job``, ``scontrol show config`` and ``sacctmgr``'s QOS, associations and
users, read into limits.SiteFacts.  Pure functions of the commands' output."""

from __future__ import annotations

import re

from . import limits as L
from ._common import _MB, expand_hostlist, seconds

UNSET = ("", "(null)", "N/A", "UNLIMITED", "NONE", "Partition_Limit")
# One "Key=Value" of `scontrol -o` output (a value may hold spaces: OS=Linux 6.1 #1 SMP).
SCONTROL_KEY = re.compile(r"(?:^|\s)([A-Za-z][\w:/.]*)=")


def parse_facts(partitions: str, nodes: str, job: str = "", qos: str = "") -> L.SiteFacts:
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
