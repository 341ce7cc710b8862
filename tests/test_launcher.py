"""The real launcher (fed to Python on stdin, as the batch job does) driven over its control socket.

No cluster: the launcher runs here, with a stand-in kernel (tests/launcher_kernel.py) as the
start request's argv.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from kernel_helpers import FORKED_PRINT, run_cell, without_curve_nothing_is_heard
from proc_helpers import children, identify, parent, running, tcp_listeners, tree
from remote_kernels.control import LauncherClient, LauncherLost
import remote_kernels.launcher as launcher_module
from remote_kernels.launcher import EXIT_ABANDONED, KERNEL_BOOT
from remote_kernels.script import launcher_source

KERNEL = Path(__file__).with_name("launcher_kernel.py")
DEADLINE = 30   # s: the most any awaited condition may take before the test fails


class Launched:
    """One launcher process and its private directory."""

    def __init__(self, proc: asyncio.subprocess.Process, dir: Path, grace: float):
        self.proc, self.dir, self.grace = proc, dir, grace
        self.clients: list[LauncherClient] = []

    async def raw(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_unix_connection(str(self.dir / "ctl"))

    async def client(self, heartbeat: float = 0, on_event=None) -> LauncherClient:
        reader, writer = await self.raw()
        client = LauncherClient(reader, writer, on_event=on_event or (lambda msg: None),
                                heartbeat=heartbeat, what="the test launcher")
        client.start()
        self.clients.append(client)
        return client

    async def exit_code(self, within: float = DEADLINE) -> int:
        """Wait for the launcher to exit; its exit code (fails the test after ``within`` s)."""
        return await asyncio.wait_for(self.proc.wait(), within)

    async def stderr(self) -> str:
        return (await self.proc.stderr.read()).decode()


@pytest.fixture
async def launch():
    """launch(grace=60, contact=None, shared=None) -> Launched, ready (its socket listens); all
    ended afterwards.  ``contact``: the first-contact window argument (None: left out, as grace);
    ``shared``: (LINGER, MAX) for a shared allocation's launcher."""
    base = Path(tempfile.mkdtemp(prefix="rk-t", dir="/tmp"))   # unix socket paths must stay short
    launched: list[Launched] = []

    async def start(grace: float = 60, contact: float | None = None, shared: tuple | None = None) -> Launched:
        session = f"s{len(launched)}"
        window = [] if contact is None and shared is None else [f"{contact if contact is not None else grace:g}"]
        if shared is not None:
            window += [f"{shared[0]:g}", str(shared[1])]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-", session, f"{grace:g}", str(base), *window,
            stdin=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        proc.stdin.write(launcher_source().encode())
        proc.stdin.close()
        one = Launched(proc, base / f"rk-{session}", grace)
        launched.append(one)
        ready = await asyncio.wait_for(proc.stderr.readline(), DEADLINE)
        assert b"remote-kernels launcher: ready" in ready, ready
        return one

    yield start
    for one in launched:
        for client in one.clients:
            client.close()
        if one.proc.returncode is None:
            one.proc.send_signal(signal.SIGTERM)   # the launcher stops its kernel and exits
            try:
                await asyncio.wait_for(one.proc.wait(), DEADLINE)
            except asyncio.TimeoutError:
                one.proc.kill()
                await one.proc.wait()
    shutil.rmtree(base, ignore_errors=True)


def start_request(mode: str, *args: str) -> dict:
    return {"op": "start", "key": "test-key", "cwd": "/tmp",
            "argv": [sys.executable, str(KERNEL), "{connection_file}", mode, *args]}


async def until_exists(path: Path) -> None:
    deadline = time.monotonic() + DEADLINE
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear within {DEADLINE}s"
        await asyncio.sleep(0.01)


def test_launcher_is_python_3_8_syntax():
    """It runs under the user's Python on the node, which may be old; so does its kernel boot file."""
    ast.parse(launcher_source(), feature_version=(3, 8))
    ast.parse(KERNEL_BOOT, feature_version=(3, 8))


