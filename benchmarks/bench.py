"""remote-kernels benchmark: a compute-node kernel against a local ipykernel, in the same run.

Run with ``make bench`` (test cluster up, kernelspecs installed by the Makefile).  Prints
a table, writes ``benchmarks/results/latest.json`` and ``latest.png``.  A round trip is
execute_request -> the kernel reporting idle on iopub, as a frontend sees a cell finish.
Starts are measured isolated, kept open one after another, and several at once; the
scheduler load is slurmctld's own RPC count of the server's queries (schedload.py).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import platform
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager

from schedload import REAL, LoadMeter


async def remote(km) -> dict:
    """The provisioner's public word on its kernel (job id, timings...)."""
    return (await km.provisioner.get_provisioner_info())["remote_kernel"]

RESULTS = Path(__file__).parent / "results"


# --- measuring helpers ----------------------------------------------------------

async def until_idle(kc, code: str, on_stream=None) -> float:
    """Seconds from sending code until iopub reports idle for it."""
    t0 = time.perf_counter()
    msg_id = kc.execute(code)
    while True:
        msg = await kc.get_iopub_msg(timeout=120)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if on_stream and msg["msg_type"] == "stream":
            on_stream(msg)
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return time.perf_counter() - t0


async def start(name: str, **manager):
    """Start kernel ``name`` (AsyncKernelManager keywords ``manager``) and a ready client:
    (km, kc, seconds)."""
    t0 = time.perf_counter()
    km = AsyncKernelManager(kernel_name=name, **manager)
    await km.start_kernel()
    kc = km.client()
    kc.start_channels()
    await kc.wait_for_ready(timeout=120)
    return km, kc, time.perf_counter() - t0


async def stop(km, kc) -> None:
    kc.stop_channels()
    await km.shutdown_kernel()


def summary(values: list[float]) -> dict:
    values = sorted(values)
    return {"median": statistics.median(values), "min": values[0], "max": values[-1],
            "p99": values[min(len(values) - 1, int(len(values) * 0.99))], "n": len(values)}


# --- the measurements -----------------------------------------------------------

async def measure_stream(kc, stream_mb: int) -> tuple[float, float]:
    """One cell printing stream_mb lines of 1 MB: (MB/s received on iopub, CPU seconds per GB
    this process spent meanwhile, all its threads).  This process is the login side: the client
    (with transport direct or Curve: its decryption too), and in SSH mode the forwards."""
    received = 0

    def count(msg):
        nonlocal received
        received += len(msg["content"]["text"])
    code = (f"import sys\nline = 'x' * 999_999 + '\\n'\nfor _ in range({stream_mb}):\n"
            "    sys.stdout.write(line)\n    sys.stdout.flush()")
    cpu0 = _cpu_seconds()
    secs = await until_idle(kc, code, on_stream=count)
    return received / secs / 1e6, (_cpu_seconds() - cpu0) / (received / 1e9)


async def measure_kernel(name: str, runs: int, round_trips: int, **manager) -> dict:
    """Start, interrupt, restart (each of ``runs`` kernels) and round trips (the first one's)."""
    out: dict = {"start": [], "restart": [], "interrupt": [], "phases": []}
    for i in range(runs):
        km, kc, started = await start(name, **manager)
        out["start"].append(started)
        info = (await km.provisioner.get_provisioner_info()).get("remote_kernel")
        if info is not None:   # a compute-node kernel (the local one has no phases)
            out["phases"].append(dict(info["timings"], total=started))
        await until_idle(kc, "1")
        # interrupt: time.sleep running -> reply with KeyboardInterrupt
        msg_id = kc.execute("import time; time.sleep(30)")
        while (await kc.get_iopub_msg(timeout=60))["msg_type"] != "execute_input":
            pass
        await asyncio.sleep(0.2)
        t0 = time.perf_counter()
        await km.interrupt_kernel()
        while True:
            reply = await kc.get_shell_msg(timeout=60)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        out["interrupt"].append(time.perf_counter() - t0)
        await until_idle(kc, "1")
        # restart
        t0 = time.perf_counter()
        await km.restart_kernel()
        await kc.wait_for_ready(timeout=120)
        out["restart"].append(time.perf_counter() - t0)
        if i == 0:
            await until_idle(kc, "1")
            out["round_trip"] = [await until_idle(kc, "1") for _ in range(round_trips)]
        await stop(km, kc)
    return out


