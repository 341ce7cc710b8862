"""The process's background event loop, where every provisioner session lives.

SSH forwards are asyncio tasks: they move bytes only while their event loop runs.  A
synchronous jupyter_client user (``jupyter console``, ``KernelManager``,
``start_new_kernel``) runs its loop only inside each blocking call, so forwards living
on the caller's loop would stall between calls.  Sessions therefore live on one daemon
thread's loop, and callers on any loop or thread await them with ``run()``.

At interpreter exit, sessions still registered with ``track()`` are closed, all at once
(their jobs cancelled), so a frontend that exits while a job waits in the queue leaves
nothing behind; so are those whose kernel was shut down but whose job is still ending.
A session tracked with its own ``at_exit`` gets that instead of its close() (a running kernel
with option persist is detached: hosted.py).
Then paths given to ``remove_at_exit()`` are removed.  A process that has no SIGTERM
handler of its own when the loop starts gets one that exits the interpreter normally
(SystemExit), so that a plain script ended by SIGTERM runs these hooks too.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import shutil
import signal
import sys
import threading
from typing import Any, Awaitable, Callable, Coroutine, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)

# How long run() waits, once its caller is cancelled, for the coroutine's own clean-up.
CANCEL_CLEANUP_TIMEOUT = 60.0
# How long interpreter exit waits for the remaining sessions to close.
EXIT_CLOSE_TIMEOUT = 30.0

_loop: asyncio.AbstractEventLoop | None = None
_lock = threading.Lock()
_live: dict = {}   # object -> the coroutine function run for it at exit (its async close() unless told otherwise)
_remove: set[str] = set()   # paths removed at exit, after the sessions are closed


def loop() -> asyncio.AbstractEventLoop:
    """The background loop, started on first use."""
    global _loop
    with _lock:
        if _loop is None:
            ready = threading.Event()
            new = asyncio.new_event_loop()

            def serve() -> None:
                asyncio.set_event_loop(new)
                new.call_soon(ready.set)
                new.run_forever()

            threading.Thread(target=serve, name="remote-kernels-io", daemon=True).start()
            ready.wait()
            _loop = new
            atexit.register(_close_all)
            _exit_on_sigterm()
        return _loop


def _exit_on_sigterm() -> None:
    """SIGTERM -> SystemExit(143) in the main thread, unless the application handles SIGTERM."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _sigterm)


def _sigterm(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)   # a second SIGTERM ends the process at once
    sys.exit(128 + signum)


class Cancelled(RuntimeError):
    """The coroutine was cancelled on the background loop, not by the caller."""


async def run(coro: Coroutine[Any, Any, T], *, cancellable: bool = True) -> T:
    """Run coro on the background loop and await its result from the caller's loop.

    Cancelling the caller cancels coro (unless ``cancellable`` is false: clean-up that must
    finish) and waits, boundedly, until coro has finished, so a cancelled start has released
    its job when this raises CancelledError.  Raises ``Cancelled`` if coro was cancelled by
    someone else.
    """
    bg, here = loop(), asyncio.get_running_loop()
    if here is bg:
        return await coro
    task_box: list[asyncio.Task] = []
    done: asyncio.Future = here.create_future()

    def finished(task: asyncio.Task) -> None:
        try:
            here.call_soon_threadsafe(_copy_outcome, task, done)
        except RuntimeError:   # the caller's loop is closed: nobody waits for the outcome
            if not task.cancelled() and task.exception() is not None:
                log.debug("background task failed after its caller left: %s", task.exception())

    def begin() -> None:
        task = bg.create_task(coro)
        task_box.append(task)
        task.add_done_callback(finished)

    bg.call_soon_threadsafe(begin)
    try:
        return await asyncio.shield(done)
    except asyncio.CancelledError:
        if cancellable:
            bg.call_soon_threadsafe(lambda: task_box and task_box[0].cancel())
        try:
            await asyncio.wait_for(asyncio.shield(done), CANCEL_CLEANUP_TIMEOUT)
        except BaseException:
            pass
        raise


def _copy_outcome(task: asyncio.Task, done: asyncio.Future) -> None:
    if done.done():
        return
    if task.cancelled():
        done.set_exception(Cancelled("cancelled on the background loop"))
    elif task.exception() is not None:
        done.set_exception(task.exception())
    else:
        done.set_result(task.result())


def call_in(target: asyncio.AbstractEventLoop, fn: Callable[..., Any]) -> Callable[..., None]:
    """fn wrapped to run on the target loop whichever thread calls it (for callbacks)."""
    def call(*args: Any) -> None:
        try:
            target.call_soon_threadsafe(fn, *args)
        except RuntimeError:   # the target loop is closed
            pass
    return call


def track(obj: Any, at_exit: Callable[[], Awaitable[None]] | None = None) -> None:
    """At interpreter exit, unless untracked before, ``await at_exit()`` (default: obj.close).
    Tracking obj again replaces its at_exit."""
    _live[obj] = at_exit or obj.close


def untrack(obj: Any) -> None:
    _live.pop(obj, None)


def _close_all() -> None:
    if not _live or _loop is None or not _loop.is_running():
        return
    left = list(_live.items())
    still_open = sum(not getattr(obj, "stopped", False) for obj, _ in left)   # the others are ending already
    if still_open:
        log.warning("remote kernels: closing %d kernel session(s) left open at exit", still_open)

    async def close_all() -> None:
        await asyncio.gather(*(_close(obj, at_exit) for obj, at_exit in left))

    try:
        asyncio.run_coroutine_threadsafe(close_all(), _loop).result(EXIT_CLOSE_TIMEOUT)
    except Exception as e:  # noqa: BLE001 - exit goes on; the dead-man switch ends started jobs
        log.warning("remote kernels: closing sessions at exit failed: %s", e)


async def _close(obj: Any, at_exit: Callable[[], Awaitable[None]]) -> None:
    try:
        await at_exit()
    except Exception as e:  # noqa: BLE001
        log.warning("remote kernels: closing %s at exit failed: %s", obj, e)


def remove_at_exit(path: str) -> None:
    """Remove ``path`` (file or directory tree) at interpreter exit unless forget_removal() is called before."""
    _remove.add(path)


def forget_removal(path: str) -> None:
    """Do not remove path at exit (it was removed, or is no longer ours)."""
    _remove.discard(path)


def removal_pending(path: str) -> bool:
    """True while ``path`` is to be removed at exit (given to remove_at_exit, not forgotten)."""
    return path in _remove


def _remove_all() -> None:
    for path in list(_remove):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.unlink(path)
            except OSError:
                pass
    _remove.clear()


atexit.register(_remove_all)   # registered first, so it runs after _close_all
