#!/usr/bin/python3
"""A throwaway but real SLURM cluster on one Debian machine (run as root).

The host is the login side (slurmctld, munged); each compute node is a network
namespace with its own hostname, slurmd and sshd, joined to the host through a
veth pair on a bridge.  The filesystem is shared by construction: namespaces
only separate the network and the hostname.

    cluster.py up       bring it up, repairing whatever is down (idempotent)
    cluster.py down     stop every daemon, remove namespaces, links, bridge
    cluster.py status   show daemons and nodes

Stdlib only, so it runs before the project's venv exists.  Everything it makes
lives under STATE (default /var/lib/rk-cluster); ``cluster.json`` there tells
tests where things are.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

STATE = Path(os.environ.get("RK_CLUSTER_STATE", "/var/lib/rk-cluster"))
BRIDGE = "rkbr0"
SUBNET = "10.199.0"
LOGIN_ADDR = f"{SUBNET}.1"
NODES = {"c1": f"{SUBNET}.11", "c2": f"{SUBNET}.12"}
# A "laptop" off the cluster: its own namespace on a point-to-point link to the login
# side (an sshd there), with no route to the compute nodes.
LAPTOP = "laptop"
LAPTOP_LINK = ("10.199.1.1", "10.199.1.2")   # login side, laptop side
NODE_CPUS = 8
NODE_MEM_MB = 4096
SLURM_CONF = Path("/etc/slurm/slurm.conf")
CGROUP_CONF = Path("/etc/slurm/cgroup.conf")
# Nodes admit users over SSH only while they have a job there (pam_slurm_adopt, which adopts the
# session into that job).  Each node's sshd runs under a name of its own, which is its PAM service.
PAM_SLURM_ADOPT = Path("/lib/security/pam_slurm_adopt.so")
MUNGE_RUN = Path("/run/munge")
# Ordinary users, as on a site: the tests start kernels as them (root acts only as the admin).
USERS = {"rkuser": "/bin/bash", "rkcsh": "/usr/bin/tcsh", "rknossh": "/bin/bash"}
TEST_USER = "rkuser"
# A user whom every compute node's sshd refuses (DenyUsers), job or not, as sites that forbid SSH
# to compute nodes do: transport "direct" kernels run for them, SSH ones cannot.
NO_SSH_USER = "rknossh"
HOSTS_MARK = "# remote-kernels test cluster"
SSH_INCLUDE_MARK = "# remote-kernels test cluster (managed)"
# Host keys are published as sites publish them: in the system-wide known_hosts (c1, login by
# key; c2 presents a host certificate signed by the site CA, trusted by an @cert-authority line).
GLOBAL_KNOWN_HOSTS = Path("/etc/ssh/ssh_known_hosts")
KNOWN_HOSTS_MARK = "remote-kernels-test-cluster"
CERT_NODES = ("c2",)
# Accounting, as sites have it: slurmdbd over a MariaDB of the cluster's own (under STATE, unix socket
# only), associations enforced.  Every user who submits jobs needs an association, or all their jobs fail.
CLUSTER_NAME = "rkcluster"
SLURMDBD_CONF = SLURM_CONF.with_name("slurmdbd.conf")
DBD_PORT = 6819              # SLURM's default
ACCT_DB, ACCT_DB_USER = "slurm_acct_db", "slurm"
QOS = {"normal": "", "short": "00:30:00"}    # name: MaxWall per job ("" none); normal is SLURM's default QOS
# account: the QOS its jobs may use ("root" is SLURM's own account, made with the cluster)
ACCOUNTS = {"root": ("normal", "short"), "physics": ("normal", "short"), "chemistry": ("normal",)}
# user: their accounts, the first being their default; root and every user of USERS
USER_ACCOUNTS = {"root": ("root",), "rkuser": ("physics", "chemistry"), "rkcsh": ("chemistry",),
                 NO_SSH_USER: ("physics",)}


def log(msg: str) -> None:
    print(f"cluster: {msg}", flush=True)


def run(argv: list[str], check: bool = True, quiet: bool = False, env: dict | None = None,
        stdin: str | None = None) -> subprocess.CompletedProcess:
    """Run argv (``env`` added to ours, ``stdin`` fed to it); raise with its output when it fails and
    ``check`` is set."""
    proc = subprocess.run(argv, capture_output=True, text=True, input=stdin,
                          env={**os.environ, **env} if env else None)
    if check and proc.returncode != 0:
        raise SystemExit(
            f"cluster: command failed ({proc.returncode}): {' '.join(argv)}\n{proc.stdout}{proc.stderr}"
        )
    if not quiet and proc.returncode != 0 and not check:
        pass
    return proc


def ns_path(node: str) -> Path:
    return Path("/run/netns") / node


def in_node(node: str, argv: list[str]) -> list[str]:
    """argv that runs ``argv`` in node's network namespace with hostname = node."""
    return [
        "nsenter", f"--net={ns_path(node)}", "unshare", "--uts",
        "sh", "-c", 'hostname "$1" && shift && exec "$@"', "sh", node, *argv,
    ]


# --- processes ---------------------------------------------------------------