async def measure_streams(kernels: dict[str, tuple[str, dict]], streams: int, stream_mb: int) -> dict[str, dict]:
    """iopub throughput and login-side CPU per GB of each of ``kernels`` (side -> (kernelspec,
    AsyncKernelManager keywords)), all open at once and streaming in turn, ``streams`` rounds:
    a drift in the machine's load meets every side alike.  side -> {throughput, cpu_per_gb:
    a value per round; throughput_mb_s, cpu_s_per_gb: their medians}."""
    opened = {}
    try:
        for side, (name, manager) in kernels.items():
            km, kc, _ = await start(name, **manager)
            opened[side] = (km, kc)
            await until_idle(kc, "1")
        out: dict[str, dict] = {side: {"throughput": [], "cpu_per_gb": []} for side in kernels}
        for _ in range(streams):
            for side, (_, kc) in opened.items():
                rate, cpu = await measure_stream(kc, stream_mb)
                out[side]["throughput"].append(rate)
                out[side]["cpu_per_gb"].append(cpu)
    finally:
        await asyncio.gather(*(stop(km, kc) for km, kc in opened.values()), return_exceptions=True)
    for side in out.values():
        side["throughput_mb_s"] = statistics.median(side["throughput"])
        side["cpu_s_per_gb"] = statistics.median(side["cpu_per_gb"])
    return out


async def measure_round_trips_without_pty(round_trips: int) -> list[float]:
    """The same round trip with ``interactive_ssh=False``: what the pty session buys."""
    from remote_kernels.kernelspec import install

    install("rk-bench-nopty", "Python 3 (compute node, no pty)",
            {"python": sys.executable, "interactive_ssh": False}, prefix=sys.prefix, replace=True)
    km, kc, _ = await start("rk-bench-nopty")
    await until_idle(kc, "1")
    times = [await until_idle(kc, "1") for _ in range(round_trips)]
    await stop(km, kc)
    return times


async def measure_detection(name: str, runs: int) -> list[float]:
    """scancel -> poll() reporting the kernel dead."""
    found = []
    for _ in range(runs):
        km, kc, _ = await start(name)
        job = (await remote(km))["job_id"]
        t0 = time.perf_counter()
        subprocess.run(["scancel", job], check=True)
        while await km.provisioner.poll() is None:
            await asyncio.sleep(0.01)
        found.append(time.perf_counter() - t0)
        kc.stop_channels()
        await km.shutdown_kernel(now=True)
    return found


async def open_at_once(name: str, n: int) -> tuple[list, list[float], float]:
    """n starts at once: ([(km, kc)], each start's seconds, seconds until all were ready).  If one
    fails, the others are shut down and its error raised."""
    t0 = time.perf_counter()
    results = await asyncio.gather(*(start(name) for _ in range(n)), return_exceptions=True)
    all_ready = time.perf_counter() - t0
    opened = [r for r in results if not isinstance(r, BaseException)]
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        await asyncio.gather(*(stop(km, kc) for km, kc, _ in opened), return_exceptions=True)
        raise failed[0]
    return [(km, kc) for km, kc, _ in opened], [secs for _, _, secs in opened], all_ready


async def stop_all(opened: list) -> float:
    """Shut the kernels down at once (as a server's "shut down all kernels" does); seconds taken."""
    t0 = time.perf_counter()
    await asyncio.gather(*(stop(km, kc) for km, kc in opened))
    return time.perf_counter() - t0


async def remote_infos(opened: list) -> list[dict]:
    """The provisioner's word on each compute-node kernel among opened (none for local kernels)."""
    infos = [(await km.provisioner.get_provisioner_info()).get("remote_kernel") for km, _ in opened]
    return [info for info in infos if info]


def median_phases(phases: list[dict]) -> dict:
    return {k: statistics.median(p[k] for p in phases) for k in phases[0]} if phases else {}


def start_phases(infos: list[dict], starts: list[float]) -> dict:
    """The median start phases (submit, queued, ssh, launcher, total) of compute-node starts."""
    return median_phases([dict(info["timings"], total=secs) for info, secs in zip(infos, starts)])


