#!/usr/bin/python3
"""Fake PBS Pro, Torque, LSF, HTCondor and Flux commands that really run jobs, on SLURM.

Each flavour is a directory of symlinks to this file (``pbs/qsub``, ``lsf/bjobs``,
``flux/flux``...); the directory names the flavour, the link the command.  Put one
directory first on PATH (tests do, with monkeypatch) and the adapters' commands reach
these.  They accept the options and print the formats of the real commands (as their
documentation describes them; see tests/samples/README.md), and unknown options fail as
the real commands' would.  Underneath, a submitted script is handed to the real SLURM of
the test cluster (``sbatch``, the flavour's resources translated, its job-id variable
exported), so it really runs on c1 or c2.  A small state file maps fake ids to SLURM
ids; status is read from ``squeue`` and rendered in the flavour's format.  A job SLURM
has forgotten is unknown to the fake too.

The job's environment is what the real command documents, for real: the submitter's whole
environment where the real command copies it by default (bsub, flux batch) or when told to
(qsub -V, getenv = true), only the variables its options name otherwise (bsub -env,
flux batch --env rules, qsub -v, HTCondor's environment), and on top of the user's login
environment on the node only where the real scheduler starts jobs in a login shell
(PBS, Torque, bsub -L).  So an adapter that forgets its scheduler's option leaks the
submitter's environment here as it would on a real cluster.

State lives in $RK_FAKE_SCHEDULER_STATE (a directory).  Stdlib only.
"""

from __future__ import annotations

import datetime
import fcntl
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from string import Template

F58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
SERVER = "fakeserver"
FLUX_ID_BASE = 2 ** 40   # Flux ids are large; decoding them is part of the adapter's job


# --- state ---------------------------------------------------------------------

def state_dir() -> Path:
    d = os.environ.get("RK_FAKE_SCHEDULER_STATE")
    if not d:
        die("fake scheduler: set RK_FAKE_SCHEDULER_STATE to a directory", 2)
    Path(d).mkdir(parents=True, exist_ok=True)
    return Path(d)


class State:
    """{"next": N, "jobs": {fake id: {"slurm": id, "flavour": f}}} under an exclusive lock."""

    def __enter__(self):
        self.lock = open(state_dir() / "state.lock", "w")
        fcntl.flock(self.lock, fcntl.LOCK_EX)
        path = state_dir() / "state.json"
        self.data = json.loads(path.read_text()) if path.exists() else {"next": 100, "jobs": {}}
        return self.data

    def __exit__(self, *exc):
        if exc[0] is None:
            tmp = state_dir() / "state.json.tmp"
            tmp.write_text(json.dumps(self.data))
            tmp.replace(state_dir() / "state.json")
        self.lock.close()


def lookup(ids: list[str]) -> dict[str, str]:
    """fake id -> SLURM id, for the ids the state file knows."""
    with State() as st:
        return {i: st["jobs"][i]["slurm"] for i in ids if i in st["jobs"]}


def die(msg: str, code: int = 1):
    print(msg, file=sys.stderr)
    sys.exit(code)


# --- SLURM underneath -------------------------------------------------------------

SQUEUE_FIELDS = ["id", "state", "reason", "node", "start", "left", "limit", "used"]
# SLURM reasons of a job over its partition's limits: the fakes' schedulers call such a job one
# that can never run, in their own words (PBS's "Can Never Run:" comment, Flux's alloc exception).
NEVER_RUNS = ("PartitionTimeLimit", "PartitionConfig", "PartitionNodeLimit")


def squeue(slurm_ids: list[str]) -> dict[str, dict]:
    """SLURM id -> {state, reason, node, start, left, limit, used} for the ids SLURM still knows."""
    if not slurm_ids:
        return {}
    p = subprocess.run(["squeue", "-h", "-t", "all", "-j", ",".join(slurm_ids),
                        "-o", "%i|%T|%r|%N|%S|%L|%l|%M"], capture_output=True, text=True)
    if p.returncode != 0:
        if "Invalid job id" in p.stderr:
            return {}
        die(f"fake scheduler: squeue failed: {p.stderr.strip()}", 2)
    rows = {}
    for line in p.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == len(SQUEUE_FIELDS):
            rows[parts[0]] = dict(zip(SQUEUE_FIELDS, parts))
    return rows


