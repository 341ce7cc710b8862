"""The background loop: results, errors and cancellation cross between loops as documented."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import threading

import pytest

from remote_kernels import background


async def test_runs_on_the_background_thread_and_returns_or_raises():
    async def where() -> str:
        return threading.current_thread().name

    async def fail() -> None:
        raise ValueError("from the background")

    assert await background.run(where()) == "remote-kernels-io"
    with pytest.raises(ValueError, match="from the background"):
        await background.run(fail())


async def cancel_the_caller_once_started(work, **run_kw) -> None:
    """background.run(work(started)), cancelled once work calls started(); CancelledError expected."""
    started = asyncio.Event()
    loop = asyncio.get_running_loop()
    caller = asyncio.ensure_future(background.run(work(lambda: loop.call_soon_threadsafe(started.set)), **run_kw))
    await started.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller


async def test_cancelling_the_caller_cancels_the_coroutine_after_its_clean_up():
    events: list[str] = []

    async def work(started) -> None:
        started()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            await asyncio.sleep(0.2)   # clean-up that takes a while
            events.append("cleaned up")
            raise

    await cancel_the_caller_once_started(work)
    assert events == ["cleaned up"]


async def test_not_cancellable_work_finishes_although_the_caller_was_cancelled():
    events: list[str] = []

    async def close(started) -> None:
        started()
        await asyncio.sleep(0.2)
        events.append("closed")

    await cancel_the_caller_once_started(close, cancellable=False)
    assert events == ["closed"]


async def test_cancelled_by_someone_else_is_an_error_not_a_cancellation():
    async def cancelled_elsewhere() -> None:
        asyncio.current_task().cancel()
        await asyncio.sleep(1)

    with pytest.raises(background.Cancelled):
        await background.run(cancelled_elsewhere())


async def test_tracked_objects_are_closed_at_exit():
    class Session:
        closed = False

        async def close(self) -> None:
            await asyncio.sleep(0.05)
            self.closed = True

    kept, released, detached, closed_again = Session(), Session(), Session(), Session()
    background.track(kept)
    background.track(released)
    background.untrack(released)
    done = []

    async def detach(session) -> None:
        done.append(session)

    background.track(detached, at_exit=lambda: detach(detached))   # instead of its close()
    background.track(closed_again, at_exit=lambda: detach(closed_again))
    background.track(closed_again)   # tracked again: its close() once more
    await asyncio.get_running_loop().run_in_executor(None, background._close_all)   # what atexit calls
    assert kept.closed and not released.closed
    assert done == [detached] and not detached.closed and closed_again.closed
    for session in (kept, detached, closed_again):
        background.untrack(session)


# A plain script: paths to remove at exit, the background loop started, then it waits.
EXITING = """
import os, signal, sys, tempfile, time
from remote_kernels import background
d = tempfile.mkdtemp(prefix="rk-test-")
f = os.path.join(d, "..", os.path.basename(d) + ".json")
open(f, "w").close()
kept = tempfile.mkdtemp(prefix="rk-test-kept-")
for p in (d, f, kept):
    background.remove_at_exit(p)
background.forget_removal(kept)
if sys.argv[1] == "own-handler":
    signal.signal(signal.SIGTERM, lambda *a: print("own handler", flush=True))
background.loop()
print(d, f, kept, flush=True)
time.sleep(60 if sys.argv[1] != "own-handler" else 3)
"""


def _run_and_terminate(mode: str):
    proc = subprocess.Popen([sys.executable, "-c", EXITING, mode], stdout=subprocess.PIPE, text=True)
    try:
        paths = proc.stdout.readline().split()
        assert len(paths) == 3 and all(os.path.exists(p) for p in paths)
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, paths, out


def test_sigterm_exits_normally_and_removes_the_paths_given():
    code, (d, f, kept), _ = _run_and_terminate("plain")
    try:
        assert code == 143
        assert not os.path.exists(d) and not os.path.exists(f)
        assert os.path.isdir(kept)   # forget_removal: not ours any more
    finally:
        shutil.rmtree(kept, ignore_errors=True)


def test_an_applications_own_sigterm_handler_is_left_alone():
    code, (d, f, kept), out = _run_and_terminate("own-handler")
    try:
        assert "own handler" in out and code == 0   # its handler ran; the script ended by itself
        assert not os.path.exists(d) and not os.path.exists(f)   # and atexit removed them
    finally:
        shutil.rmtree(kept, ignore_errors=True)
