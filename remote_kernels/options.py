"""A compute-node kernel's settings: traitlets, set from kernel.json's provisioner config.

The provisioner inherits these traits (so ``c.RemoteKernelProvisioner.time = ...``
in a Jupyter config file works too); argv mode builds a ``KernelOptions`` from the
same kernel.json stanza.  Per-launch overrides: ``RK_<OPTION>`` environment variables
(``RK_PARTITION``, ``RK_TIME``...) of the starting process win over the spec's values.
"""

from __future__ import annotations

import os
import re
from typing import Mapping

from traitlets import Bool, Dict, Float, Int, List, TraitError, Unicode, validate
from traitlets.config import LoggingConfigurable

from .choices import declaration
from .schedulers import Resources

TIME_RE = re.compile(r"^(?:(\d+)-)?(?:(\d+):)?(\d+)(?::(\d+))?$")
MEM_RE = re.compile(r"^\d+[KMGT]?$", re.IGNORECASE)
ENV_PREFIX = "RK_"
# Options a launch may override from the environment (RK_ + the upper-case name).
DISPATCH = ("auto", "batch", "interactive")
ALLOCATION = ("per-kernel", "shared")
TRANSPORT = ("ssh", "direct")
CHOICES = {"dispatch": DISPATCH, "allocation": ALLOCATION, "transport": TRANSPORT}   # options with a fixed set of values
ENV_OPTIONS = ("partition", "account", "qos", "time", "cpus", "mem", "gpus", "constraint", "reservation")


