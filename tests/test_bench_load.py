"""The bench's reading of slurmctld's own counters (sdiag): per-user RPC counts, and a reset
between two readings.  No cluster needed: a captured sdiag output."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from schedload import parse_sdiag, rpcs_between  # noqa: E402

SDIAG = (Path(__file__).parent / "samples" / "slurm" / "sdiag.txt").read_text()


def test_the_per_user_counts_and_the_epoch_they_count_from():
    since, counts = parse_sdiag(SDIAG)
    assert since == 1796214245
    # The by-user section only: the by-type rows (e.g. REQUEST_PARTITION_INFO (2009)) are not users.
    assert counts == {0: 745, 1001: 105, 65534: 4}


def test_rpcs_between_two_readings_and_none_after_a_reset():
    before = parse_sdiag(SDIAG)
    after = parse_sdiag(SDIAG.replace("(   65534) count:4 ", "(   65534) count:34 "))
    assert rpcs_between(before, after, 65534) == 30
    assert rpcs_between(before, after, 1001) == 0
    assert rpcs_between(before, (before[0] + 60, after[1]), 65534) is None   # sdiag --reset meanwhile
    assert rpcs_between((None, {}), after, 65534) is None                      # sdiag failed
    assert rpcs_between(before, parse_sdiag(SDIAG.replace("(   65534) count:4 ", "(   65534) count:0 ")), 65534) is None