def status_of(ids: list[str]) -> tuple[dict[str, dict], list[str]]:
    """(fake id -> SLURM row, ids unknown to the fake or forgotten by SLURM)."""
    mapping = lookup(ids)
    rows = squeue(sorted(set(mapping.values())))
    known = {i: rows[mapping[i]] for i in ids if i in mapping and mapping[i] in rows}
    return known, [i for i in ids if i not in known]


def sbatch(script: str, fake_id: str, flavour: str, *, env: dict[str, str], login: bool, name="", queue="",
           time_s=0, cpus=0, mem_mb=0, output="/dev/null") -> None:
    """Run script under SLURM for fake_id with exactly ``env`` as its environment (and SLURM's
    SLURM_* variables), on top of the user's login environment on the node if ``login``
    (sbatch --get-user-env: slurmd's `su - USER -c env`); record the mapping."""
    command = shutil.which("sbatch")
    if command is None:
        die("fake scheduler: sbatch not found on PATH", 2)
    # sbatch exports its own environment (--export=ALL), which is the job's and nothing else.
    # --ignore-pbs: sbatch would read #PBS and #BSUB lines itself; the fake translates them.
    argv = [command, "--parsable", "--ignore-pbs", "--no-requeue", f"--output={output}", "--export=ALL"]
    argv += ["--get-user-env"] if login else []
    argv += [f"--job-name={name}"] if name else []
    argv += [f"--partition={queue}"] if queue else []
    argv += [f"--time={max(1, -(-time_s // 60))}"] if time_s else []
    argv += [f"--cpus-per-task={cpus}"] if cpus else []
    argv += [f"--mem={mem_mb}M"] if mem_mb else []
    slurm = {k: v for k, v in os.environ.items() if k.startswith("SLURM_")}   # SLURM passes these always
    p = subprocess.run(argv, input=script, capture_output=True, text=True, env={**slurm, **env})
    if p.returncode != 0:
        die(f"{flavour}: job rejected: {p.stderr.strip()}", 1)
    with State() as st:
        st["jobs"][fake_id] = {"slurm": p.stdout.strip().split(";")[0], "flavour": flavour}


def new_id(flavour: str) -> int:
    with State() as st:
        st["next"] += 1
        return st["next"]


def scancel(fake_id: str) -> bool:
    slurm = lookup([fake_id]).get(fake_id)
    if slurm is None or not squeue([slurm]):
        return False
    subprocess.run(["scancel", slurm], check=True)
    return True


# --- shared parsing -------------------------------------------------------------------

def hms_seconds(text: str) -> int:
    parts = [int(p) for p in text.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)
    return parts[0] * 3600 + parts[1] * 60 + parts[2]


def mem_mb(text: str) -> int:
    m = re.fullmatch(r"(\d+)([kmgt]?)b?", text.strip().lower())
    if not m:
        die(f"illegal memory value {text!r}", 2)
    return max(1, int(int(m.group(1)) * {"k": 1 / 1024, "": 1, "m": 1, "g": 1024, "t": 1024 ** 2}[m.group(2)]))


def directive_args(script: str, prefix: str) -> list[str]:
    """The words of every `prefix` line of the script, in order."""
    words = []
    for line in script.splitlines():
        if line.startswith(prefix + " ") or line.startswith(prefix + "\t"):
            words += shlex.split(line[len(prefix):])
    return words


def parse_options(words: list[str], takes_value: set[str], flags: set[str], what: str) -> list[tuple[str, str]]:
    """[(option, value)] from words; an option not in takes_value/flags fails as the real command."""
    out, i = [], 0
    while i < len(words):
        w = words[i]
        if w in takes_value:
            if i + 1 >= len(words):
                die(f"{what}: option {w} requires an argument", 2)
            out.append((w, words[i + 1]))
            i += 2
        elif w in flags:
            out.append((w, ""))
            i += 1
        else:
            die(f"{what}: invalid option -- '{w}'\nusage: {what} [options]", 2)
    return out