MALFORMED = [
    (b"not json", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b'"hello"', "not a JSON object"),
    (b'{"id": 1}', 'no "op"'),
    (b'{"op": 7, "id": 2}', 'no "op"'),
    (b'{"op": "frobnicate", "id": 3}', "unknown op 'frobnicate'"),
    (b'{"op": "signal", "id": 4}', "integer signum"),
    (b'{"op": "signal", "signum": "2", "id": 5}', "integer signum"),
    (b'{"op": "signal", "signum": true, "id": 6}', "integer signum"),
    (b'{"op": "start", "id": 7}', "key"),
    (b'{"op": "start", "key": 5, "id": 8}', "key"),
    (b'{"op": "start", "key": "k", "env": {"A": 1}, "id": 9}', "env"),
    (b'{"op": "start", "key": "k", "env": ["A"], "id": 10}', "env"),
    (b'{"op": "start", "key": "k", "argv": "python", "id": 11}', "argv"),
    (b'{"op": "start", "key": "k", "argv": [], "id": 12}', "argv"),
    (b'{"op": "start", "key": "k", "cwd": 3, "id": 13}', "cwd"),
    (b'{"op": "start", "key": "k", "curve_secretkey": "' + b"x" * 40 + b'", "id": 14}', "curve_publickey and"),
    (b'{"op": "start", "key": "k", "curve_publickey": "short", "curve_secretkey": "short", "id": 15}', "Z85"),
]


async def test_malformed_requests_get_an_error_and_the_channel_goes_on(launch):
    """Each on a connection of its own, so that all failures show at once."""
    launcher = await launch()
    wrong = []
    for line, says in MALFORMED:
        reader, writer = await launcher.raw()
        writer.write(line + b'\n{"op": "ping", "id": "after"}\n')
        replies = [await asyncio.wait_for(reader.readline(), DEADLINE) for _ in range(2)]
        writer.close()
        if b"" in replies:
            wrong.append(f"{line!r}: the launcher closed the channel")
            continue
        reply, after = map(json.loads, replies)
        wanted_id = json.loads(line).get("id") if line.startswith(b"{") else None
        if reply.get("event") != "error" or says not in reply.get("message", "") or reply.get("id") != wanted_id:
            wrong.append(f"{line!r}: {reply}")
        if after != {"event": "pong", "id": "after"}:
            wrong.append(f"{line!r} then ping: {after}")
    assert not wrong, "\n".join(wrong)


async def test_bad_signal_number_for_a_running_kernel_is_an_error(launch):
    launcher = await launch()
    client = await launcher.client()
    assert (await client.request(start_request("fast"), DEADLINE))["event"] == "started"
    reply = await client.request({"op": "signal", "signum": 99999}, DEADLINE)
    assert reply["event"] == "error" and "cannot send signal 99999" in reply["message"], reply
    assert (await client.request({"op": "ping"}, DEADLINE))["event"] == "pong"


async def test_ping_is_answered_with_pong(launch):
    launcher = await launch()
    client = await launcher.client()
    reply = await client.request({"op": "ping"}, DEADLINE)
    assert reply["event"] == "pong" and isinstance(reply["id"], int)


async def test_hello_ping_and_signal_are_answered_during_a_slow_start(launch):
    """The slow kernel creates its sockets only after SIGINT (or 3 s): on a launcher that runs
    requests one at a time, the signal waits behind the start and the order is wrong."""
    launcher = await launch()
    client = await launcher.client()
    done: list[str] = []

    def send(name: str, msg: dict) -> asyncio.Task:
        task = asyncio.ensure_future(client.request(msg, DEADLINE))
        task.add_done_callback(lambda _: done.append(name))
        return task

    start = send("start", start_request("slow"))
    await until_exists(launcher.dir / "k-spawned")
    stop = send("stop", {"op": "stop"})   # serialised: after the start
    hello = await client.request({"op": "hello"}, DEADLINE)
    assert hello["kernel"] is not None and not start.done()
    assert (await client.request({"op": "ping"}, DEADLINE))["event"] == "pong" and not start.done()
    signalled = send("signal", {"op": "signal", "signum": int(signal.SIGINT)})
    assert (await signalled)["event"] == "ok"
    assert (await start)["event"] == "started"
    stopped = await stop
    assert stopped["event"] == "stopped" and stopped["code"] == -signal.SIGTERM
    assert done == ["signal", "start", "stop"]
    assert (launcher.dir / "k-sigint").exists()