def pid_alive(pidfile: Path, name: str) -> int | None:
    """The pid in pidfile if that process exists and its command is ``name``."""
    try:
        pid = int(pidfile.read_text().split()[0])
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError, IndexError):
        return None
    return pid if comm == name[:15] and not _zombie(pid) else None


def pids_named(name: str) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == name:
                    out.append(int(entry.name))
            except OSError:
                pass
    return out


def kill_pids(pids: list[int], timeout: float = 10.0) -> None:
    """SIGTERM, wait up to timeout, then SIGKILL what is left."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [p for p in pids if Path(f"/proc/{p}").exists() and not _zombie(p)]
        if not left:
            return
        time.sleep(0.1)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def wait_for(what: str, cond, timeout: float, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"cluster: timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


# --- files ---------------------------------------------------------------

def write_if_changed(path: Path, text: str, mode: int = 0o644) -> bool:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.read_text() == text:
        os.chmod(path, mode)
        return False
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.unlink(missing_ok=True)
    # Created private, then given its mode: a secret in text is never readable by others meanwhile.
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    tmp.replace(path)
    return True


def slurm_conf() -> str:
    login = socket.gethostname().split(".")[0]
    node_lines = "\n".join(
        f"NodeName={n} NodeAddr={a} CPUs={NODE_CPUS} RealMemory={NODE_MEM_MB} State=UNKNOWN"
        for n, a in NODES.items()
    )
    return f"""\
# Written by remote-kernels tests/cluster/cluster.py -- the project's test cluster.
ClusterName={CLUSTER_NAME}
SlurmctldHost={login}({LOGIN_ADDR})
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation={STATE}/slurmctld
SlurmdSpoolDir={STATE}/slurmd/%n
SlurmctldPidFile={STATE}/run/slurmctld.pid
SlurmdPidFile={STATE}/run/slurmd-%n.pid
SlurmctldLogFile={STATE}/log/slurmctld.log
SlurmdLogFile={STATE}/log/slurmd-%n.log
ProctrackType=proctrack/cgroup
TaskPlugin=task/cgroup
PrologFlags=contain
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost={LOGIN_ADDR}
AccountingStorageEnforce=associations,limits,qos
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=256
SlurmdParameters=config_overrides
SchedulerType=sched/backfill
PreemptType=preempt/partition_prio
PreemptMode=CANCEL
ReturnToService=2
MinJobAge=30
KillWait=2
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
{node_lines}
PartitionName=debug Nodes={",".join(NODES)} Default=YES DefaultTime=01:00:00 MaxTime=04:00:00 State=UP
PartitionName=long Nodes=c2 DefaultTime=04:00:00 MaxTime=7-00:00:00 State=UP
# Jobs here preempt (cancel) jobs of the other partitions: lets tests see PREEMPTED.
PartitionName=urgent Nodes={",".join(NODES)} PriorityTier=10 DefaultTime=00:10:00 MaxTime=01:00:00 State=UP
"""


def sshd_config(node: str) -> str:
    d = STATE / "nodes" / node
    cert = f"HostCertificate {d}/ssh_host_ed25519_key-cert.pub\n" if node in CERT_NODES else ""
    return f"""\