def command_line(args: list[str], takes_value: set[str], flags: set[str], what: str) -> tuple[list, list[str]]:
    """([(option, value)], positional words) of a command line; unknown options fail."""
    opts, positional, i = [], [], 0
    while i < len(args):
        if args[i] in takes_value or args[i] in flags or args[i].startswith("-"):
            n = 2 if args[i] in takes_value else 1
            opts += parse_options(args[i:i + n], takes_value, flags, what)
            i += n
        else:
            positional.append(args[i])
            i += 1
    return opts, positional


def matching(patterns: list[str], environ: dict[str, str]) -> dict[str, str]:
    """The variables of environ whose names match one of the glob patterns."""
    return {k: v for k, v in environ.items() if any(fnmatch.fnmatchcase(k, p) for p in patterns)}


def read_script(args: list[str]) -> str:
    return Path(args[0]).read_text() if args else sys.stdin.read()


def iso(text: str) -> str:
    return "" if text in ("N/A", "", "Unknown") else text


def epoch(text: str) -> int:
    return int(datetime.datetime.fromisoformat(text).timestamp()) if iso(text) else 0


def ctime(text: str) -> str:
    return datetime.datetime.fromisoformat(text).strftime("%a %b %d %H:%M:%S %Y") if iso(text) else ""


def limit_seconds(text: str) -> int:
    """SLURM's %l / %M / %L (D-HH:MM:SS, HH:MM:SS, MM:SS) in seconds; 0 if none."""
    if text in ("UNLIMITED", "NOT_SET", "INVALID", "N/A", ""):
        return 0
    days, _, rest = text.rpartition("-")
    return (int(days) * 86400 if days else 0) + hms_seconds(rest)


def hms(total: int) -> str:
    return f"{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"


# --- PBS Pro and Torque ------------------------------------------------------------

PBS_TAKES = {"-N", "-q", "-A", "-l", "-o", "-e", "-j", "-r", "-W", "-m", "-M", "-S", "-v"}
PBS_FLAGS = {"-V", "-h"}


# What qsub copies into every job as PBS_O_NAME (POSIX qsub; PBS Pro and Torque add the host and workdir).
PBS_O = ("HOME", "LANG", "LOGNAME", "PATH", "MAIL", "SHELL", "TZ")


def pbs_env(opts: list[tuple[str, str]], job_id: str) -> dict[str, str]:
    """A PBS job's variables: PBS_O_* copies, the whole submitter environment with -V, the -v list."""
    env = {f"PBS_O_{k}": os.environ[k] for k in PBS_O if k in os.environ}
    env.update(PBS_O_WORKDIR=os.getcwd(), PBS_O_HOST=os.uname().nodename, PBS_JOBID=job_id)
    if any(opt == "-V" for opt, _ in opts):
        env.update(os.environ)
    for opt, value in opts:
        if opt == "-v":
            for item in value.split(","):
                key, sep, val = item.partition("=")
                if sep or key in os.environ:
                    env[key] = val if sep else os.environ[key]
    return env


def pbs_qsub(flavour: str, args: list[str]) -> None:
    given, files = command_line(args, PBS_TAKES, PBS_FLAGS, "qsub")
    script = read_script(files)
    res = dict(name="", queue="", time_s=0, cpus=0, mem_mb=0)
    output = ""
    opts = parse_options(directive_args(script, "#PBS"), PBS_TAKES, PBS_FLAGS, "qsub") + given
    for opt, value in opts:
        if opt == "-N":
            res["name"] = value
        elif opt == "-q":
            res["queue"] = value
        elif opt == "-o":
            output = value
        elif opt == "-l":
            for item in value.split(","):
                key, _, val = item.partition("=")
                if key == "walltime":
                    res["time_s"] = hms_seconds(val)
                elif key == "mem":
                    res["mem_mb"] = mem_mb(val)
                elif key in ("select", "nodes"):   # select=1:ncpus=4:mem=1gb / nodes=1:ppn=4
                    for part in val.split(":")[1:]:
                        k, _, v = part.partition("=")
                        if k in ("ncpus", "ppn"):
                            res["cpus"] = int(v)
                        elif k == "mem":
                            res["mem_mb"] = mem_mb(v)
    job_id = f"{new_id(flavour)}.{SERVER}"
    # MoM runs the job in the user's login shell on the node.
    sbatch(script, job_id, flavour, output=output or "/dev/null", env=pbs_env(opts, job_id), login=True, **res)
    print(job_id)


