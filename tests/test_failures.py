"""Nothing lost, nothing leaked: queue waits, dead servers, jobs ended by the scheduler."""

from __future__ import annotations

import asyncio
import errno
import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from jupyter_client.manager import AsyncKernelManager

from kernel_helpers import (job_in_queue, job_state, processes_mentioning, remote, run_cell, see_it_end_unclaimed,
                            until, value_of, wait_for_kernel_info)
from remote_kernels.session import KernelStartError
from slurm_helpers import wait_until

NOT_BEFORE_AN_HOUR = ["--begin=now+1hour"]   # SLURM keeps the job PENDING (reason BeginTime)
# Every way an allocation must end is proven for both ways a job starts (option dispatch): an srun
# allocation has no batch step that ends with the launcher.
DISPATCHES = pytest.mark.parametrize("dispatch", ["batch", "interactive"])
# ... and for both transports (the link's side of it); the two are independent, so transport
# direct runs with one dispatch only (make test's time).
DISPATCHES_AND_TRANSPORTS = pytest.mark.parametrize("dispatch, transport", [
    ("batch", "ssh"), ("interactive", "ssh"), ("batch", "direct")])
# Deadline for poll() to report a job that the scheduler ended (how fast it does: `make bench`).
DEATH_SEEN = 60


@DISPATCHES
async def test_queue_timeout_cancels_the_job_and_says_why(make_spec, dispatch):
    name = make_spec(f"rk-queue-timeout-{dispatch}", directives=NOT_BEFORE_AN_HOUR, queue_timeout=2, dispatch=dispatch)
    km = AsyncKernelManager(kernel_name=name)
    with pytest.raises(KernelStartError) as err:
        await km.start_kernel()
    message = str(err.value)
    assert "still queued after" in message and "BeginTime" in message and "cancelled" in message
    job = message.split()[1]
    await until(f"job {job} to leave the queue", lambda: not job_in_queue(job), timeout=10)


@DISPATCHES
async def test_start_abandoned_while_pending_cancels_the_job(make_spec, dispatch):
    name = make_spec(f"rk-pending-{dispatch}", directives=NOT_BEFORE_AN_HOUR, dispatch=dispatch)
    km = AsyncKernelManager(kernel_name=name)
    start = asyncio.ensure_future(km.start_kernel())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while not (km.provisioner and (await remote(km)).get("job_id")):
        assert loop.time() < deadline, "job was never submitted"
        await asyncio.sleep(0.05)
    job = (await remote(km))["job_id"]
    assert job_in_queue(job)
    start.cancel()   # what a server does when the user deletes a pending kernel
    with pytest.raises(asyncio.CancelledError):
        await start
    await until(f"job {job} to leave the queue", lambda: not job_in_queue(job), timeout=10)


SERVER = textwrap.dedent("""
    import asyncio, sys
    from jupyter_client.manager import AsyncKernelManager
    async def main():
        km = AsyncKernelManager(kernel_name=sys.argv[1])
        await km.start_kernel()
        print((await km.provisioner.get_provisioner_info())["remote_kernel"]["job_id"], flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    asyncio.run(main())
""")


