#!/usr/bin/python3
"""A real Grid Engine (Debian's gridengine 8.1.9) on the SLURM test cluster's nodes (run as root).

    sge.py up       start (or repair) sge_qmaster on the host and sge_execd on c1 and c2
    sge.py down     stop the SGE daemons (the SLURM cluster is left alone)
    sge.py status   show the SGE daemons and queue instances

Needs the SLURM test cluster's namespaces (``make cluster``) and the packages
``gridengine-master gridengine-exec gridengine-client``.  The qmaster runs on the host
under the name ``rk-sge-master`` (10.199.0.1, the bridge address the nodes reach; the
host's own name resolves to 127.0.0.1 here, which the nodes cannot reach), aliased to
the host's names in ``host_aliases``.  Each node's execd runs in the node's network
namespace with its hostname, as the SLURM daemons do.  One queue ``all.q`` (8 slots per
node, qdel sends SIGTERM), a parallel environment ``smp``, root allowed to submit
(``min_uid 0``), a 1-second scheduling interval.  Idempotent: each piece is checked and only what is
missing is made; about 3 s from nothing.  Stdlib only, like cluster.py.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster import LOGIN_ADDR, NODES, dispatch, in_node, kill_pids, ns_path, pid_alive, wait_for  # noqa: E402

SGE_ROOT = Path("/var/lib/gridengine")
CELL = "default"
COMMON = SGE_ROOT / CELL / "common"
SPOOL = Path("/var/spool/gridengine")
MASTER = "rk-sge-master"
HOSTS_LINE = f"{LOGIN_ADDR} {MASTER} # remote-kernels test cluster: SGE qmaster"
ENV = dict(os.environ, SGE_ROOT=str(SGE_ROOT), SGE_CELL=CELL, LC_ALL="C")
SLOTS = 8
# Global configuration values the tests need (root submits; fast load reports).
GLOBAL_CONF = {"min_uid": "0", "min_gid": "0", "load_report_time": "00:00:05"}
# qdel sends SIGTERM, not SIGKILL: the launcher then stops the kernel, which runs in its own
# session (ENABLE_ADDGRP_KILL=true in execd_params did not reach it here).
QUEUE_ATTRS = {"terminate_method": "SIGTERM"}
SCHED_CONF = {"schedule_interval": "0:0:1", "flush_submit_sec": "1", "flush_finish_sec": "1"}


def log(msg: str) -> None:
    print(f"sge: {msg}", flush=True)


def sge(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(argv), capture_output=True, text=True, env=ENV)
    if check and proc.returncode != 0:
        raise SystemExit(f"sge: command failed ({proc.returncode}): {' '.join(argv)}\n{proc.stdout}{proc.stderr}")
    return proc


def ensure_installed() -> None:
    missing = [p for p in ("/usr/sbin/sge_qmaster", "/usr/sbin/sge_execd", "/usr/bin/qconf") if not Path(p).exists()]
    if missing:
        raise SystemExit("sge: missing " + ", ".join(missing) + "; install with: "
                         "apt-get install gridengine-master gridengine-exec gridengine-client")
    if not (COMMON / "bootstrap").exists():
        raise SystemExit(f"sge: no cell at {SGE_ROOT / CELL} (the gridengine-master package creates it; "
                         "reinstall it: apt-get install --reinstall gridengine-master)")
    down = [n for n in NODES if not ns_path(n).exists()]
    if down:
        raise SystemExit(f"sge: node namespaces {', '.join(down)} missing; run `make cluster` first")


def ensure_names() -> None:
    hosts = Path("/etc/hosts")
    lines = [l for l in hosts.read_text().splitlines() if not l.endswith("SGE qmaster")]
    text = "\n".join([*lines, HOSTS_LINE]) + "\n"
    if hosts.read_text() != text:
        hosts.write_text(text)
    me = socket.gethostname()
    aliases = " ".join(dict.fromkeys([me, me.split(".")[0], "localhost"]))
    for name, text in (("act_qmaster", f"{MASTER}\n"), ("host_aliases", f"{MASTER} {aliases}\n")):
        path = COMMON / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)


def qmaster_pid() -> int | None:
    return pid_alive(SPOOL / "qmaster" / "qmaster.pid", "sge_qmaster")


def answers() -> bool:
    return sge("qconf", "-sh", check=False).returncode == 0


def ensure_qmaster() -> None:
    if qmaster_pid() and answers():
        return
    log("starting sge_qmaster")
    sge("/usr/sbin/sge_qmaster")
    wait_for("sge_qmaster to answer", answers, 30)


def _modify(show: list[str], load: str, wanted: dict[str, str], target: str = "") -> bool:
    """Set ``wanted`` keys in the object `show` prints, with `load` FILE; True if it changed."""
    current = sge(*show).stdout.splitlines()
    values = {l.split(None, 1)[0]: (l.split(None, 1) + [""])[1].strip() for l in current if l.strip()}
    if all(values.get(k) == v for k, v in wanted.items()):
        return False
    values.update(wanted)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / (target or "conf")
        path.write_text("".join(f"{k} {v}\n" for k, v in values.items()))
        sge("qconf", load, str(path))
    return True


def _add(listing: list[str], name: str, add: list[str], text: str = "") -> None:
    """Add object `name` unless `listing` already names it (from a file holding `text`, if given)."""
    if name in sge(*listing, check=False).stdout.split():
        return
    if not text:
        sge(*add, name)
        return
    with tempfile.NamedTemporaryFile("w", suffix=".conf") as f:
        f.write(text)
        f.flush()
        sge(*add, f.name)


def ensure_config() -> bool:
    """The cluster's objects; True when the global configuration changed (execds must restart)."""
    changed = _modify(["qconf", "-sconf", "global"], "-Mconf", GLOBAL_CONF, target="global")
    _modify(["qconf", "-ssconf"], "-Msconf", SCHED_CONF)
    _add(["qconf", "-ss"], MASTER, ["qconf", "-as"])
    for node in NODES:
        _add(["qconf", "-sh"], node, ["qconf", "-ah"])
        _add(["qconf", "-ss"], node, ["qconf", "-as"])
        _add(["qconf", "-sel"], node, ["qconf", "-Ae"], f"hostname {node}\nload_scaling NONE\ncomplex_values NONE\n"
             "user_lists NONE\nxuser_lists NONE\nprojects NONE\nxprojects NONE\nusage_scaling NONE\n"
             "report_variables NONE\n")
    _add(["qconf", "-shgrpl"], "@allhosts", ["qconf", "-Ahgrp"],
         f"group_name @allhosts\nhostlist {' '.join(NODES)}\n")
    _add(["qconf", "-spl"], "smp", ["qconf", "-Ap"],
         "pe_name smp\nslots 999\nuser_lists NONE\nxuser_lists NONE\nstart_proc_args NONE\n"
         "stop_proc_args NONE\nallocation_rule $pe_slots\ncontrol_slaves FALSE\njob_is_first_task TRUE\n"
         "urgency_slots min\naccounting_summary FALSE\nqsort_args NONE\n")
    if "all.q" not in sge("qconf", "-sql", check=False).stdout.split():
        template = sge("qconf", "-sq").stdout   # the default queue template
        queue = {"qname": "all.q", "hostlist": "@allhosts", "slots": str(SLOTS), "pe_list": "smp",
                 "shell": "/bin/bash", "shell_start_mode": "unix_behavior", **QUEUE_ATTRS}
        lines = [f"{k} {queue.get(k, (l.split(None, 1) + [''])[1].strip())}"
                 for l in template.splitlines() if l.strip() for k in [l.split(None, 1)[0]]]
        _add(["qconf", "-sql"], "all.q", ["qconf", "-Aq"], "\n".join(lines) + "\n")
    current = dict((l.split(None, 1) + [""])[:2] for l in sge("qconf", "-sq", "all.q").stdout.splitlines() if l.strip())
    for key, value in QUEUE_ATTRS.items():
        if current.get(key, "").strip() != value:
            sge("qconf", "-mattr", "queue", key, value, "all.q")
    return changed