# sshd of test-cluster host {node}; written by remote-kernels tests/cluster/cluster.py
ListenAddress {NODES.get(node) or LAPTOP_LINK[0]}
Port 22
HostKey {d}/ssh_host_ed25519_key
{cert}PidFile {d}/sshd.pid
UsePAM {"no" if node == "login" else "yes"}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
AllowTcpForwarding yes
AllowStreamLocalForwarding yes
{"" if node == "login" else f"DenyUsers {NO_SSH_USER}" + chr(10)}PermitTTY yes
X11Forwarding no
PrintMotd no
LogLevel INFO
Subsystem sftp /usr/lib/openssh/sftp-server
"""


# --- pieces ------------------------------------------------------------------

def ensure_packages() -> None:
    programs = ("slurmctld", "slurmd", "munged", "sshd", "tcsh", "slurmdbd", "mariadbd", "mariadb-install-db")
    missing = [b for b in programs if not _which(b)]
    if not PAM_SLURM_ADOPT.exists():
        missing.append(str(PAM_SLURM_ADOPT))
    if missing:
        raise SystemExit(
            f"cluster: missing {', '.join(missing)}; install with: apt-get install slurm-wlm munge "
            "openssh-server tcsh libpam-slurm-adopt slurmdbd mariadb-server (make deps does this)"
        )


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin")


def ensure_munge() -> None:
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        run(["mungekey", "--create", f"--keyfile={key}"])
        shutil.chown(key, "munge", "munge")
        os.chmod(key, 0o400)
    MUNGE_RUN.mkdir(mode=0o755, parents=True, exist_ok=True)
    shutil.chown(MUNGE_RUN, "munge", "munge")
    if pid_alive(MUNGE_RUN / "munged.pid", "munged"):
        return
    kill_pids(pids_named("munged"))
    log("starting munged")
    run(["runuser", "-u", "munge", "--", "munged", "--force"])
    wait_for("munged", lambda: run(["munge", "-n"], check=False).returncode == 0, 10)


def node_net_ok(node: str) -> bool:
    if not ns_path(node).exists():
        return False
    host_if = run(["ip", "-j", "link", "show", f"rk-{node}"], check=False)
    if host_if.returncode != 0:
        return False
    info = json.loads(host_if.stdout)[0]
    if info.get("master") != BRIDGE or "UP" not in info.get("flags", []):
        return False
    inner = run(["ip", "-n", node, "-j", "addr", "show", "eth0"], check=False)
    if inner.returncode != 0:
        return False
    inner_info = json.loads(inner.stdout)[0]
    addrs = [a["local"] for a in inner_info.get("addr_info", [])]
    return NODES[node] in addrs and "UP" in inner_info.get("flags", [])


def ensure_bridge() -> None:
    if run(["ip", "link", "show", BRIDGE], check=False).returncode != 0:
        log(f"creating bridge {BRIDGE}")
        run(["ip", "link", "add", BRIDGE, "type", "bridge"])
    addrs = run(["ip", "-j", "addr", "show", BRIDGE]).stdout
    if f'"{LOGIN_ADDR}"' not in addrs:
        run(["ip", "addr", "add", f"{LOGIN_ADDR}/24", "dev", BRIDGE])
    run(["ip", "link", "set", BRIDGE, "up"])


def remove_node_net(node: str) -> None:
    if ns_path(node).exists():
        pids = [int(p) for p in run(["ip", "netns", "pids", node], check=False).stdout.split()]
        kill_pids(pids)
        run(["ip", "netns", "del", node], check=False)
    run(["ip", "link", "del", f"rk-{node}"], check=False)


def ensure_node_net(node: str) -> None:
    if node_net_ok(node):
        return
    log(f"creating network namespace for {node} ({NODES[node]})")
    remove_node_net(node)
    run(["ip", "netns", "add", node])
    run(["ip", "link", "add", f"rk-{node}", "type", "veth", "peer", "name", "eth0", "netns", node])
    run(["ip", "link", "set", f"rk-{node}", "master", BRIDGE])
    run(["ip", "link", "set", f"rk-{node}", "up"])
    run(["ip", "-n", node, "addr", "add", f"{NODES[node]}/24", "dev", "eth0"])
    run(["ip", "-n", node, "link", "set", "eth0", "up"])
    run(["ip", "-n", node, "link", "set", "lo", "up"])


def ensure_hosts_file() -> None:
    hosts = Path("/etc/hosts")
    lines = [l for l in hosts.read_text().splitlines() if not l.endswith(HOSTS_MARK)]
    lines += [f"{addr} {node} {HOSTS_MARK}" for node, addr in NODES.items()]
    lines.append(f"{LAPTOP_LINK[0]} login {HOSTS_MARK}")
    text = "\n".join(lines) + "\n"
    if hosts.read_text() != text:
        hosts.write_text(text)


def host_ca() -> Path:
    """The site's host CA (private key; .pub beside it)."""
    ca = STATE / "ca" / "host_ca"
    if not ca.exists():
        ca.parent.mkdir(parents=True, exist_ok=True)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "remote-kernels test site host CA", "-f", str(ca)])
    return ca


def ensure_host_cert(node: str, addr: str, ca: Path) -> bool:
    """A host certificate for node's key, signed by the site CA, valid for its name and address.
    True if it was (re)made."""
    d = STATE / "nodes" / node
    pub, cert = d / "ssh_host_ed25519_key.pub", d / "ssh_host_ed25519_key-cert.pub"
    if cert.exists() and cert.stat().st_mtime >= max(pub.stat().st_mtime, ca.stat().st_mtime):
        return False
    run(["ssh-keygen", "-q", "-s", str(ca), "-I", f"{node}-host", "-h", "-n", f"{node},{addr}", str(pub)])
    return True


def ensure_ssh_material() -> set[str]:
    """Host keys, the site CA and certificates, /etc/ssh/ssh_known_hosts, users and their login keys.
    Returns the hosts whose sshd must restart (config or certificate changed).

    No user gets a known_hosts or ssh config of their own: trust comes from the system file."""
    ca = host_ca()
    known, changed = [], set()
    for node, addr in {**NODES, "login": LAPTOP_LINK[0]}.items():
        d = STATE / "nodes" / node
        d.mkdir(parents=True, exist_ok=True)
        key = d / "ssh_host_ed25519_key"
        if not key.exists():
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{node} host key", "-f", str(key)])
        if node in CERT_NODES and ensure_host_cert(node, addr, ca):
            changed.add(node)
        if node in CERT_NODES:
            kind, blob = (ca.with_suffix(".pub")).read_text().split()[:2]
            known.append(f"@cert-authority {node},{addr} {kind} {blob} {KNOWN_HOSTS_MARK}")
        else:
            kind, blob = (d / "ssh_host_ed25519_key.pub").read_text().split()[:2]
            known.append(f"{node},{addr} {kind} {blob} {KNOWN_HOSTS_MARK}")
        if write_if_changed(d / "sshd_config", sshd_config(node)):
            changed.add(node)
        if node in NODES and ensure_sshd_program(node):
            changed.add(node)
    others = [l for l in (GLOBAL_KNOWN_HOSTS.read_text().splitlines() if GLOBAL_KNOWN_HOSTS.exists() else [])
              if not l.endswith(KNOWN_HOSTS_MARK)]
    write_if_changed(GLOBAL_KNOWN_HOSTS, "\n".join(others + known) + "\n")
    for old in ("config", "known_hosts"):   # from versions that gave users their own trust
        (STATE / "ssh" / old).unlink(missing_ok=True)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    ensure_users()
    for user in ("root", *USERS):
        ensure_user_ssh(user)
    return changed


