"""The test cluster is a real SLURM cluster with isolated compute-node networks."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CLUSTER_SCRIPT
from site_helpers import as_user, held_node, home, unique, user_jobs
from slurm_helpers import sbatch_wait, wait_until


def test_job_pinned_to_c2_runs_there(cluster, tmp_path):
    assert sbatch_wait(tmp_path, "-p", "debug", "-w", "c2", wrap="hostname").strip() == "c2"


def test_long_partition_lands_on_c2(cluster, tmp_path):
    assert sbatch_wait(tmp_path, "-p", "long", wrap="hostname").strip() == "c2"


def test_nodes_and_partitions(cluster):
    out = subprocess.run(["sinfo", "-h", "-o", "%P %N"], capture_output=True, text=True, check=True).stdout
    parts = dict(line.split() for line in out.splitlines())
    assert parts["debug*"] == "c[1-2]"
    assert parts["long"] == "c2"


def test_shared_filesystem(cluster, tmp_path):
    marker = tmp_path / "written-on-login"
    marker.write_text("hello from login\n")
    out = sbatch_wait(tmp_path, "-w", "c1", wrap=f"cat {marker}; echo from-node > {tmp_path}/written-on-node")
    assert out == "hello from login\n"
    assert (tmp_path / "written-on-node").read_text() == "from-node\n"


SSH = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"]


@pytest.mark.parametrize("user", ["rkuser", "rkcsh"])
def test_openssh_trusts_the_sites_published_keys(cluster, user):
    """No user has a known_hosts: c1 and the login host by key, c2 by its host certificate,
    all from /etc/ssh/ssh_known_hosts; each user's login shell runs the command."""
    assert not (home(user) / ".ssh" / "known_hosts").exists()
    for host in [*cluster["nodes"], "login"]:
        holding = held_node(user, host) if host in cluster["nodes"] else contextlib.nullcontext()
        with holding:
            res = as_user(user, *SSH, host, "echo $SHELL; hostname", timeout=30)
        assert res.returncode == 0, (host, res.stderr)
        shell, name = res.stdout.split()
        assert shell == cluster["users"][user] and (name == host or host == "login")
    assert not (home(user) / ".ssh" / "known_hosts").exists()


def test_users_reach_only_nodes_where_they_have_a_job(cluster):
    """pam_slurm_adopt on the nodes' sshd: refused without a job there, let in (and adopted into
    the job) with one; root, the admin, always."""
    user = "rkcsh"
    wait_until("rkcsh to have no job on c1", lambda: not user_jobs_on(user, "c1"), timeout=30)
    refused = as_user(user, *SSH, "c1", "hostname", timeout=30)
    assert refused.returncode == 255 and refused.stdout == ""
    assert "Access denied by pam_slurm_adopt: you have no active jobs on this node" in refused.stderr
    with held_node(user, "c1") as job:
        inside = as_user(user, *SSH, "c1", "echo $SLURM_JOB_ID; cat /proc/self/cgroup", timeout=30)
        assert inside.returncode == 0, inside.stderr
        assert inside.stdout.split()[0] == job and f"/job_{job}/step_extern" in inside.stdout
    wait_until(f"job {job} to end", lambda: not user_jobs_on(user, "c1"), timeout=30)
    assert as_user(user, *SSH, "c1", "hostname", timeout=30).returncode == 255
    admin = subprocess.run([*SSH, "c1", "hostname"], capture_output=True, text=True, timeout=30)
    assert admin.returncode == 0 and admin.stdout.strip() == "c1"


def user_jobs_on(user: str, node: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-u", user, "-w", node, "-o", "%i"], capture_output=True, text=True,
                         check=True).stdout
    return out.split()