async def test_kernel_exit_is_an_unsolicited_event(launch):
    events: asyncio.Queue = asyncio.Queue()
    launcher = await launch()
    client = await launcher.client(on_event=events.put_nowait)
    assert (await client.request(start_request("fast"), DEADLINE))["event"] == "started"
    assert (await client.request({"op": "signal", "signum": int(signal.SIGTERM)}, DEADLINE))["event"] == "ok"
    event = await asyncio.wait_for(events.get(), DEADLINE)
    assert event == {"event": "exited", "code": -signal.SIGTERM}


async def test_dead_man_ends_the_job_when_a_connected_client_is_silent(launch):
    """A half-open link delivers no EOF: the client stays connected but nothing arrives."""
    launcher = await launch(grace=1)
    client = await launcher.client(heartbeat=0)
    assert (await client.request(start_request("fast"), DEADLINE))["event"] == "started"
    code = await launcher.exit_code()
    assert code == EXIT_ABANDONED   # the srun job script ends its allocation on it
    assert "no contact from the login side for 1s; ending" in await launcher.stderr()
    await asyncio.wait_for(client.wait_closed(), DEADLINE)
    assert not launcher.dir.exists()


async def test_pings_keep_the_launcher_alive_and_it_ends_once_they_stop(launch):
    launcher = await launch(grace=1)
    client = await launcher.client(heartbeat=0.2)
    # Staying alive cannot be shown by a condition: the launcher must outlive several graces.
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.shield(launcher.proc.wait()), 3 * launcher.grace)
    assert client.open and (await client.request({"op": "ping"}, DEADLINE))["event"] == "pong"
    client.close()   # no client at all: the job ends after grace too
    code = await launcher.exit_code()
    assert code == EXIT_ABANDONED   # the srun job script ends its allocation on it
    assert "no contact from the login side" in await launcher.stderr()


@pytest.mark.parametrize("connects", [False, True], ids=["nobody-connects", "a-silent-connection"])
async def test_a_launcher_nobody_talks_to_ends_after_the_first_contact_window(launch, connects):
    """A job whose server died while it was queued: nothing ever reaches its launcher, which
    ends after the first-contact window (short here), not after grace."""
    launcher = await launch(grace=300, contact=1)
    if connects:
        reader, writer = await launcher.raw()   # connected, but never a line
    code = await launcher.exit_code()
    assert code == EXIT_ABANDONED   # the srun job script ends its allocation on it
    assert ("nobody reached the launcher within 1s of its start (the server that started the job is gone, "
            "or it reached the node too late: raise contact_timeout); ending") in await launcher.stderr()
    assert not launcher.dir.exists()


@pytest.mark.parametrize("contact", [None, 300], ids=["no-window-given", "a-longer-window"])
async def test_the_first_contact_window_is_at_most_grace(launch, contact):
    launcher = await launch(grace=1, contact=contact)
    assert await launcher.exit_code() == EXIT_ABANDONED
    assert "nobody reached the launcher within 1s of its start" in await launcher.stderr()


def test_the_window_comes_from_contact_timeout_which_must_be_positive():
    from traitlets import TraitError

    from remote_kernels.options import KernelOptions
    from remote_kernels.schedulers.slurm import Slurm
    from remote_kernels.script import render

    opts = KernelOptions(contact_timeout=45, grace=600, environ={})
    assert " - abc 600 /tmp 45 <<'RK_LAUNCHER_EOF'\n" in render(Slurm(), opts, opts.resources("rk-t", "/tmp/%j.log"),
                                                                 session="abc")
    with pytest.raises(TraitError, match=r"^contact_timeout 0 is out of range; use a positive number of seconds$"):
        KernelOptions(contact_timeout=0, environ={})


