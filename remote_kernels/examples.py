"""The example kernelspecs shipped in the package (``remote_kernels/kernelspecs/NAME/kernel.json``)."""

from __future__ import annotations

from pathlib import Path

EXAMPLES_DIR = Path(__file__).resolve().parent / "kernelspecs"


def shipped_examples() -> dict[str, Path]:
    """name -> directory of each shipped example, sorted by name."""
    return {p.parent.name: p.parent for p in sorted(EXAMPLES_DIR.glob("*/kernel.json"))}