def live_jobs(ids: list[str]) -> list[str]:
    """Which of ids squeue still lists (pending, running or completing).  The real squeue, not
    the counting one: the bench's own queries are not the server's load."""
    out = subprocess.run([REAL["squeue"], "-h", "-u", getpass.getuser(), "-j", ",".join(ids), "-o", "%i"],
                         capture_output=True, text=True).stdout
    return [j for j in out.split() if j in ids]


async def until_gone(ids: list[str], t0: float, timeout: float = 60.0) -> float | None:
    """Seconds from t0 (perf_counter) until squeue lists none of ids; None if not within timeout."""
    while live_jobs(ids):
        if time.perf_counter() - t0 > timeout:
            return None
        await asyncio.sleep(0.05)
    return time.perf_counter() - t0


async def measure_kept_open(name: str, n: int) -> dict:
    """n kernels opened one after another, each kept open (a user opening notebooks); then
    shut down at once, and (compute-node kernels) how long until squeue lists none of their jobs."""
    opened, starts = [], []
    try:
        for _ in range(n):
            km, kc, secs = await start(name)
            opened.append((km, kc))
            starts.append(secs)
        infos = await remote_infos(opened)
    except BaseException:
        await asyncio.gather(*(stop(km, kc) for km, kc in opened), return_exceptions=True)
        raise
    t0 = time.perf_counter()
    shutdown = await stop_all(opened)
    out = {"start": starts, "shutdown_s": shutdown}
    if infos:
        out["queue_empty_s"] = await until_gone([info["job_id"] for info in infos], t0)
        out["phases"] = start_phases(infos, starts)
    return out


async def measure_second_in_allocation(shared: str, local: str, runs: int) -> dict:
    """A second kernel of a shared-allocation spec (``allocation: shared``) started while a
    first one runs: it starts inside the first one's job, no submission.  Each run also
    starts a local ipykernel just before, for the ratio; ``same_job`` checks it shared."""
    out: dict = {"start": [], "local_start": [], "same_job": []}
    for _ in range(runs):
        first = await start(shared)
        try:
            km, kc, secs = await start(local)
            await stop(km, kc)
            out["local_start"].append(secs)
            km, kc, secs = await start(shared)
            out["start"].append(secs)
            out["same_job"].append((await remote(km))["job_id"] == (await remote(first[0]))["job_id"])
            await stop(km, kc)
        finally:
            await stop(first[0], first[1])
    return out


def second_row(second: dict) -> str:
    """The report's row for measure_second_in_allocation."""
    shared = "in the first one's job" if all(second["same_job"]) else "NOT always in the first one's job"
    return _pair(f"start of a second kernel, shared allocation ({shared})", second["start"], second["local_start"])


async def measure_at_once(name: str, n: int) -> dict:
    opened, starts, all_ready = await open_at_once(name, n)
    infos = await remote_infos(opened)
    await stop_all(opened)
    return {"start": starts, "all_ready_s": all_ready, **({"phases": start_phases(infos, starts)} if infos else {})}


async def measure_running_load(name: str, n: int, idle_seconds: float, meter: LoadMeter) -> dict:
    """n kernels started at once, then idle: the server's queries and their RPCs meanwhile."""
    opened, _, all_ready = await open_at_once(name, n)
    try:
        cpu0, wall0 = _cpu_seconds(), time.perf_counter()
        meter.begin()
        await asyncio.sleep(idle_seconds)
        load = meter.end()
        cpu = (_cpu_seconds() - cpu0) / (time.perf_counter() - wall0)
    finally:
        await stop_all(opened)
    return {"kernels": n, "all_ready_s": all_ready, **load, "server_cpu_idle_percent": 100 * cpu}


