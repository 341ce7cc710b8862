"""Per-loop registries (no cluster): a loop never gets another loop's objects; closed loops' go."""

from __future__ import annotations

import asyncio
import gc

from remote_kernels import perloop
from remote_kernels.runner import runner_for
from remote_kernels.ssh import NodeConnections


async def _pool_and_runners():
    return NodeConnections.shared(), runner_for("login", 5.0), runner_for("login", 9.0), runner_for("login", 5.0)


def test_each_loop_has_its_own_pool_even_when_ids_are_reused():
    seen = []
    for _ in range(20):   # closed loops are freed; CPython reuses their ids for the next ones
        loop = asyncio.new_event_loop()
        seen.append((id(loop), loop.run_until_complete(_pool_and_runners())[0]))
        loop.close()
        del loop
        gc.collect()
    ids = [loop_id for loop_id, _ in seen]
    assert len(set(ids)) < len(ids), "no loop id was reused: the test proves nothing here"
    pools = [pool for _, pool in seen]
    assert all(a is not b for i, a in enumerate(pools) for b in pools[i + 1:])


def test_closed_loops_are_evicted_and_runners_are_keyed_by_timeout():
    loop = asyncio.new_event_loop()
    pool, r5, r9, r5_again = loop.run_until_complete(_pool_and_runners())
    assert r5 is r5_again and r5 is not r9 and (r5.timeout, r9.timeout) == (5.0, 9.0)
    before = perloop.loops()
    loop.close()
    assert perloop.loops() == before - 1
