"""A stand-in Jupyter server for tests: start a kernel of spec argv[1] through AsyncKernelManager,
print {"kernel_id", "job_id", "node"} as one JSON line, wait for EOF on stdin, shut the kernel down."""

from __future__ import annotations

import asyncio
import json
import sys

from jupyter_client.manager import AsyncKernelManager

from kernel_helpers import remote


async def main(name: str) -> None:
    km = AsyncKernelManager(kernel_name=name)
    await km.start_kernel()
    session = await remote(km)
    print(json.dumps({"kernel_id": km.kernel_id, "job_id": session["job_id"], "node": session["node"]}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await km.shutdown_kernel()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
