"""The in-job launcher: stdlib only, run by the batch script with the user's Python (3.8+).

Usage (the batch script feeds this file on stdin): ``PYTHON - SESSION GRACE BASE [CONTACT [LINGER MAX]] [--direct DIR]``

It makes the private runtime directory ``BASE/rk-SESSION`` (0700), listens on the
unix control socket ``ctl`` there and waits for the login side, which reaches the
socket through SSH.  The control protocol is JSON lines, one object per line; a request
may carry an ``"id"``, which its reply repeats (replies may come out of order):

    -> {"op": "hello", "kernel"?, "persist"?}  <- {"event": "hello", "host", "pid", "python", "dir", "kernel"}
                                                  | {"event": "error", "full": true, "message"} (shared only)
    -> {"op": "ping"}                          <- {"event": "pong"}
    -> {"op": "signal", "signum"}              <- {"event": "ok"} | {"event": "error", "message"}
    -> {"op": "start", "key", "signature_scheme"?, "kernel_name"?, "cwd"?, "env"?, "argv"?,
        "curve_publickey"?, "curve_secretkey"?}
                                               <- {"event": "started", "pid", "tcp"} | {"event": "error", "code", "message"}
    -> {"op": "stop"}                          <- {"event": "stopped", "code"}
    -> {"op": "shutdown"}                      <- {"event": "bye"}; the launcher exits, ending the job
    anything malformed (not JSON, not an object, no or unknown "op", bad arguments)
                                               <- {"event": "error", "message"}; the channel goes on
    unsolicited                                <- {"event": "exited", "code"} when the kernel ends

hello, ping and signal are answered at once; start, stop and shutdown run one at a time
(a start waits up to 60 s for the kernel's sockets) without holding up the others.

ipykernel (the default kernel) is started through KERNEL_BOOT, which puts the one TCP socket
it would open, its loopback pipe for the output of forked subprocesses, on an ipc socket in
the private directory too.  A started reply's ``tcp`` lists the TCP ports the kernel
listens on all the same (none for ipykernel; a warning goes to the job log otherwise).

Everything a kernel starts ends when it is stopped (stop, the next start, shutdown, the
launcher's own end): on Linux the launcher is a child subreaper, so processes that detach
(double fork, setsid) are reparented to it rather than to init; a stop sends SIGTERM to
the kernel's process group and each other descendant, then SIGKILL to those left after
STOP_GRACE seconds.  Elsewhere only the kernel's process group is signalled.

A start request's ``env`` is added to the job's environment for the kernel alone (the
kernelspec's env stanza travels this way, never in the batch script); the launcher keeps
the job's.  The kernel (ipykernel by default) binds ipc sockets ``BASE/rk-SESSION/k-1..5`` only,
so nothing but the owner (and the SSH forward acting for them) can reach it.  The
key arrives over the control socket and is written only to a 0600 connection file
inside the 0700 directory; so does a Curve keypair (the server's ``transport_encryption``),
with which ipykernel makes every channel a CurveZMQ server.  A kernel started through
KERNEL_BOOT whose pyzmq or ipykernel cannot do Curve exits at once with ERR_NO_CURVE_ZMQ or
ERR_NO_CURVE_KERNEL, and the start's error says which and what to do.  Dead-man switch (liveness by traffic): when no line has
arrived from any client for GRACE seconds (no client at all, or a half-open link that
never delivers an EOF), the launcher stops the kernel and exits.  The login side pings
well within GRACE.  Until the first line arrives, the limit is CONTACT seconds from the
launcher's start (at most GRACE; default GRACE): a job whose server died while it was
queued ends soon after it starts, instead of holding its allocation for GRACE.  The process
exits EXIT_ABANDONED when the dead-man switch ended it, 0 otherwise.  A hello with
``persist`` (seconds, per-kernel launchers only) raises the silence allowed after contact
to that many seconds (when longer than GRACE): the kernel outlives its server, waiting for
the next one to say hello again (re-adoption); the latest hello's value holds.

Transport direct (``--direct DIR``; no SSH reaches the job): DIR is a 0700 directory of the
user on the filesystem the login side shares, holding ``launcher.json`` (0600), the Curve
keypair of the control channel, which the login side wrote.  The launcher then imports pyzmq
(the kernel's Python has it), serves the same protocol as a CurveZMQ ROUTER on the node's
cluster-network address (one JSON line per message; an empty message is a connection's end, both
ways), and writes that endpoint to ``DIR/endpoint.json`` (0600); it removes DIR when it ends.  Kernels then bind TCP on that
address, CurveZMQ only (a start request must carry the Curve keys), on the same ports at each
restart; the started reply adds ``ip`` and ``ports`` (channel -> port).

Shared allocations (LINGER given: the spec's ``allocation: shared``): one launcher holds up to
MAX kernels (0: no limit), each in a slot of its own.  A control connection joins a slot with
``hello`` naming it (``"kernel"``: the login side's session id); the slot's directory is
``BASE/rk-SESSION/s-SLOT`` (0700, its own connection file, key and sockets), and that
connection's start, stop, signal and shutdown act on that slot's kernel alone (its own
process group; a stop ends the kernel's own descendants and the orphans that carry its
SLOT_ENV, never another slot's).  ``exited`` goes to the slot's connections only.  A hello
for a new slot when MAX are taken is refused with ``full``.  ``shutdown`` on a slot ends that
kernel and slot (reply ``{"event": "bye", "kernels": N}``, N slots left); a slot that has
had no connection for GRACE seconds is ended the same way (its server is gone).  Once no
slot is left the launcher waits LINGER seconds for a next kernel, then exits, ending the
job (0: at once).  Without LINGER (``allocation: per-kernel``) there is the one slot of the
launcher's own directory, as described above.
"""