def ensure_users() -> None:
    """The site's ordinary users, with homes on the shared filesystem and their login shells."""
    for user, shell in USERS.items():
        try:
            if pwd.getpwnam(user).pw_shell != shell:
                run(["usermod", "--shell", shell, user])
        except KeyError:
            log(f"creating user {user} ({shell})")
            run(["useradd", "--create-home", "--shell", shell, user])
        # A locked password ("!") makes sshd refuse even key logins.
        run(["usermod", "-p", "*", user])


def ensure_quick_login_environments() -> None:
    """Jobs submitted with --export=NONE get the user's login environment (slurmd runs
    `su - USER -c env` first), so a slow login shell delays every job of that user.  This
    machine's root runs `pyenv init` in its .bashrc; a rehash killed midway (slurmd kills a
    get-user-env that overruns) leaves pyenv's shim lock behind, and every later root login
    then waits 60 s for it.  Remove such a stale lock; warn about any other slow login."""
    lock = Path(os.path.expanduser("~root")) / ".pyenv" / "shims" / ".pyenv-shim"
    if lock.exists() and time.time() - lock.stat().st_mtime > 120 and not pids_named("pyenv-rehash"):
        log(f"removing a stale pyenv rehash lock ({lock}): root's login shell would wait 60 s on it")
        lock.unlink(missing_ok=True)
    for user in ("root", *USERS):
        t0 = time.monotonic()
        try:
            subprocess.run(["su", "-", user, "-c", "true"], capture_output=True, timeout=20)
        except subprocess.TimeoutExpired:
            pass
        if time.monotonic() - t0 > 5:
            log(f"warning: {user}'s login shell took {time.monotonic() - t0:.0f}s; each of their jobs waits as long")


def ensure_user_ssh(user: str) -> None:
    """user's login key, authorized on every host (shared homes); no known_hosts of their own."""
    pw = pwd.getpwnam(user)
    sshdir = Path(pw.pw_dir) / ".ssh"
    sshdir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chown(sshdir, pw.pw_uid, pw.pw_gid)
    key = sshdir / "id_ed25519"
    if not key.exists():
        run(["runuser", "-u", user, "--", "ssh-keygen", "-q", "-t", "ed25519", "-N", "",
             "-C", f"{user}@remote-kernels-test-cluster", "-f", str(key)])
    pub = (sshdir / "id_ed25519.pub").read_text().strip()
    auth = sshdir / "authorized_keys"
    existing = auth.read_text().splitlines() if auth.exists() else []
    if pub not in existing:
        with auth.open("a") as f:
            f.write(pub + "\n")
    os.chown(auth, pw.pw_uid, pw.pw_gid)
    os.chmod(auth, 0o600)
    # Earlier versions included a cluster ssh config from ~/.ssh/config: take that line out.
    config = sshdir / "config"
    if config.exists():
        lines = config.read_text().splitlines()
        kept = [l for l in lines if not l.endswith(SSH_INCLUDE_MARK)]
        if kept != lines:
            config.write_text("".join(l + "\n" for l in kept))
    if user in USERS:
        (sshdir / "known_hosts").unlink(missing_ok=True)


def sshd_program(node: str) -> Path:
    """The sshd binary of a host: a node's runs as ``sshd-NODE``, its PAM service name."""
    return Path("/usr/sbin/sshd") if node == "login" else STATE / "bin" / f"sshd-{node}"


def pam_service(node: str) -> str:
    """PAM stack of a node's sshd: key logins, then pam_slurm_adopt (root is let in, not adopted)."""
    return f"""\
# PAM of the remote-kernels test cluster's sshd on {node} (written by tests/cluster/cluster.py)
@include common-auth
account    required     pam_nologin.so
@include common-account
account    required     {PAM_SLURM_ADOPT} action_no_jobs=deny action_unknown=newest action_adopt_failure=deny action_generic_failure=deny service=sshd-{node} nodename={node}
session    required     pam_loginuid.so
session    required     pam_unix.so
session    required     pam_limits.so
"""


def ensure_sshd_program(node: str) -> bool:
    """The node's sshd name and PAM service; True if either changed."""
    prog = sshd_program(node)
    changed = write_if_changed(Path("/etc/pam.d") / f"sshd-{node}", pam_service(node))
    if not (prog.is_symlink() and os.readlink(prog) == "/usr/sbin/sshd"):
        prog.parent.mkdir(parents=True, exist_ok=True)
        prog.unlink(missing_ok=True)
        prog.symlink_to("/usr/sbin/sshd")
        changed = True
    return changed


