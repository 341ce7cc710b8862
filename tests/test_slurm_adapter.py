"""The SLURM adapter's parsers and script header, against output captured from SLURM 22.05.8
(the test cluster), plus the rendered batch script."""

from __future__ import annotations

import pytest

from remote_kernels.options import KernelOptions
from remote_kernels.schedulers import JobState, Resources
from remote_kernels.schedulers.slurm import Slurm
from remote_kernels.script import LAUNCHER_EOF, render


@pytest.mark.parametrize("stdout, job_id", [
    ("42\n", "42"),
    ("42;rkcluster\n", "42"),
    ("Site banner: maintenance on Friday 12\n1234\n", "1234"),
    ("77_3\n", "77_3"),
])
def test_parse_job_id_variants(stdout, job_id):
    assert Slurm.parse_job_id(stdout) == job_id


@pytest.mark.parametrize("stdout", ["", "Submitted batch job 42\n", "error: something\n"])
def test_parse_job_id_rejects_non_parsable_output(stdout):
    with pytest.raises(ValueError):
        Slurm.parse_job_id(stdout)


# squeue -h -t all -j IDS -o '%i|%T|%r|%N|%S' on the test cluster.
CAPTURED_SQUEUE = """\
58|PENDING|None||N/A
59|PENDING|Resources||2026-11-25T11:02:10
60|RUNNING|None|c1|2026-11-25T10:26:43
61|CANCELLED|None||2026-11-25T10:26:43
62|PENDING|JobHeldUser||N/A
63|TIMEOUT|TimeLimit|c2|2026-11-25T10:20:00
64|OUT_OF_MEMORY|OutOfMemory|c2|2026-11-25T10:20:00
"""


def test_parse_status_normalises_states_and_reasons():
    st = Slurm.parse_status(CAPTURED_SQUEUE)
    assert st["58"].state is JobState.QUEUED and st["58"].reason == "" and st["58"].start_time is None
    assert st["59"].reason == "Resources" and st["59"].start_time == "2026-11-25T11:02:10"
    assert st["60"].state is JobState.RUNNING and st["60"].node == "c1"
    assert st["61"].state is JobState.CANCELLED and st["61"].state.finished
    assert st["62"].state is JobState.HELD
    assert st["63"].state is JobState.TIMEOUT
    assert st["64"].state is JobState.OOM


def test_header_maps_resources_to_sbatch_options():
    res = Resources(partition="long", account="proj1", qos="high", time="01:00:00", cpus=4, mem="8G",
                    gpus=1, constraint="avx2", reservation="course", job_name="rk-x", output="/o/%j.log",
                    directives=["--exclusive", "#SBATCH --comment=nb"])
    header = Slurm().header(res)
    for line in ["--partition=long", "--account=proj1", "--qos=high", "--time=01:00:00",
                 "--cpus-per-task=4", "--mem=8G", "--gpus=1", "--constraint=avx2",
                 "--reservation=course", "--job-name=rk-x", "--output=/o/%j.log"]:
        assert f"#SBATCH {line}" in header
    assert "#SBATCH --exclusive" in header and "#SBATCH --comment=nb" in header


def test_header_leaves_unset_resources_to_the_site():
    header = Slurm().header(Resources())
    assert not any(l.startswith(("#SBATCH --partition", "#SBATCH --time", "#SBATCH --mem")) for l in header)


def test_rendered_script_carries_launcher_setup_and_env_but_no_key():
    opts = KernelOptions(python="/opt/env/bin/python", setup=["module load python/3.11"],
                         env={"OMP_NUM_THREADS": "4", "NOTE": "it's quoted"}, grace=120)
    text = render(Slurm(), opts, opts.resources(job_name="rk-t", output="/tmp/%j.log"), session="abc123")
    assert text.startswith("#!/bin/bash\n#SBATCH")
    assert "export NOTE='it'\"'\"'s quoted'" in text
    # srun steps of the kernel get its environment, not --export=NONE's empty one; the spec's env may override.
    assert "export SLURM_EXPORT_ENV=ALL\n" in text
    override = KernelOptions(env={"SLURM_EXPORT_ENV": "NONE"})
    assert "export SLURM_EXPORT_ENV=NONE\n" in render(Slurm(), override, override.resources("rk-t", "/tmp/%j.log"),
                                                       session="abc123")
    assert "module load python/3.11 || {" in text
    assert "exec /opt/env/bin/python - abc123 120 /tmp 60 <<'RK_LAUNCHER_EOF'" in text
    assert text.rstrip().endswith(LAUNCHER_EOF)
    assert "key" not in text.split("<<'RK_LAUNCHER_EOF'")[0].lower()


@pytest.mark.cluster
async def test_a_job_that_left_the_queue_is_not_a_failed_query(cluster, tmp_path, monkeypatch):
    from remote_kernels.runner import CommandError

    slurm = Slurm()
    # A job id SLURM never had (or has purged): squeue says "Invalid job id" -> GONE.
    assert (await slurm.status(["999999"]))["999999"].state is JobState.GONE
    # squeue itself failing (controller unreachable) is an error, not a verdict on the job.
    shim = tmp_path / "squeue"
    shim.write_text("#!/bin/sh\necho 'slurm_load_jobs error: Unable to contact slurm controller' >&2\nexit 1\n")
    shim.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{__import__('os').environ['PATH']}")
    with pytest.raises(CommandError, match="Unable to contact slurm controller"):
        await slurm.status(["999999"])


