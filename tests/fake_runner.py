"""A runner that answers scheduler commands from a function: unit tests of the scheduler layer's I/O."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable

from remote_kernels.runner import CommandError

_places = itertools.count()


@dataclass
class Call:
    argv: list[str]
    stdin: str | None
    c_locale: bool


class FakeRunner:
    """``run()`` answers ``answer(argv, stdin) -> (exit code, stdout, stderr)`` and records each call.

    Each instance is a place of its own (``where``), so watchers of different tests never share."""

    timeout = 30.0

    def __init__(self, answer: Callable[[list[str], str | None], tuple[int, str, str]]):
        self.answer = answer
        self.where = f"fake-{next(_places)}"
        self.calls: list[Call] = []

    async def run(self, argv: list[str], *, stdin: str | None = None, check: bool = True,
                  c_locale: bool = True) -> tuple[int, str, str]:
        self.calls.append(Call(list(argv), stdin, c_locale))
        code, out, err = self.answer(list(argv), stdin)
        if check and code != 0:
            raise CommandError(argv, code, out, err)
        return code, out, err


def printing(out: str, code: int = 0, err: str = "") -> FakeRunner:
    """A runner whose every command prints ``out`` (and ``err``) and exits ``code``."""
    return FakeRunner(lambda argv, stdin: (code, out, err))


def squeue_listing(states: dict[str, str]) -> FakeRunner:
    """squeue lists the jobs of ``states`` (job id -> SLURM state) asked about; sacct knows
    none of the others (they are gone)."""
    def answer(argv, stdin):
        if argv[0] == "squeue":
            ids = argv[argv.index("-j") + 1].split(",")
            return 0, "".join(f"{j}|{states[j]}|None|c1|2026-11-25T10:26:43\n" for j in ids if j in states), ""
        return 0, "", ""
    return FakeRunner(answer)
