"""Run scheduler commands (argv lists, never shell strings) and fail loudly."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass


class CommandError(RuntimeError):
    """A command failed; carries its argv, exit code and output."""

    def __init__(self, argv: list[str], returncode: int | None, stdout: str, stderr: str):
        self.argv, self.returncode, self.stdout, self.stderr = argv, returncode, stdout, stderr
        what = "timed out" if returncode is None else f"exited {returncode}"
        detail = (stderr.strip() or stdout.strip()).splitlines()
        super().__init__(f"`{' '.join(argv)}` {what}" + (f": {detail[-1]}" if detail else ""))


@dataclass
class CommandRunner:
    """Runs argv lists locally.  ``timeout`` bounds every command."""

    timeout: float = 30.0

    async def run(self, argv: list[str], *, stdin: str | None = None, check: bool = True) -> tuple[int, str, str]:
        """Run argv; return (exit code, stdout, stderr).  Raise CommandError on failure if check."""
        env = dict(os.environ, LC_ALL="C")
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, env=env,
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )
        except FileNotFoundError as e:
            raise CommandError(argv, 127, "", f"{argv[0]}: command not found ({e})") from None
        try:
            out, err = await asyncio.wait_for(
                proc.communicate(stdin.encode() if stdin is not None else None), self.timeout)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            raise CommandError(argv, None, "", f"no answer within {self.timeout:g}s") from None
        except asyncio.CancelledError:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            raise
        stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
        if check and proc.returncode != 0:
            raise CommandError(argv, proc.returncode, stdout, stderr)
        return proc.returncode, stdout, stderr