class KernelOptions(LoggingConfigurable):
    """Where and how a remote kernel runs."""

    scheduler = Unicode("slurm", help="Batch scheduler that runs the kernel's job.").tag(config=True)
    partition = Unicode("", help="Partition (queue); empty: the scheduler's default.").tag(config=True)
    account = Unicode("", help="Account to charge.").tag(config=True)
    qos = Unicode("", help="Quality of service.").tag(config=True)
    time = Unicode("", help="Wall-time limit, [D-]HH:MM:SS or minutes; empty: partition default.").tag(config=True)
    cpus = Int(0, help="CPUs for the kernel; 0: the scheduler's default.").tag(config=True)
    mem = Unicode("", help="Memory, e.g. 4G or 512M; empty: the scheduler's default.").tag(config=True)
    gpus = Int(0, help="GPUs for the kernel.").tag(config=True)
    constraint = Unicode("", help="Node feature constraint.").tag(config=True)
    reservation = Unicode("", help="Reservation to run in.").tag(config=True)
    directives = List(Unicode(), help="Extra scheduler directives, e.g. '--exclusive'.").tag(config=True)
    python = Unicode("python3", help="Python on the compute node (needs ipykernel).").tag(config=True)
    setup = List(Unicode(), help="Shell lines run in the job before the kernel, e.g. 'module load python'.").tag(config=True)
    env = Dict(value_trait=Unicode(), help="Environment variables for the kernel.").tag(config=True)
    walltime_warning = Int(300, help=(
        "Seconds before the job's wall-time at which the user is warned: a JupyterLab notification, "
        "and, for SLURM batch jobs, a line in the notebook through SLURM's pre-end signal "
        "(--signal=B:USR1@N; SLURM may send it up to 60 s early). 0: no warning.")).tag(config=True)
    queue_timeout = Float(0, help="Give up (and cancel the job) after this many seconds queued; 0: wait forever.").tag(config=True)
    launch_timeout = Float(120, help="Seconds from job start until the launcher must answer.").tag(config=True)
    grace = Float(300, help="Dead-man switch: the job ends when the login side is silent this long (s).").tag(config=True)
    contact_timeout = Float(60, help=(
        "Seconds a started job waits for the login side's first word before it ends (its server died "
        "while it was queued); grace if shorter.")).tag(config=True)
    command_timeout = Float(30.0, help="Seconds a scheduler command may take before it counts as failed.").tag(config=True)
    poll_interval = Float(2.0, help=(
        "Seconds between a server's scheduler status queries while a link is restored or a job ends.")).tag(config=True)
    queue_poll_max = Float(30.0, help=(
        "Longest seconds between a server's status queries while a job waits in the queue "
        "(0.2 s at first, then a quarter of the time waited).")).tag(config=True)
    login_host = Unicode("", help=(
        "For a Jupyter server off the cluster (a laptop): run scheduler commands over SSH on this "
        "login host and reach compute nodes through it. Nothing of remote-kernels is needed there.")).tag(config=True)
    interactive_ssh = Bool(True, help=(
        "Keep a pty session open on each node connection: sshd disables Nagle's algorithm only "
        "for connections with a pty, which makes forwarded round trips several times faster.")).tag(config=True)
    dispatch = Unicode("auto", help=(
        "How the job is started: 'batch' (sbatch and its kind), 'interactive' (the scheduler's "
        "allocation path, SLURM's srun: scheduled at once, no wait for the next batch scheduling "
        "pass) or 'auto' (interactive where the scheduler has it, the server runs on the cluster "
        "and the spec sets no directives; batch otherwise).")).tag(config=True)
    runtime_base = Unicode("/tmp", help="Directory on the node for the kernel's private socket dir.").tag(config=True)
    allocation = Unicode("per-kernel", help=(
        "'per-kernel': each kernel is a job of its own. 'shared': a kernel starts inside a live "
        "allocation of the same user and spec (same resources) when there is one, sharing its "
        "CPUs and memory; the allocation ends after its last kernel (and linger).")).tag(config=True)
    linger = Float(0, help=(
        "Shared allocations: seconds an allocation whose last kernel ended waits for a next "
        "kernel before it ends.")).tag(config=True)
    max_kernels = Int(0, help="Shared allocations: most kernels in one allocation; 0: no limit.").tag(config=True)
    transport = Unicode("ssh", help=(
        "How the login side reaches the kernel: 'ssh' (the launcher's control channel and the kernel's "
        "channels through one SSH connection per node) or 'direct' (CurveZMQ over the cluster network: "
        "no SSH to the nodes at all; keys reach the job through a 0700 directory in your home, which "
        "the nodes must share).")).tag(config=True)
    persist = Float(0, help=(
        "Seconds a kernel outlives its Jupyter server (killed, crashed, or stopped while the kernel "
        "runs), waiting to be re-adopted by the user's next server; 0: it ends after grace as usual.")).tag(config=True)
    user_choices = Dict(help=(
        "Resources users may choose per kernel in the launch dialog (JupyterLab, Notebook 7), and their bounds: "
        '{"partition": {"choices": [...]}, "time"|"cpus"|"mem"|"gpus": {"min": LOW, "max": HIGH}}; '
        "a choice is checked on the server and applies to that notebook's kernel only.")).tag(config=True)

    def __init__(self, *, environ: Mapping[str, str] | None = None, **kwargs):
        """Options from kwargs (the spec's config), then RK_* overrides from ``environ``
        (default ``os.environ``; pass ``{}`` for none)."""
        unknown = sorted(k for k in kwargs if k not in ("parent", "config") and not self.has_trait(k))
        if unknown:
            raise TraitError(f"unknown option {unknown[0]!r} in the kernel's config; "
                             f"known options: {', '.join(option_names())}")
        super().__init__(**kwargs)
        self.from_environment: dict[str, str] = {}   # option -> the variable that set it
        self._apply_environment(os.environ if environ is None else environ)

    def _apply_environment(self, environ: Mapping[str, str]) -> None:
        for name in ENV_OPTIONS:
            var = ENV_PREFIX + name.upper()
            text = environ.get(var, "")
            if not text:
                continue
            try:
                setattr(self, name, int(text) if isinstance(self.traits()[name], Int) else text)
            except ValueError:
                raise TraitError(f"environment variable {var}={text!r}: {name} must be a whole number") from None
            except TraitError as e:
                raise TraitError(f"environment variable {var}: {e}") from None
            self.from_environment[name] = var

    @validate("time")
    def _valid_time(self, proposal):
        value = proposal["value"]
        if value and not TIME_RE.match(value):
            raise TraitError(f"time {value!r} is not a wall-time; use [D-]HH:MM:SS or minutes")
        return value

    @validate("mem")
    def _valid_mem(self, proposal):
        value = proposal["value"]
        if value and not MEM_RE.match(value):
            raise TraitError(f"mem {value!r} is not a size; use a number with K, M, G or T, e.g. 4G")
        return value

    @validate("user_choices")
    def _valid_user_choices(self, proposal):
        try:
            return declaration(proposal["value"])
        except ValueError as e:
            raise TraitError(str(e)) from None

    @validate("dispatch", "allocation", "transport")
    def _valid_choice(self, proposal):
        name, value = proposal["trait"].name, proposal["value"]
        if value not in CHOICES[name]:
            raise TraitError(f"{name} {value!r} is not one of {', '.join(CHOICES[name])}")
        return value

    @validate("linger", "persist")
    def _valid_linger(self, proposal):
        name, value = proposal["trait"].name, proposal["value"]
        if value < 0:
            meaning = "the allocation ends with its last kernel" if name == "linger" else "off"
            raise TraitError(f"{name} {value:g} is negative; use seconds (0: {meaning})")
        return value

    @property
    def direct(self) -> bool:
        """True for option ``transport: direct``."""
        return self.transport == "direct"

    def unsupported(self) -> str:
        """One line naming a combination of options remote-kernels cannot run ("" if none)."""
        if not self.direct:
            return ""
        for name, value, meaning in (("allocation", self.shared, "shared"), ("persist", self.persist, "on"),
                                     ("login_host", self.login_host, "set")):
            if value:
                return (f"transport 'direct' does not support {name} {meaning} yet; use transport 'ssh' "
                        f"or drop {name}")
        return ""

    @property
    def shared(self) -> bool:
        """True for a shared allocation (option ``allocation``)."""
        return self.allocation == "shared"

    @validate("cpus", "gpus", "max_kernels")
    def _valid_count(self, proposal):
        value = proposal["value"]
        if value < 0:
            raise TraitError(f"{proposal['trait'].name} {value} is negative; use a whole number (0: the scheduler's default)")
        return value

    @validate("grace", "queue_timeout", "contact_timeout", "poll_interval", "queue_poll_max")
    def _valid_seconds(self, proposal):
        name, value = proposal["trait"].name, proposal["value"]
        if value < 0 or (value == 0 and name != "queue_timeout"):
            allowed = "a positive number of seconds" + (", or 0 to wait forever" if name == "queue_timeout" else "")
            raise TraitError(f"{name} {value:g} is out of range; use {allowed}")
        return value

    def resources(self, job_name: str, output: str) -> Resources:
        return Resources(partition=self.partition, account=self.account, qos=self.qos, time=self.time,
                         cpus=self.cpus, mem=self.mem, gpus=self.gpus, constraint=self.constraint,
                         reservation=self.reservation, job_name=job_name, output=output,
                         warn_before=max(0, self.walltime_warning),
                         directives=list(self.directives))


def option_names() -> list[str]:
    """The names users may set in kernel.json's provisioner config."""
    return sorted(KernelOptions.class_own_traits(config=True))
