"""The reference docs match the code: every option and CLI flag documented, nothing extra.

No cluster needed.  docs/options.md's reference rows start with "| `name` |";
docs/cli.md must name every subcommand and every long option of the parser.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
from jupyter_client.provisioning.provisioner_base import KernelProvisionerBase

from remote_kernels.cli import build_parser
from remote_kernels.options import KernelOptions
from remote_kernels.provisioner import RemoteKernelProvisioner

DOCS = Path(__file__).resolve().parent.parent / "docs"

# A table row whose first cell is one backticked identifier: "| `partition` | ...".
OPTION_ROW = re.compile(r"^\|\s*`([A-Za-z_][A-Za-z0-9_]*)`\s*\|")


def documented_options(text: str) -> list[str]:
    return [m.group(1) for line in text.splitlines() if (m := OPTION_ROW.match(line.strip()))]


def code_options() -> set[str]:
    """Our config traits: KernelOptions' (inherited by the provisioner) + the provisioner's own.

    RemoteKernelProvisioner.class_traits(config=True) would also take in any config trait
    of jupyter_client's base classes, which are not ours to document.
    """
    return set(KernelOptions.class_traits(config=True)) | set(RemoteKernelProvisioner.class_own_traits(config=True))


def test_option_row_parser():
    text = "| option | type |\n| --- | --- |\n| `partition` | string |\n  | `grace` | float |\n| `--cpus N` | x |\nno `time` here\n"
    assert documented_options(text) == ["partition", "grace"]


def test_code_options_include_the_provisioners_own():
    names = code_options()
    assert "login_transport" in names
    assert set(KernelOptions.class_traits(config=True)) <= names
    # Nothing of jupyter_client's base class sneaks in.
    base = set(KernelProvisionerBase.class_traits(config=True)) - set(KernelOptions.class_traits(config=True))
    assert not names & base


def test_options_page_lists_exactly_the_config_traits():
    documented = documented_options((DOCS / "options.md").read_text())
    duplicates = sorted({n for n in documented if documented.count(n) > 1})
    assert not duplicates, f"documented more than once in docs/options.md: {duplicates}"
    expected = code_options()
    missing = sorted(expected - set(documented))
    extra = sorted(set(documented) - expected)
    assert not missing, f"config options missing from docs/options.md: {missing}"
    assert not extra, f"docs/options.md documents options the code does not have: {extra}"


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _long_options(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings if s.startswith("--")}


def _cli_items() -> list[tuple[str, str]]:
    parser = build_parser()
    subs = _subparsers(parser)
    items = [("remote-kernels", opt) for opt in sorted(_long_options(parser))]
    for name, sub in sorted(subs.items()):
        items.append((name, name))
        items += [(name, opt) for opt in sorted(_long_options(sub))]
    return items


def test_parser_has_the_expected_shape():
    # Guards the introspection above: if argparse internals changed, the docs test would pass vacuously.
    subs = _subparsers(build_parser())
    assert {"install", "run"} <= set(subs)
    assert {"--partition", "--time", "--replace"} <= _long_options(subs["install"])
    assert {"--kernel", "--connection-file"} <= _long_options(subs["run"])


@pytest.mark.parametrize("command,item", _cli_items(), ids=lambda v: v)
def test_cli_page_names_every_subcommand_and_option(command, item):
    text = (DOCS / "cli.md").read_text()
    if item.startswith("--"):
        # The flag as a whole word: "--time" must not be satisfied by "--time-limit".
        found = re.search(rf"(?<![\w-]){re.escape(item)}(?![\w-])", text)
        assert found, f"docs/cli.md does not mention {command}'s option {item}"
    else:
        assert f"remote-kernels {item}" in text, f"docs/cli.md does not document the subcommand {item!r}"