def ensure_sshd(node: str, restart: bool = False) -> None:
    """sshd of a compute node (in its namespace) or of the login side ("login", on the host)."""
    d = STATE / "nodes" / node
    prog = sshd_program(node)
    pid = pid_alive(d / "sshd.pid", prog.name)
    stale = prog.name != "sshd" and pid_alive(d / "sshd.pid", "sshd")   # started under its old name
    if stale:
        kill_pids([stale])
    if pid and restart:
        kill_pids([pid])
    elif pid:
        return
    log(f"starting sshd on {node}")
    argv = [str(prog), "-f", str(d / "sshd_config"), "-E", str(STATE / "log" / f"sshd-{node}.log")]
    run(argv if node == "login" else in_node(node, argv))


def laptop_net_ok() -> bool:
    if not ns_path(LAPTOP).exists():
        return False
    host = run(["ip", "-j", "addr", "show", "rk-laptop"], check=False)
    inner = run(["ip", "-n", LAPTOP, "-j", "addr", "show", "eth0"], check=False)
    return (host.returncode == 0 and inner.returncode == 0 and f'"{LAPTOP_LINK[0]}"' in host.stdout
            and f'"{LAPTOP_LINK[1]}"' in inner.stdout and "LOWER_UP" in inner.stdout)


def ensure_laptop_net() -> None:
    if laptop_net_ok():
        return
    log(f"creating network namespace {LAPTOP} ({LAPTOP_LINK[1]}, reaches only the login side)")
    remove_node_net(LAPTOP)
    run(["ip", "netns", "add", LAPTOP])
    run(["ip", "link", "add", "rk-laptop", "type", "veth", "peer", "name", "eth0", "netns", LAPTOP])
    run(["ip", "addr", "add", f"{LAPTOP_LINK[0]}/24", "dev", "rk-laptop"])
    run(["ip", "link", "set", "rk-laptop", "up"])
    run(["ip", "-n", LAPTOP, "addr", "add", f"{LAPTOP_LINK[1]}/24", "dev", "eth0"])
    run(["ip", "-n", LAPTOP, "link", "set", "eth0", "up"])
    run(["ip", "-n", LAPTOP, "link", "set", "lo", "up"])


def ensure_slurm_conf() -> bool:
    cgroup = write_if_changed(CGROUP_CONF, "# remote-kernels test cluster: SLURM's cgroup defaults\nCgroupPlugin=autodetect\n")
    return write_if_changed(SLURM_CONF, slurm_conf()) or cgroup


# --- accounting: MariaDB, slurmdbd, associations -------------------------------

def mariadb_dir() -> Path:
    return STATE / "mariadb"


def mariadb_cnf() -> str:
    d = mariadb_dir()
    return f"""\
# MariaDB of the remote-kernels test cluster (written by tests/cluster/cluster.py).  Its own
# server and clients read only this file (--defaults-file), never /etc/mysql.
[mariadbd]
user=mysql
datadir={d}/data
socket={d}/run/mariadbd.sock
pid-file={d}/run/mariadbd.pid
# No TCP at all: slurmdbd, the only client, comes over the unix socket.
skip-networking
# What slurmdbd checks at start (it logs an error below half of these): SLURM's recommendation.
innodb_buffer_pool_size=1G
innodb_lock_wait_timeout=900
[client]
socket={d}/run/mariadbd.sock
"""


