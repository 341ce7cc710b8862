"""``remote-kernels check NAME``: start a kernel of a spec as a Jupyter server would, run a cell,
time each phase, shut it down.  Exit 0 only if everything worked."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from jupyter_client.manager import AsyncKernelManager

from ..schedulers import JobState, JobStatus
from . import CHECK_QUEUE_TIMEOUT, table
from .specs import find_spec

CELL = "import socket; print(socket.gethostname())"
READY_TIMEOUT = 60.0
EXECUTE_TIMEOUT = 60.0
# session.timings keys, in order, and the phase that ends with each.
START_PHASES = (("submit", "submit"), ("queued", "queue wait"), ("launcher", "job start -> launcher ready"))
# States that show the job got past the queue (it ran, even if it ended at once).
RAN = (JobState.RUNNING, JobState.COMPLETED, JobState.FAILED, JobState.TIMEOUT, JobState.OOM, JobState.NODE_FAIL)


class Progress:
    """The kernel's ``on_status`` callback: one updating line on a TTY, a line per change otherwise."""

    def __init__(self, km: AsyncKernelManager, out: TextIO):
        self.km, self.out, self.tty = km, out, out.isatty()
        self.job_id = ""      # the kernel's job, once submitted
        self.polled = False   # the job was polled at least once (the submission worked)
        self.ran = False      # the job was seen running (or ended after running)
        self._last: tuple | None = None
        self._open_line = False

    def __call__(self, status: JobStatus, waited: float) -> None:
        self.job_id, self.polled = status.job_id, True
        text = f"job {status.job_id} {status.state.value}" + (f" ({status.reason})" if status.reason else "")
        if status.state is JobState.QUEUED and status.start_time:
            text += f", estimated start {status.start_time}"
        summary = (status.state, status.reason, status.start_time)
        if self.tty:
            self.out.write(f"\r\x1b[K{text}: {waited:.0f}s")
            self.out.flush()
            self._open_line = True
        elif summary != self._last:
            print(f"{text} after {waited:.1f}s", file=self.out, flush=True)
        self._last = summary
        self.ran = self.ran or status.state in RAN

    def end_line(self) -> None:
        if self._open_line:
            self.out.write("\n")
            self._open_line = False


def _failed_start_phase(km: AsyncKernelManager, progress: Progress, timings: dict) -> str:
    if km.provisioner is None:
        return "configuration"
    if not progress.polled:   # never polled: the submission failed
        return "submit"
    if "queued" not in timings and progress.ran:
        return START_PHASES[2][1]
    return next((label for key, label in START_PHASES if key not in timings), "kernel ready")


async def _timings(km: AsyncKernelManager) -> dict:
    """The phases the (last) start got through, as the provisioner reports them."""
    if km.provisioner is None:
        return {}
    return (await km.provisioner.get_provisioner_info())["remote_kernel"].get("timings", {})


def _gave_up(km: AsyncKernelManager, progress: Progress, queue_timeout: float, waited: float) -> bool:
    """True when the start ended because check's own queue timeout passed (the spec sets none)."""
    return bool(queue_timeout) and progress.polled and not km.provisioner.queue_timeout and waited >= queue_timeout


async def _run_cell(kc) -> tuple[str, str]:
    out: list[str] = []

    def hook(msg):
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            out.append(f"{msg['content']['ename']}: {msg['content']['evalue']}")

    reply = await kc.execute_interactive(CELL, output_hook=hook, timeout=EXECUTE_TIMEOUT)
    return reply["content"]["status"], "".join(out).strip()


async def check(name: str, out: TextIO = sys.stdout, queue_timeout: float = CHECK_QUEUE_TIMEOUT) -> int:
    """The end-to-end test of kernelspec ``name``; prints progress, node and timings.

    A job still queued after ``queue_timeout`` seconds (0: no limit) is cancelled, unless the
    spec sets its own ``queue_timeout``."""
    find_spec(name)
    km = AsyncKernelManager(kernel_name=name)
    progress = Progress(km, out)
    kc = None
    phase, rows, timings = "start", [], {}
    print(f"Checking kernelspec {name}: starting a kernel as a Jupyter server would", file=out, flush=True)
    t0 = time.monotonic()
    try:
        try:
            await km.start_kernel(on_status=progress, queue_timeout=queue_timeout)
        finally:
            progress.end_line()
        info = (await km.provisioner.get_provisioner_info())["remote_kernel"]
        node, job, t = info["node"], info["job_id"], info["timings"]
        print(f"job {job} running on {node}; launcher ready ({info.get('python') or '?'})", file=out, flush=True)
        rows += [["submit", t["submit"]], ["queue wait", t["queued"]],
                 ["job start -> launcher ready", t["ssh"] + t["launcher"]]]
        phase = "kernel ready"
        kc = km.client()
        kc.start_channels()
        await kc.wait_for_ready(timeout=READY_TIMEOUT)
        t_ready = time.monotonic()
        rows.append(["kernel ready", t_ready - t0 - sum(r[1] for r in rows)])
        phase = "first execute"
        status, output = await _run_cell(kc)
        if status != "ok":
            raise RuntimeError(f"the cell failed: {output or status}")
        rows.append(["first execute", time.monotonic() - t_ready])
        print(f">>> {CELL}\n{output}", file=out)
        phase = "shutdown"
        t_down = time.monotonic()
        kc.stop_channels()
        kc = None
        await km.shutdown_kernel()
        rows.append(["shutdown", time.monotonic() - t_down])
    except Exception as e:
        if phase == "start":
            phase = _failed_start_phase(km, progress, await _timings(km))
        message = (str(e).strip().splitlines() or [type(e).__name__])[0]
        if phase == "queue wait" and _gave_up(km, progress, queue_timeout, time.monotonic() - t0):
            message += f" (check waits at most {queue_timeout:g}s in the queue: --queue-timeout)"
        print(f"FAILED at {phase}: {message}", file=sys.stderr)
        return 1
    finally:
        if kc is not None:
            kc.stop_channels()
        if km.has_kernel:
            await km.shutdown_kernel(now=True)
    rows.append(["total", time.monotonic() - t0])
    print(f"\nKernel ran on node {node} (job {job}).\n", file=out)
    print(table(["phase", "seconds"], [[p, f"{s:.2f}"] for p, s in rows]), file=out)
    print(f"\nOK: {name} works", file=out)
    return 0
