"""Objects shared by everything running on one event loop (connection pools, watchers, runners).

asyncio objects belong to the loop they were made on, so process-wide registries are kept
per loop.  Keying them by ``id(loop)`` is wrong twice: ids are reused once a loop is
garbage-collected (a new loop would get an old loop's pool), and entries are never evicted.
Here each loop's entries are found through a weak reference to the loop itself, and the
entries of loops that are closed or gone are dropped at the next lookup.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from typing import Any, Callable, Hashable, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_by_loop: dict[int, tuple[weakref.ref, dict[Hashable, Any]]] = {}


def shared(key: Hashable, factory: Callable[[], T]) -> T:
    """The running loop's object for ``key``, made by ``factory()`` on first use.

    Call from a coroutine or callback on that loop (RuntimeError otherwise)."""
    loop = asyncio.get_running_loop()
    with _lock:
        _evict()
        ref, entries = _by_loop.get(id(loop), (None, None))
        if ref is None or ref() is not loop:
            entries = {}
            _by_loop[id(loop)] = (weakref.ref(loop), entries)
        if key not in entries:
            entries[key] = factory()
        return entries[key]


def _evict() -> None:
    for loop_id, (ref, _) in list(_by_loop.items()):
        loop = ref()
        if loop is None or loop.is_closed():
            del _by_loop[loop_id]


def loops() -> int:
    """How many loops have entries (after dropping those of closed loops); for tests."""
    with _lock:
        _evict()
        return len(_by_loop)