def pbs_row(job_id: str, row: dict, finished: str) -> dict:
    """A job as PBS sees it: state letter, exit status, host, times (shared by both formats)."""
    slurm = row["state"]
    letters = {"PENDING": "Q", "RUNNING": "R", "COMPLETING": "E", "SUSPENDED": "S", "CONFIGURING": "Q"}
    if slurm == "PENDING" and row["reason"] in ("JobHeldUser", "JobHeldAdmin"):
        state = "H"
    else:
        state = letters.get(slurm, finished)
    exits = {"COMPLETED": 0, "CANCELLED": 271, "FAILED": 1, "NODE_FAIL": 1}
    return {"state": state, "exit": exits.get(slurm), "node": row["node"],
            "reason": "" if row["reason"] == "None" else row["reason"],
            "limit": limit_seconds(row["limit"]), "used": limit_seconds(row["used"]), "start": row["start"]}


def pbs_comment(r: dict) -> str:
    """The scheduler's comment: "Can Never Run: ..." / "Not Running: ..." while queued."""
    if r["state"] == "R":
        return "Job run"
    if r["state"] in ("Q", "H") and r["reason"]:
        return f"{'Can Never Run' if r['reason'] in NEVER_RUNS else 'Not Running'}: {r['reason']}"
    return r["reason"]


def pbs_qstat(flavour: str, args: list[str]) -> None:
    ids = [a for a in args if not a.startswith("-")]
    opts = [a for a in args if a.startswith("-")]
    want = ["-f", "-F", "-x"] if flavour == "pbs" else ["-x"]
    if flavour == "pbs":
        if "-F" in args:
            fmt = args[args.index("-F") + 1]
            ids.remove(fmt)
            if fmt != "json":
                die(f"qstat: unsupported format {fmt}", 2)
    if sorted(opts) != sorted(want):
        die(f"qstat: this fake supports only qstat {' '.join(want)} JOBID...", 2)
    known, unknown = status_of(ids)
    if flavour == "pbs":
        jobs = {}
        for job_id, row in known.items():
            r = pbs_row(job_id, row, "F")
            timeouts = {"TIMEOUT": -29, "OUT_OF_MEMORY": -27}
            job = {"Job_Name": "fake", "job_state": r["state"], "queue": "workq", "server": SERVER,
                   "Resource_List": {"walltime": hms(r["limit"])} if r["limit"] else {},
                   "comment": pbs_comment(r)}
            if r["node"]:
                job["exec_host"] = f"{r['node']}/0"
                job["exec_vnode"] = f"({r['node']}:ncpus=1)"
                job["stime"] = ctime(r["start"])
                job["resources_used"] = {"walltime": hms(r["used"])}
            if r["state"] == "F":
                job["Exit_status"] = timeouts.get(row["state"], r["exit"] if r["exit"] is not None else 1)
            jobs[job_id] = job
        if jobs or not unknown:
            print(json.dumps({"timestamp": int(time.time()), "pbs_version": "2022.1.0", "pbs_server": SERVER,
                              "Jobs": jobs}, indent=4))
        for job_id in unknown:
            print(f"qstat: Unknown Job Id {job_id}", file=sys.stderr)
    else:
        parts = []
        for job_id, row in known.items():
            r = pbs_row(job_id, row, "C")
            fields = [("Job_Id", job_id), ("Job_Name", "fake"), ("job_state", r["state"]), ("queue", "batch"),
                      ("server", SERVER)]
            if r["node"]:
                fields += [("exec_host", f"{r['node']}/0"), ("start_time", str(epoch(r["start"])))]
            if r["state"] == "C":
                codes = {"TIMEOUT": -11, "OUT_OF_MEMORY": -10}
                fields.append(("exit_status", str(codes.get(row["state"], r["exit"] if r["exit"] is not None else 1))))
            xml = "".join(f"<{k}>{v}</{k}>" for k, v in fields)
            if r["limit"]:
                xml += f"<Resource_List><walltime>{hms(r['limit'])}</walltime></Resource_List>"
                if r["state"] == "R":
                    xml += f"<Walltime><Remaining>{max(0, r['limit'] - r['used'])}</Remaining></Walltime>"
            parts.append(f"<Job>{xml}</Job>")
        if parts:
            print(f"<Data>{''.join(parts)}</Data>")
        for job_id in unknown:
            print(f"qstat: Unknown Job Id Error {job_id}", file=sys.stderr)
    sys.exit(153 if unknown else 0)