def test_a_direct_job_script_names_the_key_directory_and_holds_no_key():
    from remote_kernels.direct import key_dir
    from remote_kernels.options import KernelOptions
    from remote_kernels.schedulers.slurm import Slurm
    from remote_kernels.script import render

    opts = KernelOptions(transport="direct", environ={})
    text = render(Slurm(), opts, opts.resources("rk-t", "/tmp/%j.log"), session="abc")
    assert f" - abc 300 /tmp 60 --direct {key_dir('abc')} <<'RK_LAUNCHER_EOF'\n" in text
    assert "--direct" not in render(Slurm(), KernelOptions(environ={}), opts.resources("rk-t", "/tmp/%j.log"),
                                    session="abc").split("<<'RK_LAUNCHER_EOF'")[0]


async def test_once_contacted_the_launcher_allows_grace_of_silence_not_the_window(launch):
    launcher = await launch(grace=300, contact=0.5)
    client = await launcher.client(heartbeat=0)
    assert (await client.request({"op": "hello"}, DEADLINE))["event"] == "hello"
    # Outliving the window cannot be shown by a condition: stay silent for several of them.
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.shield(launcher.proc.wait()), 6 * 0.5)
    assert (await client.request({"op": "ping"}, DEADLINE))["event"] == "pong"


async def test_a_hello_with_persist_keeps_the_kernel_for_a_next_server_then_ends_it(launch):
    """The server that said hello with persist is gone (its connection closed): the launcher and
    kernel outlive grace, a new connection finds the kernel running, and once that one is gone
    too the job ends after persist."""
    launcher = await launch(grace=0.5)
    first = await launcher.client(heartbeat=0)
    assert (await first.request({"op": "hello", "persist": 3}, DEADLINE))["event"] == "hello"
    started = await first.request(start_request("fast"), DEADLINE)
    assert started["event"] == "started"
    first.close()
    t0 = time.monotonic()
    # Outliving grace cannot be shown by a condition: stay away for several graces.
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.shield(launcher.proc.wait()), 4 * 0.5)
    second = await launcher.client(heartbeat=0)
    hello = await second.request({"op": "hello", "persist": 3}, DEADLINE)
    assert hello["kernel"] == started["pid"]
    second.close()
    assert await launcher.exit_code() == EXIT_ABANDONED
    assert time.monotonic() - t0 >= 3
    assert "no contact from the login side for 3s; ending" in await launcher.stderr()


async def test_a_bad_persist_is_refused(launch):
    launcher = await launch()
    client = await launcher.client()
    reply = await client.request({"op": "hello", "persist": "long"}, DEADLINE)
    assert reply == {"event": "error", "message": "hello: persist must be a number of seconds", "id": reply["id"]}


async def test_shutdown_says_bye_and_ends_the_launcher(launch):
    launcher = await launch()
    client = await launcher.client()
    assert (await client.request(start_request("fast"), DEADLINE))["event"] == "started"
    assert (await client.request({"op": "shutdown"}, DEADLINE))["event"] == "bye"
    code = await launcher.exit_code()
    assert code == 0
    await asyncio.wait_for(client.wait_closed(), DEADLINE)
    with pytest.raises(LauncherLost, match="lost the test launcher"):
        await client.request({"op": "ping"}, DEADLINE)


@contextlib.asynccontextmanager
async def ready_client(connection_file: Path):
    """A client of the kernel the launcher started, ready, whose forked children's output arrives."""
    from jupyter_client.asynchronous import AsyncKernelClient

    kc = AsyncKernelClient()
    kc.load_connection_file(str(connection_file))
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=DEADLINE)
        content, out = await run_cell(kc, FORKED_PRINT, timeout=DEADLINE)
        assert content["status"] == "ok" and out == "printed by a forked child\n", out
        yield kc
    finally:
        kc.stop_channels()


