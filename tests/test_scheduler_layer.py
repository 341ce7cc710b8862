"""The scheduler base's I/O (submit, status, time left, cancel, signal) for every adapter, through a
fake runner that answers with the schedulers' documented outputs (tests/samples).  No cluster needed;
tests/test_schedulers_e2e.py runs the same adapters against real and fake commands."""

from __future__ import annotations

import asyncio
import gc
import re
import signal
import weakref
from pathlib import Path

import pytest

from fake_runner import FakeRunner, printing
from remote_kernels.options import KernelOptions
from remote_kernels.runner import CommandError, CommandRunner, SSHCommandRunner
from remote_kernels.schedulers import JobState, JobStatus, Resources, Scheduler, UnreadableOutput, get_scheduler
from remote_kernels.schedulers import ssh as ssh_adapter
from remote_kernels.schedulers.htcondor import HTCondor
from remote_kernels.schedulers.slurm import Slurm
from remote_kernels.script import render

SAMPLES = Path(__file__).parent / "samples"
RES = Resources(partition="c1", time="30", cpus=2, job_name="rk-t", output="/home/a/jobs/%j.log")


def read(path: str) -> str:
    return (SAMPLES / path).read_text()


# --- submit --------------------------------------------------------------------------------

# What each adapter's submit command prints, and the id it yields (tests/test_scheduler_parsers.py
# has every variant).
SUBMITTED = {"slurm": ("42\n", "42"), "pbs": ("7001.pbs01\n", "7001.pbs01"), "torque": ("4101\n", "4101"),
             "sge": ("17\n", "17"), "lsf": ("Job <5301> is submitted to queue <normal>.\n", "5301"),
             "flux": ("1099511627877\n", "1099511627877")}
SUBMIT_ARGV = {"slurm": ["sbatch", "--parsable", "--export=NONE"], "pbs": ["qsub"], "torque": ["qsub"],
               "sge": ["qsub", "-terse"], "lsf": ["bsub", "-env", "none", "-L", "/bin/bash"],
               "flux": ["flux", "batch", "--env-remove=*", "--env=PATH", "--env=LANG"]}


@pytest.mark.parametrize("name", sorted(SUBMITTED))
async def test_submit_runs_one_command_with_the_script_on_stdin(name):
    out, job_id = SUBMITTED[name]
    runner = printing(out)
    scheduler = get_scheduler(name, runner)
    text = render(scheduler, KernelOptions(environ={}), RES, session="abc")
    assert await scheduler.submit(text, RES) == job_id
    assert [(c.argv, c.stdin) for c in runner.calls] == [(SUBMIT_ARGV[name], text)]


async def test_htcondor_submit_installs_the_script_then_submits_the_description_from_the_resources():
    runner = printing("812.0 - 812.0\n")
    condor = HTCondor(runner)
    text = render(condor, KernelOptions(environ={}), RES, session="abc")
    assert await condor.submit(text, RES) == "812.0"
    install, submit = runner.calls
    path = install.argv[-1]
    assert install.argv[:-1] == ["install", "-m", "700", "/dev/stdin"] and install.stdin == text
    assert path == HTCondor.script_path(text, RES) and path.startswith("/home/a/jobs/rk-")
    assert submit.argv == ["condor_submit", "-terse", "-"] and submit.stdin == HTCondor.description(RES, path)
    # Taken from the Resources: a script whose header lines were edited changes nothing submitted.
    edited = text.replace("request_cpus = 2", "request_cpus = 64").replace("initialdir = /home/a/jobs", "")
    await condor.submit(edited, RES)
    assert "request_cpus = 2\n" in runner.calls[-1].stdin and "initialdir = /home/a/jobs\n" in runner.calls[-1].stdin


async def test_submit_failure_and_unreadable_id_are_one_line_errors():
    with pytest.raises(CommandError, match=r"^`sbatch --parsable --export=NONE` exited 1: sbatch: error: Batch"):
        await Slurm(printing("", 1, "sbatch: error: Batch job submission failed: Invalid partition name\n")) \
            .submit("#!/bin/bash\n", RES)
    with pytest.raises(ValueError, match="printed no job id") as err:
        await Slurm(printing("Submitted batch job 42\n")).submit("#!/bin/bash\n", RES)
    assert "\n" not in str(err.value)


class HostRunners:
    """Fake runners for the ssh adapter's hosts: ``answers[host](argv, stdin)``."""

    def __init__(self, answers):
        self.runners = {host: FakeRunner(answer) for host, answer in answers.items()}

    def adapter(self) -> ssh_adapter.SSH:
        ssh = ssh_adapter.SSH(FakeRunner(lambda argv, stdin: (0, "", "")))
        ssh.runner_at = lambda where: self.runners[where]
        return ssh