@DISPATCHES_AND_TRANSPORTS
def test_dead_man_switch_ends_the_job_of_a_killed_server(make_spec, dispatch, transport):
    """Nothing is left: with transport direct, the launcher removes the key directory too."""
    from remote_kernels.direct import key_dir

    name = make_spec(f"rk-short-grace-{dispatch}-{transport}", grace=3, dispatch=dispatch, transport=transport)
    keys = key_dir("x").parent
    keys_before = set(keys.iterdir()) if keys.exists() else set()
    server = subprocess.Popen([sys.executable, "-c", SERVER, name],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        job = server.stdout.readline().strip()
        assert job and job_in_queue(job)
        server.kill()   # SIGKILL: no clean-up runs on the login side
        server.wait(timeout=10)
        # grace (3 s) + the launcher's check interval + SLURM noticing the batch step ended
        wait_until(f"job {job} to end by itself", lambda: not job_in_queue(job), timeout=20)
        assert (set(keys.iterdir()) if keys.exists() else set()) <= keys_before
    finally:
        if server.poll() is None:
            server.kill()


# A server that prints its kernel's job id as soon as the job is submitted (it may wait in the queue).
QUEUED_SERVER = textwrap.dedent("""
    import asyncio, sys
    from jupyter_client.manager import AsyncKernelManager
    async def main():
        km = AsyncKernelManager(kernel_name=sys.argv[1])
        start = asyncio.ensure_future(km.start_kernel())
        while not start.done():
            if km.provisioner is not None:
                job = (await km.provisioner.get_provisioner_info())["remote_kernel"].get("job_id")
                if job:
                    print(job, flush=True)
                    break
            await asyncio.sleep(0.05)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    asyncio.run(main())
""")


@DISPATCHES_AND_TRANSPORTS
async def test_a_job_queued_when_its_server_was_killed_ends_soon_after_it_starts(make_spec, dispatch, transport):
    """#21: nobody withdraws the job of a SIGKILLed server; once it starts, it must not hold
    its allocation for grace (300 s here) but end within a minute or so."""
    name = make_spec(f"rk-held-{dispatch}-{transport}", directives=NOT_BEFORE_AN_HOUR, grace=300, dispatch=dispatch,
                     transport=transport)
    server = subprocess.Popen([sys.executable, "-c", QUEUED_SERVER, name],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        job = server.stdout.readline().strip()
        assert job and job_state(job) == "PENDING"
        server.kill()   # SIGKILL: no clean-up runs on the login side
        server.wait(timeout=10)
        await see_it_end_unclaimed(job)
    finally:
        if server.poll() is None:
            server.kill()


def _key_dir_naming(job: str):
    """The key directory whose job record names job ``job`` (None while none does)."""
    from remote_kernels.direct import JOB_RECORD, key_root

    for path in key_root().iterdir() if key_root().exists() else ():
        try:
            if json.loads((path / JOB_RECORD).read_text())["job_id"] == job:
                return path
        except (OSError, ValueError, KeyError):
            continue
    return None


async def test_the_next_start_removes_the_key_dir_a_killed_server_s_job_cancelled_while_queued_left(
        make_spec, start_kernel, caplog):
    """The launcher of a job cancelled while queued never runs, so it removes nothing; the next
    direct start does, leaving another server's running kernel's directory alone (its record is
    as old: the scheduler's answer alone keeps it)."""
    from remote_kernels.direct import JOB_RECORD
    from remote_kernels.keydirs import MIN_AGE

    caplog.set_level(logging.INFO, logger="remote_kernels.keydirs")
    held = make_spec("rk-stale-keys", directives=NOT_BEFORE_AN_HOUR, transport="direct")
    killed = subprocess.Popen([sys.executable, "-c", QUEUED_SERVER, held],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    other = subprocess.Popen([sys.executable, "-c", SERVER, "rk-direct"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        job = killed.stdout.readline().strip()
        assert job and job_state(job) == "PENDING"
        stale = await until(f"job {job}'s key directory", lambda: _key_dir_naming(job), timeout=10)
        killed.kill()   # SIGKILL: no clean-up runs on the login side
        killed.wait(timeout=10)
        subprocess.run(["scancel", job], check=True, capture_output=True)
        await until(f"job {job} to leave the queue", lambda: not job_in_queue(job), timeout=30)
        assert stale.is_dir()   # nobody else removes it
        running = other.stdout.readline().strip()
        assert running and job_state(running) == "RUNNING"
        kept = _key_dir_naming(running)
        contents = sorted(p.name for p in kept.iterdir())
        assert {"launcher.json", "endpoint.json", JOB_RECORD} <= set(contents)
        then = time.time() - MIN_AGE - 60
        for path in (stale, kept):
            os.utime(path / JOB_RECORD, (then, then))
        await start_kernel("rk-direct")
        await until("the stale key directory to be removed", lambda: not stale.exists(), timeout=30)
        await until("the pruning to finish", lambda: any(
            r.name == "remote_kernels.keydirs" and "removed" in r.getMessage() for r in caplog.records))
        assert sorted(p.name for p in kept.iterdir()) == contents
        assert job_in_queue(running)
    finally:
        for server in (killed, other):
            if server.poll() is None:
                server.stdin.close()
                try:
                    server.wait(timeout=60)   # the other server's exit ends its kernel and job
                except subprocess.TimeoutExpired:
                    server.kill()


async def test_idle_kernel_outlives_the_grace_period(make_spec, start_kernel, transport):
    km, kc = await start_kernel(make_spec(f"rk-idle-{transport}", grace=2, transport=transport))
    job = (await remote(km))["job_id"]
    await value_of(kc, "1")
    await asyncio.sleep(6)   # the scenario itself: idle for three grace periods
    assert await value_of(kc, "'still here'") == "still here"
    assert (await remote(km))["job_id"] == job and job_in_queue(job)


def _sshd_sessions(cluster, node: str) -> list[int]:
    """sshd processes serving connections on node (not its listener)."""
    from pathlib import Path

    listener = int(Path(cluster["state"], "nodes", node, "sshd.pid").read_text())
    pids = subprocess.run(["ip", "netns", "pids", node], capture_output=True, text=True).stdout.split()
    found = []
    for pid in map(int, pids):
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if comm.startswith("sshd") and pid != listener:   # a node's sshd runs as sshd-NODE
            found.append(pid)
    return found


async def test_dropped_ssh_connection_heals_and_the_kernel_keeps_its_state(cluster, start_kernel):
    km, kc = await start_kernel()
    session = await remote(km)
    await run_cell(kc, "x = 42")
    sessions = _sshd_sessions(cluster, session["node"])
    assert sessions, "no sshd session serving the kernel's connection"
    for pid in sessions:
        subprocess.run(["kill", "-9", str(pid)], check=False)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while (await remote(km))["reconnects"] == 0:
        assert loop.time() < deadline, "the session did not reconnect"
        assert await km.provisioner.poll() is None, "the kernel was reported dead during the drop"
        await asyncio.sleep(0.1)
    # The frontend keeps using the same client; its sockets reconnect through the new forwards.
    # A message in flight at the moment of the drop can be lost, as on any broken link: probe
    # with kernel_info (as frontends do) until the link answers, then check the state.
    await wait_for_kernel_info(kc, timeout=30, every=2)
    assert await value_of(kc, "x") == "42"
    assert await km.provisioner.poll() is None


class SSHBlackhole:
    """Drops every SSH packet between a node and this process's login-side ports
    ``client_ports`` (low, high; see own_ssh_ports), silently, both ways: a half-open link, as
    a network partition or a crashed login node leaves it (no FIN or RST reaches either side).
    Policy routing in the node's namespace sends those packets of sshd's, in and out, to a
    blackhole table (the local table moves behind those rules while it lasts); every other
    packet passes: slurmd's (SLURM still sees the node and the job) and anybody else's SSH."""

    def __init__(self, node: str, client_ports: tuple[int, int]):
        self.node = node
        ports = "%d-%d" % client_ports
        self.rules = (("pref", "10", "ipproto", "tcp", "sport", "22", "dport", ports, "lookup", "222"),
                      ("pref", "11", "iif", "eth0", "ipproto", "tcp", "dport", "22", "sport", ports, "lookup", "222"))

    def _ip(self, *args: str, check: bool = True) -> None:
        subprocess.run(["ip", "netns", "exec", self.node, "ip", *args], check=check, capture_output=True)

    def __enter__(self):
        self._ip("route", "add", "blackhole", "default", "table", "222")
        for rule in self.rules:
            self._ip("rule", "add", *rule)
        self._ip("rule", "add", "pref", "100", "lookup", "local")
        self._ip("rule", "del", "pref", "0", "lookup", "local")
        return self

    def __exit__(self, *exc) -> None:
        self._ip("rule", "add", "pref", "0", "lookup", "local", check=False)
        for pref in ("100", "10", "11"):
            self._ip("rule", "del", "pref", pref, check=False)
        self._ip("route", "flush", "table", "222", check=False)


OWN_PORTS = (29000, 29099)
_own_ports = itertools.cycle(range(OWN_PORTS[0], OWN_PORTS[1] + 1))


@pytest.fixture
def own_ssh_ports(monkeypatch) -> tuple[int, int]:
    """Node connections of this process come from login-side ports in the range returned
    (below the kernel's ephemeral range, so no other connection has them), one after the
    other: an SSHBlackhole for them cuts this test's links and nobody else's."""
    from remote_kernels import ssh

    connect = ssh.connect

    async def from_own_port(host: str, **kw):
        for _ in range(OWN_PORTS[1] - OWN_PORTS[0] + 1):
            try:
                return await connect(host, local_addr=("0.0.0.0", next(_own_ports)), **kw)
            except OSError as e:   # that port is still taken (TIME_WAIT of an earlier test's connection)
                if e.errno != errno.EADDRINUSE:
                    raise
        raise OSError(errno.EADDRINUSE, f"every port in {OWN_PORTS} is in use")

    monkeypatch.setattr(ssh, "connect", from_own_port)
    return OWN_PORTS


async def test_a_half_open_link_ends_the_job_within_grace(cluster, make_spec, start_kernel, own_ssh_ports):
    """P6: the dead-man switch listens for traffic, not for a closed channel.  With every SSH
    packet of its connections dropped (no EOF ever reaches the launcher), the launcher ends
    its job within grace + one heartbeat (+ its one-second check), and the session reports it."""
    from remote_kernels.link import heartbeat

    grace = 6.0
    make_spec("rk-half-open", grace=grace)
    km, kc = await start_kernel("rk-half-open")
    info = await remote(km)
    assert await value_of(kc, "1") == "1"
    assert processes_mentioning(info["session_id"])
    with SSHBlackhole(info["node"], client_ports=own_ssh_ports):
        # grace + one heartbeat, + the launcher's one-second check and the process's exit
        await until("the launcher to end its job", lambda: not processes_mentioning(info["session_id"]),
                    timeout=grace + heartbeat(grace) + 3)
        await until(f"job {info['job_id']} to leave the queue", lambda: not job_in_queue(info["job_id"]), timeout=30)
    await _wait_for_death(km, within=60)
    assert f"job {info['job_id']}" in (await remote(km))["ended_reason"]


OUTAGE = 30            # s without a packet to or from the node (#21)
ANSWERS_AFTER = 5      # s after the network's return within which the kernel must answer (#21)


async def test_a_kernel_answers_within_seconds_after_a_long_outage(cluster, make_spec, start_kernel, own_ssh_ports):
    """#21: after OUTAGE s of a half-open link (every SSH packet of the kernel's connections
    dropped, both ways), the kernel answers kernel_info, on shell and iopub, within
    ANSWERS_AFTER s of the network's return, its state kept.  TCP alone resends into a link
    that came back only after its back-off (up to tens of seconds); the link notices the
    silence and keeps making fresh connections instead."""
    make_spec("rk-outage", grace=120)   # survives the outage
    km, kc = await start_kernel("rk-outage")
    info = await remote(km)
    await run_cell(kc, "x = 42")
    with SSHBlackhole(info["node"], client_ports=own_ssh_ports):
        await asyncio.sleep(OUTAGE)   # the scenario itself
    back = asyncio.get_running_loop().time()
    await wait_for_kernel_info(kc, timeout=ANSWERS_AFTER, every=0.25)   # from the network's return
    print(f"kernel_info answered {asyncio.get_running_loop().time() - back:.2f}s after the outage ended")
    assert await value_of(kc, "x") == "42"
    assert await km.provisioner.poll() is None
    assert (await remote(km))["reconnects"] == 1


async def _wait_for_death(km, within: float) -> int:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while (code := await km.provisioner.poll()) is None:
        assert loop.time() < deadline, f"poll() did not report the job's end within {within} s"
        await asyncio.sleep(0.1)
    return code


def _node_state(node: str) -> str:
    out = subprocess.run(["sinfo", "-h", "-N", "-n", node, "-o", "%t"], capture_output=True, text=True).stdout
    return (out.split() or [""])[0]   # one line per partition the node is in


async def test_node_failure_is_reported(make_spec, start_kernel):
    make_spec("rk-on-c1", directives=["--nodelist=c1"])
    km, kc = await start_kernel("rk-on-c1")
    try:
        subprocess.run(["scontrol", "update", "nodename=c1", "state=down", "reason=rk-test"], check=True)
        code = await _wait_for_death(km, within=DEATH_SEEN)
    finally:
        # ReturnToService=2 may already have brought it back (then resume is refused).
        subprocess.run(["scontrol", "update", "nodename=c1", "state=resume"], capture_output=True)
        await until("c1 to be back", lambda: _node_state("c1") in ("idle", "mix", "alloc"), 30)
    assert code == 135
    assert "NODE_FAIL" in (await remote(km))["ended_reason"]


async def test_preemption_is_reported(make_spec, start_kernel, tmp_path):
    make_spec("rk-preemptable", directives=["--nodelist=c2", "--exclusive"])
    km, kc = await start_kernel("rk-preemptable")
    urgent = subprocess.run(["sbatch", "--parsable", "-p", "urgent", "-w", "c2", "--exclusive",
                             f"--output={tmp_path}/urgent.out", "--wrap", "sleep 60"],
                            capture_output=True, text=True, check=True).stdout.strip()
    try:
        code = await _wait_for_death(km, within=DEATH_SEEN)
    finally:
        subprocess.run(["scancel", urgent], check=False)
    assert code == 143
    assert "PREEMPTED" in (await remote(km))["ended_reason"]


async def test_wall_time_limit_is_reported(make_spec, start_kernel):
    make_spec("rk-one-minute", time="1")
    km, kc = await start_kernel("rk-one-minute")
    # SLURM checks time limits about every 30 s: allow the limit plus two checks.
    code = await _wait_for_death(km, within=130)
    assert code == 124
    assert "TIMEOUT" in (await remote(km))["ended_reason"]


async def test_job_waiting_for_resources_keeps_waiting_and_shows_why(make_spec, caplog):
    """A reason that clears with time (Resources: the node is busy) is waited out, logged and
    passed to on_status, with SLURM's estimated start once the backfill scheduler has one."""
    import logging
    import uuid

    caplog.set_level(logging.INFO)
    blocker = subprocess.run(["sbatch", "--parsable", f"--job-name=rk-block-{uuid.uuid4().hex[:8]}", "-w", "c1",
                              "-c", "5", "--time=3", "--output=/dev/null", "--wrap", "sleep 170"],
                             capture_output=True, text=True, check=True).stdout.strip().split(";")[0]
    seen = []
    start = None
    try:
        await until(f"blocker job {blocker} to run on c1", lambda: job_state(blocker) == "RUNNING", timeout=60)
        make_spec("rk-busy-node", partition="debug", cpus=4, time="00:10:00", directives=["--nodelist=c1"])
        km = AsyncKernelManager(kernel_name="rk-busy-node")
        start = asyncio.ensure_future(km.start_kernel(on_status=lambda st, waited: seen.append(st)))
        await until("an estimated start for the waiting job",
                    lambda: any(st.reason in ("Resources", "Priority") and st.start_time for st in seen), timeout=60)
        assert not start.done(), start.exception() if start.done() else None
        job = (await remote(km))["job_id"]
        waiting = next(st for st in seen if st.start_time)
        logged = [r.getMessage() for r in caplog.records]
        assert any(f"job {job} queued ({waiting.reason}), estimated start {waiting.start_time}" in m for m in logged), logged
    finally:
        if start is not None:
            start.cancel()
            with pytest.raises(asyncio.CancelledError):
                await start
        subprocess.run(["scancel", blocker], check=True)
    await until(f"job {job} to leave the queue", lambda: not job_state(job), timeout=10)


# A plain synchronous jupyter_client script: prints its kernel's job id, session id, login dir and
# connection file, then waits for a line on stdin (or a signal) and ends the way argv[2] says.
PLAIN_SCRIPT = textwrap.dedent("""
    import sys
    from jupyter_client.manager import KernelManager
    km = KernelManager(kernel_name=sys.argv[1])
    km.start_kernel()
    info = km.provisioner.hosted.describe()
    print(info["job_id"], info["session_id"], km.provisioner._login_dir, km.connection_file, flush=True)
    sys.stdin.readline()
    if sys.argv[2] == "exception":
        raise RuntimeError("the script failed")
""")
# How each way out ends the process: a normal return, an uncaught exception, Ctrl-C (Python ends
# itself by SIGINT after its clean-up), SIGTERM (no handler of the script's own: we exit normally).
EXIT_PATHS = {"normal": (None, 0), "exception": (None, 1), "sigint": (signal.SIGINT, -signal.SIGINT),
              "sigterm": (signal.SIGTERM, 143)}


@pytest.mark.parametrize("how", EXIT_PATHS)
def test_a_plain_script_leaves_nothing_behind_on_any_exit_path(make_spec, how):
    make_spec("rk-plain-exit")
    sig, code = EXIT_PATHS[how]
    script = subprocess.Popen([sys.executable, "-c", PLAIN_SCRIPT, "rk-plain-exit", how],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        job, sid, login_dir, connection_file = script.stdout.readline().split()
        node_dir = f"/tmp/rk-{sid}"       # the nodes share the login side's /tmp here
        assert job_in_queue(job) and os.path.isdir(login_dir) and os.path.isfile(connection_file)
        assert os.path.isdir(node_dir) and processes_mentioning(sid)
        if sig is None:
            script.stdin.write("go\n")
            script.stdin.flush()
        else:
            script.send_signal(sig)       # while it waits in readline
        assert script.wait(timeout=40) == code, script.stderr.read()
        assert not os.path.exists(login_dir) and not os.path.exists(connection_file)
        wait_until(f"job {job} to leave the queue", lambda: not job_in_queue(job), timeout=20)
        wait_until("the launcher and kernel to end", lambda: not processes_mentioning(sid), timeout=10)
        assert not os.path.exists(node_dir)
    finally:
        if script.poll() is None:
            script.kill()