def mariadb_sql(sql: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run sql as MariaDB's root: OS root over our socket (unix_socket auth); the SQL on stdin, not argv."""
    return run(["mariadb", f"--defaults-file={mariadb_dir() / 'my.cnf'}", "-u", "root", "--batch",
                "--skip-column-names"], check=check, stdin=sql)


def mariadbd_pids(ours: bool) -> list[int]:
    """mariadbd/mysqld processes started with our config (ours) or not (anyone else's, e.g. the one
    Debian's package scripts start where services may start)."""
    mine = f"--defaults-file={mariadb_dir() / 'my.cnf'}".encode()
    found = []
    for pid in pids_named("mariadbd") + pids_named("mysqld"):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (mine in argv) == ours and not _zombie(pid):
            found.append(pid)
    return found


def ensure_mariadb_datadir(cnf: Path) -> None:
    """The data directory, made whole or not at all: an interrupted install is started over."""
    data, new = mariadb_dir() / "data", mariadb_dir() / "data.new"
    if data.is_dir():
        return
    log("creating the MariaDB data directory")
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir(mode=0o700)
    shutil.chown(new, "mysql", "mysql")
    run(["mariadb-install-db", f"--defaults-file={cnf}", f"--datadir={new}", "--user=mysql",
         "--skip-test-db", "--auth-root-authentication-method=socket"])
    new.rename(data)


def ensure_mariadb() -> bool:
    """The cluster's own mariadbd (user mysql), the only one running; True if it was (re)started."""
    d = mariadb_dir()
    for sub in (d, d / "run"):
        sub.mkdir(parents=True, exist_ok=True)
    os.chmod(STATE, 0o755)   # user mysql must reach its directories
    os.chmod(d, 0o755)
    shutil.chown(d / "run", "mysql", "mysql")
    cnf = d / "my.cnf"
    changed = write_if_changed(cnf, mariadb_cnf())
    others = pids_named("mysqld_safe") + mariadbd_pids(ours=False)
    if others:
        log("stopping a MariaDB server not started by cluster.py (the cluster runs its own)")
        kill_pids(others, timeout=30)
    ensure_mariadb_datadir(cnf)
    pid = pid_alive(d / "run" / "mariadbd.pid", "mariadbd")
    if pid and changed:
        log("my.cnf changed: restarting mariadbd")
        kill_pids([pid], timeout=30)
        pid = None
    if pid:
        return False
    kill_pids(mariadbd_pids(ours=True), timeout=30)   # one whose pid file was lost
    log("starting mariadbd")
    with open(STATE / "log" / "mariadbd.log", "a") as out:
        proc = subprocess.Popen([_which("mariadbd"), f"--defaults-file={cnf}"], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def accepting() -> bool:
        if proc.poll() is not None:
            raise SystemExit(f"cluster: mariadbd exited ({proc.returncode}); see {STATE}/log/mariadbd.log")
        return mariadb_sql("SELECT 1", check=False).returncode == 0
    wait_for("mariadbd to accept connections", accepting, 30)
    return True


def ensure_accounting_db(password: str) -> None:
    """slurmdbd's database and DB user (password as in slurmdbd.conf): made or mended, idempotently."""
    sql = (f"CREATE DATABASE IF NOT EXISTS {ACCT_DB};\n"
           f"CREATE USER IF NOT EXISTS '{ACCT_DB_USER}'@'localhost' IDENTIFIED BY '{password}';\n"
           f"ALTER USER '{ACCT_DB_USER}'@'localhost' IDENTIFIED BY '{password}';\n"
           f"GRANT ALL ON {ACCT_DB}.* TO '{ACCT_DB_USER}'@'localhost';\n")
    mariadb_sql(sql)


def slurmdbd_conf(password: str) -> str:
    login = socket.gethostname().split(".")[0]
    return f"""\
# Written by remote-kernels tests/cluster/cluster.py -- the test cluster's accounting daemon.
# Holds the database password: 0600, owned by SlurmUser (root).
AuthType=auth/munge
DbdHost={login}
DbdPort={DBD_PORT}
SlurmUser=root
PidFile={STATE}/run/slurmdbd.pid
LogFile={STATE}/log/slurmdbd.log
StorageType=accounting_storage/mysql
# localhost = the unix socket; which one comes from MYSQL_UNIX_PORT, set when cluster.py starts slurmdbd.
StorageHost=localhost
StorageLoc={ACCT_DB}
StorageUser={ACCT_DB_USER}
StoragePass={password}
"""


def ensure_slurmdbd_conf() -> tuple[str, bool]:
    """slurmdbd.conf, keeping the database password it has (a new one otherwise): (password, changed)."""
    old = SLURMDBD_CONF.read_text() if SLURMDBD_CONF.exists() else ""
    found = [l.partition("=")[2] for l in old.splitlines() if l.startswith("StoragePass=")]
    password = found[0] if found and found[0].isalnum() else secrets.token_hex(16)
    changed = write_if_changed(SLURMDBD_CONF, slurmdbd_conf(password), mode=0o600)
    os.chown(SLURMDBD_CONF, 0, 0)
    return password, changed


def cluster_registered() -> bool:
    """Whether slurmdbd's database has the cluster (read from MariaDB: slurmdbd may be down)."""
    sql = f"SELECT name FROM {ACCT_DB}.cluster_table WHERE name = '{CLUSTER_NAME}' AND deleted = 0"
    res = mariadb_sql(sql, check=False)
    return res.returncode == 0 and res.stdout.split() == [CLUSTER_NAME]


def dbd_answers() -> bool:
    return run(["sacctmgr", "-nP", "show", "cluster", "format=cluster"], check=False).returncode == 0


def ensure_slurmdbd(db_restarted: bool) -> None:
    """slurmdbd, after the database and its user; restarted with its config or its database."""
    password, changed = ensure_slurmdbd_conf()
    pid = pid_alive(STATE / "run" / "slurmdbd.pid", "slurmdbd")
    if pid and (changed or db_restarted):
        log(f"{'slurmdbd.conf changed' if changed else 'mariadbd restarted'}: restarting slurmdbd")
        kill_pids([pid])
        pid = None
    if pid:
        return
    kill_pids(pids_named("slurmdbd"))
    ensure_accounting_db(password)
    ctld = pid_alive(STATE / "run" / "slurmctld.pid", "slurmctld")
    if ctld and not cluster_registered():
        # It would flood a slurmdbd without the cluster's tables with its jobs; up starts it again.
        log("accounting database without the cluster: stopping slurmctld until it is registered")
        kill_pids([ctld])
    log("starting slurmdbd")
    run(["slurmdbd"], env={"MYSQL_UNIX_PORT": str(mariadb_dir() / "run" / "mariadbd.sock")})
    wait_for("slurmdbd to answer", dbd_answers, 60, 0.3)


def sacctmgr_rows(*what: str) -> list[list[str]]:
    out = run(["sacctmgr", "-nP", "show", *what]).stdout
    return [line.split("|") for line in out.splitlines()]


def sacctmgr_write(*args: str) -> None:
    log(f"accounting: {' '.join(args)}")
    run(["sacctmgr", "-i", *args])


def ensure_associations() -> None:
    """The cluster, QOS, accounts and user associations of the data above; only what is missing or
    different is written (reads only when all is there)."""
    def associations() -> dict:
        return {(acct, user): q for acct, user, q in
                sacctmgr_rows("assoc", f"cluster={CLUSTER_NAME}", "format=account,user,qos")}
    assocs = associations()   # a cluster has at least its root account's: none means no cluster yet
    if not assocs and [CLUSTER_NAME] not in sacctmgr_rows("cluster", "format=cluster"):
        sacctmgr_write("add", "cluster", CLUSTER_NAME)
        assocs = associations()
    qos = dict(sacctmgr_rows("qos", "format=name,maxwall"))
    for name, wall in QOS.items():
        if name not in qos:
            sacctmgr_write("add", "qos", name, *([f"MaxWall={wall}"] if wall else []))
        elif qos[name] != wall:
            sacctmgr_write("modify", "qos", "where", f"name={name}", "set", f"MaxWall={wall or -1}")
    for acct, allowed in ACCOUNTS.items():
        want = ",".join(sorted(allowed))
        if (acct, "") not in assocs:
            sacctmgr_write("add", "account", acct, f"cluster={CLUSTER_NAME}", f"qos={want}",
                           f"description={acct} (test cluster)", "organization=remote-kernels")
        elif assocs[(acct, "")] != want:
            sacctmgr_write("modify", "account", "where", f"name={acct}", f"cluster={CLUSTER_NAME}",
                           "set", f"qos={want}")
    defaults = dict(sacctmgr_rows("user", "format=user,defaultaccount"))
    for user in ("root", *USERS):
        accounts = USER_ACCOUNTS.get(user)
        if not accounts:
            raise SystemExit(f"cluster: {user} has no accounts in USER_ACCOUNTS; every user who submits jobs "
                             "needs an association (add theirs there)")
        missing = [a for a in accounts if (a, user) not in assocs]
        if missing:
            sacctmgr_write("add", "user", user, f"account={','.join(missing)}", f"cluster={CLUSTER_NAME}",
                           f"defaultaccount={accounts[0]}")
        if user in defaults and defaults[user] != accounts[0]:
            sacctmgr_write("modify", "user", "where", f"name={user}", "set", f"defaultaccount={accounts[0]}")


def accounting_info() -> dict:
    """What tests may rely on (cluster.json): QOS, accounts and who is in which."""
    return {
        "cluster": CLUSTER_NAME,
        "qos": {name: {"max_wall": wall or None} for name, wall in QOS.items()},
        "accounts": {acct: list(allowed) for acct, allowed in ACCOUNTS.items()},
        "users": {user: {"default_account": accts[0], "accounts": list(accts)}
                  for user, accts in USER_ACCOUNTS.items()},
    }


def ensure_slurmctld(conf_changed: bool) -> None:
    pid = pid_alive(STATE / "run" / "slurmctld.pid", "slurmctld")
    if pid and conf_changed:
        log("slurm.conf changed: restarting slurmctld")
        kill_pids([pid])
        pid = None
    if pid:
        return
    kill_pids(pids_named("slurmctld"))
    any_slurmd = any(pid_alive(STATE / "run" / f"slurmd-{n}.pid", "slurmd") for n in NODES)
    # With no slurmd alive there is nothing to recover: start with a clean queue.
    argv = ["slurmctld"] + ([] if any_slurmd else ["-c"])
    log("starting slurmctld" + ("" if any_slurmd else " (clean state)"))
    run(argv)
    wait_for("slurmctld to answer", lambda: run(["scontrol", "ping"], check=False).returncode == 0, 30)


def ensure_slurmd(node: str, conf_changed: bool) -> None:
    pidfile = STATE / "run" / f"slurmd-{node}.pid"
    pid = pid_alive(pidfile, "slurmd")
    if pid and conf_changed:
        kill_pids([pid])
        pid = None
    if pid:
        return
    log(f"starting slurmd on {node}")
    run(in_node(node, ["slurmd", "-N", node]))


def node_states() -> dict[str, str]:
    out = run(["sinfo", "-h", "-N", "-o", "%N|%t"], check=False).stdout
    states: dict[str, str] = {}
    for line in out.split():
        name, _, state = line.partition("|")
        states[name] = state
    return states


def wait_nodes_idle() -> None:
    def ready() -> bool:
        states = node_states()
        for node in NODES:
            st = states.get(node, "")
            if st.startswith(("down", "drain", "fail")) and not st.endswith("*"):
                run(["scontrol", "update", f"nodename={node}", "state=resume"], check=False)
        return all(states.get(n, "").rstrip("*~#") in ("idle", "mix", "alloc") and not
                   states.get(n, "").endswith("*") for n in NODES)
    wait_for("nodes to become idle", ready, 45, 0.3)


def wait_sshd(node: str) -> None:
    def listening() -> bool:
        try:
            with socket.create_connection((NODES[node], 22), timeout=1):
                return True
        except OSError:
            return False
    wait_for(f"sshd on {node}", listening, 15)


def write_cluster_json() -> None:
    info = {
        "nodes": NODES,
        "login_addr": LOGIN_ADDR,
        "bridge": BRIDGE,
        "partitions": {"debug": list(NODES), "long": ["c2"]},
        "known_hosts": str(GLOBAL_KNOWN_HOSTS),
        "host_ca": str(STATE / "ca" / "host_ca.pub"),
        "cert_nodes": list(CERT_NODES),
        "test_user": TEST_USER,
        "no_ssh_user": NO_SSH_USER,
        "users": USERS,
        "state": str(STATE),
        "laptop": {"netns": LAPTOP, "addr": LAPTOP_LINK[1], "login_host": "login", "login_addr": LAPTOP_LINK[0]},
        "accounting": accounting_info(),
    }
    write_if_changed(STATE / "cluster.json", json.dumps(info, indent=2) + "\n")


# --- commands ----------------------------------------------------------------

def up() -> None:
    t0 = time.monotonic()
    ensure_packages()
    for sub in ("slurmctld", "slurmd", "run", "log"):
        (STATE / sub).mkdir(parents=True, exist_ok=True)
    ensure_munge()
    ensure_bridge()
    for node in NODES:
        ensure_node_net(node)
    ensure_laptop_net()
    ensure_hosts_file()
    restart = ensure_ssh_material()
    for node in [*NODES, "login"]:
        ensure_sshd(node, restart=node in restart)
    changed = ensure_slurm_conf()
    # Accounting first: slurmctld (enforcing associations) needs slurmdbd, and the associations of
    # every user who has jobs, when it starts.
    ensure_slurmdbd(db_restarted=ensure_mariadb())
    ensure_associations()
    ensure_quick_login_environments()
    ensure_slurmctld(changed)
    for node in NODES:
        ensure_slurmd(node, changed)
    wait_nodes_idle()
    for node in NODES:
        wait_sshd(node)
    write_cluster_json()
    log(f"up in {time.monotonic() - t0:.1f}s: nodes {', '.join(NODES)}; partitions debug (default), long; "
        f"accounts {', '.join(a for a in ACCOUNTS if a != 'root')}")


def down() -> None:
    for node in [*NODES, LAPTOP]:
        remove_node_net(node)   # kills slurmd, sshd, jobs: everything in the namespace
    login_sshd = pid_alive(STATE / "nodes" / "login" / "sshd.pid", sshd_program("login").name)
    if login_sshd:
        kill_pids([login_sshd])
    kill_pids(pids_named("slurmctld"))
    kill_pids(pids_named("slurmdbd"))
    kill_pids(mariadbd_pids(ours=True), timeout=30)   # its data directory stays: the next up is fast
    kill_pids(pids_named("munged"))
    if run(["ip", "link", "show", BRIDGE], check=False).returncode == 0:
        run(["ip", "link", "del", BRIDGE])
    for pidfile in (STATE / "run").glob("*.pid"):
        pidfile.unlink()
    log("down: no daemons, namespaces or links left (the accounting database is kept)")


def status() -> int:
    ok = True
    rows = [("munged", pid_alive(MUNGE_RUN / "munged.pid", "munged")),
            ("mariadbd", pid_alive(mariadb_dir() / "run" / "mariadbd.pid", "mariadbd")),
            ("slurmdbd", pid_alive(STATE / "run" / "slurmdbd.pid", "slurmdbd")),
            ("slurmctld", pid_alive(STATE / "run" / "slurmctld.pid", "slurmctld"))]
    for node in NODES:
        rows.append((f"slurmd {node}", pid_alive(STATE / "run" / f"slurmd-{node}.pid", "slurmd")))
        rows.append((f"sshd {node}", pid_alive(STATE / "nodes" / node / "sshd.pid", sshd_program(node).name)))
        rows.append((f"netns {node}", node_net_ok(node)))
    rows.append(("sshd login", pid_alive(STATE / "nodes" / "login" / "sshd.pid", "sshd")))
    rows.append((f"netns {LAPTOP}", laptop_net_ok()))
    for name, alive in rows:
        print(f"{name:<14} {'up' if alive else 'DOWN'}")
        ok = ok and bool(alive)
    if pid_alive(STATE / "run" / "slurmctld.pid", "slurmctld"):
        print(run(["sinfo", "-N", "-o", "%N %P %t %c %m"], check=False).stdout, end="")
    if pid_alive(STATE / "run" / "slurmdbd.pid", "slurmdbd"):
        print(run(["sacctmgr", "show", "assoc", f"cluster={CLUSTER_NAME}", "format=account,user,qos"],
                  check=False).stdout, end="")
    return 0 if ok else 1


def dispatch(prog: str, argv: list[str], commands: dict) -> int:
    """Run ``argv[1]`` (default ``status``) from commands {name: fn}; fn's int result is the exit code."""
    if os.geteuid() != 0:
        raise SystemExit(f"{prog}: must run as root (it creates namespaces and starts daemons)")
    cmd = argv[1] if len(argv) > 1 else "status"
    if cmd not in commands:
        raise SystemExit(f"{prog}: unknown command {cmd!r}; use {', '.join(commands)}")
    return commands[cmd]() or 0


def main(argv: list[str]) -> int:
    return dispatch("cluster", argv, {"up": up, "down": down, "status": status})


if __name__ == "__main__":
    sys.exit(main(sys.argv))