async def measure_queued_load(n: int, idle_seconds: float, meter: LoadMeter) -> dict:
    """n kernels whose jobs wait in the queue (``--begin=now+1hour``: they hold no node, so the
    shared cluster stays free), from the moment all are queued; then their starts are cancelled
    and their jobs must leave the queue."""
    from remote_kernels.kernelspec import install

    name = f"rk-bench-queued-{secrets.token_hex(3)}"
    spec_dir = Path(install(name, "Python 3 (compute node, queued)",
                            {"python": sys.executable, "directives": ["--begin=now+1hour"]},
                            prefix=sys.prefix, replace=True))
    managers = [AsyncKernelManager(kernel_name=name) for _ in range(n)]
    starts = [asyncio.ensure_future(km.start_kernel()) for km in managers]
    job_name, ids = f"rk-{name}"[:64], []
    try:
        deadline = time.perf_counter() + 60
        while len(ids) < n and time.perf_counter() < deadline and not any(t.done() for t in starts):
            await asyncio.sleep(0.1)
            ids = subprocess.run([REAL["squeue"], "-h", "-u", getpass.getuser(), "-n", job_name, "-t", "PENDING",
                                  "-o", "%i"], capture_output=True, text=True).stdout.split()
        if len(ids) < n:
            raise RuntimeError(f"only {len(ids)} of {n} queued jobs appeared within 60 s")
        meter.begin()
        await asyncio.sleep(idle_seconds)
        load = meter.end()
    finally:
        for t in starts:
            t.cancel()
        await asyncio.gather(*starts, return_exceptions=True)
        shutil.rmtree(spec_dir, ignore_errors=True)
    t0 = time.perf_counter()
    gone = await until_gone(ids, t0, timeout=30)
    if gone is None:   # left behind: cancel them here, and say so
        subprocess.run(["scancel", *live_jobs(ids)])
    return {"kernels": n, **load, "cancelled_gone_s": gone}


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# --- report -----------------------------------------------------------------------

def _span(values: list[float], unit: str = "s", scale: float = 1.0) -> str:
    sm = summary(values)
    return f"{sm['median']*scale:.3g} ({sm['min']*scale:.3g}–{sm['max']*scale:.3g}) {unit}"


def _pair(label: str, rem: list[float], loc: list[float], unit: str = "s", scale: float = 1.0) -> str:
    """A table row: remote and local median (min–max), and the ratio of the medians."""
    ratio = statistics.median(rem) / statistics.median(loc)
    return f"| {label} | {_span(rem, unit, scale)} | {_span(loc, unit, scale)} | {ratio:.2f}× |"


def _load(label: str, load: dict) -> str:
    rpcs = "sdiag reset meanwhile" if load["rpcs_per_min"] is None else f"{load['rpcs_per_min']:.3g} RPCs/min"
    return f"| {label} | {rpcs} ({load['queries_per_min']:.3g} queries/min) | | |"


def local_curve_spec(local: str) -> str:
    """A kernelspec in this Python's prefix: the local kernelspec ``local`` declaring Curve
    support, so that a manager with ``transport_encryption="required"`` encrypts its channels.
    Returns its name."""
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec(local)
    name = "rk-bench-local-curve"
    where = Path(sys.prefix) / "share" / "jupyter" / "kernels" / name
    where.mkdir(parents=True, exist_ok=True)
    (where / "kernel.json").write_text(json.dumps({
        "argv": spec.argv, "display_name": f"{spec.display_name} (Curve)", "language": spec.language,
        "metadata": {"supported_encryption": ["curve"]}}, indent=1))
    return name


async def measure_direct(args) -> tuple[dict, dict, dict, dict]:
    """The direct table's four kernels in one run: local, local with CurveZMQ, ssh, direct;
    each measure_kernel's, then their streams side by side (measure_streams)."""
    kernels = {"local": (args.local, {}),
               "curve": (local_curve_spec(args.local), {"transport_encryption": "required"}),
               "ssh": (args.remote, {}), "direct": (args.direct, {})}
    sides = {side: await measure_kernel(name, args.runs, args.round_trips, **manager)
             for side, (name, manager) in kernels.items()}
    for side, streamed in (await measure_streams(kernels, args.streams, args.stream_mb)).items():
        sides[side].update(streamed)
    for side in ("ssh", "direct"):
        sides[side]["detection"] = await measure_detection(kernels[side][0], args.runs)
    return sides["local"], sides["curve"], sides["ssh"], sides["direct"]