def pbs_qdel(flavour: str, args: list[str]) -> None:
    bad = [a for a in args if not scancel(a)]
    for job_id in bad:
        print(f"qdel: Unknown Job Id {job_id}", file=sys.stderr)
    sys.exit(153 if bad else 0)


# --- LSF ------------------------------------------------------------------------------

LSF_TAKES = {"-J", "-q", "-P", "-W", "-n", "-R", "-M", "-gpu", "-o", "-e", "-env", "-L"}
LSF_FLAGS = {"-rn", "-r"}


def lsf_env(spec: str) -> dict[str, str]:
    """The submission variables bsub -env SPEC propagates (bsub -env: "none", "all, ~VAR, VAR=val",
    or "VAR[=val], ..."); without -env, "all"."""
    items = [i.strip() for i in spec.split(",") if i.strip()]
    if items == ["none"]:
        return {}
    env = dict(os.environ) if items[:1] == ["all"] else {}
    for item in items[1:] if items[:1] == ["all"] else items:
        key, sep, val = item.partition("=")
        if key.startswith("~"):
            env.pop(key[1:], None)
        elif sep or key in os.environ:
            env[key] = val if sep else os.environ[key]
    return env


def lsf_bsub(flavour: str, args: list[str]) -> None:
    given, extra = command_line(args, LSF_TAKES, LSF_FLAGS, "bsub")   # the script comes on stdin
    if extra:
        die(f"bsub: this fake takes the job script on stdin, not {extra[0]!r}", 2)
    script = sys.stdin.read()
    res = dict(name="", queue="", time_s=0, cpus=0, mem_mb=0)
    output, env_spec, login = "", "all", False
    for opt, value in parse_options(directive_args(script, "#BSUB"), LSF_TAKES, LSF_FLAGS, "bsub") + given:
        if opt == "-env":
            env_spec = value
        elif opt == "-L":   # a login shell initialises the job's environment on the execution host
            login = True
        elif opt == "-J":
            res["name"] = value
        elif opt == "-q":
            res["queue"] = value
        elif opt == "-W":
            h, _, m = value.rpartition(":")
            res["time_s"] = (int(h or 0) * 60 + int(m)) * 60
        elif opt == "-n":
            res["cpus"] = int(value)
        elif opt == "-M":
            res["mem_mb"] = mem_mb(value)
        elif opt == "-o":
            output = value
    job_id = str(new_id(flavour))
    sbatch(script, job_id, flavour, output=output.replace("%J", job_id) or "/dev/null",
           env={**lsf_env(env_spec), "LSB_JOBID": job_id}, login=login, **res)
    queue = res["queue"] or "normal"
    print(f"Job <{job_id}> is submitted to {'' if res['queue'] else 'default '}queue <{queue}>.")


def lsf_bjobs(flavour: str, args: list[str]) -> None:
    if len(args) < 3 or args[:2] != ["-json", "-o"]:
        die("bjobs: this fake supports only bjobs -json -o 'FIELDS' JOBID...", 2)
    fields, ids = args[2].split(), args[3:]
    known, unknown = status_of(ids)
    stat = {"PENDING": "PEND", "RUNNING": "RUN", "COMPLETING": "RUN", "SUSPENDED": "USUSP", "COMPLETED": "DONE"}
    reasons = {"CANCELLED": "TERM_OWNER: job killed by owner",
               "TIMEOUT": "TERM_RUNLIMIT: job killed after reaching LSF run time limit",
               "OUT_OF_MEMORY": "TERM_MEMLIMIT: job killed after reaching LSF memory usage limit"}
    records = []
    for job_id in ids:
        row = known.get(job_id)
        if row is None:
            records.append({"JOBID": job_id, "ERROR": f"Job <{job_id}> is not found"})
            continue
        held = row["state"] == "PENDING" and row["reason"].startswith("JobHeld")
        start = iso(row["start"])
        values = {"jobid": job_id, "stat": "PSUSP" if held else stat.get(row["state"], "EXIT"),
                  "exec_host": row["node"], "pend_reason": "" if row["reason"] == "None" else row["reason"] + ";",
                  "exit_reason": reasons.get(row["state"], ""),
                  "start_time": datetime.datetime.fromisoformat(start).strftime("%b %d %H:%M") if start else "",
                  "time_left": ""}
        if row["state"] == "RUNNING" and limit_seconds(row["left"]):
            left = limit_seconds(row["left"])
            values["time_left"] = f"{left // 3600}:{left % 3600 // 60:02d} L"
        records.append({f.upper(): values.get(f, "") for f in fields})
    print(json.dumps({"COMMAND": "bjobs", "JOBS": len(records), "RECORDS": records}, indent=2))
    sys.exit(255 if unknown else 0)


