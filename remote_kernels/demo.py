"""``make demo``: install "Python 3 (compute node)" and run a cell on a compute node."""

from __future__ import annotations

import asyncio
import logging
import sys
import time

from jupyter_client.manager import AsyncKernelManager

from .kernelspec import install

NAME = "python3-compute"
CELL = "import os, socket; print(f'hello from {socket.gethostname()}, SLURM job {os.environ[\"SLURM_JOB_ID\"]}')"


async def run() -> int:
    dest = install(NAME, "Python 3 (compute node)", {"scheduler": "slurm", "python": sys.executable},
                   prefix=sys.prefix, replace=True)
    print(f"installed kernelspec {NAME} in {dest}")
    t0 = time.monotonic()
    km = AsyncKernelManager(kernel_name=NAME)
    await km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=120)
        info = (await km.provisioner.get_provisioner_info())["remote_kernel"]
        print(f"kernel ready in {time.monotonic() - t0:.2f}s on node {info['node']}")
        print(f">>> {CELL}")
        reply = await kc.execute_interactive(CELL, timeout=60)
        return 0 if reply["content"]["status"] == "ok" else 1
    finally:
        kc.stop_channels()
        await km.shutdown_kernel()
        print("kernel shut down; its job ends with it")


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    return asyncio.run(run())


if __name__ == "__main__":
    sys.exit(main())
