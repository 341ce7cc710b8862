"""The ``remote-kernels`` subcommands (cli.py parses the command line and calls these)."""

from __future__ import annotations


# How long `remote-kernels check` waits for a queued job when the spec sets no queue_timeout:
# an orphaned check never waits for ever.
CHECK_QUEUE_TIMEOUT = 600.0


class CommandFailed(Exception):
    """A subcommand failed; the message is the one line shown to the user."""


def table(headers: list[str], rows: list[list]) -> str:
    """Left-aligned plain-text columns, one line per row."""
    cells = [[str(v) for v in row] for row in [headers, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells)


def duration(seconds: float) -> str:
    """A short human duration: 42s, 12m05s, 3h04m, 2d03h."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"
