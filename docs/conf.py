"""Sphinx configuration for the remote-kernels documentation (MyST Markdown).

Build with ``make docs`` (warnings are errors), or
``python -m sphinx -W --keep-going -b html docs docs/_build/html``.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Read the version without importing the package (the docs build needs none of its dependencies).
_init = (ROOT / "remote_kernels" / "__init__.py").read_text()
release = re.search(r'^__version__\s*=\s*"([^"]+)"', _init, re.MULTILINE).group(1)
version = release

project = "remote-kernels"
author = "remote-kernels developers"
copyright = "remote-kernels developers"

extensions = ["myst_parser"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "bench-latest.md"]  # included by benchmarks.md

# MyST: anchors for headings so pages can link to a section (`page.md#section`).
myst_heading_anchors = 3

html_theme = "pydata_sphinx_theme"
html_title = f"remote-kernels {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
}