def lsf_bkill(flavour: str, args: list[str]) -> None:
    for job_id in args:
        if scancel(job_id):
            print(f"Job <{job_id}> is being terminated")
        else:
            die(f"Job <{job_id}>: No matching job found", 255)


# --- HTCondor -----------------------------------------------------------------------

def condor_submit(flavour: str, args: list[str]) -> None:
    if args != ["-terse", "-"]:
        die("condor_submit: this fake supports only condor_submit -terse -", 2)
    desc = {}
    queued = False
    for line in sys.stdin.read().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line == "queue":
            queued = True
            continue
        key, sep, value = line.partition("=")
        if not sep:
            die(f"ERROR: on line '{line}': not a submit command", 1)
        # $ENV(NAME): condor_submit's own environment, at submit time.
        desc[key.strip().lower()] = re.sub(r"\$ENV\((\w+)\)", lambda m: os.environ.get(m.group(1), ""),
                                           value.strip())
    if not queued or "executable" not in desc:
        die("ERROR: no executable or no queue statement", 1)
    cluster = new_id(flavour)
    job_id = f"{cluster}.0"
    # getenv: false (the default) copies nothing of condor_submit's environment, true all of it,
    # a list the variables it names (HTCondor 10).  No login environment either way.
    getenv = desc.get("getenv", "false").lower()
    env = dict(os.environ) if getenv == "true" else {} if getenv == "false" else \
        matching([p.strip() for p in getenv.split(",")], dict(os.environ))
    m = re.fullmatch(r'"(.*)"', desc.get("environment", ""))
    for item in shlex.split(m.group(1)) if m else []:
        k, _, v = item.partition("=")
        env[k] = v.replace("$(ClusterId)", str(cluster)).replace("$(ProcId)", "0")
    limit = re.search(r"> (\d+)", desc.get("periodic_remove", ""))
    sbatch(Path(desc["executable"]).read_text(), job_id, flavour, name=desc.get("batch_name", ""),
           time_s=int(limit.group(1)) if limit else 0, cpus=int(desc.get("request_cpus", 0)),
           mem_mb=int(desc.get("request_memory", 0)), env=env, login=False)
    print(f"{job_id} - {job_id}")


def condor_ad(job_id: str, row: dict, attributes: list[str]) -> dict:
    cluster, proc = job_id.split(".")
    code = {"PENDING": 1, "RUNNING": 2, "COMPLETING": 2, "SUSPENDED": 7, "CANCELLED": 3, "TIMEOUT": 3}
    state = 5 if row["state"] == "PENDING" and row["reason"].startswith("JobHeld") else code.get(row["state"], 4)
    ad = {"ClusterId": int(cluster), "ProcId": int(proc), "JobStatus": state,
          "JobCurrentStartDate": epoch(row["start"]) if row["node"] else 0}
    if row["node"]:
        ad["RemoteHost" if state == 2 else "LastRemoteHost"] = f"slot1@{row['node']}"
    if state == 5:
        ad["HoldReason"] = "via condor_hold (by user root)"
    if row["state"] == "CANCELLED":
        ad["RemoveReason"] = "via condor_rm (by user root)"
    if row["state"] == "TIMEOUT":
        ad["RemoveReason"] = "The job attribute PeriodicRemove expression 'JobStatus == 2 && ...' evaluated to TRUE"
    if state == 4:
        ad["ExitCode"] = 0 if row["state"] == "COMPLETED" else 1
    return {k: v for k, v in ad.items() if k in attributes}


