"""No scheduler: the "job" is the launcher started over SSH on a named host.

``partition`` names the host (or a comma-separated list: the first that accepts the job
is used).  submit() runs the script detached there (``setsid nohup bash -s``, the script
on stdin) and returns ``HOST:PID``; the process is its own session and process group
leader, so PID identifies it.  status() asks each host once (``ps`` for all its PIDs);
cancel() sends SIGTERM to the process group (the launcher stops the kernel and exits),
signal() any signal.  Other resources are not enforced: there is no allocation.  The
launcher runs in the environment sshd gives the user on the host; nothing of the
server's is sent.

Its jobs live on several hosts, so this adapter overrides two of the base's I/O methods,
each a loop over hosts that runs its commands through ``Scheduler._run`` with the host as
``where``: submit (the hosts in order, until one starts the launcher) and status (one
query per host).  cancel and signal are the base's, through ``where()``.
"""

from __future__ import annotations

import re

from .. import perloop
from ..runner import CommandError, CommandRunner, SSHCommandRunner
from ._common import log_redirect
from .base import Scheduler
from .model import JobState, JobStatus, Resources

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


def host_runner(host: str, via: CommandRunner) -> HostRunner:
    """The running loop's shared runner for host, through via when that is a login-host runner,
    with via's timeout (perloop: a closed loop's runners are dropped)."""
    login = via if isinstance(via, SSHCommandRunner) else None
    key = (HostRunner, host, login.host if login else "", via.timeout)
    return perloop.shared(key, lambda: HostRunner(host, login, via.timeout))


def split_id(job_id: str) -> tuple[str, str]:
    host, _, pid = job_id.rpartition(":")
    if not host or not pid.isdigit():
        raise ValueError(f"not an ssh job id (HOST:PID): {job_id!r}")
    return host, pid


def hosts(res: Resources) -> list[str]:
    """The hosts to try, in order: ``partition``.  ValueError if it names none."""
    found = [h.strip() for h in res.partition.split(",") if h.strip()]
    if not found:
        raise ValueError("the ssh scheduler runs kernels on the host named by `partition`; set it, "
                         "e.g. --partition node17 (or a comma-separated list)")
    return found


class SSH(Scheduler):
    name = "ssh"
    quiet_exit = 1   # ps exits 1, printing nothing, when none of the PIDs exists

    def header(self, res: Resources) -> list[str]:
        # The output file is named after the job id, HOST:PID, known only once the script runs.
        return log_redirect(res.output, "${RK_SSH_HOST}:$$")

    @staticmethod
    def parse_job_id(host: str, stdout: str) -> str:   # the host too: the id is HOST:PID (submit below)
        for line in reversed(stdout.splitlines()):
            m = PID.fullmatch(line.strip())
            if m:
                return f"{host}:{m.group('id')}"
        raise ValueError(f"starting the launcher on {host} printed no process id: {stdout.strip()!r}")

    async def submit(self, text: str, res: Resources) -> str:
        """Start the launcher on the first of ``hosts(res)`` that takes it; CommandError naming
        every host's failure if none does."""
        errors = []
        for host in hosts(res):
            try:
                # c_locale=False: the launcher and kernel keep the locale the host gives them.
                _, out, _ = await self._run(["sh", "-c", DETACH, "sh", host], stdin=text, c_locale=False,
                                            where=host)
            except CommandError as e:
                errors.append(str(e))
                continue
            return self.parse_job_id(host, out)
        raise CommandError(["ssh", "..."], 255, "", "; ".join(errors))

    def status_argv(self, job_ids: list[str]) -> list[str]:
        """``ps`` for the PIDs of job_ids, all on one host."""
        return ["ps", "-o", "pid=,sid=,stat=", "-p", ",".join(split_id(j)[1] for j in job_ids)]

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
        """One ``ps`` per host, for all its jobs.  ValueError for an id that is not HOST:PID."""
        by_host: dict[str, list[str]] = {}
        for job_id in job_ids:
            by_host.setdefault(split_id(job_id)[0], []).append(job_id)
        found: dict[str, JobStatus] = {}
        for host, ids in by_host.items():
            found.update(await self._query(self.status_argv(ids), lambda out, h=host: self.parse_ps(h, out),
                                           ids, where=host))
        return found

    def where(self, job_id: str) -> str:
        return split_id(job_id)[0]

    def runner_at(self, where: str) -> CommandRunner:
        return host_runner(where, self.runner) if where else self.runner

    def cancel_argv(self, job_id: str) -> list[str]:
        return ["kill", "-TERM", "--", f"-{split_id(job_id)[1]}"]

    def signal_argv(self, job_id: str, name: str) -> list[str]:
        return ["kill", f"-{name}", "--", f"-{split_id(job_id)[1]}"]
