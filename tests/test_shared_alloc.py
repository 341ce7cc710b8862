"""Shared allocations (option ``allocation: shared``) on the test cluster: a second kernel of
the same user and spec starts inside the first one's job; each kernel keeps its own
lifecycle; the job ends after its last kernel (and ``linger``); ``max_kernels`` and other
users get jobs of their own."""

from __future__ import annotations

import asyncio
import subprocess
import time

from kernel_helpers import SERVER_SCRIPT, job_in_queue, remote, run_cell, start_sleeping_cell, until, value_of
from site_helpers import VENV_BIN, as_user, unique

LINGER = 3.0
JOB_ID = "__import__('os').environ['SLURM_JOB_ID']"


async def test_a_second_kernel_starts_in_the_first_ones_job_and_lives_its_own_life(make_spec, start_kernel):
    spec = make_spec(unique("rk-shared"), allocation="shared", linger=LINGER)
    km1, kc1 = await start_kernel(spec)
    km2, kc2 = await start_kernel(spec)
    first, second = await remote(km1), await remote(km2)
    job = await value_of(kc1, JOB_ID)
    assert await value_of(kc2, JOB_ID) == job == first["job_id"] == second["job_id"]
    assert (first["joined"], second["joined"]) == (False, True)
    assert second["timings"]["submit"] == 0.0   # no job was submitted for it
    assert await value_of(kc2, "__import__('os').getpid() != " + await value_of(kc1, "__import__('os').getpid()"))
    assert (await run_cell(kc2, "x = 'second kernel state'"))[0]["status"] == "ok"

    # Interrupt the first: its cell stops, the second's state stays.
    msg_id = await start_sleeping_cell(kc1)
    await km1.interrupt_kernel()
    reply = await kc1.get_shell_msg(timeout=10)
    assert reply["parent_header"]["msg_id"] == msg_id and reply["content"]["ename"] == "KeyboardInterrupt"
    assert await value_of(kc2, "x") == "second kernel state"

    # Restart the first: a fresh interpreter in the same job; the second untouched.
    assert (await run_cell(kc1, "y = 1"))[0]["status"] == "ok"
    await km1.restart_kernel()
    await kc1.wait_for_ready(timeout=60)
    assert await value_of(kc1, "'y' in globals()") == "False"
    assert await value_of(kc1, JOB_ID) == job
    assert await value_of(kc2, "x") == "second kernel state"

    # Shut the first down: the job stays for the second.
    kc1.stop_channels()
    await km1.shutdown_kernel()
    assert await value_of(kc2, "x") == "second kernel state"
    assert job_in_queue(job)

    # The last kernel's end ends the job within linger + 5 s.
    kc2.stop_channels()
    await km2.shutdown_kernel()
    ended = time.monotonic()
    await until(f"job {job} to leave the queue", lambda: not job_in_queue(job), timeout=LINGER + 5, interval=0.2)
    assert time.monotonic() - ended <= LINGER + 5


async def test_a_kernel_started_while_the_allocation_lingers_joins_it(make_spec, start_kernel):
    spec = make_spec(unique("rk-linger"), allocation="shared", linger=30)
    km1, kc1 = await start_kernel(spec)
    job = await value_of(kc1, JOB_ID)
    kc1.stop_channels()
    await km1.shutdown_kernel()
    assert job_in_queue(job)   # lingering: no kernel, the job waits for the next one
    km2, kc2 = await start_kernel(spec)
    assert await value_of(kc2, JOB_ID) == job and (await remote(km2))["joined"]


async def test_a_full_allocation_makes_the_next_kernel_submit_a_job_of_its_own(make_spec, start_kernel):
    spec = make_spec(unique("rk-full"), allocation="shared", max_kernels=2)
    jobs = []
    for _ in range(3):
        km, kc = await start_kernel(spec)
        jobs.append(await value_of(kc, JOB_ID))
    assert jobs[0] == jobs[1] != jobs[2]


