"""Bad specs fail fast with a one-line message naming the cause, and leave no job behind.

The test cluster runs SLURM's default EnforcePartLimits (NO), as sites do: sbatch accepts a
job over its partition's time limit, which then pends for ever; the start must see that it
can never run, cancel it and say which limit it breaks, without any queue_timeout.
"""

from __future__ import annotations

import getpass
import re
import subprocess

import pytest
from jupyter_client.manager import AsyncKernelManager

from kernel_helpers import until
from remote_kernels.session import KernelStartError
from slurm_helpers import jobs_named

LIVE = "PENDING,RUNNING,COMPLETING,CONFIGURING"
# A queue timeout no test waits for: a start it ended would say "still queued after", so a
# start that fails with another line decided from the scheduler's answer, as it must.
BACKSTOP = 300
# "slurm job 123 can never start (PartitionConfig): ..." names the job it cancelled.
NEVER_JOB = re.compile(r"^slurm job (\d+) can never start \(")


def _listed(job: str) -> bool:
    """True while this user's job ``job`` is live in squeue."""
    out = subprocess.run(["squeue", "-h", "-u", getpass.getuser(), "-j", job, "-t", LIVE, "-o", "%i"],
                         capture_output=True, text=True).stdout
    return job in out.split()


@pytest.mark.parametrize("name, expected", [
    ("rk-bad-partition", "(Invalid partition name specified): partition nosuch does not exist; choose one of "
                         "debug, long, urgent with --partition or RK_PARTITION"),
    # Accepted by sbatch, then pending for ever: the permanent-reason path.
    ("rk-bad-time", "partition debug allows at most 4:00:00 (asked for 10:00:00); ask for less with --time or "
                    "RK_TIME, or use partition long"),
    ("rk-bad-cpus", "no node of partition debug has 16 CPUs (the largest has 8); ask for fewer with --cpus or "
                    "RK_CPUS"),
    ("rk-bad-mem", "no node of partition debug has 8G of memory for a job (the largest has 4G); ask for less "
                   "with --mem or RK_MEM"),
    ("rk-bad-python", "Python /nonexistent/bin/python3 not found on c"),
    ("rk-bad-setup", "set-up line failed on c"),
    ("rk-no-ipykernel", "ipykernel is not installed for /usr/bin/python3 on c"),
    # Debian's Python: pip would refuse (PEP 668), so the advice is a venv.
    ("rk-no-ipykernel", "(PEP 668, pip refuses): make a venv on a filesystem the nodes share, `/usr/bin/python3 -m venv DIR"),
])
async def test_bad_spec_fails_with_clear_message(kernelspecs, name, expected):
    before = jobs_named(f"rk-{name}", states=LIVE)
    km = AsyncKernelManager(kernel_name=name)
    with pytest.raises(KernelStartError) as err:
        await km.start_kernel(queue_timeout=BACKSTOP)
    message = str(err.value)
    assert expected in message
    assert "\n" not in message
    await km.provisioner.cleanup()
    never = NEVER_JOB.match(message)
    if name in ("rk-bad-time",):
        assert never, message   # from the pending reason, while the job waits
    if never:
        await until(f"job {never.group(1)} to leave the queue", lambda: not _listed(never.group(1)), timeout=10)
    await until("no job left", lambda: jobs_named(f"rk-{name}", states=LIVE) <= before, timeout=10)


@pytest.mark.parametrize("config, expected", [
    ({"partiton": "long"}, "unknown option 'partiton'"),
    ({"time": "soon"}, "time 'soon' is not a wall-time"),
    ({"cpus": "many"}, "cpus"),
])
async def test_malformed_kernel_json_config_names_the_field(make_spec, config, expected):
    from traitlets import TraitError

    before = jobs_named("rk-rk-malformed", states=LIVE)
    make_spec("rk-malformed", **config)
    km = AsyncKernelManager(kernel_name="rk-malformed")
    with pytest.raises(TraitError) as err:
        await km.start_kernel()
    assert expected in str(err.value)
    assert jobs_named("rk-rk-malformed", states=LIVE) <= before


async def test_a_kernel_that_crashes_at_start_says_so_with_the_job_log_and_its_last_lines(make_spec):
    # Python refuses to start at all with this value: the kernel exits before opening its sockets.
    make_spec("rk-crash-at-start", stanza={"PYTHONHASHSEED": "bogus"})
    before = jobs_named("rk-rk-crash-at-start", states=LIVE)
    km = AsyncKernelManager(kernel_name="rk-crash-at-start")
    with pytest.raises(KernelStartError) as err:
        await km.start_kernel(queue_timeout=BACKSTOP)
    message = str(err.value)
    assert "\n" not in message
    assert "exited with code 1 during start-up" in message
    log_file = re.search(r"\((/\S+/(\d+)\.log), last lines: ", message)
    assert log_file, message
    assert "PYTHONHASHSEED" in message.split("last lines: ", 1)[1]
    await km.provisioner.cleanup()
    await until("no job left", lambda: jobs_named("rk-rk-crash-at-start", states=LIVE) <= before, timeout=10)