async def test_ssh_submit_tries_the_hosts_in_order_and_keeps_the_locale():
    hosts = HostRunners({"c1": lambda argv, stdin: (255, "", "ssh: connect to host c1: No route to host"),
                         "c2": lambda argv, stdin: (0, "4242\n", "")})
    res = Resources(partition="c1,c2", output="/o/%j.log")
    assert await hosts.adapter().submit("echo hi\n", res) == "c2:4242"
    (call,) = hosts.runners["c2"].calls
    assert call.stdin == "echo hi\n" and call.argv[:2] == ["sh", "-c"] and call.argv[-1] == "c2"
    assert call.c_locale is False   # the launcher and kernel get the host's locale, not C
    hosts = HostRunners({"c1": lambda argv, stdin: (255, "", "No route to host")})
    with pytest.raises(CommandError, match="No route to host"):
        await hosts.adapter().submit("echo hi\n", Resources(partition="c1"))
    with pytest.raises(ValueError, match="partition"):
        await hosts.adapter().submit("echo hi\n", Resources())


# --- status ----------------------------------------------------------------------------------

class Words(Scheduler):
    """A minimal adapter for the base's query rules: each word printed is a running job's id."""

    name = "words"
    gone = re.compile("Unknown Job Id")

    def status_argv(self, job_ids):
        return ["qstat", *job_ids]

    @staticmethod
    def parse_status(stdout):
        return {word: JobStatus(JobState.RUNNING) for word in stdout.split()}


async def test_status_reports_unlisted_ids_gone_and_tolerates_unknown_id_complaints():
    res = await Words(printing("1\n", 153, "qstat: Unknown Job Id 2\n")).status(["1", "2"])
    assert res["1"].state is JobState.RUNNING and res["2"].state is JobState.GONE
    res = await Words(printing("1\n", 255)).status(["1", "2"])   # errors on stdout (LSF's JSON)
    assert res["2"].state is JobState.GONE
    assert await Words(printing("", 1)).status([]) == {}


@pytest.mark.parametrize("code, out, err", [
    (1, "", "qstat: cannot connect to server pbs01 (errno=111)\n"),
    (153, "", "qstat: Unknown Job Id 2\nqstat: cannot connect to server pbs01\n"),
    (1, "", ""),
])
async def test_a_failed_status_query_is_never_all_gone(code, out, err):
    with pytest.raises(CommandError) as e:
        await Words(printing(out, code, err)).status(["1", "2"])
    assert not isinstance(e.value, UnreadableOutput)


async def test_slurm_all_ids_purged_is_gone_but_a_failing_squeue_is_an_error():
    slurm = Slurm(printing("", 1, "slurm_load_jobs error: Invalid job id specified\n"))
    assert (await slurm.status(["999999"]))["999999"].state is JobState.GONE
    with pytest.raises(CommandError, match="Unable to contact"):
        await Slurm(printing("", 1, "slurm_load_jobs error: Unable to contact slurm controller\n")).status(["1"])


@pytest.mark.parametrize("name, out, why", [
    ("htcondor", '[{"ProcId": 0, "JobStatus": 2}]', "KeyError"),                       # an ad without ClusterId
    ("torque", read("torque/qstat-x.xml").replace("1795602450", "99999999999999999999"), "OverflowError"),
    ("pbs", read("pbs/qstat-bad-json.json"), "JSONDecodeError"),                       # openpbs issue 1255
    ("sge", "<html>proxy error</html", "ValueError"),
    ("slurm", "1|RUNNING|None|c[a-b]|N/A\n", "ValueError"),                            # no host list
])
async def test_any_parser_exception_is_unreadable_output_in_one_line(name, out, why):
    """Whatever a parser raises on output it cannot read is one kind of error, saying so."""
    with pytest.raises(UnreadableOutput, match=rf"unreadable output \({why}") as err:
        await get_scheduler(name, printing(out)).status(["1"])
    assert isinstance(err.value, CommandError) and "\n" not in str(err.value)