def direct_report(loc: dict, ssh: dict, direct: dict, curved: dict | None = None) -> str:
    """Transport direct against SSH mode and a local kernel, measured in the same run; with
    ``curved`` (the local kernel with CurveZMQ on every channel) a column for what the
    encryption alone costs on these CPUs."""
    lines = ["| measure | direct (median, min–max) | ssh (median, min–max) | local (median, min–max) | "
             "direct/local | direct/ssh |" + (" local with Curve | direct/(local with Curve) |" if curved else ""),
             "| --- | --- | --- | --- | --- | --- |" + (" --- | --- |" if curved else "")]
    for label, key, unit, scale in (("start → kernel_info", "start", "s", 1), ("restart", "restart", "s", 1),
                                    ("round trip to idle (median)", "round_trip", "ms", 1000),
                                    ("interrupt → reply", "interrupt", "ms", 1000)):
        d, s, l_ = (statistics.median(side[key]) for side in (direct, ssh, loc))
        lines.append(f"| {label} | {_span(direct[key], unit, scale)} | {_span(ssh[key], unit, scale)} | "
                     f"{_span(loc[key], unit, scale)} | {d / l_:.2f}× | {d / s:.2f}× |"
                     + (f" {_span(curved[key], unit, scale)} | {d / statistics.median(curved[key]):.2f}× |"
                        if curved else ""))
    d, s = (statistics.median(side["detection"]) for side in (direct, ssh))
    lines.append(f"| scancel → poll() reports death | {_span(direct['detection'])} | {_span(ssh['detection'])} | | "
                 f"| {d / s:.2f}× |" + (" | |" if curved else ""))
    n = len(direct["throughput"])
    for label, key, unit in ((f"iopub throughput (median of {n} streams)", "throughput_mb_s", "MB/s"),
                             ("login-side process CPU per GB streamed, all of it", "cpu_s_per_gb", "s/GB")):
        d, s, l_ = direct[key], ssh[key], loc[key]
        lines.append(f"| {label} | {d:.3g} {unit} | {s:.3g} {unit} | {l_:.3g} {unit} | {d / l_:.2f}× | {d / s:.2f}× |"
                     + (f" {curved[key]:.3g} {unit} | {d / curved[key]:.2f}× |" if curved else ""))
    # The same client decodes every message in each mode; what the transport adds is the rest.
    d, s = (side["cpu_s_per_gb"] - loc["cpu_s_per_gb"] for side in (direct, ssh))
    lines.append(f"| login-side CPU per GB the transport adds (above the local kernel's client) | {d:.3g} s/GB | "
                 f"{s:.3g} s/GB | 0 s/GB | | {d / s:.2f}× |"
                 + (f" {curved['cpu_s_per_gb'] - loc['cpu_s_per_gb']:.3g} s/GB | |" if curved else ""))
    return "\n".join(lines)


def server_report(sides: dict[str, dict]) -> str:
    """The streams through a Jupyter server (through_server.py): direct, ssh and local side by side."""
    d, s, l_ = sides["direct"], sides["ssh"], sides["local"]
    n = len(d["throughput"])
    lines = ["| measure (through a Jupyter server) | direct | ssh | local | direct/local | direct/ssh |",
             "| --- | --- | --- | --- | --- | --- |"]
    for label, key, unit in ((f"iopub throughput at the websocket client (median of {n})", "throughput_mb_s", "MB/s"),
                             ("the server process's CPU per GB streamed", "cpu_s_per_gb", "s/GB")):
        lines.append(f"| {label} | {d[key]:.3g} {unit} | {s[key]:.3g} {unit} | {l_[key]:.3g} {unit} | "
                     f"{d[key] / l_[key]:.2f}× | {d[key] / s[key]:.2f}× |")
    dt, st = d["cpu_s_per_gb"] - l_["cpu_s_per_gb"], s["cpu_s_per_gb"] - l_["cpu_s_per_gb"]
    lines.append(f"| of which the transport's (above the local kernel's) | {dt:.3g} s/GB | {st:.3g} s/GB | 0 s/GB | | "
                 f"{dt / st:.2f}× |")
    return "\n".join(lines)


async def measure_through_server(args) -> dict[str, dict]:
    import through_server

    return await through_server.measure({"local": args.local, "ssh": args.remote, "direct": args.direct},
                                        args.streams, args.stream_mb)