def execd_pid(node: str) -> int | None:
    return pid_alive(SPOOL / "execd" / node / "execd.pid", "sge_execd")


def ensure_execd(node: str, restart: bool) -> None:
    pid = execd_pid(node)
    if pid and restart:
        kill_pids([pid])
        pid = None
    if pid:
        return
    log(f"starting sge_execd on {node}")
    (SPOOL / "execd").mkdir(parents=True, exist_ok=True)
    os.chown(SPOOL / "execd", *_sgeadmin())
    subprocess.run(in_node(node, ["env", f"SGE_ROOT={SGE_ROOT}", f"SGE_CELL={CELL}", "/usr/sbin/sge_execd"]),
                   check=True, capture_output=True, text=True)


def _sgeadmin() -> tuple[int, int]:
    import pwd
    pw = pwd.getpwnam("sgeadmin")
    return pw.pw_uid, pw.pw_gid


def queue_states() -> dict[str, str]:
    """Queue instance (all.q@c1) -> its state letters ('' when fine)."""
    out = sge("qstat", "-f", "-q", "all.q", check=False).stdout
    states = {}
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0].startswith("all.q@"):
            states[parts[0]] = parts[5] if len(parts) > 5 else ""
    return states


def wait_queues() -> None:
    def ready() -> bool:
        states = queue_states()
        if any("E" in s for s in states.values()):
            sge("qmod", "-cq", "all.q", check=False)   # clear error states left by earlier failures
        return len(states) == len(NODES) and all(s == "" for s in states.values())
    wait_for("SGE queue instances on every node", ready, 30, 0.2)


def up() -> None:
    t0 = time.monotonic()
    ensure_installed()
    ensure_names()
    ensure_qmaster()
    changed = ensure_config()
    for node in NODES:
        ensure_execd(node, restart=changed)
    wait_queues()
    log(f"up in {time.monotonic() - t0:.1f}s: qmaster {MASTER}, execd on {', '.join(NODES)}, queue all.q")


def down() -> None:
    pids = [p for p in [qmaster_pid(), *(execd_pid(n) for n in NODES)] if p]
    kill_pids(pids)
    log("down: no SGE daemons left")


def status() -> int:
    rows = [("sge_qmaster", qmaster_pid())] + [(f"sge_execd {n}", execd_pid(n)) for n in NODES]
    for name, pid in rows:
        print(f"{name:<14} {'up' if pid else 'DOWN'}")
    ok = all(pid for _, pid in rows)
    if ok:
        states = queue_states()
        for q, s in sorted(states.items()):
            print(f"{q:<14} {s or 'ok'}")
        ok = len(states) == len(NODES) and all(s == "" for s in states.values())
    return 0 if ok else 1


def main(argv: list[str]) -> int:
    return dispatch("sge", argv, {"up": up, "down": down, "status": status})


if __name__ == "__main__":
    sys.exit(main(sys.argv))