@pytest.mark.parametrize("env", [{}, {"PYTHONSAFEPATH": "1"}], ids=["plain", "safe-path"])
async def test_ipykernel_listens_on_no_tcp_port_and_its_forked_children_still_print(launch, env):
    """ipykernel's pipe for the output of forked subprocesses, a loopback TCP port that any
    local user can flood, is an ipc socket in the private directory; that output still arrives.
    The kernel's module path is Python's own (under PYTHONSAFEPATH too), without the boot file's
    directory."""
    launcher = await launch()
    client = await launcher.client()
    reply = await client.request({"op": "start", "key": "test-key", "cwd": "/tmp", "env": env}, DEADLINE)
    assert reply["event"] == "started", reply
    assert tcp_listeners(tree(reply["pid"])) == [] and reply["tcp"] == []
    assert (launcher.dir / "k-pipe-1").is_socket()
    async with ready_client(launcher.dir / "kernel.json") as kc:
        _, out = await run_cell(kc, "import json, sys; print(json.dumps(sys.path))", timeout=DEADLINE)
        python_path = json.loads(subprocess.run([sys.executable, "-c", "import json, sys; print(json.dumps(sys.path))"],
                                                env={**os.environ, **env}, capture_output=True, text=True).stdout)
        kernel_path = json.loads(out)
        assert str(launcher.dir) not in kernel_path
        assert set(python_path) - {""} <= set(kernel_path), (python_path, kernel_path)


async def test_a_kernel_given_curve_keys_talks_only_to_clients_that_have_them(launch):
    """The keypair of a start request goes into the 0600 connection file and ipykernel makes
    every channel a Curve server: a client with the connection file's keys runs cells (output
    of forked children too); one without them, with the right HMAC key, hears nothing on iopub
    and cannot make the kernel execute."""
    import zmq

    public, secret = (k.decode() for k in zmq.curve_keypair())
    launcher = await launch()
    client = await launcher.client()
    reply = await client.request({"op": "start", "key": "test-key", "cwd": "/tmp",
                                  "curve_publickey": public, "curve_secretkey": secret}, DEADLINE)
    assert reply["event"] == "started", reply
    conn = launcher.dir / "kernel.json"
    info = json.loads(conn.read_text())
    assert (info["curve_publickey"], info["curve_secretkey"]) == (public, secret)
    assert conn.stat().st_mode & 0o077 == 0
    marker = Path(tempfile.mkdtemp(prefix="rk-curve-")) / "executed"
    try:
        async with ready_client(conn) as kc:
            async def owner_runs_a_cell():
                _, out = await run_cell(kc, "print('rk-' + 'marker')", timeout=DEADLINE)
                assert out == "rk-marker\n"

            await without_curve_nothing_is_heard(info, marker, owner_runs_a_cell)
    finally:
        shutil.rmtree(marker.parent, ignore_errors=True)


async def test_a_kernel_listening_on_tcp_is_reported(launch):
    """A kernel that listens on TCP all the same (another kernel, or an ipykernel the boot file
    does not know) is named in the started reply and in the job log."""
    launcher = await launch()
    client = await launcher.client()
    reply = await client.request(start_request("tcp"), DEADLINE)
    port = int((launcher.dir / "k-tcp").read_text())
    assert reply["event"] == "started" and reply["tcp"] == [port], reply
    assert (await client.request({"op": "shutdown"}, DEADLINE))["event"] == "bye"
    assert await launcher.exit_code() == 0
    assert (f"the kernel (pid {reply['pid']}) listens on TCP port(s) {port} of {socket.gethostname()}, "
            "which any user there can connect to") in await launcher.stderr()


async def until_gone(proc: tuple[int, str]) -> None:
    deadline = time.monotonic() + DEADLINE
    while running(proc):
        assert time.monotonic() < deadline, f"process {proc[0]} still runs after {DEADLINE}s"
        await asyncio.sleep(0.02)