async def test_htcondor_asks_the_history_only_about_jobs_that_left_the_queue():
    def answer(argv, stdin):
        return 0, read("htcondor/condor_q-json.json" if argv[0] == "condor_q" else "htcondor/condor_history-json.json"), ""

    runner = FakeRunner(answer)
    found = await HTCondor(runner).status(["813.0", "801.0", "999.0"])
    assert found["813.0"].state is JobState.RUNNING and found["813.0"].node == "c2.cluster.example"
    assert found["801.0"].state is JobState.COMPLETED and found["999.0"].state is JobState.GONE
    q, history = runner.calls
    assert q.argv[:2] == ["condor_q", "-json"] and q.argv[-3:] == ["813.0", "801.0", "999.0"]
    assert history.argv[0] == "condor_history" and history.argv[-4:] == ["-limit", "2", "801.0", "999.0"]
    runner.calls.clear()
    await HTCondor(runner).status(["813.0"])
    assert [c.argv[0] for c in runner.calls] == ["condor_q"]   # all still queued: no history query


async def test_ssh_status_is_one_ps_per_host():
    hosts = HostRunners({"c1": lambda argv, stdin: (0, read("ssh/ps.txt"), ""),
                         "c2": lambda argv, stdin: (1, "", "")})   # ps: none of the PIDs exists
    found = await hosts.adapter().status(["c1:26725", "c1:26724", "c2:7"])
    assert found["c1:26725"].state is JobState.RUNNING and found["c1:26725"].node == "c1"
    assert found["c1:26724"].state is JobState.GONE and found["c2:7"].state is JobState.GONE
    assert [c.argv for c in hosts.runners["c1"].calls] == [["ps", "-o", "pid=,sid=,stat=", "-p", "26725,26724"]]
    with pytest.raises(ValueError, match="HOST:PID"):
        await hosts.adapter().status(["c1:26725", "no-pid"])


# --- B6: host lists --------------------------------------------------------------------------

@pytest.mark.parametrize("hosts, nodes", [("c1", ("c1",)), ("c[1-2]", ("c1", "c2")),
                                          ("c[01-02],d5", ("c01", "c02", "d5"))])
async def test_slurm_node_is_the_first_host_of_its_host_list(hosts, nodes):
    """%N of a job on several nodes is a host list: node is its first host, not the list."""
    st = (await Slurm(printing(f"60|RUNNING|None|{hosts}|2026-11-25T10:26:43\n")).status(["60"]))["60"]
    assert st.node == nodes[0] and st.nodes == nodes


# --- time left -------------------------------------------------------------------------------

async def test_time_left_is_its_own_squeue_for_slurm_and_the_status_elsewhere():
    runner = printing("60|RUNNING|12:30\n")
    found = await Slurm(runner).time_left(["60"])
    assert found["60"].time_left == "12:30" and runner.calls[0].argv[-2:] == ["-o", "%i|%T|%L"]
    runner = printing(read("lsf/bjobs-json.json"))
    assert (await get_scheduler("lsf", runner).time_left(["5303"]))["5303"].time_left == "0:47"
    assert runner.calls[0].argv[0] == "bjobs"


# --- cancel and signal -------------------------------------------------------------------------

CANCEL = {"slurm": ("42", ["scancel", "42"]), "pbs": ("7001.pbs01", ["qdel", "7001.pbs01"]),
          "torque": ("4101", ["qdel", "4101"]), "sge": ("17", ["qdel", "17"]), "lsf": ("5301", ["bkill", "5301"]),
          "htcondor": ("812.0", ["condor_rm", "812.0"]), "flux": ("77", ["flux", "cancel", "77"])}
SIGNAL_INT = {"slurm": ["scancel", "--batch", "--signal=INT", "42"], "pbs": ["qsig", "-s", "SIGINT", "7001.pbs01"],
              "torque": ["qsig", "-s", "SIGINT", "4101"], "lsf": ["bkill", "-s", "INT", "5301"],
              "flux": ["flux", "job", "kill", "--signal=SIGINT", "77"]}


@pytest.mark.parametrize("name", sorted(CANCEL))
async def test_cancel_and_signal_commands(name):
    job_id, cancel = CANCEL[name]
    runner = printing("")
    scheduler = get_scheduler(name, runner)
    await scheduler.cancel(job_id)
    if name in SIGNAL_INT:
        await scheduler.signal(job_id, signal.SIGINT)
    else:   # no command for it: said at once, in one line, and nothing is run
        with pytest.raises(ValueError, match=rf"^{name} cannot signal job {re.escape(job_id)}: .+ has no command"):
            await scheduler.signal(job_id, signal.SIGINT)
    assert [c.argv for c in runner.calls] == [cancel] + ([SIGNAL_INT[name]] if name in SIGNAL_INT else [])