def report(res: dict) -> str:
    loc, rem = res["local"], res["remote"]

    def row(label, key, unit="s", scale=1.0):
        return _pair(label, rem[key], loc[key], unit, scale)
    kept, once = res["kept_open"], res["at_once"]
    n_kept, n_once = len(kept["remote"]["start"]), len(once["remote"]["start"])
    gone = kept["remote"].get("queue_empty_s")
    lines = ["| measure | remote (median, min–max) | local (median, min–max) | ratio |", "| --- | --- | --- | --- |",
             row("start → kernel_info", "start"),
             _pair(f"start, {n_kept} one after another, kept open", kept["remote"]["start"], kept["local"]["start"]),
             _pair(f"start, {n_once} at once (each)", once["remote"]["start"], once["local"]["start"]),
             _pair(f"start, {n_once} at once: all ready", [once["remote"]["all_ready_s"]], [once["local"]["all_ready_s"]]),
             _pair(f"shutdown of the {n_kept} kept open (at once)", [kept["remote"]["shutdown_s"]],
                   [kept["local"]["shutdown_s"]]),
             f"| shutdown → squeue lists none of their jobs | "
             f"{'not within 60 s' if gone is None else f'{gone:.3g} s'} | | |",
             *([second_row(res["second_in_allocation"])] if "second_in_allocation" in res else []),
             row("restart", "restart"),
             row("round trip to idle (median)", "round_trip", "ms", 1000),
             row("interrupt → reply", "interrupt", "ms", 1000)]
    p99r, p99l = summary(rem["round_trip"])["p99"], summary(loc["round_trip"])["p99"]
    lines.append(f"| round trip p99 | {p99r*1000:.3g} ms | {p99l*1000:.3g} ms | {p99r / p99l:.2f}× |")
    npt = summary(res["round_trip_no_pty"])
    lines.append(f"| round trip, no pty on the SSH connection | {_span(res['round_trip_no_pty'], 'ms', 1000)} | | "
                 f"{npt['median'] / summary(loc['round_trip'])['median']:.2f}× |")
    tr, tl = rem["throughput_mb_s"], loc["throughput_mb_s"]
    lines.append(f"| iopub throughput | {tr:.3g} MB/s | {tl:.3g} MB/s | {tr / tl:.2f}× |")
    lines.append(f"| scancel → poll() reports death | {_span(res['detection'])} | | |")
    load = res["load"]
    for key, what in (("running_1", "running idle"), ("running_n", "running idle"), ("queued_n", "queued")):
        lines.append(_load(f"scheduler load, {load[key]['kernels']} {what} ({load[key]['seconds']:.0f} s)", load[key]))
    ph = res["phases"]
    lines.append("")
    for label, phases in (("isolated", ph), ("kept open", kept["remote"]["phases"]), ("at once", once["remote"]["phases"])):
        lines.append(f"Start phases (remote, {label}, medians): " + ", ".join(f"{k} {v:.3f} s" for k, v in phases.items()))
    lines.append(f"Provisioner overhead = total − scheduler dispatch − local ipykernel start: "
                 f"{res['overhead_s']:.3f} s")
    if "direct" in res:
        lines += ["", "Transport direct (CurveZMQ over the cluster network, no SSH) against SSH mode and local, "
                  "same run:", "", direct_report(loc, rem, res["direct"], res.get("local_curve")), "",
                  "The same streams through a Jupyter server (websocket protocol v1, as JupyterLab speaks it; "
                  "the server's process is the login side):", "", server_report(res["through_server"]), ""]
    sc = load["running_n"]
    lines.append(f"Scale: {sc['kernels']} kernels all ready in {sc['all_ready_s']:.2f} s; idle: "
                 f"{sc['queries_per_min']:.1f} scheduler queries/min, server CPU {sc['server_cpu_idle_percent']:.2f} %")
    lines.append(f"Scheduler load: slurmctld's RPC count (sdiag, by user) of this server's queries, which ran "
                 f"as user {sc['counted_user']}; queries: its squeue/scontrol/sinfo commands.")
    return "\n".join(lines)


def plot(res: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [("start", "start (s)", 1), ("restart", "restart (s)", 1), ("round_trip", "round trip (ms)", 1000),
            ("interrupt", "interrupt (ms)", 1000)]
    panels = [(label, [[v * scale for v in res[side][key]] for side in ("remote", "local")])
              for key, label, scale in keys]
    panels.insert(1, ("start, kept open (s)", [res["kept_open"][side]["start"] for side in ("remote", "local")]))
    panels.insert(2, ("start, at once (s)", [res["at_once"][side]["start"] for side in ("remote", "local")]))
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(20, 3.4))
    for ax, (label, data) in zip(axes, panels):
        ax.boxplot(data, tick_labels=["remote", "local"])
        ax.set_title(label)
    ax = axes[-1]
    ax.bar(["remote", "local"], [res["remote"]["throughput_mb_s"], res["local"]["throughput_mb_s"]])
    ax.set_title("iopub MB/s")
    fig.suptitle("remote-kernels vs a local ipykernel (" + res["when"] + ")")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


