"""The ``remote-kernels`` command (also ``jupyter remote-kernels``)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from traitlets import TraitError

from . import __version__

EXAMPLES = """\
examples:
  remote-kernels install slurm-py --display-name "Python 3 (compute node)" --time 01:00:00 --mem 4G
  remote-kernels install gpu --partition gpu --gpus 1 --setup "module load cuda" --user
"""


def _env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"--env {text!r} is not KEY=VALUE")
    return key, value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="remote-kernels",
        description="Run Jupyter kernels on HPC compute nodes through the batch scheduler.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"remote-kernels {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("install", help="install a compute-node kernelspec",
                       description="Install a kernelspec whose kernel runs in a batch job on a compute node.")
    p.add_argument("name", help="kernelspec name (letters, digits, -, _, .)")
    p.add_argument("--scheduler", default="slurm", help="batch scheduler (default: slurm)")
    p.add_argument("--display-name", help="name shown in the kernel picker (default: 'Python 3 (NAME)')")
    res = p.add_argument_group("resources (empty: the scheduler's defaults)")
    res.add_argument("--partition", default="")
    res.add_argument("--account", default="")
    res.add_argument("--qos", default="")
    res.add_argument("--time", default="", help="wall-time, [D-]HH:MM:SS")
    res.add_argument("--cpus", type=int, default=0)
    res.add_argument("--mem", default="", help="memory, e.g. 4G")
    res.add_argument("--gpus", type=int, default=0)
    res.add_argument("--constraint", default="")
    res.add_argument("--reservation", default="")
    res.add_argument("--directive", action="append", default=[], dest="directives",
                     help="extra scheduler directive, e.g. --directive=--exclusive (repeatable)")
    env = p.add_argument_group("environment on the node")
    env.add_argument("--python", default=sys.executable,
                     help="Python with ipykernel on the compute nodes (default: this Python, %(default)s)")
    env.add_argument("--setup", action="append", default=[], help="shell line run before the kernel (repeatable)")
    env.add_argument("--env", action="append", default=[], type=_env_pair, metavar="KEY=VALUE",
                     help="environment variable for the kernel (repeatable)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="install for this user only")
    where.add_argument("--sys-prefix", action="store_true", help="install into sys.prefix (this env)")
    where.add_argument("--prefix", help="install under PREFIX/share/jupyter/kernels")
    p.add_argument("--replace", action="store_true", help="overwrite an existing kernelspec of that name")

    r = sub.add_parser("run", help="argv mode: run a kernel for a frontend that launches kernel.json's argv",
                       description="Run a compute-node kernel serving the endpoints of CONNECTION_FILE "
                                   "(what VS Code's local kernel picker does with kernel.json's argv).")
    r.add_argument("--kernel", required=True, help="installed compute-node kernelspec name")
    r.add_argument("-f", "--connection-file", required=True, help="connection file written by the frontend")
    r.add_argument("--log-level", default="INFO")
    return parser


def cmd_install(args) -> int:
    from .kernelspec import install
    from .options import KernelOptions

    config = {
        "scheduler": args.scheduler, "partition": args.partition, "account": args.account, "qos": args.qos,
        "time": args.time, "cpus": args.cpus, "mem": args.mem, "gpus": args.gpus,
        "constraint": args.constraint, "reservation": args.reservation, "directives": args.directives,
        "python": args.python, "setup": args.setup, "env": dict(args.env),
    }
    config = {k: v for k, v in config.items() if v not in ("", 0, [], {})}
    try:
        KernelOptions(**config)
        from .schedulers import get_scheduler
        get_scheduler(config.get("scheduler", "slurm"))
    except (TraitError, ValueError) as e:
        raise SystemExit(f"remote-kernels install: {e}") from None
    display = args.display_name or f"Python 3 ({args.name})"
    prefix = sys.prefix if args.sys_prefix else args.prefix
    try:
        dest = install(args.name, display, config, user=args.user, prefix=prefix, replace=args.replace)
    except FileExistsError as e:
        raise SystemExit(f"remote-kernels install: {e}") from None
    print(f"Installed kernelspec {args.name} ({display}) in {dest}")
    return 0


def cmd_run(args) -> int:
    from .argv_mode import read_connection_file, serve
    from .kernelspec import spec_config
    from .options import KernelOptions

    logging.basicConfig(level=args.log_level.upper(), format="[remote-kernels %(levelname)s] %(message)s")
    info = read_connection_file(args.connection_file)
    try:
        options = KernelOptions(**spec_config(args.kernel))
    except KeyError as e:
        raise SystemExit(f"remote-kernels run: {e.args[0]}") from None
    except TraitError as e:
        raise SystemExit(f"remote-kernels run: kernelspec {args.kernel}: {e}") from None
    from .session import KernelStartError

    try:
        return asyncio.run(serve(args.kernel, options, info))
    except KernelStartError as e:
        raise SystemExit(f"remote-kernels run: {e}") from None
    except OSError as e:   # e.g. the frontend's port is taken
        raise SystemExit(f"remote-kernels run: cannot serve the connection file's endpoints: {e}") from None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return {"install": cmd_install, "run": cmd_run}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