async def test_ssh_cancel_and_signal_reach_the_process_group_on_its_host():
    hosts = HostRunners({"c1": lambda argv, stdin: (0, "", "")})
    ssh = hosts.adapter()
    await ssh.cancel("c1:4242")
    await ssh.signal("c1:4242", signal.SIGUSR1)
    assert [c.argv for c in hosts.runners["c1"].calls] == [["kill", "-TERM", "--", "-4242"],
                                                           ["kill", "-USR1", "--", "-4242"]]


async def test_signal_rejects_a_number_that_is_no_signal():
    with pytest.raises(ValueError, match="not a signal number"):
        await Slurm(printing("")).signal("42", 4242)


async def test_a_failed_cancel_raises():
    with pytest.raises(CommandError, match="Invalid job id"):
        await Slurm(printing("", 1, "scancel: error: Invalid job id 42\n")).cancel("42")


# --- the ssh adapter's host runners, per loop --------------------------------------------------

def test_host_runners_are_per_loop_keyed_by_timeout_and_dropped_with_their_loop():
    async def runners():
        short, long_ = CommandRunner(5.0), CommandRunner(60.0)
        first = ssh_adapter.host_runner("c1", short)
        assert ssh_adapter.host_runner("c1", CommandRunner(5.0)) is first   # shared for the same settings
        return first, ssh_adapter.host_runner("c1", long_)

    first, other = asyncio.run(runners())
    assert (first.timeout, other.timeout) == (5.0, 60.0)
    dropped = weakref.ref(first)
    del first, other
    again, _ = asyncio.run(runners())   # a new loop: new runners; the closed loop's are let go
    gc.collect()
    assert dropped() is None and again.timeout == 5.0


def test_host_runners_through_a_login_host_tunnel_through_it():
    async def runner():
        login = SSHCommandRunner("login1", 12.0)
        return ssh_adapter.host_runner("c1", login), login

    found, login = asyncio.run(runner())
    assert found.via is login and found.timeout == 12.0 and found.host == "c1"



# --- interactive dispatch -----------------------------------------------------------------------

class Interactive(Scheduler):
    """An adapter whose interactive command is a real shell: it prints what it was given on
    stderr, names a job, and runs its stdin (the script), as srun does."""

    name = "fake-interactive"
    dispatch_prefix = ("sh",)
    dispatch_drop = ("RKT_",)
    dispatch_keep = ("RKT_KEEP",)

    def __init__(self, body: str, runner: CommandRunner | None = None):
        super().__init__(runner)
        self.body = body

    def dispatch_argv(self, res: Resources, user: str, home: str) -> list[str]:
        return ["sh", "-c", self.body, "sh", res.job_name, user]

    @staticmethod
    def parse_dispatched(line: str) -> str | None:
        m = re.fullmatch(r"fake: job (\d+) made", line)
        return m.group(1) if m else None


async def test_dispatch_returns_at_the_job_id_and_finish_reaps_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("RKT_SECRET", "s3cret")
    monkeypatch.setenv("RKT_KEEP", "kept")
    out = tmp_path / "out"
    body = (f'echo "fake: job 41 made for $1 by $2" >&2; echo "fake: job 42 made" >&2; '
            f'{{ env; cat; }} > {out}; echo "fake: done" >&2')
    dispatched = await Interactive(body).dispatch("echo from-the-script\n", RES)
    assert dispatched.job_id == "42"
    assert await dispatched.finish() == 0
    text = out.read_text()
    assert "echo from-the-script" in text and "RKT_KEEP=kept" in text and "LC_ALL=C" in text
    assert "s3cret" not in text


async def test_a_command_that_ends_without_naming_a_job_is_a_one_line_error():
    with pytest.raises(CommandError, match=r"exited 1: srun: error: Unable to allocate resources: Invalid partition"):
        await Interactive('cat >/dev/null; echo "srun: error: Unable to allocate resources: Invalid partition '
                          'name specified" >&2; exit 1').dispatch("true\n", RES)


async def test_a_silent_command_is_stopped_and_reported(tmp_path):
    pid_file = tmp_path / "pid"
    with pytest.raises(CommandError, match="no job id within 0.5s"):
        await Interactive(f"echo $$ > {pid_file}; exec sleep 30", CommandRunner(timeout=0.5)).dispatch("", RES)
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):   # terminated and reaped: nothing left running
        __import__("os").kill(pid, 0)


async def test_a_login_host_cannot_keep_an_interactive_command():
    with pytest.raises(ValueError, match="use dispatch batch"):
        await Interactive("true", SSHCommandRunner("login1")).dispatch("", RES)