async def start_detaching(launcher: Launched, client: LauncherClient, name: str) -> tuple[int, str]:
    """Start the stand-in kernel in mode detach; its orphan (pid, start time), which has been
    reparented to the launcher (a child subreaper)."""
    pidfile = launcher.dir.parent / f"{launcher.dir.name}-{name}"   # outside the launcher's dir
    reply = await client.request(start_request("detach", str(pidfile)), DEADLINE)
    assert reply["event"] == "started", reply
    await until_exists(pidfile)
    orphan = identify(int(pidfile.read_text()))
    assert parent(orphan) == launcher.proc.pid, f"the orphan's parent is {parent(orphan)}, not the launcher"
    return orphan


@pytest.fixture
async def bystander():
    """A process of the test's own, in the launcher's process group: it must survive it all."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", "import time; time.sleep(600)")
    yield identify(proc.pid)
    proc.kill()
    await proc.wait()


@pytest.mark.parametrize("end", ["stop", "restart", "shutdown", "sigterm", "exit-then-stop"])
async def test_what_a_kernel_detached_ends_with_it(launch, bystander, end):
    """A double-forked, SIGTERM-ignoring process in a session of its own ends when its kernel is
    stopped, restarted, shut down with the launcher, or stopped after exiting by itself; the
    reply comes once it is gone.  Processes that are not the launcher's descendants live on."""
    launcher = await launch()
    events: asyncio.Queue = asyncio.Queue()
    client = await launcher.client(on_event=events.put_nowait)
    orphan = await start_detaching(launcher, client, "orphan")
    if end == "stop":
        assert (await client.request({"op": "stop"}, DEADLINE))["event"] == "stopped"
        assert not running(orphan)
    elif end == "restart":
        assert (await client.request(start_request("fast"), DEADLINE))["event"] == "started"
        assert not running(orphan)
    elif end == "shutdown":
        assert (await client.request({"op": "shutdown"}, DEADLINE))["event"] == "bye"
        assert not running(orphan)
    elif end == "sigterm":
        launcher.proc.send_signal(signal.SIGTERM)
        assert await launcher.exit_code() == 0
        assert not running(orphan)
    else:
        assert (await client.request({"op": "signal", "signum": int(signal.SIGTERM)}, DEADLINE))["event"] == "ok"
        assert (await asyncio.wait_for(events.get(), DEADLINE))["event"] == "exited"
        assert running(orphan)   # a kernel that ended by itself leaves it until its next stop or start
        assert (await client.request({"op": "stop"}, DEADLINE))["event"] == "stopped"
        assert not running(orphan)
    assert running(bystander)


async def test_reparented_processes_that_exit_are_collected(launch):
    """An orphan reparented to the launcher that ends by itself leaves no zombie behind."""
    launcher = await launch()
    client = await launcher.client()
    orphan = await start_detaching(launcher, client, "short")
    (launcher.dir.parent / f"{launcher.dir.name}-short.exit").touch()
    await until_gone(orphan)
    deadline = time.monotonic() + DEADLINE
    while zombies := [pid for pid, state in children(launcher.proc.pid) if state == "Z"]:
        assert time.monotonic() < deadline, f"zombie children of the launcher: {zombies}"
        await asyncio.sleep(0.02)
    assert (await client.request({"op": "ping"}, DEADLINE))["event"] == "pong"


@pytest.mark.skipif(not any(Path("/usr/lib").glob("python3.*/EXTERNALLY-MANAGED")) or not os.path.exists("/usr/bin/python3"),
                    reason="no system-managed (PEP 668) /usr/bin/python3 here")