import asyncio
import json
import os
import shutil
import signal
import socket
import sys
import time

CHANNELS = {"shell_port": 1, "iopub_port": 2, "stdin_port": 3, "control_port": 4, "hb_port": 5}
ERR_NO_IPYKERNEL = 93
# Exit codes of KERNEL_BOOT asked for Curve keys: pyzmq's libzmq lacks CurveZMQ; ipykernel predates it.
ERR_NO_CURVE_ZMQ = 94
ERR_NO_CURVE_KERNEL = 95
SETUP_ERRORS = (ERR_NO_IPYKERNEL, ERR_NO_CURVE_ZMQ, ERR_NO_CURVE_KERNEL)   # the kernel never ran: no output to show
CURVE_FIELDS = ("curve_publickey", "curve_secretkey")
# The launcher's exit code when the dead-man switch ended it (0 otherwise): the job script of an
# srun job then ends its allocation itself, since the srun that made it may be gone.
EXIT_ABANDONED = 96
# Printed to the job's output once a kernel has died during start-up: after the kernel's own last
# words there (same stream), so the login side knows when they have all arrived.
ENDED_AT_START = "remote-kernels launcher: the kernel ended during start-up"
SERIALISED = ("start", "stop", "shutdown")   # one at a time
IMMEDIATE = ("hello", "ping", "signal")       # answered at once
ACTS_ON_KERNEL = ("start", "stop", "signal", "shutdown")   # in a shared allocation: on a slot only
LINE_LIMIT = 1 << 24   # bytes in one request line (a start's env can be large)
OPTIONAL_STR = ("signature_scheme", "kernel_name", "cwd")
PR_SET_CHILD_SUBREAPER = 36   # linux/prctl.h
STOP_GRACE = 3.0   # s between SIGTERM and SIGKILL when a kernel (and what it started) is stopped
# In a shared allocation, each kernel's environment names its slot: what it leaves behind
# (reparented here) is ended with it, and only with it.
SLOT_ENV = "RK_KERNEL_SLOT"
SLOT_CHARS = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_-")
# The scheduler's pre-end signal (SLURM --signal=B:USR1@N): passed to a kernel started through the
# boot file, whose %remote_kernel extension shows the wall-time warning in the notebook; the flag
# file in the kernel's private dir tells a kernel started (or not yet listening) later to warn at its next cell.
WALLTIME_SIGNAL = signal.SIGUSR1
WALLTIME_FLAG = "walltime-near"

# Written to BASE/rk-SESSION/ipykernel-boot.py and run as ``PYTHON ipykernel-boot.py -f kernel.json``
# in place of ``PYTHON -m ipykernel_launcher -f kernel.json``.
KERNEL_BOOT = '''"""Started by the remote-kernels launcher: ipykernel as `python -m ipykernel_launcher` runs it,
with one change.  While it sets itself up, ipykernel binds a ZMQ PULL socket to a random port of
127.0.0.1 for the output of the kernel's forked subprocesses (ipykernel/iostream.py, IOPubThread);
any user on the node could connect to it.  Here every such bind made during
IPKernelApp.initialize() becomes an ipc socket in this private directory (k-pipe-N), and a
forked child's connect to the port it was given goes there instead.  A kernel asked for Curve
keys (the connection file has them) that its pyzmq or ipykernel cannot serve exits at once
with the launcher's code for that.
"""
import os
import signal
import sys

signal.signal(signal.SIGUSR1, signal.SIG_IGN)   # the launcher's wall-time warning: the magic handles it
import json  # noqa: E402
import zmq  # noqa: E402

with open(sys.argv[sys.argv.index("-f") + 1]) as f:
    curve = "curve_secretkey" in json.load(f)
if curve and not zmq.has("curve"):
    sys.exit(@NO_CURVE_ZMQ@)

HERE = os.path.dirname(os.path.abspath(__file__))
if sys.path and os.path.abspath(sys.path[0] or ".") == HERE:   # (not there under -P / PYTHONSAFEPATH)
    del sys.path[0]   # IPython puts the working directory first, as under -m ipykernel_launcher
PREFIX = os.path.join(HERE, "k-pipe-")
moved = {}        # port handed out (over 65535, so never a real one) -> ipc endpoint
setting_up = [True]
bind_random, connect = zmq.Socket.bind_to_random_port, zmq.Socket.connect


def bind_to_random_port(self, addr, *args, **kwargs):
    if not (setting_up[0] and addr == "tcp://127.0.0.1" and self.getsockopt(zmq.TYPE) == zmq.PULL):
        return bind_random(self, addr, *args, **kwargs)
    port = 65536 + len(moved)
    moved[port] = "ipc://%s%d" % (PREFIX, len(moved) + 1)
    self.bind(moved[port])
    return port


def connect_moved(self, addr, *args, **kwargs):
    host, _, port = addr.rpartition(":") if isinstance(addr, str) else ("", "", "")
    if host == "tcp://127.0.0.1" and port.isdigit() and int(port) in moved:
        addr = moved[int(port)]
    return connect(self, addr, *args, **kwargs)


zmq.Socket.bind_to_random_port = bind_to_random_port
zmq.Socket.connect = connect_moved
from ipykernel.kernelapp import IPKernelApp  # noqa: E402

if curve and "curve_secretkey" not in IPKernelApp.class_own_traits():   # its own: not jupyter_client's mixin
    sys.exit(@NO_CURVE_KERNEL@)
app = IPKernelApp.instance()
app.initialize()
setting_up[0] = False
MAGIC = os.path.join(HERE, "remote_kernel_magic.py")   # %remote_kernel, when the launcher wrote it
if os.path.exists(MAGIC):
    try:
        import importlib.util
        spec = importlib.util.spec_from_file_location("remote_kernel_magic", MAGIC)
        magic = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(magic)
        sys.modules["remote_kernel_magic"] = magic
        magic.load_ipython_extension(app.shell)
    except Exception as e:   # the kernel works without it
        print("remote-kernels: the %%remote_kernel magic is not available: %s" % e, file=sys.stderr, flush=True)
app.start()
'''.replace("@NO_CURVE_ZMQ@", str(ERR_NO_CURVE_ZMQ)).replace("@NO_CURVE_KERNEL@", str(ERR_NO_CURVE_KERNEL))

