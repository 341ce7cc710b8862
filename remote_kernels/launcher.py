"""The in-job launcher: stdlib only, run by the batch script with the user's Python.

Usage (the batch script feeds this file on stdin): ``PYTHON - SESSION GRACE BASE``

It makes the private runtime directory ``BASE/rk-SESSION`` (0700), listens on the
unix control socket ``ctl`` there and waits for the login side, which reaches the
socket through SSH.  The control protocol is JSON lines:

    -> {"op": "hello"}                         <- {"event": "hello", "host", "pid", "python", "dir"}
    -> {"op": "start", "key", "signature_scheme", "cwd", "env", "argv"?}
                                               <- {"event": "started", "pid"} | {"event": "error", "message"}
    -> {"op": "signal", "signum"}              <- {"event": "ok"} | {"event": "error", "message"}
    -> {"op": "stop"}                          <- {"event": "stopped", "code"}
    -> {"op": "shutdown"}                      <- {"event": "bye"}; the launcher exits, ending the job
    unsolicited                                <- {"event": "exited", "code"} when the kernel ends

A start request's ``env`` is added to the job's environment for the kernel alone (the
kernelspec's env stanza travels this way, never in the batch script); the launcher keeps
the job's.  The kernel (ipykernel by default) binds ipc sockets ``BASE/rk-SESSION/k-1..5`` only,
so nothing but the owner (and the SSH forward acting for them) can reach it.  The
key arrives over the control socket and is written only to a 0600 connection file
inside the 0700 directory.  Dead-man switch: when no control client has been
connected for GRACE seconds, the launcher stops the kernel and exits.
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


class Launcher:
    def __init__(self, session, grace, base):
        self.dir = os.path.join(base, "rk-" + session)
        self.grace = grace
        self.kernel = None          # asyncio.subprocess.Process
        self.clients = set()        # connected StreamWriters
        self.last_client = time.monotonic()
        self.done = asyncio.Event()

    # --- set-up -----------------------------------------------------------
    def make_dir(self):
        os.mkdir(self.dir, 0o700)   # fails if it exists: never reuse someone's dir
        st = os.lstat(self.dir)
        if st.st_uid != os.getuid() or st.st_mode & 0o077:
            raise SystemExit("remote-kernels launcher: %s is not private" % self.dir)

    def info(self):
        return {"event": "hello", "host": socket.gethostname(), "pid": os.getpid(),
                "python": sys.executable, "dir": self.dir,
                "kernel": self.kernel.pid if self.kernel and self.kernel.returncode is None else None}

    # --- kernel -----------------------------------------------------------
    async def start_kernel(self, req):
        if self.kernel is not None and self.kernel.returncode is None:
            await self.stop_kernel()
        argv = req.get("argv") or [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        if argv[:3] == [sys.executable, "-m", "ipykernel_launcher"]:
            import importlib.util
            if importlib.util.find_spec("ipykernel") is None:
                return {"event": "error", "code": ERR_NO_IPYKERNEL, "message":
                        "ipykernel is not installed for %s on %s: run `%s -m pip install ipykernel`"
                        % (sys.executable, socket.gethostname(), sys.executable)}
        conn_file = os.path.join(self.dir, "kernel.json")
        for n in CHANNELS.values():
            try:
                os.unlink(os.path.join(self.dir, "k-%d" % n))
            except FileNotFoundError:
                pass
        info = dict(CHANNELS, transport="ipc", ip=os.path.join(self.dir, "k"), key=req["key"],
                    signature_scheme=req.get("signature_scheme", "hmac-sha256"),
                    kernel_name=req.get("kernel_name", ""))
        fd = os.open(conn_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(info, f)
        argv = [a.replace("{connection_file}", conn_file) for a in argv]
        env = dict(os.environ)
        env.update(req.get("env") or {})
        # ipykernel exits when its parent changes: if the launcher is SIGKILLed, so is the kernel.
        env["JPY_PARENT_PID"] = str(os.getpid())
        cwd = req.get("cwd")
        if not cwd or not os.path.isdir(cwd):
            if cwd:
                print("remote-kernels launcher: %s does not exist on %s; starting in %s"
                      % (cwd, socket.gethostname(), os.path.expanduser("~")), file=sys.stderr, flush=True)
            cwd = os.path.expanduser("~")
        try:
            self.kernel = await asyncio.create_subprocess_exec(
                *argv, cwd=cwd, env=env, stdin=asyncio.subprocess.DEVNULL, start_new_session=True)
        except OSError as e:
            return {"event": "error", "code": 127, "message": "cannot start %s on %s: %s"
                    % (argv[0], socket.gethostname(), e)}
        proc = self.kernel
        asyncio.ensure_future(self.watch_kernel(proc))
        sockets = [os.path.join(self.dir, "k-%d" % n) for n in CHANNELS.values()]
        deadline = time.monotonic() + 60
        while not all(os.path.exists(s) for s in sockets):
            if proc.returncode is not None or time.monotonic() > deadline:
                what = ("exited with code %s" % proc.returncode if proc.returncode is not None
                        else "did not open its sockets within 60s")
                return {"event": "error", "code": proc.returncode, "message":
                        "the kernel (%s) %s during start-up on %s; its stderr is in the job's output"
                        % (" ".join(argv[:3]), what, socket.gethostname())}
            await asyncio.sleep(0.02)
        return {"event": "started", "pid": proc.pid}

    async def watch_kernel(self, proc):
        code = await proc.wait()
        if proc is self.kernel:
            self.broadcast({"event": "exited", "code": code})

    def signal_kernel(self, signum):
        if self.kernel is None or self.kernel.returncode is not None:
            return {"event": "error", "message": "no kernel running"}
        try:
            os.killpg(self.kernel.pid, signum)
        except ProcessLookupError:
            return {"event": "error", "message": "no kernel running"}
        return {"event": "ok"}

    async def stop_kernel(self, timeout=5.0):
        proc = self.kernel
        if proc is None:
            return None
        self.kernel = None
        if proc.returncode is None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    await asyncio.wait_for(proc.wait(), timeout)
                    break
                except asyncio.TimeoutError:
                    continue
        try:
            os.killpg(proc.pid, signal.SIGKILL)   # whatever the kernel left in its group
        except (ProcessLookupError, PermissionError):
            pass
        return proc.returncode

    # --- control socket ---------------------------------------------------
    def broadcast(self, msg):
        line = (json.dumps(msg) + "\n").encode()
        for w in list(self.clients):
            try:
                w.write(line)
            except Exception:
                self.clients.discard(w)

    async def handle(self, reader, writer):
        self.clients.add(writer)
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                try:
                    req = json.loads(line)
                    op = req["op"]
                except (ValueError, KeyError, TypeError):
                    writer.write(b'{"event": "error", "message": "bad request"}\n')
                    continue
                if op == "hello":
                    reply = self.info()
                elif op == "start":
                    reply = await self.start_kernel(req)
                elif op == "signal":
                    reply = self.signal_kernel(int(req["signum"]))
                elif op == "stop":
                    reply = {"event": "stopped", "code": await self.stop_kernel()}
                elif op == "shutdown":
                    await self.stop_kernel()
                    writer.write((json.dumps({"event": "bye", "id": req.get("id")}) + "\n").encode())
                    await writer.drain()
                    self.done.set()
                    break
                else:
                    reply = {"event": "error", "message": "unknown op %r" % op}
                if "id" in req:
                    reply["id"] = req["id"]
                writer.write((json.dumps(reply) + "\n").encode())
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.clients.discard(writer)
            self.last_client = time.monotonic()
            writer.close()

    async def dead_man(self):
        while not self.done.is_set():
            await asyncio.sleep(min(1.0, self.grace / 4))
            if not self.clients and time.monotonic() - self.last_client > self.grace:
                print("remote-kernels launcher: no contact from the login side for %gs; ending"
                      % self.grace, file=sys.stderr, flush=True)
                self.done.set()

    async def main(self):
        self.make_dir()
        loop = asyncio.get_event_loop()
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            loop.add_signal_handler(sig, self.done.set)
        old = os.umask(0o077)
        server = await asyncio.start_unix_server(self.handle, os.path.join(self.dir, "ctl"))
        os.umask(old)
        print("remote-kernels launcher: ready on %s (pid %d, %s)"
              % (socket.gethostname(), os.getpid(), sys.executable), file=sys.stderr, flush=True)
        watchdog = asyncio.ensure_future(self.dead_man())
        try:
            await self.done.wait()
        finally:
            watchdog.cancel()
            server.close()
            code = await self.stop_kernel()
            shutil.rmtree(self.dir, ignore_errors=True)
        return code


def main(argv):
    session, grace, base = argv[1], float(argv[2]), argv[3]
    launcher = Launcher(session, grace, base)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(launcher.main())
    finally:
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