def test_c2_presents_a_host_certificate_of_the_site_ca(cluster):
    cert = Path(cluster["state"]) / "nodes" / "c2" / "ssh_host_ed25519_key-cert.pub"
    info = subprocess.run(["ssh-keygen", "-L", "-f", str(cert)], capture_output=True, text=True, check=True).stdout
    ca = subprocess.run(["ssh-keygen", "-l", "-f", cluster["host_ca"]], capture_output=True, text=True,
                        check=True).stdout.split()[1]
    assert "host certificate" in info and ca in info and "c2" in info
    lines = Path(cluster["known_hosts"]).read_text().splitlines()
    assert any(l.startswith("@cert-authority c2,") for l in lines)
    assert not any(l.startswith("c2,") for l in lines)   # trusted only through the CA


def _node_key(cluster, node: str) -> str:
    kind, blob = (Path(cluster["state"]) / "nodes" / node / "ssh_host_ed25519_key.pub").read_text().split()[:2]
    return f"{kind} {blob}"


def _known_hosts_with_wrong_key(cluster, tmp_path) -> Path:
    """A known_hosts that names c1 (and its address) with c2's host key."""
    bad = tmp_path / "known_hosts"
    bad.write_text(f"c1,{cluster['nodes']['c1']} {_node_key(cluster, 'c2')}\n")
    return bad


def test_openssh_refuses_wrong_host_key(cluster, tmp_path):
    bad = _known_hosts_with_wrong_key(cluster, tmp_path)
    res = subprocess.run(
        [*SSH, "-o", f"UserKnownHostsFile={bad}", "-o", "GlobalKnownHostsFile=/dev/null", "c1", "hostname"],
        capture_output=True, text=True, timeout=30,
    )
    assert res.returncode != 0
    assert "host key" in res.stderr.lower()
    assert res.stdout == ""


def test_openssh_refuses_a_certificate_of_another_ca(cluster, tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "ca")], check=True)
    ca = " ".join((tmp_path / "ca.pub").read_text().split()[:2])
    (tmp_path / "kh").write_text(f"@cert-authority c2,{cluster['nodes']['c2']} {ca}\n")
    res = subprocess.run([*SSH, "-o", f"UserKnownHostsFile={tmp_path}/kh", "-o", "GlobalKnownHostsFile=/dev/null",
                          "c2", "hostname"], capture_output=True, text=True, timeout=30)
    assert res.returncode != 0 and res.stdout == ""


# Listens on each address given (a port of the system's choice) and prints the ports.
LISTENER = r"""
import socket, sys
srvs = []
for host in sys.argv[1:]:
    s = socket.socket(); s.bind((host, 0)); s.listen(); srvs.append(s)
print(*[s.getsockname()[1] for s in srvs], flush=True)
sys.stdin.read()
"""


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def test_node_loopback_is_not_reachable_from_login(cluster):
    c1 = cluster["nodes"]["c1"]
    proc = subprocess.Popen(
        ["nsenter", "--net=/run/netns/c1", sys.executable, "-c", LISTENER, "127.0.0.1", c1],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        lo_port, pub_port = map(int, proc.stdout.readline().split())
        assert _reachable(c1, pub_port), "listener on c1's address must be reachable"
        assert not _reachable(c1, lo_port), "c1's loopback listener leaked to c1's address"
        assert not _reachable("127.0.0.1", lo_port), "c1's loopback listener reachable on login's loopback"
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)


