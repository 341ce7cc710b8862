"""Run scheduler commands (argv lists, never shell strings) and fail loudly."""

from __future__ import annotations

import asyncio
import os
import re
from dataclasses import dataclass

from . import perloop

# Words any login shell (sh, bash, csh, tcsh) takes as they are.
_PLAIN_WORD = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")
# csh/tcsh expand "!" (history) even inside single quotes unless a blank, "=", "(" or the like
# follows, and turn "\\!" into "!" there (sh keeps both characters).
_HISTORY = re.compile(r"\\!|!(?![\s=(;&|)\"]|$)")


class CommandError(RuntimeError):
    """A command failed; carries its argv, exit code and output."""

    def __init__(self, argv: list[str], returncode: int | None, stdout: str, stderr: str):
        self.argv, self.returncode, self.stdout, self.stderr = argv, returncode, stdout, stderr
        what = "timed out" if returncode is None else f"exited {returncode}"
        detail = (stderr.strip() or stdout.strip()).splitlines()
        super().__init__(f"`{' '.join(argv)}` {what}" + (f": {detail[-1]}" if detail else ""))


class HostUnreachable(CommandError):
    """The command never ran: no SSH connection to the host.  Its message is the reason alone."""

    def __str__(self) -> str:
        return self.stderr


@dataclass
class CommandRunner:
    """Runs argv lists locally.  ``timeout`` bounds every command."""

    timeout: float = 30.0
    where = "local"

    async def run(self, argv: list[str], *, stdin: str | None = None, check: bool = True,
                  c_locale: bool = True) -> tuple[int, str, str]:
        """Run argv; return (exit code, stdout, stderr).  Raise CommandError on failure if check.

        ``c_locale``: run it with LC_ALL=C, so its output reads the same everywhere; False for a
        command that starts something long-lived, which keeps the locale it would have anyway."""
        env = dict(os.environ, LC_ALL="C") if c_locale else None
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

    async def start(self, argv: list[str], *, stdin: str, drop_env: tuple[str, ...] = (),
                    keep_env: tuple[str, ...] = ()) -> asyncio.subprocess.Process:
        """Start argv as a long-lived command in a session of its own (a terminal's Ctrl-C and
        the death of this process do not reach it), ``stdin`` written to it and closed, stderr
        a pipe, stdout discarded; LC_ALL=C.  Variables named with a prefix in ``drop_env`` are
        left out of its environment, but those in ``keep_env``.  CommandError if it cannot
        start; ValueError where commands run elsewhere (SSHCommandRunner)."""
        env = {k: v for k, v in os.environ.items() if k in keep_env or not k.startswith(drop_env)}
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, env=dict(env, LC_ALL="C"), stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, start_new_session=True)
        except FileNotFoundError as e:
            raise CommandError(argv, 127, "", f"{argv[0]}: command not found ({e})") from None
        proc.stdin.write(stdin.encode())
        proc.stdin.close()   # the pipe buffers the script until the command reads it
        return proc

    async def close(self) -> None:
        """Let go of what run() holds open (nothing here)."""


class SSHCommandRunner(CommandRunner):
    """Runs argv lists on a login host over SSH (for a Jupyter server off the cluster).

    Nothing of remote-kernels is needed on that host: each argv is quoted word by word
    into the one command line SSH carries.  The connection (the user's ~/.ssh/config,
    host keys verified) is opened on first use and shared.  Commands run in the environment
    sshd gives the user there: nothing of this process's is sent (sshconnect).
    """

    def __init__(self, host: str, timeout: float = 30.0):
        super().__init__(timeout)
        self.host = host
        self.where = host
        self._conn = None
        self._lock = asyncio.Lock()

    async def connection(self):
        """The shared asyncssh connection to the login host."""
        from .sshconnect import connect

        async with self._lock:
            if self._conn is None or self._conn.is_closed():
                self._conn = await connect(self.host, tunnel=await self._tunnel(), timeout=self.timeout)
            return self._conn

    async def _tunnel(self):
        """The connection to go through (None: direct, or as the SSH configuration says)."""
        return None

    async def run(self, argv: list[str], *, stdin: str | None = None, check: bool = True,
                  c_locale: bool = True) -> tuple[int, str, str]:
        import asyncssh

        from .sshconnect import SSH_ERRORS, describe

        try:
            command = remote_command(["env", "LC_ALL=C", *argv] if c_locale else argv)
        except ValueError as e:
            raise CommandError(argv, 255, "", str(e)) from None
        try:
            conn = await self.connection()
            result = await conn.run(command, input=stdin, check=False, timeout=self.timeout)
        except asyncssh.TimeoutError:
            raise CommandError(argv, None, "", f"no answer from {self.host} within {self.timeout:g}s") from None
        except SSH_ERRORS as e:
            raise HostUnreachable(argv, 255, "", f"cannot reach login host {self.host} over SSH ({describe(e)}); "
                                  f"check the kernelspec's login_host and that `ssh {self.host}` works from here") from None
        stdout, stderr = str(result.stdout or ""), str(result.stderr or "")
        code = result.exit_status if result.exit_status is not None else 255
        if code == 127 and not stderr:
            stderr = f"{argv[0]}: command not found on {self.host}"
        if check and code != 0:
            raise CommandError(argv, code, stdout, stderr)
        return code, stdout, stderr

    async def start(self, argv: list[str], **kw) -> asyncio.subprocess.Process:
        raise ValueError(f"a long-lived command cannot be started on {self.host} (the server is off the "
                         "cluster); use dispatch batch")

    async def close(self) -> None:
        async with self._lock:
            if self._conn is not None:
                self._conn.close()
                await self._conn.wait_closed()
                self._conn = None


def remote_command(argv: list[str]) -> str:
    """The one command line that every login shell (sh, bash, csh, tcsh) splits back into argv.

    Called for each command sent over SSH (sshd hands the line to the user's login shell).
    Words are single-quoted (``'`` as ``'\\''``), which all four read alike; a word with a
    newline, or a ``!`` that csh would take for history, has no such form: ValueError.
    """
    words = []
    for word in argv:
        if "\n" in word or _HISTORY.search(word):
            raise ValueError(f"cannot send {word!r} to a remote shell: newlines and '!' mean different "
                             "things to csh and sh")
        words.append(word if _PLAIN_WORD.fullmatch(word) else "'" + word.replace("'", "'\\''") + "'")
    return " ".join(words)


def runner_for(login_host: str, timeout: float = 30.0) -> CommandRunner:
    """A local runner, or the running loop's shared SSH runner for (login_host, timeout)."""
    if not login_host:
        return CommandRunner(timeout)
    return perloop.shared((SSHCommandRunner, login_host, timeout), lambda: SSHCommandRunner(login_host, timeout))
