"""A stand-in kernel for the launcher's tests: ``python launcher_kernel.py CONNECTION_FILE MODE``.

It reads the connection file the launcher wrote and marks that it runs (``DIR/k-spawned``,
written after its SIGINT handler is set).  Then it creates the five socket paths
``DIR/k-1..5`` (plain files: the launcher only waits for them to exist): at once in MODE
``fast``; in MODE ``slow`` after its first SIGINT, or after 3 s without one.  In MODE
``detach`` (``... detach PIDFILE``), as ``fast``, after starting proc_helpers.DETACHED with
PIDFILE (an orphan that ignores SIGTERM).  In MODE ``tcp``, as ``fast``, listening on a TCP
port of 127.0.0.1 first (its number in ``DIR/k-tcp``).  Each SIGINT is recorded (``DIR/k-sigint``);
SIGTERM ends it (the default action).
"""

import json
import signal
import socket
import subprocess
import sys
import time

from proc_helpers import DETACHED

base = json.load(open(sys.argv[1]))["ip"]   # DIR/k
interrupted = []


def on_sigint(signum, frame):
    interrupted.append(signum)
    open(base + "-sigint", "a").close()


signal.signal(signal.SIGINT, on_sigint)
open(base + "-spawned", "w").close()
if sys.argv[2] == "slow":
    deadline = time.monotonic() + 3
    while not interrupted and time.monotonic() < deadline:
        time.sleep(0.01)
if sys.argv[2] == "detach":
    subprocess.run([sys.executable, "-c", DETACHED, sys.argv[3]], start_new_session=True, check=True)
if sys.argv[2] == "tcp":
    listener = socket.create_server(("127.0.0.1", 0))
    with open(base + "-tcp", "w") as f:
        f.write(str(listener.getsockname()[1]))
for n in range(1, 6):
    open("%s-%d" % (base, n), "w").close()
while True:
    signal.pause()