@pytest.mark.cluster
async def test_signal_reaches_the_batch_script_of_a_running_job(cluster, tmp_path):
    """scancel --batch --signal: the batch script (where the launcher runs) gets the signal."""
    import signal

    from kernel_helpers import until

    got = tmp_path / "got"
    res = Resources(time="2", job_name="rk-signal-test", output=str(tmp_path / "%j.log"))
    text = "\n".join(["#!/bin/bash", *Slurm().header(res), f"trap 'echo USR1 > {got}; exit 0' USR1",
                      f"touch {tmp_path}/started", "while true; do sleep 0.1; done", ""])
    slurm = Slurm()
    job = await slurm.submit(text, res)
    try:
        await until("the job to start", (tmp_path / "started").exists, timeout=30)
        await slurm.signal(job, signal.SIGUSR1)
        await until("the batch script to get USR1", got.exists, timeout=30)
        assert got.read_text() == "USR1\n"
    finally:
        await slurm.cancel(job)


# --- interactive dispatch (srun) ------------------------------------------------------------

def srun_sample() -> list[tuple[str, list[str]]]:
    """tests/samples/slurm/srun-verbose.txt: (the command's comment, its stderr lines) per case."""
    from pathlib import Path

    cases: list[tuple[str, list[str]]] = []
    for line in (Path(__file__).parent / "samples/slurm/srun-verbose.txt").read_text().splitlines():
        if line.startswith("# "):
            cases.append((line, []))
        else:
            cases[-1][1].append(line)
    return cases


def test_srun_names_its_job_when_granted_at_once_and_when_queued_and_never_when_refused():
    found = [[j for j in map(Slurm.parse_dispatched, lines) if j] for _, lines in srun_sample()]
    assert found == [["50"], ["52"], []]
    # The refusal's last line is what the one-line error carries; it names the limit.
    refused = srun_sample()[2][1][-1]
    assert Slurm().refused(refused) == ("partition", "Invalid partition name specified")


def test_dispatch_argv_carries_the_resources_who_the_user_is_and_the_login_shell():
    res = Resources(partition="long", time="01:00:00", cpus=4, mem="8G", gpus=1, job_name="rk-x",
                    output="/o/%j.log", directives=["--exclusive", "#SBATCH --comment=nb"])
    argv = Slurm().dispatch_argv(res, "ada", "/home/ada")
    assert argv[:5] == ["srun", "--verbose", "--nodes=1", "--ntasks=1", "--overlap"]
    assert "--export=HOME=/home/ada,USER=ada,LOGNAME=ada" in argv
    for opt in ["--partition=long", "--time=01:00:00", "--cpus-per-task=4", "--mem=8G", "--gpus=1",
                "--job-name=rk-x", "--output=/o/%j.log", "--exclusive", "--comment=nb"]:
        assert opt in argv
    assert argv[-3:] == ["/bin/bash", "-l", "-s"]
    # A home srun's --export list cannot carry: nothing of the server's instead.
    assert "--export=NONE" in Slurm().dispatch_argv(Resources(), "ada", "/home/a,b")


def test_the_interactive_script_ends_its_job_itself_and_has_no_header():
    opts = KernelOptions(python="/opt/env/bin/python", grace=120)
    text = render(Slurm(), opts, opts.resources(job_name="rk-t", output="/tmp/%j.log"), session="abc123",
                  interactive=True)
    assert "#SBATCH" not in text
    assert "\ntrap '[ $? = 0 ] || scancel --quiet \"$SLURM_JOB_ID\"' EXIT\n" in text
    # Not exec'd: the shell outlives the launcher to run the trap.
    assert "\n/opt/env/bin/python - abc123 120 /tmp 60 <<'RK_LAUNCHER_EOF'\n" in text


@pytest.mark.parametrize("config, interactive", [
    ({}, True), ({"dispatch": "batch"}, False), ({"dispatch": "interactive"}, True),
    ({"login_host": "login1"}, False), ({"directives": ["--exclusive"]}, False),
    ({"directives": ["--exclusive"], "dispatch": "interactive"}, True),
    ({"scheduler": "pbs"}, False), ({"scheduler": "sge", "dispatch": "auto"}, False),
])
def test_auto_dispatch_is_interactive_only_where_it_is_safe(config, interactive):
    from remote_kernels import job
    from remote_kernels.schedulers import get_scheduler

    opts = KernelOptions(environ={}, **config)
    assert job.interactive(opts, get_scheduler(opts.scheduler)) is interactive


def test_interactive_dispatch_where_the_scheduler_has_none_is_a_one_line_error():
    from remote_kernels import job
    from remote_kernels.schedulers import get_scheduler

    opts = KernelOptions(environ={}, scheduler="pbs", dispatch="interactive")
    with pytest.raises(ValueError, match="pbs has no interactive dispatch; set dispatch to batch or auto"):
        job.interactive(opts, get_scheduler("pbs"))