def _cluster(cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(["/usr/bin/python3", str(CLUSTER_SCRIPT), cmd], capture_output=True, text=True, timeout=120)


def test_up_when_up_changes_nothing(cluster):
    assert _cluster("up").returncode == 0   # repairs what an earlier test may have left down
    res = _cluster("up")
    assert res.returncode == 0, res.stderr
    for action in ("starting", "creating", "restarting", "accounting:"):   # accounting: a sacctmgr write
        assert action not in res.stdout, res.stdout


def test_up_repairs_a_dead_slurmd(cluster, tmp_path):
    pid = int(Path(cluster["state"], "run", "slurmd-c1.pid").read_text())
    subprocess.run(["kill", "-9", str(pid)], check=True)
    wait_until("status to report slurmd c1 down", lambda: _cluster("status").returncode != 0)
    res = _cluster("up")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "starting slurmd on c1" in res.stdout
    assert sbatch_wait(tmp_path, "-w", "c1", wrap="hostname").strip() == "c1"


def _leftovers(cluster) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            comm = (proc / "comm").read_text().strip()
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue  # already dead, waiting to be reaped by init
        except OSError:
            continue
        if comm in ("slurmctld", "slurmd", "slurmstepd", "munged", "slurmdbd") or (
                comm.startswith("sshd") or comm == "mariadbd") and cluster["state"] in cmd:
            found.append(f"{proc.name} {cmd}")
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    found += [f"netns {n}" for n in [*cluster["nodes"], cluster["laptop"]["netns"]] if n in netns.split()]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    found += [f"link {l.split(':')[1].strip()}" for l in links.splitlines() if "rk-" in l or cluster["bridge"] in l]
    return found


@pytest.mark.disruptive
def test_down_leaves_nothing_and_up_restores(cluster, tmp_path):
    res = _cluster("down")
    assert res.returncode == 0, res.stderr
    assert _leftovers(cluster) == []
    res = _cluster("up")
    assert res.returncode == 0, res.stdout + res.stderr
    assert _cluster("status").returncode == 0
    assert sbatch_wait(tmp_path, "-w", "c2", wrap="hostname").strip() == "c2"


# --- accounting: slurmdbd over the cluster's own MariaDB, associations enforced -----------------

def _sbatch_as(user: str, *args: str) -> subprocess.CompletedProcess:
    return as_user(user, "sbatch", "--parsable", "-o", "/dev/null", *args, "--wrap", "true", timeout=60)


def _sacct(user: str, job: str, name: str) -> dict | None:
    """The accounting record of ``user``'s job ``job`` named ``name`` (sacct -j, as the user), or None."""
    fields = ["JobID", "JobName", "User", "Account", "QOS", "State", "ExitCode"]
    res = as_user(user, "sacct", "-n", "-P", "-X", "-j", job, "-o", ",".join(fields), timeout=30)
    assert res.returncode == 0, res.stderr
    # ids restart from 1 when the cluster is rebuilt: the unique name picks this run's record
    rows = [dict(zip(fields, line.split("|"))) for line in res.stdout.splitlines()]
    return next((r for r in rows if r["JobID"] == job and r["JobName"] == name), None)


@pytest.mark.parametrize("flag, words", [
    ("--account=nosuch", "Invalid account or account/partition combination specified"),
    ("--qos=nosuch", "Invalid qos specification"),
])
def test_unknown_account_or_qos_is_refused(cluster, flag, words):
    name = unique("rk-acct")
    res = _sbatch_as("rkuser", "-J", name, flag)
    assert res.returncode == 1 and res.stdout == "", res
    assert res.stderr == f"sbatch: error: Batch job submission failed: {words}\n"
    assert user_jobs("rkuser", name) == []


def test_qos_outside_the_users_associations_is_refused(cluster):
    """rkcsh's only account (chemistry) may use QOS normal, not short."""
    acct = cluster["accounting"]
    assert "short" not in acct["accounts"][acct["users"]["rkcsh"]["default_account"]]
    name = unique("rk-acct")
    res = _sbatch_as("rkcsh", "-J", name, "--qos=short")
    assert res.returncode == 1
    assert res.stderr == "sbatch: error: Batch job submission failed: Invalid qos specification\n"
    assert user_jobs("rkcsh", name) == []


def test_job_over_its_qos_wall_limit_pends_with_the_qos_reason(cluster):
    """SLURM's default (no DenyOnLimit): accepted, then held back by the QOS limit, never run."""
    assert cluster["accounting"]["qos"]["short"]["max_wall"] == "00:30:00"
    name = unique("rk-acct")
    res = _sbatch_as("rkuser", "-J", name, "--qos=short", "--time=00:31:00")
    assert res.returncode == 0, res.stderr
    job = res.stdout.strip().split(";")[0]
    try:
        def reason():
            out = subprocess.run(["squeue", "-h", "-u", "rkuser", "-j", job, "-o", "%T %r"], capture_output=True,
                                 text=True).stdout.split()
            return out if out and out[1] != "None" else None
        assert wait_until(f"job {job} to be held back", reason) == ["PENDING", "QOSMaxWallDurationPerJobLimit"]
    finally:
        subprocess.run(["scancel", job], capture_output=True)


@pytest.mark.parametrize("user, args, account, qos", [
    ("rkuser", [], "physics", "normal"),                     # the user's default account and QOS
    ("rkuser", ["--account=chemistry"], "chemistry", "normal"),
    ("rkuser", ["--qos=short", "--time=00:30:00"], "physics", "short"),
    ("rkcsh", [], "chemistry", "normal"),
    ("root", [], "root", "normal"),
])
def test_job_in_an_allowed_account_runs_and_is_accounted(cluster, user, args, account, qos):
    if not any(a.startswith("--account") for a in args):
        assert cluster["accounting"]["users"][user]["default_account"] == account
    name = unique("rk-acct")
    res = _sbatch_as(user, "--wait", "-J", name, *args)
    assert res.returncode == 0, res.stderr
    job = res.stdout.strip().split(";")[0]
    record = wait_until(f"sacct to show job {job} completed",
                        lambda: (r := _sacct(user, job, name)) and r["State"] == "COMPLETED" and r)
    assert (record["User"], record["Account"], record["QOS"], record["ExitCode"]) == (user, account, qos, "0:0")


def test_every_user_has_an_association(cluster):
    """Jobs of a user without one all fail: root (the test suite) and each site user has one."""
    out = subprocess.run(["sacctmgr", "-nP", "show", "assoc", f"cluster={cluster['accounting']['cluster']}",
                          "format=user,account"], capture_output=True, text=True, check=True).stdout
    have = {tuple(line.split("|")) for line in out.splitlines()}
    for user in ["root", *cluster["users"]]:
        for account in cluster["accounting"]["users"][user]["accounts"]:
            assert (user, account) in have


def test_mariadb_listens_only_on_its_unix_socket(cluster):
    tcp = subprocess.run(["ss", "-H", "-ltnp"], capture_output=True, text=True, check=True).stdout
    assert '"mariadbd"' not in tcp
    unix = subprocess.run(["ss", "-H", "-lxp"], capture_output=True, text=True, check=True).stdout
    socks = [l.split()[4] for l in unix.splitlines() if '"mariadbd"' in l]
    assert socks == [f"{cluster['state']}/mariadb/run/mariadbd.sock"]


def test_slurmdbd_conf_is_private(cluster):
    conf = Path("/etc/slurm/slurmdbd.conf").stat()
    assert (conf.st_mode & 0o777, conf.st_uid) == (0o600, 0)


def test_up_repairs_dead_mariadb_and_slurmdbd(cluster):
    run = Path(cluster["state"], "run")
    for pidfile in (Path(cluster["state"], "mariadb", "run", "mariadbd.pid"), run / "slurmdbd.pid"):
        subprocess.run(["kill", "-9", pidfile.read_text().strip()], check=True)
    wait_until("status to report them down", lambda: _cluster("status").returncode != 0)
    res = _cluster("up")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "starting mariadbd" in res.stdout and "starting slurmdbd" in res.stdout
    assert "accounting:" not in res.stdout   # the data survived: nothing to add
    name = unique("rk-acct")
    res = _sbatch_as("rkuser", "--wait", "-J", name)
    assert res.returncode == 0, res.stderr
    job = res.stdout.strip().split(";")[0]
    wait_until(f"sacct to show job {job}", lambda: _sacct("rkuser", job, name))
