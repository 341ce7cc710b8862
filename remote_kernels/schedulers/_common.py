"""Helpers shared by the scheduler adapters: units, job-id lines, host lists, batched queries."""

from __future__ import annotations

import re
import shlex
import xml.etree.ElementTree as ET
from typing import Callable, Iterable

from ..runner import CommandError, CommandRunner
from . import JobState, JobStatus, Scheduler

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


def first_host(hosts: str) -> str | None:
    """The first host of a host list: "c1/0*2+c2/0" (PBS), "4*c1:c2" (LSF), "c[1-2]" (Flux)..."""
    text = hosts.strip()
    if not text or text in ("-", "N/A", "(null)"):
        return None
    text = re.split(r"[+:\s]", text)[0]            # first entry of the list
    text = text.split("/")[0].split("*")[-1]        # drop CPU indexes (c1/0*2) and slot counts (4*c1)
    text = text.split("@")[-1]                      # slot1@c1 (HTCondor), all.q@c1 (SGE)
    ranged = re.fullmatch(r"(?P<pre>[^\[]*)\[(?P<first>[^\],\-]+)[^\]]*\](?P<post>.*)", text)
    if ranged:
        text = ranged.group("pre") + ranged.group("first") + ranged.group("post")
    return text.strip("()") or None


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


def parse_or_gone(job_ids: Iterable[str], found: dict[str, JobStatus]) -> dict[str, JobStatus]:
    """found, with every job id it lacks reported GONE."""
    return {j: found.get(j, JobStatus(JobState.GONE)) for j in job_ids}


class StatusOnly(Scheduler):
    """Adapters whose status output already carries the time left: time_left() = status()."""

    async def time_left(self, job_ids: list[str]) -> dict[str, JobStatus]:
        return await self.status(job_ids)


async def query(runner: CommandRunner, argv: list[str], parse: Callable[[str], dict[str, JobStatus]],
                job_ids: list[str], gone: re.Pattern) -> dict[str, JobStatus]:
    """Run one status command for job_ids and parse it; ids it does not list are GONE.

    Status commands exit non-zero when some ids are unknown (purged); that is fine as
    long as every stderr line says so (``gone`` matches it), or stderr is empty and the
    answer is on stdout.  Anything else raises CommandError: a failed query must never
    read as "all jobs gone".
    """
    if not job_ids:
        return {}
    code, out, err = await runner.run(argv, check=False)
    lines = [l for l in err.splitlines() if l.strip()]
    # Non-zero with no complaint on stderr: the answer (with per-id errors) is on stdout.
    if code != 0 and not (all(gone.search(l) for l in lines) if lines else out.strip()):
        raise CommandError(argv, code, out, err)
    try:
        found = parse(out)
    except ValueError as e:
        raise CommandError(argv, code, out, f"unreadable output: {e}") from None
    return parse_or_gone(job_ids, found)
