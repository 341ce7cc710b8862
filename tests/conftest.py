"""Shared fixtures.  Tests that need the test cluster fail (never skip) under CI=true."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

CLUSTER_JSON = Path(os.environ.get("RK_CLUSTER_STATE", "/var/lib/rk-cluster")) / "cluster.json"
CLUSTER_SCRIPT = Path(__file__).parent / "cluster" / "cluster.py"


def _missing(reason: str):
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"test cluster missing under CI: {reason} (run `make cluster`)")
    pytest.skip(f"test cluster missing: {reason} (run `make cluster`)")


@pytest.fixture(scope="session")
def cluster() -> dict:
    """The running test cluster's description (cluster.json), checked to be alive."""
    if not CLUSTER_JSON.exists():
        _missing(f"{CLUSTER_JSON} not found")
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True)
    if ping.returncode != 0 or "UP" not in ping.stdout:
        _missing(f"slurmctld does not answer: {ping.stdout.strip()} {ping.stderr.strip()}")
    return json.loads(CLUSTER_JSON.read_text())


def pytest_collection_modifyitems(config, items):
    """Run tests that take the cluster down and up again after all the others."""
    items.sort(key=lambda item: item.get_closest_marker("disruptive") is not None)