def condor_query(flavour: str, args: list[str], history: bool) -> None:
    what = "condor_history" if history else "condor_q"
    words = parse_options([a for a in args if "." not in a or a.startswith("-")],
                          {"-attributes", "-limit"}, {"-json"}, what)
    opts = dict(words)
    ids = [a for a in args if re.fullmatch(r"\d+\.\d+", a)]
    if "-json" not in opts or "-attributes" not in opts:
        die(f"{what}: this fake supports only {what} -json -attributes A,B [-limit N] ID...", 2)
    attributes = opts["-attributes"].split(",")
    known, _ = status_of(ids)
    done = {"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED"}
    ads = [condor_ad(i, row, attributes) for i, row in known.items() if (row["state"] in done) == history]
    if history and "-limit" in opts:
        ads = ads[:int(opts["-limit"])]
    if ads:   # nothing at all when no job matches, as the real commands
        print("[\n" + ",\n".join(json.dumps(ad, indent=2) for ad in ads) + "\n]")


def condor_rm(flavour: str, args: list[str]) -> None:
    for job_id in args:
        if not scancel(job_id):
            die(f"Couldn't find/remove all jobs matching constraint (ClusterId == {job_id.split('.')[0]})", 1)
        print(f"Job {job_id} marked for removal")


# --- Flux ---------------------------------------------------------------------------------

FLUX_TAKES = {"--job-name", "-q", "-t", "--output", "--setattr", "-N", "-n", "-c", "-g", "--env", "--env-remove"}


def f58(n: int) -> str:
    out = ""
    while n:
        n, r = divmod(n, 58)
        out = F58[r] + out
    utf8 = any("UTF-8" in os.environ.get(v, "").upper() for v in ("LC_ALL", "LC_CTYPE", "LANG")) \
        and os.environ.get("LC_ALL", "") not in ("C", "POSIX")
    return ("ƒ" if utf8 else "f") + out


def flux_decimal(job_id: str) -> str:
    if job_id.isdigit():
        return job_id
    n = 0
    for ch in job_id[1:]:
        n = n * 58 + F58.index(ch)
    return str(n)


def flux_words(args: list[str]) -> list[str]:
    """Option words with their values split off: --opt=value, -c4."""
    words = []
    for w in args:
        m = re.fullmatch(r"(--[\w-]+)=(.*)|(-[a-zA-Z])(\S+)", w)
        words += [m.group(1) or m.group(3), m.group(2) if m.group(1) else m.group(4)] if m else [w]
    return words


def flux_env(rules: list[str]) -> dict[str, str]:
    """The job's environment: flux's ENV RULES applied in order to the submitter's whole
    environment (the implicit first rule): -PATTERN removes, VAR=VAL sets ($var from the
    environment built so far, then the process's), any other rule copies the submitter's
    variables matching it.  Glob patterns only."""
    env = dict(os.environ)
    for rule in rules:
        if rule.startswith(("/", "-/", "^")):
            die(f"flux batch: this fake supports glob env rules only, not {rule!r}", 2)
        if rule.startswith("-"):
            for key in matching([rule[1:]], env):
                del env[key]
        elif "=" in rule:
            key, _, value = rule.partition("=")
            try:
                env[key] = Template(value).substitute({**os.environ, **env})
            except (KeyError, ValueError) as e:
                die(f"flux batch: --env={rule}: {e}", 1)
        else:
            env.update(matching([rule], dict(os.environ)))
    return env