def test_install_advice_is_pip_in_a_venv_and_a_venv_for_a_system_managed_python():
    code = "import sys; sys.path.insert(0, sys.argv[1]); import launcher; print(launcher.install_advice())"
    where = str(Path(launcher_module.__file__).parent)
    system = subprocess.run(["/usr/bin/python3", "-c", code, where], capture_output=True, text=True, check=True).stdout
    assert "PEP 668" in system and "/usr/bin/python3 -m venv DIR && DIR/bin/python -m pip install ipykernel" in system
    venv = subprocess.run([sys.executable, "-c", code, where], capture_output=True, text=True, check=True).stdout
    assert venv.strip() == f"run `{sys.executable} -m pip install ipykernel`"


# --- shared allocations: one launcher, a slot per kernel ------------------------------------

async def joined(launcher: Launched, slot: str, **kw) -> LauncherClient:
    """A client whose hello took kernel slot ``slot``."""
    client = await launcher.client(**kw)
    hello = await client.request({"op": "hello", "kernel": slot}, DEADLINE)
    assert hello["event"] == "hello", hello
    return client


async def test_shared_kernels_have_slots_of_their_own(launch):
    """Each slot: its own directory (connection file, sockets), kernel, process group and
    events; signalling, stopping one leaves the other running."""
    launcher = await launch(shared=(0, 0))
    events = {"a": asyncio.Queue(), "b": asyncio.Queue()}
    a = await joined(launcher, "a", on_event=events["a"].put_nowait)
    b = await joined(launcher, "b", on_event=events["b"].put_nowait)
    started = {name: await c.request(start_request("fast"), DEADLINE) for name, c in (("a", a), ("b", b))}
    assert started["a"]["event"] == started["b"]["event"] == "started" and started["a"]["pid"] != started["b"]["pid"]
    for name in "ab":
        slot = launcher.dir / f"s-{name}"
        assert (slot / "kernel.json").exists() and (slot / "k-1").exists()
        assert slot.stat().st_mode & 0o777 == 0o700
        assert json.loads((slot / "kernel.json").read_text())["ip"] == f"{slot}/k"
    assert os.getpgid(started["a"]["pid"]) != os.getpgid(started["b"]["pid"])
    assert (await a.request({"op": "signal", "signum": int(signal.SIGINT)}, DEADLINE))["event"] == "ok"
    await until_exists(launcher.dir / "s-a" / "k-sigint")
    assert not (launcher.dir / "s-b" / "k-sigint").exists()
    assert (await a.request({"op": "signal", "signum": int(signal.SIGTERM)}, DEADLINE))["event"] == "ok"
    assert await asyncio.wait_for(events["a"].get(), DEADLINE) == {"event": "exited", "code": -signal.SIGTERM}
    assert events["b"].empty()
    assert (await b.request({"op": "hello", "kernel": "b"}, DEADLINE))["kernel"] == started["b"]["pid"]
    assert (await a.request(start_request("fast"), DEADLINE))["event"] == "started"   # a restart of a
    assert (await a.request({"op": "stop"}, DEADLINE))["event"] == "stopped"
    assert (await b.request({"op": "hello", "kernel": "b"}, DEADLINE))["kernel"] == started["b"]["pid"]


async def test_a_shared_launcher_acts_only_for_a_named_slot(launch):
    launcher = await launch(shared=(0, 0))
    client = await launcher.client()
    assert (await client.request({"op": "hello"}, DEADLINE))["event"] == "hello"
    for req in (start_request("fast"), {"op": "stop"}, {"op": "signal", "signum": 2}, {"op": "shutdown"}):
        reply = await client.request(req, DEADLINE)
        assert reply == {"event": "error", "message": "this allocation is shared: say hello with your kernel's id first",
                         "id": reply["id"]}
    bad = await client.request({"op": "hello", "kernel": "../x"}, DEADLINE)
    assert bad["event"] == "error" and "kernel must be 1-64 letters" in bad["message"]


async def test_a_per_kernel_launcher_refuses_a_slot(launch):
    launcher = await launch()
    client = await launcher.client()
    reply = await client.request({"op": "hello", "kernel": "a"}, DEADLINE)
    assert reply["event"] == "error" and "holds one kernel" in reply["message"]