async def test_another_users_kernel_of_the_same_spec_never_lands_in_the_first_users_job(cluster, make_spec,
                                                                                        start_kernel):
    """The same spec name and options for root (this process) and the test user (their own
    server process, their own copy of the spec): each gets a job of their own."""
    user, name = cluster["test_user"], unique("rk-shared-users")
    spec = make_spec(name, allocation="shared", python=str(VENV_BIN / "python"))
    km, kc = await start_kernel(spec)
    mine = await value_of(kc, JOB_ID)
    res = as_user(user, str(VENV_BIN / "remote-kernels"), "install", name, "--user", "--allocation", "shared",
                  "--python", str(VENV_BIN / "python"), "--no-check")
    assert res.returncode == 0, res.stderr
    try:
        res = as_user(user, str(VENV_BIN / "python"), "-c", SERVER_SCRIPT, name,
                      "import os; print(os.environ['SLURM_JOB_ID'], os.environ['USER'])")
        assert res.returncode == 0, res.stderr[-2000:]
        words = next(line for line in res.stdout.splitlines() if line.startswith("RESULT")).split()
        theirs, who = words[1], words[2]
        assert who == user and theirs != mine
        assert await value_of(kc, JOB_ID) == mine   # the first user's kernel goes on
    finally:
        as_user(user, str(VENV_BIN / "remote-kernels"), "remove", name)


async def test_two_kernels_started_at_once_share_one_job(make_spec, start_kernel):
    """The second start waits for the first's job (the per-spec lock) and joins it."""
    spec = make_spec(unique("rk-at-once"), allocation="shared")
    (km1, kc1), (km2, kc2) = await asyncio.gather(start_kernel(spec), start_kernel(spec))
    assert await value_of(kc1, JOB_ID) == await value_of(kc2, JOB_ID)
    assert sorted([(await remote(km1))["joined"], (await remote(km2))["joined"]]) == [False, True]


async def test_the_end_of_the_shared_job_ends_every_kernel_in_it(make_spec, start_kernel):
    spec = make_spec(unique("rk-shared-end"), allocation="shared")
    (km1, kc1), (km2, kc2) = [await start_kernel(spec) for _ in range(2)]
    job = (await remote(km1))["job_id"]
    subprocess.run(["scancel", job], check=True)
    deadline = time.monotonic() + 30
    for km in (km1, km2):
        while (code := await km.provisioner.poll()) is None:
            assert time.monotonic() < deadline, f"a kernel of job {job} did not report the job's end"
            await asyncio.sleep(0.1)
        assert code == 143   # cancelled
    await until(f"job {job} to leave the queue", lambda: not job_in_queue(job), timeout=15, interval=0.2)


async def test_after_a_dropped_ssh_connection_each_kernel_gets_its_own_slot_back(cluster, make_spec, start_kernel):
    """Both kernels' links (one SSH connection in this process) reconnect and say hello for
    their own slots again: each kernel keeps its state."""
    from kernel_helpers import wait_for_kernel_info
    from test_failures import _sshd_sessions

    spec = make_spec(unique("rk-shared-drop"), allocation="shared")
    (km1, kc1), (km2, kc2) = [await start_kernel(spec) for _ in range(2)]
    for kc, value in ((kc1, "'one'"), (kc2, "'two'")):
        assert (await run_cell(kc, f"x = {value}"))[0]["status"] == "ok"
    sessions = _sshd_sessions(cluster, (await remote(km1))["node"])
    assert sessions, "no sshd session serving the kernels' connection"
    for pid in sessions:
        subprocess.run(["kill", "-9", str(pid)], check=False)
    deadline = time.monotonic() + 20
    for km in (km1, km2):
        while (await remote(km))["reconnects"] == 0:
            assert time.monotonic() < deadline, "a session did not reconnect"
            assert await km.provisioner.poll() is None, "a kernel was reported dead during the drop"
            await asyncio.sleep(0.1)
    for kc, value in ((kc1, "one"), (kc2, "two")):
        await wait_for_kernel_info(kc, timeout=30, every=2)
        assert await value_of(kc, "x") == value
