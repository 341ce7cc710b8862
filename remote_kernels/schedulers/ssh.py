"""No scheduler: the "job" is the launcher started over SSH on a named host.

``partition`` names the host (or a comma-separated list: the first that accepts the job
is used).  submit() runs the script detached there (``setsid nohup bash -s``, the script
on stdin) and returns ``HOST:PID``; the process is its own session and process group
leader, so PID identifies it.  status() asks each host once (``ps`` for all its PIDs);
cancel() sends SIGTERM to the process group (the launcher stops the kernel and exits).
Other resources are not enforced: there is no allocation.  The launcher runs in the
environment sshd gives the user on the host; nothing of the server's is sent.
"""

from __future__ import annotations

import asyncio
import re

from ..runner import CommandError, CommandRunner, SSHCommandRunner
from . import JobState, JobStatus, Resources
from ._common import StatusOnly, log_redirect, parse_or_gone

PREFIX = "#RK_SSH "
# Runs on the host: read the whole script, start it detached, print its PID.  One line, so that
# any login shell (csh and tcsh too) passes it to sh intact (runner.remote_command).
DETACH = ('script=$(cat) || exit 1; '
          'printf "%s\\n" "$script" | RK_SSH_HOST="$1" setsid nohup bash -s >/dev/null 2>&1 & echo $!')
PID = re.compile(r"(?P<id>\d+)")


class HostRunner(SSHCommandRunner):
    """An SSHCommandRunner for a compute host, optionally tunnelled through a login host."""

    def __init__(self, host: str, via: SSHCommandRunner | None = None, timeout: float = 30.0):
        super().__init__(host, timeout)
        self.via = via

    async def _tunnel(self):
        return await self.via.connection() if self.via is not None else None


_runners: dict[tuple[int, str, str], HostRunner] = {}


def host_runner(host: str, via: CommandRunner) -> HostRunner:
    """The event loop's shared runner for host (through via when that is a login-host runner;
    via's timeout either way)."""
    login = via if isinstance(via, SSHCommandRunner) else None
    key = (id(asyncio.get_running_loop()), host, login.host if login else "")
    if key not in _runners:
        _runners[key] = HostRunner(host, login, via.timeout)
    return _runners[key]


def split_id(job_id: str) -> tuple[str, str]:
    host, _, pid = job_id.rpartition(":")
    if not host or not pid.isdigit():
        raise ValueError(f"not an ssh job id (HOST:PID): {job_id!r}")
    return host, pid


class SSH(StatusOnly):
    name = "ssh"

    def header(self, res: Resources) -> list[str]:
        # The output file is named after the job id, HOST:PID, known only once the script runs.
        return [f"{PREFIX}hosts={res.partition}"] + log_redirect(res.output, "${RK_SSH_HOST}:$$")

    @staticmethod
    def hosts(script: str) -> list[str]:
        lines = [l[len(PREFIX):] for l in script.splitlines() if l.startswith(PREFIX + "hosts=")]
        hosts = [h.strip() for h in (lines[-1][len("hosts="):] if lines else "").split(",") if h.strip()]
        if not hosts:
            raise ValueError("the ssh scheduler runs kernels on the host named by `partition`; set it, "
                             "e.g. --partition node17 (or a comma-separated list)")
        return hosts

    @staticmethod
    def parse_job_id(host: str, stdout: str) -> str:
        for line in reversed(stdout.splitlines()):
            m = PID.fullmatch(line.strip())
            if m:
                return f"{host}:{m.group('id')}"
        raise ValueError(f"starting the launcher on {host} printed no process id: {stdout.strip()!r}")

    async def submit(self, script: str) -> str:
        errors = []
        for host in self.hosts(script):
            try:
                _, out, _ = await host_runner(host, self.runner).run(
                    ["sh", "-c", DETACH, "sh", host], stdin=script, c_locale=False)
            except CommandError as e:
                errors.append(str(e))
                continue
            return self.parse_job_id(host, out)
        raise CommandError(["ssh", "..."], 255, "", "; ".join(errors))

    @staticmethod
    def ps_argv(pids: list[str]) -> list[str]:
        return ["ps", "-o", "pid=,sid=,stat=", "-p", ",".join(pids)]

    @staticmethod
    def parse_ps(host: str, stdout: str) -> dict[str, JobStatus]:
        """``ps -o pid=,sid=,stat=`` lines; only session leaders are ours (a reused PID is not)."""
        found = {}
        for line in stdout.splitlines():
            parts = line.split()
            if len(parts) != 3 or parts[0] != parts[1]:
                continue
            pid, _, stat = parts
            # A zombie has ended; its exit status is not ours to read.
            state = JobState.GONE if stat.startswith("Z") else \
                JobState.SUSPENDED if stat.startswith("T") else JobState.RUNNING
            found[f"{host}:{pid}"] = JobStatus(state=state, native=stat, node=host)
        return found

    async def status(self, job_ids: list[str]) -> dict[str, JobStatus]:
        by_host: dict[str, list[str]] = {}
        for job_id in job_ids:
            host, pid = split_id(job_id)
            by_host.setdefault(host, []).append(pid)
        found: dict[str, JobStatus] = {}
        for host, pids in by_host.items():
            argv = self.ps_argv(pids)
            code, out, err = await host_runner(host, self.runner).run(argv, check=False)
            if code not in (0, 1) or err.strip():   # ps exits 1 when none of the PIDs exists
                raise CommandError(argv, code, out, err)
            found.update(self.parse_ps(host, out))
        return parse_or_gone(job_ids, found)

    async def cancel(self, job_id: str) -> None:
        host, pid = split_id(job_id)
        await host_runner(host, self.runner).run(["kill", "-TERM", "--", f"-{pid}"])