async def test_a_full_allocation_refuses_a_new_kernel_but_not_its_own(launch):
    launcher = await launch(shared=(0, 2))
    await joined(launcher, "a")
    await joined(launcher, "b")
    client = await launcher.client()
    reply = await client.request({"op": "hello", "kernel": "c"}, DEADLINE)
    assert reply["event"] == "error" and reply["full"] is True and "full (2 kernels)" in reply["message"]
    await joined(launcher, "a")   # a's server reconnecting


async def test_a_stop_ends_what_its_own_kernel_detached_and_nothing_of_the_others(launch):
    launcher = await launch(shared=(0, 0))
    a, b = await joined(launcher, "a"), await joined(launcher, "b")
    orphans = {"a": await start_detaching(launcher, a, "orphan-a"), "b": await start_detaching(launcher, b, "orphan-b")}
    assert (await a.request({"op": "stop"}, DEADLINE))["event"] == "stopped"
    assert not running(orphans["a"]) and running(orphans["b"])
    bye = await b.request({"op": "shutdown"}, DEADLINE)
    assert (bye["event"], bye["kernels"]) == ("bye", 1)   # a's slot is still there (its kernel stopped)
    assert not running(orphans["b"])


@pytest.mark.parametrize("linger", [0, 1.5])
async def test_the_allocation_ends_linger_seconds_after_its_last_kernel(launch, linger):
    launcher = await launch(shared=(linger, 0))
    a, b = await joined(launcher, "a", heartbeat=0.2), await joined(launcher, "b", heartbeat=0.2)
    for c in (a, b):
        assert (await c.request(start_request("fast"), DEADLINE))["event"] == "started"
    assert (await a.request({"op": "shutdown"}, DEADLINE))["kernels"] == 1
    assert not (launcher.dir / "s-a").exists() and launcher.proc.returncode is None
    assert (await b.request({"op": "shutdown"}, DEADLINE))["kernels"] == 0
    emptied = time.monotonic()
    assert await launcher.exit_code() == 0
    assert linger <= time.monotonic() - emptied < linger + 2
    if linger:
        assert f"no kernel for {linger:g}s (linger); ending" in await launcher.stderr()


async def test_a_kernel_started_while_the_allocation_lingers_keeps_it(launch):
    launcher = await launch(shared=(1, 0))
    a = await joined(launcher, "a", heartbeat=0.2)
    assert (await a.request({"op": "shutdown"}, DEADLINE))["kernels"] == 0
    b = await joined(launcher, "b", heartbeat=0.2)
    assert (await b.request(start_request("fast"), DEADLINE))["event"] == "started"
    # Outliving the linger cannot be shown by a condition: wait several of them.
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.shield(launcher.proc.wait()), 3)
    assert (await b.request({"op": "hello", "kernel": "b"}, DEADLINE))["kernel"] is not None


async def test_a_kernel_whose_server_is_gone_ends_after_grace_and_the_others_live_on(launch):
    launcher = await launch(grace=1, shared=(0, 0))
    a = await joined(launcher, "a", heartbeat=0.2)
    b = await joined(launcher, "b", heartbeat=0)
    for c in (a, b):
        assert (await c.request(start_request("fast"), DEADLINE))["event"] == "started"
    b.close()   # b's server is gone
    deadline = time.monotonic() + DEADLINE
    while (launcher.dir / "s-b").exists():
        assert time.monotonic() < deadline, "the orphaned kernel's slot was not ended"
        await asyncio.sleep(0.05)
    assert (await a.request({"op": "hello", "kernel": "a"}, DEADLINE))["kernel"] is not None
    assert launcher.proc.returncode is None
    a.close()   # the last server gone: the dead-man switch ends the allocation
    assert await launcher.exit_code() == EXIT_ABANDONED
    said = await launcher.stderr()
    assert "kernel slot b: no contact from its server for 1s; ending it" in said
    assert "no contact from the login side for 1s; ending" in said