async def main(args) -> int:
    if args.only_second:   # this one measurement, printed; the saved results stay as they are
        print("| measure | remote (median, min–max) | local (median, min–max) | ratio |\n| --- | --- | --- | --- |")
        print(second_row(await measure_second_in_allocation(args.shared, args.local, args.runs)))
        return 0
    if args.only_direct:   # local, ssh and direct kernels only, printed; the saved results stay as they are
        local, curved, ssh, direct = await measure_direct(args)
        print(direct_report(local, ssh, direct, curved))
        print()
        print(server_report(await measure_through_server(args)))
        return 0
    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        meter = LoadMeter(Path(tmp))
        local, local_curve, remote, direct = await measure_direct(args)
        served = await measure_through_server(args)
        nopty = await measure_round_trips_without_pty(min(args.round_trips, 200))
        detection = await measure_detection(args.remote, args.runs)
        kept_open = {side: await measure_kept_open(name, args.kept)
                     for side, name in (("local", args.local), ("remote", args.remote))}
        at_once = {side: await measure_at_once(name, args.at_once)
                   for side, name in (("local", args.local), ("remote", args.remote))}
        second = await measure_second_in_allocation(args.shared, args.local, args.runs)
        load = {"running_1": await measure_running_load(args.remote, 1, args.idle, meter),
                "running_n": await measure_running_load(args.remote, args.scale, args.idle, meter),
                "queued_n": await measure_queued_load(args.scale, args.idle, meter)}
    phases = median_phases(remote["phases"])
    dispatch = phases.get("submit", 0) + phases.get("queued", 0)
    overhead = phases["total"] - dispatch - statistics.median(local["start"])
    res = {"when": time.strftime("%Y-%m-%d %H:%M"), "host": platform.node(), "args": vars(args),
           "local": local, "local_curve": local_curve, "remote": remote, "direct": direct, "through_server": served, "round_trip_no_pty": nopty, "detection": detection,
           "kept_open": kept_open, "at_once": at_once, "second_in_allocation": second, "load": load, "scale": load["running_n"],
           "phases": phases, "overhead_s": overhead}
    (RESULTS / "latest.json").write_text(json.dumps(res, indent=1))
    table = report(res)
    (RESULTS / "latest.md").write_text(table + "\n")
    # The docs show the latest table (docs/benchmarks.md includes this file).
    header = f"Measured {res['when']} on {res['host']} with `make bench` ({' '.join(sys.argv[1:]) or 'defaults'}).\n\n"
    (Path(__file__).parent.parent / "docs" / "bench-latest.md").write_text(header + table + "\n")
    plot(res, RESULTS / "latest.png")
    print(table)
    print(f"\nwrote {RESULTS}/latest.json, latest.md, latest.png")
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--remote", default="rk-bench", help="compute-node kernelspec (default: rk-bench)")
    p.add_argument("--local", default="python3", help="local kernelspec (default: python3)")
    p.add_argument("--shared", default="rk-bench-shared",
                   help="compute-node kernelspec with allocation: shared (default: rk-bench-shared)")
    p.add_argument("--direct", default="rk-bench-direct",
                   help="compute-node kernelspec with transport: direct (default: rk-bench-direct)")
    p.add_argument("--only-direct", action="store_true",
                   help="measure only local, ssh and direct kernels side by side (prints it; saves nothing)")
    p.add_argument("--only-second", action="store_true",
                   help="measure only the start of a second kernel in a shared allocation (prints it; saves nothing)")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--round-trips", type=int, default=500)
    p.add_argument("--stream-mb", type=int, default=100, help="MB each iopub stream prints (default: 100)")
    p.add_argument("--streams", type=int, default=5,
                   help="rounds of iopub streams, one per kernel in turn; medians reported (default: 5)")
    p.add_argument("--kept", type=int, default=4, help="kernels opened one after another and kept open")
    p.add_argument("--at-once", type=int, default=4, help="kernels started at once")
    p.add_argument("--scale", type=int, default=16, help="kernels running (and queued) for the scheduler load")
    p.add_argument("--idle", type=float, default=60.0,
                   help="seconds of each scheduler-load window: 1 and --scale running idle, --scale queued")
    sys.exit(asyncio.run(main(p.parse_args())))
