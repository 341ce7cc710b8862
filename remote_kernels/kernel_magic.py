"""``%remote_kernel``: an IPython extension loaded into every compute-node kernel.

It runs inside the kernel on the compute node, with the user's Python: stdlib and IPython only,
Python 3.8+.  It is not imported from an installed package there: ``script.launcher_source()``
hands this file's text to the launcher (``launcher.KERNEL_MAGIC``), which writes it into its
private directory, and the kernel's boot file loads it (``load_ipython_extension``) once
ipykernel is set up.  Nothing is installed into or changed in the user's environment.

``%remote_kernel`` prints the job (scheduler, id), the node, the resources and the time left:

    remote kernel: slurm job 42 on c1
      partition  debug
      cpus       2
      memory     1G
      time limit 1:00:00
      time left  0:58:12

What the scheduler puts in the job's environment gives the job, node and resources; SLURM's
``squeue`` (where the node has it) gives the time limit and time left.

The extension also shows the wall-time warning: on SIGUSR1 (the launcher passes on the
scheduler's pre-end signal, launcher.WALLTIME_SIGNAL) a line goes to the notebook's output,
under the cell that runs, or else the one run last (frontends show output only under a cell);
with no cell run yet, or when the launcher's flag file (WALLTIME_FLAG beside this file) says the
signal came before this kernel listened, under the next cell.
"""

import os
import signal
import socket
import subprocess
import threading

# Per scheduler: the variables naming the job and its resources (the first one set wins).
SCHEDULER_ENV = (
    ("slurm", {"job": ("SLURM_JOB_ID", "SLURM_JOBID"), "node": ("SLURMD_NODENAME",),
               "partition": ("SLURM_JOB_PARTITION",), "cpus": ("SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE"),
               "memory": ("SLURM_MEM_PER_NODE", "SLURM_MEM_PER_CPU"), "gpus": ("SLURM_GPUS", "SLURM_JOB_GPUS"),
               "account": ("SLURM_JOB_ACCOUNT",), "qos": ("SLURM_JOB_QOS",)}),
    ("pbs", {"job": ("PBS_JOBID",), "partition": ("PBS_QUEUE",), "cpus": ("NCPUS", "PBS_NUM_PPN")}),
    ("lsf", {"job": ("LSB_JOBID",), "partition": ("LSB_QUEUE",), "cpus": ("LSB_DJOB_NUMPROC",)}),
    ("sge", {"job": ("JOB_ID",), "partition": ("QUEUE",), "cpus": ("NSLOTS",)}),
    ("flux", {"job": ("FLUX_JOB_ID",)}),
    ("htcondor", {"job": ("CONDOR_JOB_ID",)}),
)
WALLTIME_FLAG = "walltime-near"   # launcher.WALLTIME_FLAG
RESOURCE_ORDER = ("partition", "account", "qos", "cpus", "memory", "gpus", "time limit", "time left")
SQUEUE_FIELDS = ("time left", "time limit")
QUERY_TIMEOUT = 10


def _first(env, names):
    for name in names:
        if env.get(name):
            return env[name]
    return ""


def _memory(value):
    """SLURM gives MB as a bare number."""
    return "%gG" % (int(value) / 1024) if value.isdigit() and int(value) >= 1024 else (
        value + "M" if value.isdigit() else value)


def job_facts(env=None, run=subprocess.run):
    """{"scheduler", "job", "node", and each resource known} of the job this kernel runs in.

    ``env`` defaults to os.environ; ``run`` (subprocess.run's signature) asks the scheduler for
    the time left.  Never raises: what cannot be learnt is left out."""
    env = os.environ if env is None else env
    facts = {"node": socket.gethostname()}
    for scheduler, names in SCHEDULER_ENV:
        job = _first(env, names["job"])
        if job:
            facts.update(scheduler=scheduler, job=job)
            for key, variables in names.items():
                value = _first(env, variables)
                if value and key != "job":
                    facts[key] = _memory(value) if key == "memory" else value
            break
    if facts.get("scheduler") == "slurm":
        try:
            out = run(["squeue", "-h", "-j", facts["job"], "-o", "%L|%l"], capture_output=True, text=True,
                      timeout=QUERY_TIMEOUT)
            fields = out.stdout.strip().split("|") if out.returncode == 0 else []
            for key, value in zip(SQUEUE_FIELDS, fields):
                if value and value not in ("INVALID", "NOT_SET", "UNLIMITED"):
                    facts[key] = value
        except (OSError, subprocess.SubprocessError):
            pass
    return facts


def describe(facts):
    """The lines %remote_kernel prints."""
    if "job" not in facts:
        return "remote kernel: no batch job found in this kernel's environment (on %s)" % facts["node"]
    lines = ["remote kernel: %s job %s on %s" % (facts["scheduler"], facts["job"], facts["node"])]
    width = max(len(k) for k in RESOURCE_ORDER)
    lines += ["  %s %s" % (key.ljust(width), facts[key]) for key in RESOURCE_ORDER if facts.get(key)]
    return "\n".join(lines)


def remote_kernel(line=""):
    """Print the batch job this kernel runs in: job id, node, resources and time left."""
    print(describe(job_facts()))


def warning_text(facts):
    """The wall-time warning's line."""
    job = "%s job %s" % (facts.get("scheduler", "batch"), facts.get("job", "?"))
    left = (" (%s left)" % facts["time left"]) if facts.get("time left") else ""
    return ("remote-kernels warning: %s reaches its wall-time soon%s; save your work: the kernel ends "
            "with the job\n" % (job, left))


class WalltimeWarning:
    """Sends warning_text() as a stderr stream message under the last cell started (its
    execute_request), when the scheduler's pre-end signal arrives."""

    def __init__(self, ipython, pending=False):
        self.kernel = getattr(ipython, "kernel", None)
        self.parent = {}
        self.pending = pending   # warn under the next cell
        ipython.events.register("pre_run_cell", self.remember)

    def remember(self, *args):
        if self.kernel is not None:
            self.parent = dict(self.kernel.get_parent("shell") or {})
        if self.pending and self.parent:
            self.pending = False
            self.send(warning_text(job_facts()))

    def send(self, text):
        kernel = self.kernel
        if kernel is None or kernel.iopub_socket is None:
            return
        kernel.session.send(kernel.iopub_socket, "stream", {"name": "stderr", "text": text},
                            parent=self.parent, ident=kernel._topic("stream"))

    def on_signal(self, signum, frame):
        if self.parent:
            self.send(warning_text(job_facts()))
        else:
            self.pending = True


def load_ipython_extension(ipython):
    ipython.register_magic_function(remote_kernel, magic_kind="line", magic_name="remote_kernel")
    if threading.current_thread() is threading.main_thread():
        flagged = os.path.exists(os.path.join(os.path.dirname(os.path.abspath(__file__)), WALLTIME_FLAG))
        signal.signal(signal.SIGUSR1, WalltimeWarning(ipython, pending=flagged).on_signal)
