"""Pure helpers shared by the scheduler adapters: units, header options, job-id lines, host lists."""

from __future__ import annotations

import json
import re
import shlex
import xml.etree.ElementTree as ET
from typing import Any, Callable, Iterable, Iterator, Union

from .model import JobState, JobStatus, Resources

# The wall-time forms KernelOptions accepts (SLURM's): M, M:S, H:M:S, D-H, D-H:M, D-H:M:S.
_TIME = re.compile(r"^(?:(?P<d>\d+)-)?(?P<a>\d+)(?::(?P<b>\d+))?(?::(?P<c>\d+))?$")
_MEM = re.compile(r"^(?P<n>\d+)(?P<u>[KMGT]?)$", re.IGNORECASE)
_MB = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}
# The submitter's variables given to jobs of schedulers that otherwise start them with no
# environment at all (HTCondor, Flux): the search path and the language.  Who the user is
# and where home is, the job script takes from the node (script.IDENTITY).
SUBMITTER_ENV = ("PATH", "LANG")


def seconds(time: str) -> int:
    """Seconds in a wall time written as SLURM does ("30" is minutes, "1-12" is days-hours)."""
    m = _TIME.match(time.strip())
    if not m:
        raise ValueError(f"time {time!r} is not a wall time")
    d, a, b, c = (int(m.group(k)) if m.group(k) else None for k in "dabc")
    if d is not None:               # D-H, D-H:M, D-H:M:S
        parts = [a, b or 0, c or 0]
        return d * 86400 + parts[0] * 3600 + parts[1] * 60 + parts[2]
    if c is not None:               # H:M:S
        return a * 3600 + b * 60 + c
    if b is not None:               # M:S
        return a * 60 + b
    return a * 60                   # M


def hms(total: int) -> str:
    """HH:MM:SS (hours may exceed 24)."""
    return f"{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"


def megabytes(mem: str) -> int:
    """Megabytes in a size as KernelOptions accepts it ("4G", "512M"; no unit: megabytes)."""
    m = _MEM.match(mem.strip())
    if not m:
        raise ValueError(f"mem {mem!r} is not a size")
    return max(1, round(int(m.group("n")) * _MB[(m.group("u") or "M").upper()]))


def last_match(stdout: str, pattern: re.Pattern, what: str) -> str:
    """Group "id" of the last output line that ``pattern`` matches in full.

    Submit commands print their id alone (or in one fixed sentence) on a line; anything
    else (a site banner, warnings) is skipped, never searched for numbers.
    """
    for line in reversed(stdout.splitlines()):
        m = pattern.fullmatch(line.strip())
        if m:
            return m.group("id")
    raise ValueError(f"{what} printed no job id: {stdout.strip()!r}")


NO_HOST = ("", "-", "N/A", "(null)")


def expand_hostlist(text: str) -> list[str]:
    """A host list in SLURM's (and Flux's) syntax -> hosts: "c[1-2,05],d7" is c1, c2, c05, d7."""
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


def host_list(hosts: str) -> tuple[str, ...]:
    """Every host, in order and once, of a status command's host list: "c1/0*2+c2/0" (PBS,
    Torque), "4*c1:c2" (LSF), "c[01-02],d5" (SLURM, Flux), "slot1@c1" (HTCondor), "all.q@c1" (SGE)."""
    text = hosts.strip()
    if text in NO_HOST:
        return ()
    found: list[str] = []
    for entry in re.split(r"[+:\s]+", text):                   # PBS "+", LSF ":"
        entry = entry.split("/")[0].split("*")[-1].split("@")[-1]   # CPU indexes, slot counts, slot@
        found += expand_hostlist(entry.strip("()"))
    return tuple(dict.fromkeys(found))


def first_host(hosts: str) -> str | None:
    """The first host of a host list (see host_list), or None."""
    return next(iter(host_list(hosts)), None)


# A header row: (a Resources field, what it becomes when set).  A str is formatted with the
# field's value; a function is called with the Resources and gives a line or a list of them.
# With field "", the function is always called (for options made of several fields).
Option = tuple[str, Union[str, Callable[[Resources], Union[str, list]]]]


def options(res: Resources, rows: Iterable[Option]) -> list[str]:
    """The scheduler options for the fields of ``res`` that are set, in the order of ``rows``."""
    out: list[str] = []
    for field, make in rows:
        value = getattr(res, field) if field else None
        if field and value in ("", 0, None):
            continue
        made = make(res) if callable(make) else make.format(value)
        out += [made] if isinstance(made, str) else made
    return out


def directive_lines(prefix: str, options: Iterable[str], extra: Iterable[str]) -> list[str]:
    """``prefix option`` for each option, then the spec's extra directives (prefixed unless they are)."""
    return [f"{prefix} {o}" for o in options] + [d if d.startswith(prefix) else f"{prefix} {d}" for d in extra]


def output_path(output: str, token: str) -> str:
    """``output`` (SLURM's ``%j`` for the job id) with the scheduler's own job-id token."""
    return output.replace("%j", token)


def log_redirect(output: str, job_id_expr: str) -> list[str]:
    """Script lines sending the job's stdout and stderr to ``output``, ``%j`` = the job id.

    For schedulers whose output option cannot name a file after the job id: the shell
    expands ``job_id_expr`` (a variable the scheduler sets in the job) at run time.
    """
    if not output:
        return []
    head, sep, tail = output.partition("%j")
    path = shlex.quote(head) + (f'"{job_id_expr}"' + shlex.quote(tail) if sep else "")
    return [f"exec >>{path} 2>&1"]


def xml_root(stdout: str) -> ET.Element:
    """The parsed XML document; ValueError (a failed query, not a verdict on jobs) if malformed."""
    try:
        return ET.fromstring(stdout)
    except ET.ParseError as e:
        raise ValueError(str(e)) from None


def json_doc(stdout: str, empty: Any) -> Any:
    """The JSON document on stdout; ``empty`` if there is none (no job to list)."""
    return json.loads(stdout) if stdout.strip() else empty


def split_lines(stdout: str, count: int, sep: str = "|") -> Iterator[list[str]]:
    """The ``sep``-separated fields of each line that has exactly ``count`` of them."""
    for line in stdout.splitlines():
        parts = line.strip().split(sep, count - 1)
        if len(parts) == count:
            yield parts


def parse_or_gone(job_ids: Iterable[str], found: dict[str, JobStatus]) -> dict[str, JobStatus]:
    """found, with every job id it lacks reported GONE."""
    return {j: found.get(j, JobStatus(JobState.GONE)) for j in job_ids}
