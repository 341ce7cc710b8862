"""The ``remote-kernels`` command (also ``jupyter remote-kernels``)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from traitlets import TraitError

from . import __version__
from .commands import CHECK_QUEUE_TIMEOUT
from .examples import shipped_examples
from .options import ALLOCATION, DISPATCH, TRANSPORT

EXAMPLES = """\
examples:
  remote-kernels install slurm-py --display-name "Python 3 (compute node)" --time 01:00:00 --mem 4G
  remote-kernels install gpu --from slurm-gpu --partition gpu --user   # from a shipped example
  remote-kernels check slurm-py          # submit, run a cell, time each phase, shut down
  RK_TIME=04:00:00 remote-kernels show slurm-py
  remote-kernels ps
  remote-kernels cancel --orphans
"""

OVERRIDES = """\
per-launch overrides: RK_PARTITION, RK_ACCOUNT, RK_QOS, RK_TIME, RK_CPUS, RK_MEM, RK_GPUS,
RK_CONSTRAINT and RK_RESERVATION in the environment of the Jupyter server (or of
`remote-kernels run`/`check`/`show`) override the spec's value of that option.
"""

# install's options that are kernel options (argparse dest == option name).
INSTALL_FIELDS = ("scheduler", "partition", "account", "qos", "time", "cpus", "mem", "gpus", "constraint",
                  "reservation", "directives", "python", "setup", "env", "grace", "queue_timeout",
                  "login_host", "dispatch", "allocation", "linger", "max_kernels", "persist", "user_choices",
                  "transport")


def _env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"--env {text!r} is not KEY=VALUE")
    return key, value


def _user_choice(text: str) -> tuple[str, dict]:
    from .choices import parse_flag
    try:
        return parse_flag(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _add_install(sub) -> None:
    p = sub.add_parser("install", help="install a compute-node kernelspec",
                       description="Install a kernelspec whose kernel runs in a batch job on a compute node.\n"
                                   "Options not given are left out (the scheduler's defaults apply) or, with\n"
                                   "--from, taken from that spec; a list option given replaces the spec's list.\n"
                                   "Bad values are refused before anything is written, and so is a request\n"
                                   "the site would never run: for SLURM, install first checks on the login side\n"
                                   "(or on --login-host) the partition, the time against its MaxTime, CPUs,\n"
                                   "memory and GPUs against its largest node, and, with slurmdbd accounting, the\n"
                                   "account, the QOS and its limits; and an absolute --python on a network\n"
                                   "filesystem.  Other schedulers are not checked.",
                       epilog=OVERRIDES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", help="kernelspec name (letters, digits, -, _, .)")
    p.add_argument("--from", dest="from_dir", metavar="EXAMPLE|DIR",
                   help=f"start from a shipped example ({', '.join(shipped_examples())}) or the kernelspec "
                        "in DIR; options given here override its values")
    p.add_argument("--scheduler", metavar="NAME", help="batch scheduler (default: slurm)")
    p.add_argument("--dispatch", choices=DISPATCH, help=(
        "how jobs start: batch (sbatch), interactive (SLURM's srun: scheduled at once, no wait for "
        "the next scheduling pass) or auto (the default: interactive where the scheduler has it and "
        "the server runs on the cluster)"))
    p.add_argument("--display-name", metavar="TEXT", help="name shown in the kernel picker (default: --from's, or 'Python 3 (NAME)')")
    res = p.add_argument_group("resources (unset: the scheduler's defaults)")
    res.add_argument("--partition", metavar="NAME", help="partition (queue)")
    res.add_argument("--account", metavar="NAME", help="account to charge")
    res.add_argument("--qos", metavar="NAME", help="quality of service")
    res.add_argument("--time", metavar="LIMIT", help="wall-time, [D-]HH:MM:SS or minutes")
    res.add_argument("--cpus", type=int, metavar="N", help="CPUs for the kernel")
    res.add_argument("--mem", metavar="SIZE", help="memory, e.g. 4G")
    res.add_argument("--gpus", type=int, metavar="N", help="GPUs for the kernel")
    res.add_argument("--constraint", metavar="EXPR", help="node features the job needs")
    res.add_argument("--reservation", metavar="NAME", help="reservation to run in")
    res.add_argument("--directive", action="append", dest="directives", metavar="TEXT",
                     help="extra scheduler directive, e.g. --directive=--exclusive (repeatable)")
    choose = p.add_argument_group(
        "resources users choose (the launch dialog of JupyterLab and Notebook 7; each choice is checked on the server "
        "against these bounds and applies to that notebook's kernel only)")
    choose.add_argument("--user-choice", action="append", type=_user_choice, dest="user_choices",
                        metavar="FIELD=MIN..MAX|partition=A,B", help=(
                            "let users choose FIELD (time, cpus, mem, gpus) between MIN and MAX, or the "
                            "partition among A,B...; the spec's own value is the dialog's default, e.g. "
                            "--user-choice time=0:10:00..4:00:00 --user-choice cpus=1..4 (repeatable)"))
    env = p.add_argument_group("environment on the node")
    env.add_argument("--python", metavar="PATH", help=f"Python with ipykernel on the compute nodes "
                                      f"(default: --from's, or this Python, {sys.executable})")
    env.add_argument("--setup", action="append", metavar="LINE", help="shell line run before the kernel (repeatable)")
    env.add_argument("--env", action="append", type=_env_pair, metavar="KEY=VALUE",
                     help="environment variable for the kernel (repeatable)")
    env.add_argument("--login-host", metavar="HOST",
                     help="for a server off the cluster: run scheduler commands over SSH on HOST and "
                          "reach nodes through it (HOST as named in your ~/.ssh/config)")
    life = p.add_argument_group("lifetime")
    life.add_argument("--grace", type=float, metavar="SECONDS",
                      help="dead-man switch: the job ends after SECONDS without word from the login side (default: 300)")
    life.add_argument("--queue-timeout", type=float, metavar="SECONDS",
                      help="give up and cancel the job after SECONDS queued (default: 0, wait forever)")
    life.add_argument("--persist", type=float, metavar="SECONDS", help=(
        "the kernel outlives its Jupyter server for SECONDS (killed, or stopped while the kernel "
        "runs), waiting to be re-adopted by your next server (default: 0, off)"))
    life.add_argument("--transport", choices=TRANSPORT, help=(
        "ssh (default): the kernel's channels through SSH to the node; direct: CurveZMQ over the "
        "cluster network, no SSH to the nodes (keys through a 0700 directory in your home, shared with the nodes)"))
    share = p.add_argument_group("sharing an allocation")
    share.add_argument("--allocation", choices=ALLOCATION, help=(
        "per-kernel (default): each kernel is a job of its own; shared: a kernel starts inside your "
        "live allocation of this spec when there is one (its kernels share its CPUs and memory)"))
    share.add_argument("--linger", type=float, metavar="SECONDS",
                       help="shared: seconds an allocation waits for a next kernel after its last one ended (default: 0)")
    share.add_argument("--max-kernels", type=int, metavar="N",
                       help="shared: most kernels in one allocation; a new job is submitted when all are full (default: no limit)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="install for this user only")
    where.add_argument("--sys-prefix", action="store_true", help="install into sys.prefix (this env)")
    where.add_argument("--prefix", metavar="DIR", help="install under DIR/share/jupyter/kernels")
    p.add_argument("--replace", action="store_true", help="overwrite an existing kernelspec of that name")
    p.add_argument("--no-check", dest="check", action="store_false",
                   help="do not check the request against the site (partition, limits, account, QOS, Python); "
                        "write the spec as given")


def _add_spec_commands(sub) -> None:
    p = sub.add_parser("list", help="list the compute-node kernelspecs",
                       description="List the installed kernelspecs that run on compute nodes, with their "
                                   "scheduler and resources ('-': the scheduler's default).")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p = sub.add_parser("show", help="show a spec's effective options and its batch script",
                       description="Show the options of compute-node kernelspec NAME after the RK_* "
                                   "environment overrides, where each came from, and the exact batch script a "
                                   "start would submit (which never contains the kernel's key).",
                       epilog=OVERRIDES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", help="compute-node kernelspec name")
    p = sub.add_parser("remove", help="remove a compute-node kernelspec",
                       description="Delete compute-node kernelspec NAME (the first found on the Jupyter path), "
                                   "without asking. Other kernelspecs are refused.")
    p.add_argument("name", help="compute-node kernelspec name")
    p = sub.add_parser("check", help="end-to-end test of a spec: start, run a cell, time it, shut down",
                       description="Start a kernel of NAME as a Jupyter server would, show the job's progress "
                                   "while it is queued, run a cell printing the node's hostname, print a "
                                   "timing table per phase and shut the kernel down. Exit status 0 only if "
                                   "every step worked; otherwise the failed phase and the error are printed. "
                                   "A job that can never start fails at once; one still queued after "
                                   "--queue-timeout seconds is cancelled.",
                       epilog=OVERRIDES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", help="compute-node kernelspec name")
    p.add_argument("--queue-timeout", type=float, default=CHECK_QUEUE_TIMEOUT, metavar="SECONDS",
                   help=f"give up (and cancel the job) if it is still queued after SECONDS (default "
                        f"{CHECK_QUEUE_TIMEOUT:g}; 0: wait for ever); a spec's own queue_timeout wins")


def _add_job_commands(sub) -> None:
    p = sub.add_parser("ps", help="list your running remote kernels",
                       description="List this user's remote kernels (started by any server process on this "
                                   "machine): kernel id, spec, job, node, job state, age, time left in the "
                                   "allocation, and the owning process and whether it is alive.")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p = sub.add_parser("cancel", help="cancel a remote kernel's job, or those of orphans",
                       description="Cancel the batch job of one remote kernel (by kernel id, session id or job "
                                   "id, as `remote-kernels ps` shows them; a unique id prefix is enough) and "
                                   "forget it; or, with --orphans, of every kernel whose owning process is gone.")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("id", nargs="?", metavar="KERNEL_OR_JOB_ID", help="kernel id, session id or job id")
    what.add_argument("--orphans", action="store_true",
                      help="cancel the jobs of kernels whose server process died")
    p = sub.add_parser("attach", help="take over a detached kernel (option persist) by hand",
                       description="Serve a kernel that outlived its server on a new connection file (printed; "
                                   "`jupyter console --existing FILE` reaches it) until SIGTERM/SIGHUP, which "
                                   "detach it again; SIGINT interrupts it.")
    p.add_argument("id", metavar="KERNEL_OR_JOB_ID", help="kernel id, session id or job id (`remote-kernels ps`)")
    p.add_argument("-f", "--connection-file", help="where to write the connection file (default: the Jupyter runtime dir)")
    p.add_argument("--log-level", default="INFO")
    p = sub.add_parser("detach", help="have an attach or run process let its kernel go (option persist)",
                       description="Ask the `remote-kernels attach` or argv-mode `run` process holding a kernel "
                                   "with persist to detach it (SIGHUP); it then waits for a next attach or server.")
    p.add_argument("id", metavar="KERNEL_OR_JOB_ID", help="kernel id, session id or job id")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="remote-kernels",
        description="Run Jupyter kernels on HPC compute nodes through the batch scheduler.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"remote-kernels {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_install(sub)
    _add_spec_commands(sub)
    _add_job_commands(sub)
    r = sub.add_parser("run", help="argv mode: run a kernel for a frontend that launches kernel.json's argv",
                       description="Run a compute-node kernel serving the endpoints of CONNECTION_FILE "
                                   "(what VS Code's local kernel picker does with kernel.json's argv).")
    r.add_argument("--kernel", required=True, help="installed compute-node kernelspec name")
    r.add_argument("-f", "--connection-file", required=True, help="connection file written by the frontend")
    r.add_argument("--log-level", default="INFO")
    return parser


def cmd_install(args) -> int:
    from .commands.install import install_spec

    given = {f: getattr(args, f) for f in INSTALL_FIELDS if getattr(args, f) is not None}
    for name in ("env", "user_choices"):
        if name in given:
            given[name] = dict(given[name])
    install_spec(args.name, given, from_dir=args.from_dir, display_name=args.display_name, user=args.user,
                 prefix=sys.prefix if args.sys_prefix else args.prefix, replace=args.replace, check=args.check)
    return 0


def cmd_list(args) -> int:
    from .commands.specs import list_specs
    return list_specs(args.json)


def cmd_show(args) -> int:
    from .commands.specs import show
    return show(args.name)


def cmd_remove(args) -> int:
    from .commands.specs import remove
    return remove(args.name)


def cmd_check(args) -> int:
    from .commands.check import check
    from .commands import CommandFailed
    if args.queue_timeout < 0:
        raise CommandFailed(f"--queue-timeout {args.queue_timeout:g} is negative; use seconds, or 0 to wait for ever")
    return asyncio.run(check(args.name, queue_timeout=args.queue_timeout))


def cmd_ps(args) -> int:
    from .commands.jobs import ps
    return asyncio.run(ps(args.json))


def cmd_cancel(args) -> int:
    from .commands.jobs import cancel, cancel_orphans
    return asyncio.run(cancel_orphans() if args.orphans else cancel(args.id))


def cmd_run(args) -> int:
    from .argv_mode import read_connection_file, serve
    from .kernelspec import remote_spec, spec_config
    from .options import KernelOptions

    logging.basicConfig(level=args.log_level.upper(), format="[remote-kernels %(levelname)s] %(message)s")
    if logging.getLogger().level <= logging.DEBUG:   # asyncssh's channel messages too
        logging.getLogger("asyncssh").setLevel(logging.DEBUG)
    info = read_connection_file(args.connection_file)
    try:
        spec = remote_spec(args.kernel)
        options = KernelOptions(**spec_config(spec))
    except KeyError as e:
        raise SystemExit(f"remote-kernels run: {e.args[0]}") from None
    except TraitError as e:
        raise SystemExit(f"remote-kernels run: kernelspec {args.kernel}: {e}") from None
    from .session import KernelStartError

    try:
        return asyncio.run(serve(args.kernel, options, info, spec.get("env") or {}, args.connection_file))
    except KernelStartError as e:
        raise SystemExit(f"remote-kernels run: {e}") from None
    except OSError as e:   # e.g. the frontend's port is taken
        raise SystemExit(f"remote-kernels run: cannot serve the connection file's endpoints: {e}") from None


def cmd_attach(args) -> int:
    from .commands.attach import attach
    logging.basicConfig(level=args.log_level.upper(), format="[remote-kernels %(levelname)s] %(message)s")
    return attach(args.id, args.connection_file)


def cmd_detach(args) -> int:
    from .commands.attach import detach
    return detach(args.id)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    from .commands import CommandFailed

    commands = {"install": cmd_install, "list": cmd_list, "show": cmd_show, "remove": cmd_remove,
                "check": cmd_check, "ps": cmd_ps, "cancel": cmd_cancel, "run": cmd_run,
                "attach": cmd_attach, "detach": cmd_detach}
    try:
        return commands[args.command](args)
    except CommandFailed as e:
        print(f"remote-kernels {args.command}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"remote-kernels {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