# The source of the %remote_kernel magic (remote_kernels/kernel_magic.py): script.launcher_source()
# puts it here; None when this file runs by itself.  Written next to the boot file, loaded by it.
KERNEL_MAGIC = None


def install_advice():
    """How to get ipykernel for this Python: pip, or a venv where the system manages its packages (PEP 668)."""
    import sysconfig
    managed = os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))
    if not managed or sys.prefix != sys.base_prefix:
        return "run `%s -m pip install ipykernel`" % sys.executable
    return ("its packages are the system's (PEP 668, pip refuses): make a venv on a filesystem the nodes share, "
            "`%s -m venv DIR && DIR/bin/python -m pip install ipykernel` (Debian needs python3-venv), "
            "and install the spec with --python DIR/bin/python" % sys.executable)

def curve_refused(code, direct=False):
    """The one line for a kernel that exited because it cannot do Curve (ERR_NO_CURVE_*);
    ``direct``: transport direct, which needs Curve whatever the server's policy."""
    if code == ERR_NO_CURVE_ZMQ:
        why, fix = ("the libzmq of its pyzmq was built without CurveZMQ",
                    "`%s -m pip install --force-reinstall pyzmq` (PyPI's wheels have it)" % sys.executable)
    else:
        why, fix = ("its ipykernel predates CurveZMQ (7.4 has it)", "`%s -m pip install -U ipykernel`" % sys.executable)
    if direct:
        ask, other = "transport direct needs", "or use transport ssh"
    else:
        ask, other = "the server's transport_encryption asks for", "or set transport_encryption to disabled"
    return ("%s CurveZMQ-encrypted channels, but %s cannot: %s; run %s, %s"
            % (ask, socket.gethostname() + "'s " + sys.executable, why, fix, other))


class Slot:
    """One kernel's place in a launcher: its directory, its kernel, the order of its requests."""

    def __init__(self, name, path):
        self.name, self.dir = name, path
        self.kernel = None          # asyncio.subprocess.Process
        self.booted = False         # the kernel runs from KERNEL_BOOT and listens (it handles WALLTIME_SIGNAL)
        self.serial = asyncio.Lock()   # its start, stop and shutdown run one at a time
        self.heard = time.monotonic()   # when one of its connections last sent a line
        self.ports = None           # transport direct: the kernel's TCP ports, kept for its restarts


