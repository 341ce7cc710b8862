"""The one class that runs scheduler commands.  Adapters give it data, argv builders and pure parsers.

Every scheduler command goes through ``Scheduler._run`` (and so through ``self.runner``):
an adapter module holds its scheduler's command lines, output formats and state tables,
and runs nothing itself.  Where a scheduler needs two steps, that is data too: HTCondor's
submit is two commands (``submit_commands``), its status asks ``condor_history`` about
the jobs ``condor_q`` no longer lists (``history_argv``).  The ssh adapter, whose "jobs"
live on several hosts, overrides ``submit`` and ``status`` (documented there); they too
run their commands through ``_run``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import re
import signal as _signal
from typing import TYPE_CHECKING, Callable, NamedTuple

from ..runner import CommandError, CommandRunner
from ._common import directive_lines, log_redirect, options, parse_or_gone
from .model import JobState, JobStatus, Resources

if TYPE_CHECKING:
    from .limits import SiteFacts

NO_MATCH = re.compile(r"(?!)")
log = logging.getLogger(__name__)


class UnreadableOutput(CommandError):
    """A status command answered, but its answer could not be read (a parser raised).

    The job watcher then asks about each job on its own, so that one job whose record
    breaks the parser (PBS's JSON for some job environments) does not hide the others."""


class Command(NamedTuple):
    """One command of a submission: argv, and what goes on its stdin."""

    argv: list[str]
    stdin: str | None = None


class Dispatched:
    """A job started through the scheduler's interactive path (``Scheduler.dispatch``): its id,
    and the command that made it, which stays with the job until the job ends.

    The job does not end with that command (SLURM keeps an allocation whose srun was killed):
    the job script ends it (``end_line``) and the core cancels it; ``finish()`` then reaps
    the command.  Owned by the Job, used on its loop."""

    def __init__(self, job_id: str, proc: asyncio.subprocess.Process, argv: list[str]):
        self.job_id, self.proc, self.argv = job_id, proc, argv
        self._drain = asyncio.ensure_future(self._read_rest())

    async def _read_rest(self) -> None:
        """Read the command's stderr to its end (a full pipe would stop it), logged at debug."""
        async for raw in self.proc.stderr:
            log.debug("job %s: %s: %s", self.job_id, self.argv[0], raw.decode(errors="replace").rstrip())

    async def finish(self, timeout: float = 5.0) -> int | None:
        """After the job's end: wait up to ``timeout`` s for the command to exit, then kill it.
        Its exit code (None if it had to be killed)."""
        try:
            await asyncio.wait_for(asyncio.shield(self.proc.wait()), timeout)
        except asyncio.TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            return None
        finally:
            await asyncio.wait({self._drain}, timeout=1.0)
        return self.proc.returncode


class Scheduler:
    """A scheduler adapter: class data, argv builders and pure parsers over the I/O done here.

    The core calls ``submit``, ``status``, ``time_left``, ``cancel`` and ``signal`` (on its
    event loop), and the pure never-start methods.  Each I/O method raises CommandError
    (the command failed, or its output could not be read) or ValueError (a request or job id
    the adapter cannot express); their messages are one line.
    """

    name = ""
    # Variables the job script exports first, for the adapter's own needs (the spec's env may override).
    script_env: dict[str, str] = {}

    # --- the header, as data (header() below; see _common.options) ---------------------------
    prefix = ""                          # the directive prefix: "#SBATCH"
    fixed_options: tuple[str, ...] = ()  # in every header: never requeue, one output file...
    resource_options: tuple = ()         # (Resources field, format or function of Resources) rows
    batch_options: tuple = ()            # rows as resource_options, for job-script headers only
    # For a scheduler whose output option cannot name the log after the job id: the job's
    # variable that holds its id (the script redirects its own output; _common.log_redirect).
    log_variable = ""

    # --- commands, as data -----------------------------------------------------------------
    submit_argv: tuple[str, ...] = ()    # the script goes on its stdin
    # A status command's stderr line saying that an id is unknown (purged): not a failure.
    gone: re.Pattern = NO_MATCH
    # The exit code with which the status command, printing nothing, says none of the ids exists.
    quiet_exit: int | None = None
    # Why the scheduler cannot signal a running job ("" : it can, with signal_argv).
    no_signal = ""

    def __init__(self, runner: CommandRunner | None = None):
        self.runner = runner or CommandRunner()

    # --- pure: builders and parsers, overridden per scheduler --------------------------------

    def header(self, res: Resources) -> list[str]:
        """Job-script directive lines (after the shebang) for these resources."""
        opts = list(self.fixed_options) + options(res, self.resource_options + self.batch_options)
        lines = directive_lines(self.prefix, opts, res.directives)
        return lines + (log_redirect(res.output, self.log_variable) if self.log_variable else [])

    def submit_commands(self, text: str, res: Resources) -> list[Command]:
        """The commands that submit job script ``text`` (rendered from ``res``), run in order;
        the last one prints the job id."""
        return [Command(list(self.submit_argv), text)]

    @staticmethod
    def parse_job_id(stdout: str) -> str:
        """The job id in the submit command's output; ValueError if it holds none."""
        raise NotImplementedError

    def status_argv(self, job_ids: list[str]) -> list[str]:
        """One command asking about all job_ids."""
        raise NotImplementedError

    @staticmethod
    def parse_status(stdout: str) -> dict[str, JobStatus]:
        """The status command's output -> {job id: status} of the jobs it lists."""
        raise NotImplementedError

    def history_argv(self, job_ids: list[str]) -> list[str] | None:
        """A command asking about jobs that left the queue (read with parse_status); None: none."""
        return None

    def time_left_argv(self, job_ids: list[str]) -> list[str] | None:
        """A command asking for the time left of job_ids (read with parse_time_left); None: the
        status output carries it."""
        return None

    @staticmethod
    def parse_time_left(stdout: str) -> dict[str, JobStatus]:
        raise NotImplementedError

    def cancel_argv(self, job_id: str) -> list[str]:
        raise NotImplementedError

    def signal_argv(self, job_id: str, name: str) -> list[str]:
        """The command sending signal ``name`` ("TERM", "INT"...) to the job's batch script
        (the launcher); only when ``no_signal`` is empty."""
        raise NotImplementedError

    # --- interactive dispatch, as data (dispatch() below) -----------------------------------
    # The command that makes the job and runs the script on stdin in it at once (SLURM's srun),
    # without waiting for a batch scheduling pass; () : the scheduler has none.
    dispatch_prefix: tuple[str, ...] = ()
    # Variables (by prefix) left out of that command's environment: a server running inside a
    # job of its own must not have the command take that job for the kernel's.  Kept: dispatch_keep.
    dispatch_drop: tuple[str, ...] = ()
    dispatch_keep: tuple[str, ...] = ()
    # The script's EXIT trap after the launcher: ends the job unless the shell's exit status ($?)
    # is 0 (launcher.EXIT_ABANDONED: its login side, and perhaps the command, are gone).
    end_line = ""

    def dispatch_argv(self, res: Resources, user: str, home: str) -> list[str]:
        """The interactive command for a job of ``res`` run by ``user`` (whose home is ``home``);
        only when dispatch_prefix is set."""
        raise NotImplementedError

    @staticmethod
    def parse_dispatched(line: str) -> str | None:
        """The job id in one stderr line of the interactive command, or None."""
        raise NotImplementedError

    def where(self, job_id: str) -> str:
        """Where commands about job_id run: "" (self.runner), or a host (the ssh adapter)."""
        return ""

    def runner_at(self, where: str) -> CommandRunner:
        """The runner for ``where`` (see where())."""
        return self.runner

    # --- I/O: the one place commands run -----------------------------------------------------

    async def _run(self, argv: list[str], *, stdin: str | None = None, check: bool = True,
                   c_locale: bool = True, where: str = "") -> tuple[int, str, str]:
        """Run argv with the runner for ``where``; see CommandRunner.run."""
        return await self.runner_at(where).run(argv, stdin=stdin, check=check, c_locale=c_locale)

    async def _query(self, argv: list[str], parse: Callable[[str], dict[str, JobStatus]],
                     job_ids: list[str], where: str = "") -> dict[str, JobStatus]:
        """Run one status command for job_ids and parse it; ids it does not list are GONE.

        Status commands exit non-zero when some ids are unknown (purged); that is fine as
        long as every stderr line says so (``gone``), or stderr is empty and the answer is on
        stdout (or the exit code is ``quiet_exit``).  Anything else raises CommandError: a
        failed query must never read as "all jobs gone".  Any exception of the parser is
        UnreadableOutput.
        """
        if not job_ids:
            return {}
        code, out, err = await self._run(argv, check=False, where=where)
        lines = [l for l in err.splitlines() if l.strip()]
        if lines:
            answered = code == 0 or all(self.gone.search(l) for l in lines)
        else:
            answered = code in (0, self.quiet_exit) or bool(out.strip())
        if not answered:
            raise CommandError(argv, code, out, err)
        try:
            found = parse(out)
        except Exception as e:   # a pure parser: whatever it raised, the output was not as documented
            raise UnreadableOutput(argv, code, out, f"unreadable output ({type(e).__name__}: {e})") from None
        return parse_or_gone(job_ids, found)

    async def submit(self, text: str, res: Resources) -> str:
        """Submit job script ``text``, rendered (script.render) from ``res``; return the job id.
        The job must not inherit the submitting process's environment."""
        out = ""
        for cmd in self.submit_commands(text, res):
            _, out, _ = await self._run(cmd.argv, stdin=cmd.stdin)
        return self.parse_job_id(out)

    async def dispatch(self, text: str, res: Resources) -> Dispatched:
        """Start job script ``text`` (rendered with ``interactive=True``) through the interactive
        path; return once the command has named the job (on submission, or on allocation when
        it is granted at once).  CommandError (its stderr) if it exits or stays silent first."""
        me = pwd.getpwuid(os.getuid())
        argv = self.dispatch_argv(res, me.pw_name, me.pw_dir)
        proc = await self.runner.start(argv, stdin=text, drop_env=self.dispatch_drop, keep_env=self.dispatch_keep)
        said: list[str] = []
        try:
            while True:
                raw = await asyncio.wait_for(proc.stderr.readline(), self.runner.timeout)
                if not raw:
                    raise CommandError(argv, await proc.wait(), "", "\n".join(said))
                said.append(raw.decode(errors="replace").rstrip())
                job_id = self.parse_dispatched(said[-1])
                if job_id:
                    return Dispatched(job_id, proc, argv)
        except BaseException as e:
            if proc.returncode is None:   # no job named: asked to stop, it withdraws its request
                proc.terminate()
                await proc.wait()
            if isinstance(e, asyncio.TimeoutError):
                raise CommandError(argv, None, "", f"no job id within {self.runner.timeout:g}s") from None
            raise

    async def status(self, job_ids: list[str]) -> dict[str, JobStatus]:
        """One command for all job_ids (and one for those that left the queue, where the
        scheduler has a history); a job the scheduler no longer knows is GONE."""
        found = await self._query(self.status_argv(job_ids), self.parse_status, job_ids)
        left = [j for j, st in found.items() if st.state is JobState.GONE]
        history = self.history_argv(left) if left else None
        if history:
            found.update(await self._query(history, self.parse_status, left))
        return found

    async def time_left(self, job_ids: list[str]) -> dict[str, JobStatus]:
        """State and time left (``JobStatus.time_left``) of job_ids, in one command."""
        argv = self.time_left_argv(job_ids)
        if argv is None:
            return await self.status(job_ids)
        return await self._query(argv, self.parse_time_left, job_ids)

    async def cancel(self, job_id: str) -> None:
        """End the job (queued or running)."""
        await self._run(self.cancel_argv(job_id), where=self.where(job_id))

    async def signal(self, job_id: str, signum: int) -> None:
        """Send signal ``signum`` to the running job's batch script, the launcher.  ValueError if
        the scheduler has no way to (``no_signal`` says why) or signum is no signal."""
        if self.no_signal:
            raise ValueError(f"{self.name} cannot signal job {job_id}: {self.no_signal}")
        try:
            name = _signal.Signals(signum).name.removeprefix("SIG")
        except ValueError:
            raise ValueError(f"{signum!r} is not a signal number") from None
        await self._run(self.signal_argv(job_id, name), where=self.where(job_id))

    # --- jobs that can never start (limits.py) -------------------------------------------
    # Pure, from the adapter's tables, except site_facts: the one query made for the message,
    # only once never() or refused() has given a verdict.

    def never(self, status: JobStatus) -> str | None:
        """The kind of limit (limits.py) that ``status`` says the job can never get past; None
        while it may still start."""
        return None

    def refused(self, error: str) -> tuple[str, str] | None:
        """(kind, the scheduler's words) when a refused submission's error names a limit."""
        return None

    async def site_facts(self, job_id: str | None, kind: str) -> "SiteFacts":
        """What the message for ``kind`` names (partition limits, node sizes...), in one query."""
        from .limits import SiteFacts
        return SiteFacts()

    def explain(self, kind: str, said: str, res: Resources, facts: "SiteFacts") -> str | None:
        """The one line naming the limit and the fix; None if the facts show the job may start."""
        from .limits import explain
        return explain(kind, said, res, facts)

    # --- a request checked before any job (remote-kernels install) ---------------------------
    checks_requests = False   # True: site_facts(None, limits.REQUEST) reads what limits.broken needs

    def checkable(self, res: Resources) -> str | None:
        """Why checking ``res`` would check the wrong request (its directives change it), or None."""
        return None

    def check(self, res: Resources, facts: "SiteFacts") -> str | None:
        """The start-time line for the limit ``res`` breaks at this site (pure), or None."""
        from .limits import broken
        found = broken(res, facts)
        return None if found is None else self.explain(found.kind, found.said, res, found.facts)
