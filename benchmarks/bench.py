"""remote-kernels benchmark: a compute-node kernel against a local ipykernel, in the same run.

Run with ``make bench`` (test cluster up, kernelspecs installed by the Makefile).  Prints
a table, writes ``benchmarks/results/latest.json`` and ``latest.png``.  A round trip is
execute_request -> the kernel reporting idle on iopub, as a frontend sees a cell finish.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager


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


async def start(name: str):
    t0 = time.perf_counter()
    km = AsyncKernelManager(kernel_name=name)
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

async def measure_kernel(name: str, runs: int, round_trips: int, stream_mb: int) -> dict:
    out: dict = {"start": [], "restart": [], "interrupt": [], "phases": []}
    for i in range(runs):
        km, kc, started = await start(name)
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
            received = 0

            def count(msg):
                nonlocal received
                received += len(msg["content"]["text"])
            code = (f"import sys\nline = 'x' * 999_999 + '\\n'\nfor _ in range({stream_mb}):\n"
                    "    sys.stdout.write(line)\n    sys.stdout.flush()")
            secs = await until_idle(kc, code, on_stream=count)
            out["throughput_mb_s"] = received / secs / 1e6
            out["stream_mb_received"] = received / 1e6
        await stop(km, kc)
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


async def measure_scale(name: str, n: int, idle_seconds: float, shim_log: Path) -> dict:
    t0 = time.perf_counter()
    managers = [AsyncKernelManager(kernel_name=name) for _ in range(n)]
    await asyncio.gather(*(km.start_kernel() for km in managers))
    clients = [km.client() for km in managers]
    for kc in clients:
        kc.start_channels()
    await asyncio.gather(*(kc.wait_for_ready(timeout=300) for kc in clients))
    all_ready = time.perf_counter() - t0
    shim_log.write_text("")
    cpu0, wall0 = _cpu_seconds(), time.perf_counter()
    await asyncio.sleep(idle_seconds)
    cpu = (_cpu_seconds() - cpu0) / (time.perf_counter() - wall0)
    queries = len(shim_log.read_text().splitlines())
    for kc in clients:
        kc.stop_channels()
    await asyncio.gather(*(km.shutdown_kernel() for km in managers))
    return {"kernels": n, "all_ready_s": all_ready, "squeue_per_minute_idle": queries * 60 / idle_seconds,
            "server_cpu_idle_percent": 100 * cpu}


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _squeue_shim(tmp: Path) -> Path:
    """Put a counting squeue first on PATH; returns its log file."""
    bindir = tmp / "bin"
    bindir.mkdir()
    log = tmp / "squeue.log"
    log.touch()
    shim = bindir / "squeue"
    shim.write_text(f'#!/bin/sh\necho "$*" >> {log}\nexec /usr/bin/squeue "$@"\n')
    shim.chmod(0o755)
    os.environ["PATH"] = f"{bindir}{os.pathsep}{os.environ['PATH']}"
    return log


# --- report -----------------------------------------------------------------------

def report(res: dict) -> str:
    loc, rem = res["local"], res["remote"]

    def row(label, key, unit="s", scale=1.0):
        a, b = summary(loc[key]), summary(rem[key])
        return (f"| {label} | {b['median']*scale:.3g} ({b['min']*scale:.3g}–{b['max']*scale:.3g}) {unit} "
                f"| {a['median']*scale:.3g} ({a['min']*scale:.3g}–{a['max']*scale:.3g}) {unit} "
                f"| {b['median'] / a['median']:.2f}× |")
    lines = ["| measure | remote (median, min–max) | local (median, min–max) | ratio |", "| --- | --- | --- | --- |",
             row("start → kernel_info", "start"), row("restart", "restart"),
             row("round trip to idle (median)", "round_trip", "ms", 1000),
             row("interrupt → reply", "interrupt", "ms", 1000)]
    p99r, p99l = summary(rem["round_trip"])["p99"], summary(loc["round_trip"])["p99"]
    lines.append(f"| round trip p99 | {p99r*1000:.3g} ms | {p99l*1000:.3g} ms | {p99r / p99l:.2f}× |")
    npt = summary(res["round_trip_no_pty"])
    lines.append(f"| round trip, no pty on the SSH connection | {npt['median']*1000:.3g} ms "
                 f"({npt['min']*1000:.3g}–{npt['max']*1000:.3g}) | | "
                 f"{npt['median'] / summary(loc['round_trip'])['median']:.2f}× |")
    tr, tl = rem["throughput_mb_s"], loc["throughput_mb_s"]
    lines.append(f"| iopub throughput | {tr:.3g} MB/s | {tl:.3g} MB/s | {tr / tl:.2f}× |")
    det = summary(res["detection"])
    lines.append(f"| scancel → poll() reports death | {det['median']:.3g} s ({det['min']:.3g}–{det['max']:.3g}) | | |")
    ph = res["phases"]
    lines.append("")
    lines.append("Start phases (remote, medians): " + ", ".join(f"{k} {v:.3f} s" for k, v in ph.items()))
    lines.append(f"Provisioner overhead = total − scheduler dispatch − local ipykernel start: "
                 f"{res['overhead_s']:.3f} s")
    sc = res["scale"]
    lines.append(f"Scale: {sc['kernels']} kernels all ready in {sc['all_ready_s']:.2f} s; idle: "
                 f"{sc['squeue_per_minute_idle']:.1f} squeue/min, server CPU {sc['server_cpu_idle_percent']:.2f} %")
    return "\n".join(lines)


def plot(res: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [("start", "start (s)", 1), ("restart", "restart (s)", 1), ("round_trip", "round trip (ms)", 1000),
            ("interrupt", "interrupt (ms)", 1000)]
    fig, axes = plt.subplots(1, len(keys) + 1, figsize=(15, 3.4))
    for ax, (key, label, scale) in zip(axes, keys):
        data = [[v * scale for v in res["remote"][key]], [v * scale for v in res["local"][key]]]
        ax.boxplot(data, tick_labels=["remote", "local"])
        ax.set_title(label)
    ax = axes[-1]
    ax.bar(["remote", "local"], [res["remote"]["throughput_mb_s"], res["local"]["throughput_mb_s"]])
    ax.set_title("iopub MB/s")
    fig.suptitle("remote-kernels vs a local ipykernel (" + res["when"] + ")")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


async def main(args) -> int:
    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        shim_log = _squeue_shim(Path(tmp))
        local = await measure_kernel(args.local, args.runs, args.round_trips, args.stream_mb)
        remote = await measure_kernel(args.remote, args.runs, args.round_trips, args.stream_mb)
        nopty = await measure_round_trips_without_pty(min(args.round_trips, 200))
        detection = await measure_detection(args.remote, args.runs)
        scale = await measure_scale(args.remote, args.scale, args.idle, shim_log)
    phases = {k: statistics.median(p[k] for p in remote["phases"]) for k in remote["phases"][0]}
    dispatch = phases.get("submit", 0) + phases.get("queued", 0)
    overhead = phases["total"] - dispatch - statistics.median(local["start"])
    res = {"when": time.strftime("%Y-%m-%d %H:%M"), "host": platform.node(), "args": vars(args),
           "local": local, "remote": remote, "round_trip_no_pty": nopty, "detection": detection, "scale": scale,
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
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--round-trips", type=int, default=500)
    p.add_argument("--stream-mb", type=int, default=100)
    p.add_argument("--scale", type=int, default=16)
    p.add_argument("--idle", type=float, default=20.0, help="seconds of idle measurement at scale")
    sys.exit(asyncio.run(main(p.parse_args())))