class Launcher:
    """One job's launcher.  Made inside the running loop (asyncio objects bind to it on 3.8/3.9).

    ``linger`` not None: a shared allocation (the module docstring), of at most ``max_kernels``
    kernels (0: no limit)."""

    def __init__(self, session, grace, base, contact=None, linger=None, max_kernels=0, direct=None):
        self.dir = os.path.join(base, "rk-" + session)
        self.direct = direct        # transport direct: the key directory (DirectControl)
        self.address = None         # transport direct: the node's cluster-network address
        self.grace = grace
        self.shared, self.linger, self.max_kernels = linger is not None, linger or 0.0, max_kernels
        self.solo = Slot("", self.dir)   # per-kernel mode's one slot
        self.slots = {}             # shared: slot name -> Slot
        self.emptied = None         # shared: when the last slot ended (None: kernels run, or none ever did)
        self.done = asyncio.Event()
        self.abandoned = False   # the dead-man switch ended it
        self.control = Control(self, grace, contact)
        self.waited = set()         # pids of kernels asyncio waits for (reap() leaves them alone)
        self.spawning = False       # a kernel is being started: reap() waits until its pid is known

    # --- set-up -----------------------------------------------------------
    def make_dir(self, path=None):
        path = path or self.dir
        os.mkdir(path, 0o700)   # fails if it exists: never reuse someone's dir
        st = os.lstat(path)
        if st.st_uid != os.getuid() or st.st_mode & 0o077:
            raise SystemExit("remote-kernels launcher: %s is not private" % path)

    def info(self, slot=None):
        kernel = (slot or self.solo).kernel
        return {"event": "hello", "host": socket.gethostname(), "pid": os.getpid(),
                "python": sys.executable, "dir": self.dir,
                "kernel": kernel.pid if kernel and kernel.returncode is None else None}

    # --- slots (shared allocations) ----------------------------------------
    def all_slots(self):
        """Every slot with a kernel place: the shared ones, or per-kernel mode's one."""
        return list(self.slots.values()) if self.shared else [self.solo]

    def join(self, name):
        """The slot named ``name``, made if new; None when the allocation is full or ending."""
        slot = self.slots.get(name)
        if slot is not None:
            return slot
        if self.done.is_set() or (self.max_kernels and len(self.slots) >= self.max_kernels):
            return None
        slot = self.slots[name] = Slot(name, os.path.join(self.dir, "s-" + name))
        self.make_dir(slot.dir)
        self.emptied = None
        return slot

    async def release(self, slot, why=None):
        """End a shared slot's kernel and the slot; the launcher ends once none is left and
        LINGER has passed (at once when it is 0).  The number of slots left."""
        if why:
            print("remote-kernels launcher: kernel slot %s: %s; ending it" % (slot.name, why),
                  file=sys.stderr, flush=True)
        await self.stop_kernel(slot)
        if self.slots.get(slot.name) is slot:
            del self.slots[slot.name]
            shutil.rmtree(slot.dir, ignore_errors=True)
        if not self.slots:
            self.emptied = time.monotonic()
            if self.linger <= 0:
                self.done.set()
        return len(self.slots)

    # --- kernel -----------------------------------------------------------
    async def start_kernel(self, slot, req):
        """Start slot's kernel (ending its previous one and all it left).  req was checked by check_request."""
        await self.stop_kernel(slot)
        conn_file = os.path.join(slot.dir, "kernel.json")
        argv = req.get("argv")
        if argv is None:
            import importlib.util
            if importlib.util.find_spec("ipykernel") is None:
                return {"event": "error", "code": ERR_NO_IPYKERNEL, "message":
                        "ipykernel is not installed for %s on %s: %s"
                        % (sys.executable, socket.gethostname(), install_advice())}
            boot = os.path.join(slot.dir, "ipykernel-boot.py")
            with os.fdopen(os.open(boot, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
                f.write(KERNEL_BOOT)
            if KERNEL_MAGIC:
                magic = os.path.join(slot.dir, "remote_kernel_magic.py")
                with os.fdopen(os.open(magic, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
                    f.write(KERNEL_MAGIC)
            argv = [sys.executable, boot, "-f", conn_file]
        booted, slot.booted = req.get("argv") is None, False
        for name in os.listdir(slot.dir):   # the previous kernel's sockets (and its pipes')
            if name.startswith("k-"):
                try:
                    os.unlink(os.path.join(slot.dir, name))
                except FileNotFoundError:
                    pass
        info = dict(CHANNELS, transport="ipc", ip=os.path.join(slot.dir, "k"), key=req["key"],
                    signature_scheme=req.get("signature_scheme", "hmac-sha256"),
                    kernel_name=req.get("kernel_name", ""))
        info.update((name, req[name]) for name in CURVE_FIELDS if req.get(name))
        if self.direct:
            if not req.get("curve_secretkey"):
                return {"event": "error", "message": "transport direct: a start needs the kernel's Curve keys"}
            info.update(slot.ports or dict.fromkeys(CHANNELS, 0), transport="tcp", ip=self.address)
        fd = os.open(conn_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(info, f)
        argv = [a.replace("{connection_file}", conn_file) for a in argv]
        env = dict(os.environ)
        env.update(req.get("env") or {})
        # ipykernel exits when its parent changes: if the launcher is SIGKILLed, so is the kernel.
        env["JPY_PARENT_PID"] = str(os.getpid())
        if self.shared:
            env[SLOT_ENV] = slot.name
        cwd = req.get("cwd")
        if not cwd or not os.path.isdir(cwd):
            if cwd:
                print("remote-kernels launcher: %s does not exist on %s; starting in %s"
                      % (cwd, socket.gethostname(), os.path.expanduser("~")), file=sys.stderr, flush=True)
            cwd = os.path.expanduser("~")
        self.spawning = True   # reap() leaves our children alone until the kernel's pid is known
        try:
            slot.kernel = await asyncio.create_subprocess_exec(
                *argv, cwd=cwd, env=env, stdin=asyncio.subprocess.DEVNULL, start_new_session=True)
        except OSError as e:
            return {"event": "error", "code": 127, "message": "cannot start %s on %s: %s"
                    % (argv[0], socket.gethostname(), e)}
        finally:
            self.spawning = False
        proc = slot.kernel
        self.waited.add(proc.pid)
        self.reap()
        asyncio.ensure_future(self.watch_kernel(slot, proc))
        sockets = [os.path.join(slot.dir, "k-%d" % n) for n in CHANNELS.values()]
        deadline = time.monotonic() + 60
        while not (self.tcp_ready(slot, conn_file, proc) if self.direct else all(os.path.exists(s) for s in sockets)):
            if booted and proc.returncode in (ERR_NO_CURVE_ZMQ, ERR_NO_CURVE_KERNEL):
                return {"event": "error", "code": proc.returncode,
                        "message": curve_refused(proc.returncode, bool(self.direct))}
            if proc.returncode is not None or time.monotonic() > deadline:
                what = ("exited with code %s" % proc.returncode if proc.returncode is not None
                        else "did not open its sockets within 60s")
                print("%s (%s)" % (ENDED_AT_START, what), file=sys.stderr, flush=True)
                return {"event": "error", "code": proc.returncode, "message":
                        "the kernel (%s) %s during start-up on %s; its stderr is in the job's output"
                        % (" ".join(argv[:3]), what, socket.gethostname())}
            await asyncio.sleep(0.02)
        slot.booted = booted   # past the boot file's first lines: WALLTIME_SIGNAL no longer kills it
        tcp = [port for port in tcp_listeners(proc.pid) if port not in (slot.ports or {}).values()]
        if tcp:
            print("remote-kernels launcher: the kernel (pid %d) listens on TCP port(s) %s of %s, "
                  "which any user there can connect to" % (proc.pid, ", ".join(map(str, tcp)),
                                                           socket.gethostname()), file=sys.stderr, flush=True)
        if self.direct:
            return {"event": "started", "pid": proc.pid, "tcp": tcp, "ip": self.address, "ports": slot.ports}
        return {"event": "started", "pid": proc.pid, "tcp": tcp}

    def tcp_ready(self, slot, conn_file, proc):
        """Transport direct: True once the kernel listens on the ports of its connection file,
        which ipykernel rewrites with those it bound (kept in slot.ports)."""
        try:
            with open(conn_file) as f:
                written = json.load(f)
            ports = {ch: int(written.get(ch) or 0) for ch in CHANNELS}
        except (OSError, ValueError):   # being rewritten
            return False
        if not all(ports.values()) or not set(ports.values()) <= set(tcp_listeners(proc.pid)):
            return False
        slot.ports = ports
        return True

    async def watch_kernel(self, slot, proc):
        code = await proc.wait()
        self.waited.discard(proc.pid)
        if proc is slot.kernel:
            self.control.broadcast({"event": "exited", "code": code}, slot)

    def signal_kernel(self, slot, signum):
        if slot.kernel is None or slot.kernel.returncode is not None:
            return {"event": "error", "message": "no kernel running"}
        try:
            os.killpg(slot.kernel.pid, signum)
        except ProcessLookupError:
            return {"event": "error", "message": "no kernel running"}
        except OSError as e:   # e.g. EINVAL: no such signal
            return {"event": "error", "message": "cannot send signal %d to the kernel: %s" % (signum, e)}
        return {"event": "ok"}

    async def stop_kernel(self, slot=None, timeout=STOP_GRACE):
        """End slot's kernel and everything it started; the kernel's exit code (None: there was none).

        SIGTERM to the kernel's process group and each other descendant of the launcher it
        owns (signal_tree), up to ``timeout`` s for all of them to go, then SIGKILL to any left
        (and to their children, reparented here as their parents die) for up to ``timeout`` s more."""
        slot = slot or self.solo
        proc, slot.kernel = slot.kernel, None
        for sig in (signal.SIGTERM, signal.SIGKILL):
            sent = set()   # each process gets each signal once
            deadline = time.monotonic() + timeout
            while self.signal_tree(slot, proc, sig, sent) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        if proc is None:
            return None
        if proc.returncode is None:
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except asyncio.TimeoutError:
                pass
        if process_table() is None:   # no /proc to find its group's survivors by: the group itself
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
        return proc.returncode

    def signal_tree(self, slot, proc, sig, sent):
        """Send sig to the kernel's group (while the kernel runs) and to each live descendant
        that slot owns, not in ``sent`` (adding them); True while any of them runs.  The
        per-kernel slot owns every descendant of the launcher; a shared one its kernel's
        descendants and the processes carrying its SLOT_ENV."""
        table = self.reap() or {}
        below = [(pid, table[pid]) for pid in descendants(table, os.getpid())]
        running = proc is not None and proc.returncode is None
        if slot is not self.solo:
            mine = set(descendants(table, proc.pid)) if running else set()
            below = [(pid, entry) for pid, entry in below if pid in mine or process_slot(pid) == slot.name]
        if running and "group" not in sent:
            sent.add("group")
            try:
                os.killpg(proc.pid, sig)
            except OSError:
                pass
            sent.update((pid, start) for pid, (_, group, _, start) in below if group == proc.pid)
        for pid, (_, _, _, start) in below:
            if (pid, start) not in sent:
                sent.add((pid, start))
                send_signal(pid, start, sig)
        return running or bool(below)

    def reap(self):
        """Collect the exit of each child that was reparented here (asyncio waits for the kernels);
        the process table without them (None: no /proc).  Also on each SIGCHLD."""
        table = process_table()
        if table is None or self.spawning:
            return table
        me = os.getpid()
        for pid, (ppid, _, state, _) in list(table.items()):
            if ppid == me and state == "Z" and pid not in self.waited:
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
                del table[pid]
        return table

    def walltime_near(self):
        """The scheduler's pre-end signal (SLURM's --signal, or the server extension's own through
        the scheduler when SLURM's was lost): the first one is said in the job log and passed to a
        kernel started through the boot file (never to another kernel, which may not handle it)."""
        flag = os.path.join(self.dir, WALLTIME_FLAG)
        if os.path.exists(flag):   # the scheduler's and the server's signals: one warning
            return
        print("remote-kernels launcher: the job's wall-time is near", file=sys.stderr, flush=True)
        for slot in self.all_slots():
            path = os.path.join(slot.dir, WALLTIME_FLAG)
            if not os.path.exists(path):
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
            kernel = slot.kernel
            if slot.booted and kernel is not None and kernel.returncode is None:
                try:
                    os.kill(kernel.pid, WALLTIME_SIGNAL)
                except ProcessLookupError:
                    pass
        if not os.path.exists(flag):
            os.close(os.open(flag, os.O_WRONLY | os.O_CREAT, 0o600))

    async def main(self):
        self.make_dir()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            loop.add_signal_handler(sig, self.done.set)
        loop.add_signal_handler(WALLTIME_SIGNAL, self.walltime_near)
        if sys.platform.startswith("linux"):
            loop.add_signal_handler(signal.SIGCHLD, self.reap)
            if not become_subreaper():
                print("remote-kernels launcher: cannot become a child subreaper on %s; processes a kernel "
                      "detaches from itself may outlive it" % socket.gethostname(), file=sys.stderr, flush=True)
        old = os.umask(0o077)
        try:
            if self.direct:
                server = DirectControl(self.control, self.direct)
                self.address = server.start()
            else:
                server = await asyncio.start_unix_server(self.control.handle, os.path.join(self.dir, "ctl"),
                                                         limit=LINE_LIMIT)
        finally:
            os.umask(old)
        print("remote-kernels launcher: ready on %s (pid %d, %s)"
              % (socket.gethostname(), os.getpid(), sys.executable), file=sys.stderr, flush=True)
        self.control.last_heard = time.monotonic()
        watchdog = asyncio.ensure_future(self.control.dead_man())
        try:
            await self.done.wait()
        finally:
            watchdog.cancel()
            server.close()
            for task in list(self.control.tasks):
                task.cancel()
            if self.slots:   # the shared kernels, all at once; then whatever is left (below)
                await asyncio.wait([asyncio.ensure_future(self.stop_kernel(s)) for s in self.slots.values()])
            code = await self.stop_kernel()
            writers = list(self.control.clients)
            for w in writers:
                w.close()   # flushes what is queued (a bye) before closing
            if writers:
                await asyncio.wait([asyncio.ensure_future(w.wait_closed()) for w in writers], timeout=2)
            if self.direct:
                server.finish()
                shutil.rmtree(self.direct, ignore_errors=True)   # also when its server was killed
            shutil.rmtree(self.dir, ignore_errors=True)
        return code


class Control:
    """The control socket's side of a launcher: clients, requests, replies, the dead-man switch."""

    def __init__(self, launcher, grace, contact=None):
        self.launcher, self.grace = launcher, grace
        self.contact = grace if contact is None else min(contact, grace)   # silence allowed before the first line
        self.contacted = False      # a line has arrived from the login side
        self.persist = 0.0          # silence allowed after contact when longer than grace (a hello's persist)
        self.clients = {}           # connected StreamWriter -> the Slot it acts on
        self.tasks = set()          # start/stop/shutdown requests in progress
        self.last_heard = time.monotonic()   # when a client last sent a line (or connected)

    def send(self, writer, msg):
        """Queue one line for a client; a client that has gone is dropped (its handler ends it)."""
        try:
            writer.write((json.dumps(msg) + "\n").encode())
        except Exception:   # any transport error: this client is gone, the others are not
            self.clients.pop(writer, None)

    def broadcast(self, msg, slot=None):
        """Send msg to every client (of ``slot`` only, if given)."""
        for w, on in list(self.clients.items()):
            if slot is None or on is slot:
                self.send(w, msg)

    def reply(self, writer, req, msg):
        if isinstance(req, dict) and "id" in req:
            msg["id"] = req["id"]
        self.send(writer, msg)

    def answer(self, req, writer):
        """The reply to a request answered at once (hello, ping, signal)."""
        op, launcher = req["op"], self.launcher
        if op == "hello":
            if req.get("persist") is not None and not launcher.shared:
                self.persist = float(req["persist"])
            if req.get("kernel") is None:
                return launcher.info()
            if not launcher.shared:
                return {"event": "error", "message": "this launcher holds one kernel; hello names none"}
            slot = launcher.join(req["kernel"])
            if slot is None:
                return {"event": "error", "full": True, "message": "the allocation is full (%d kernels) or ending"
                        % len(launcher.slots)}
            self.clients[writer] = slot
            return launcher.info(slot)
        if op == "ping":
            return {"event": "pong"}
        return launcher.signal_kernel(self.clients.get(writer, launcher.solo), req["signum"])

    async def serialised(self, req, writer, slot):
        """Run a start, stop or shutdown request after those of its slot before it; reply when done."""
        op, launcher = req["op"], self.launcher
        async with slot.serial:
            ends = op == "shutdown" and slot is launcher.solo   # the per-kernel slot's shutdown ends the launcher
            try:
                if op == "start":
                    msg = await launcher.start_kernel(slot, req)
                elif op == "stop":
                    msg = {"event": "stopped", "code": await launcher.stop_kernel(slot)}
                elif ends:
                    await launcher.stop_kernel(slot)
                    msg = {"event": "bye"}
                else:
                    msg = {"event": "bye", "kernels": await launcher.release(slot)}
            except Exception as e:   # a failed request must not end the launcher or its channel
                msg = {"event": "error", "message": "%s failed on %s: %r" % (op, socket.gethostname(), e)}
            self.reply(writer, req, msg)
            if ends:
                launcher.done.set()

    async def handle(self, reader, writer):
        """One control connection: read requests until EOF, answer each (see the docstring)."""
        self.clients[writer] = self.launcher.solo
        self.last_heard = time.monotonic()
        try:
            while True:
                try:
                    line = await reader.readline()
                except ValueError:   # a line over LINE_LIMIT, dropped (its rest reads as another bad line)
                    line, req, problem = None, None, "bad request: a line over %d bytes" % LINE_LIMIT
                if line == b"":
                    break
                self.last_heard = time.monotonic()
                self.clients.get(writer, self.launcher.solo).heard = self.last_heard
                self.contacted = True
                if line is not None:
                    req, problem = check_request(line)
                if problem is None and self.launcher.shared and req["op"] in ACTS_ON_KERNEL \
                        and self.clients.get(writer) is self.launcher.solo:
                    problem = "this allocation is shared: say hello with your kernel's id first"
                if problem is not None:
                    self.reply(writer, req, {"event": "error", "message": problem})
                elif req["op"] in SERIALISED:
                    self._run(self.serialised(req, writer, self.clients.get(writer, self.launcher.solo)))
                else:
                    try:
                        msg = self.answer(req, writer)
                    except Exception as e:   # as in serialised(): the channel goes on
                        msg = {"event": "error", "message": "%s failed: %r" % (req["op"], e)}
                    self.reply(writer, req, msg)
        except OSError:   # the connection broke
            pass
        finally:
            slot = self.clients.pop(writer, None)
            if slot is not None:
                slot.heard = time.monotonic()   # an orphaned slot's grace runs from here
            writer.close()

    async def dead_man(self):
        """End the job when no client has sent anything for grace seconds (contact seconds
        while nothing has arrived yet); in a shared allocation, end each kernel slot nobody
        has spoken for in grace seconds, and the job LINGER seconds after its last kernel."""
        launcher = self.launcher
        while True:
            await asyncio.sleep(min(0.5 if launcher.shared else 1.0, self.contact / 4))   # contact <= grace
            now = time.monotonic()
            for slot in list(launcher.slots.values()):
                if now - slot.heard > self.grace:
                    slot.heard = float("inf")   # released once
                    self._run(self._orphaned(slot))
            if launcher.shared and launcher.emptied is not None and not launcher.slots:
                if now - launcher.emptied >= launcher.linger:
                    print("remote-kernels launcher: no kernel for %gs (linger); ending" % launcher.linger,
                          file=sys.stderr, flush=True)
                    launcher.done.set()
                    return
                continue   # lingering: linger, not grace, says when it ends
            limit = max(self.grace, self.persist) if self.contacted else self.contact
            if now - self.last_heard > limit:
                if self.contacted:
                    why = "no contact from the login side for %gs" % limit
                else:
                    why = ("nobody reached the launcher within %gs of its start (the server that started "
                           "the job is gone, or it reached the node too late: raise contact_timeout)" % limit)
                print("remote-kernels launcher: %s; ending" % why, file=sys.stderr, flush=True)
                launcher.abandoned = True
                launcher.done.set()
                return

    async def _orphaned(self, slot):
        """End a slot nobody has spoken for in grace seconds, after its requests in progress."""
        async with slot.serial:
            await self.launcher.release(slot, "no contact from its server for %gs" % self.grace)

    def _run(self, coro):
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


class DirectControl:
    """Transport direct: the control channel as a CurveZMQ ROUTER (module docstring).  Each
    login-side peer is a ZmqPeer handed to Control.handle as its reader and writer."""

    def __init__(self, control, key_dir):
        self.control, self.key_dir = control, key_dir
        self.peers = {}   # routing id -> ZmqPeer
        self.sock = self.task = None

    def start(self):
        """Bind and publish the endpoint; the node's cluster-network address.  SystemExit (one
        line) when the key directory is not private or pyzmq is missing."""
        st = os.lstat(self.key_dir)
        if st.st_uid != os.getuid() or st.st_mode & 0o077:
            raise SystemExit("remote-kernels launcher: %s is not a private directory of this user" % self.key_dir)
        try:
            import zmq
            import zmq.asyncio
        except ImportError:
            raise SystemExit("remote-kernels launcher: transport direct needs pyzmq for %s on %s"
                             % (sys.executable, socket.gethostname()))
        with open(os.path.join(self.key_dir, "launcher.json")) as f:
            keys = json.load(f)
        address = socket.gethostbyname(socket.gethostname())
        if address.startswith("127."):
            raise SystemExit("remote-kernels launcher: %s resolves to %s; transport direct needs the node's "
                             "cluster-network address" % (socket.gethostname(), address))
        sock = self.sock = zmq.asyncio.Context.instance().socket(zmq.ROUTER)
        sock.linger, sock.maxmsgsize = 1000, LINE_LIMIT
        sock.curve_secretkey, sock.curve_publickey = keys["secret"].encode(), keys["public"].encode()
        sock.curve_server = True
        port = sock.bind_to_random_port("tcp://" + address)
        path = os.path.join(self.key_dir, "endpoint.json")
        with os.fdopen(os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            json.dump({"endpoint": "tcp://%s:%d" % (address, port), "host": socket.gethostname()}, f)
        os.replace(path + ".tmp", path)
        self.task = asyncio.ensure_future(self.serve())
        return address

    async def serve(self):
        while True:
            ident, payload = (await self.sock.recv_multipart())[:2]
            peer = self.peers.get(ident)
            if peer is None:
                if not payload:
                    continue
                peer = self.peers[ident] = ZmqPeer(self, ident)
                asyncio.ensure_future(self.control.handle(peer, peer))
            if not payload:
                self.peers.pop(ident, None)
            peer.lines.put_nowait(payload)

    def close(self):
        """Stop serving (the peers' writers say their end to the login side)."""
        if self.task is not None:
            self.task.cancel()

    def finish(self):
        """After the peers' ends: close the socket, sending what is queued (1 s at most)."""
        self.sock.close(linger=1000)
        self.sock.context.term()


class ZmqPeer:
    """One login-side peer of DirectControl, as a StreamReader and StreamWriter."""

    def __init__(self, server, ident):
        self.server, self.ident = server, ident
        self.lines = asyncio.Queue()
        self.closed = False

    async def readline(self):
        return await self.lines.get()   # b"": the peer's end

    def write(self, data):
        if self.closed:
            raise OSError("closed")
        self.server.sock.send_multipart([self.ident, data])

    def close(self):
        if not self.closed:
            self.closed = True
            self.server.peers.pop(self.ident, None)
            try:
                self.server.sock.send_multipart([self.ident, b""])
            except Exception:   # the socket is gone: the login side notices the silence
                pass
            self.lines.put_nowait(b"")

    async def wait_closed(self):
        pass   # DirectControl.finish() sends what is queued


def become_subreaper():
    """Have orphaned descendants reparented to this process instead of init (Linux 3.4+); True if so."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (ImportError, OSError, AttributeError):   # no ctypes, no libc, no prctl
        return False


def process_table():
    """{pid: (ppid, pgrp, state, start time)} of every process in /proc; None where there is no /proc."""
    try:
        names = os.listdir("/proc")
    except OSError:
        return None
    table = {}
    for name in names:
        if name.isdigit():
            entry = process_stat(name)
            if entry is not None:
                table[int(name)] = entry
    return table or None


def process_stat(pid):
    """(ppid, pgrp, state, start time) of process pid from /proc/PID/stat; None if it is gone."""
    try:
        with open("/proc/%s/stat" % pid, "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(b")") + 2:].split()   # after "pid (comm) ", comm may hold anything
    return int(fields[1]), int(fields[2]), fields[0].decode(), fields[19]


def process_slot(pid):
    """The SLOT_ENV value in process pid's environment ("" if none or unreadable)."""
    try:
        with open("/proc/%d/environ" % pid, "rb") as f:
            environ = f.read()
    except OSError:
        return ""
    prefix = (SLOT_ENV + "=").encode()
    for item in environ.split(b"\0"):
        if item.startswith(prefix):
            return item[len(prefix):].decode(errors="replace")
    return ""


def descendants(table, root):
    """The live (not zombie) processes of table below root, parents before their children."""
    children = {}
    for pid, (ppid, _, state, _) in table.items():
        if state != "Z":
            children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        below = children.get(todo.pop(), [])
        found += below
        todo += below
    return found


def send_signal(pid, start, sig):
    """Send sig to process pid if it is still the one that started at ``start``: through a pidfd
    (Python 3.9+, Linux 5.3+) the pid cannot be reused between the check and the signal."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):   # an older Python or kernel: a check just before kill()
        fd = None
    try:
        stat = process_stat(pid)
        if stat is None or stat[3] != start:
            return
        if fd is not None:
            signal.pidfd_send_signal(fd, sig)
        else:
            os.kill(pid, sig)
    except OSError:   # gone meanwhile
        pass
    finally:
        if fd is not None:
            os.close(fd)


def tcp_listeners(pid):
    """The TCP ports process pid listens on, sorted (Linux /proc; [] where it cannot be told)."""
    inodes = set()
    try:
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    except OSError:
        return []
    ports = set()
    for table in ("tcp", "tcp6"):
        try:
            with open("/proc/%d/net/%s" % (pid, table)) as f:
                rows = [line.split() for line in f.readlines()[1:]]
        except OSError:
            continue
        for row in rows:
            if len(row) > 9 and row[3] == "0A" and row[9] in inodes:   # 0A: LISTEN
                ports.add(int(row[1].rpartition(":")[2], 16))
    return sorted(ports)


def check_request(line):
    """(request, None) for a well-formed request line, else (request or None, one-line problem)."""
    try:
        req = json.loads(line)
    except ValueError:
        return None, "bad request: not JSON"
    if not isinstance(req, dict):
        return None, "bad request: not a JSON object"
    op = req.get("op")
    if not isinstance(op, str):
        return req, 'bad request: no "op"'
    if op not in SERIALISED and op not in IMMEDIATE:
        return req, "unknown op %r" % op
    if op == "signal":
        signum = req.get("signum")
        if not isinstance(signum, int) or isinstance(signum, bool):
            return req, "signal needs an integer signum, not %r" % (signum,)
    if op == "start":
        return req, check_start(req)
    if op == "hello" and req.get("persist") is not None:
        seconds = req["persist"]
        if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not 0 <= seconds < 1e9:
            return req, "hello: persist must be a number of seconds"
    if op == "hello" and req.get("kernel") is not None:
        name = req["kernel"]
        if not (isinstance(name, str) and 0 < len(name) <= 64 and SLOT_CHARS.issuperset(name)):
            return req, "hello: kernel must be 1-64 letters, digits, _ or -"
    return req, None


def check_start(req):
    """None if a start request's arguments have the right types, else what is wrong."""
    if not isinstance(req.get("key"), str):
        return "start needs the kernel's key (a string)"
    for name in OPTIONAL_STR:
        if req.get(name) is not None and not isinstance(req[name], str):
            return "start: %s must be a string" % name
    env = req.get("env")
    if env is not None and not (isinstance(env, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in env.items())):
        return "start: env must map strings to strings"
    curve = [req.get(name) for name in CURVE_FIELDS]
    if any(curve) and not all(isinstance(k, str) and len(k) == 40 for k in curve):
        return "start: curve_publickey and curve_secretkey must both be 40-character Z85 keys"
    argv = req.get("argv")
    if argv is not None and not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
        return "start: argv must be a non-empty list of strings"
    return None


async def run(session, grace, base, contact=None, linger=None, max_kernels=0, direct=None):
    """Run a launcher to its end; the process's exit code (EXIT_ABANDONED or 0)."""
    launcher = Launcher(session, grace, base, contact, linger, max_kernels, direct)
    await launcher.main()
    return EXIT_ABANDONED if launcher.abandoned else 0


def main(argv):
    argv, direct = list(argv), None
    if "--direct" in argv:
        at = argv.index("--direct")
        direct = argv[at + 1]
        del argv[at:at + 2]
    session, grace, base = argv[1], float(argv[2]), argv[3]
    contact = float(argv[4]) if len(argv) > 4 else None
    linger = float(argv[5]) if len(argv) > 5 else None
    max_kernels = int(argv[6]) if len(argv) > 6 else 0
    return asyncio.run(run(session, grace, base, contact, linger, max_kernels, direct))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