def flux(flavour: str, args: list[str]) -> None:
    sub, rest = (args[0], args[1:]) if args else ("", [])
    if sub == "batch":
        given, extra = command_line(flux_words(rest), FLUX_TAKES, set(), "flux batch")
        if extra:
            die(f"flux batch: this fake takes the job script on stdin, not {extra[0]!r}", 2)
        script = sys.stdin.read()
        res = dict(name="", queue="", time_s=0, cpus=0, mem_mb=0)
        output, rules = "", []
        for opt, value in parse_options(flux_words(directive_args(script, "#flux:")), FLUX_TAKES, set(),
                                        "flux batch") + given:
            if opt in ("--env", "--env-remove"):
                rules.append(value if opt == "--env" else "-" + value)
            elif opt == "--job-name":
                res["name"] = value
            elif opt == "-q":
                res["queue"] = value
            elif opt == "-t":
                res["time_s"] = int(value.rstrip("s"))
            elif opt == "-c":
                res["cpus"] = int(value)
            elif opt == "--output":
                output = value
        n = FLUX_ID_BASE + new_id(flavour)
        job_id = str(n)
        sbatch(script, job_id, flavour, output=output.replace("{{id.dec}}", job_id).replace("{{id}}", f58(n))
               or "/dev/null", env={**flux_env(rules), "FLUX_JOB_ID": job_id}, login=False, **res)
        print(f58(n))
    elif sub == "jobs":
        if len(rest) < 3 or rest[:2] != ["-n", "-o"]:
            die("flux-jobs: this fake supports only flux jobs -n -o FORMAT ID...", 2)
        fmt, ids = rest[2], [flux_decimal(i) for i in rest[3:]]
        known, unknown = status_of(ids)
        for job_id, row in known.items():
            print(flux_line(fmt, job_id, row))
            if row["state"] == "PENDING" and row["reason"] in NEVER_RUNS:
                scancel(job_id)   # Flux denies such a job: it is inactive, nothing of it is left
        for job_id in unknown:
            print(f"flux-jobs: ERROR: {job_id}: unknown job id", file=sys.stderr)
        sys.exit(1 if unknown else 0)
    elif sub == "cancel":
        for job_id in rest:
            if not scancel(flux_decimal(job_id)):
                die(f"flux-cancel: {job_id}: unknown job id", 1)
    else:
        die(f"flux: unknown command {sub!r} (this fake knows batch, jobs, cancel)", 2)


def flux_line(fmt: str, job_id: str, row: dict) -> str:
    states = {"PENDING": "SCHED", "CONFIGURING": "SCHED", "RUNNING": "RUN", "COMPLETING": "CLEANUP"}
    results = {"COMPLETED": "COMPLETED", "CANCELLED": "CANCELED", "TIMEOUT": "TIMEOUT"}
    state = states.get(row["state"], "INACTIVE")
    held = row["state"] == "PENDING" and row["reason"].startswith("JobHeld")
    never = row["state"] == "PENDING" and row["reason"] in NEVER_RUNS   # denied at once: a fatal alloc exception
    state = "INACTIVE" if never else state
    result = ("FAILED" if never else results.get(row["state"], "FAILED")) if state == "INACTIVE" else ""
    values = {"id.dec": job_id, "state": state, "result": result,
              "urgency": "0" if held else "16", "nodelist": row["node"],
              "t_run": str(float(epoch(row["start"]))) if row["node"] else "0.0",
              "t_remaining": str(float(limit_seconds(row["left"]))) if state == "RUN" else "0.0",
              "exception.note": f"alloc: unsatisfiable request ({row['reason']})" if never else ""}
    return re.sub(r"\{([\w.]+)\}", lambda m: values[m.group(1)], fmt)


# --- dispatch ---------------------------------------------------------------------------

COMMANDS = {
    ("pbs", "qsub"): pbs_qsub, ("pbs", "qstat"): pbs_qstat, ("pbs", "qdel"): pbs_qdel,
    ("torque", "qsub"): pbs_qsub, ("torque", "qstat"): pbs_qstat, ("torque", "qdel"): pbs_qdel,
    ("lsf", "bsub"): lsf_bsub, ("lsf", "bjobs"): lsf_bjobs, ("lsf", "bkill"): lsf_bkill,
    ("htcondor", "condor_submit"): condor_submit, ("htcondor", "condor_rm"): condor_rm,
    ("htcondor", "condor_q"): lambda f, a: condor_query(f, a, history=False),
    ("htcondor", "condor_history"): lambda f, a: condor_query(f, a, history=True),
    ("flux", "flux"): flux,
}


def main() -> None:
    link = Path(sys.argv[0])
    flavour, command = link.parent.name, link.name
    handler = COMMANDS.get((flavour, command))
    if handler is None:
        die(f"fake scheduler: no {command} for {flavour}", 2)
    handler(flavour, sys.argv[1:])


if __name__ == "__main__":
    main()
