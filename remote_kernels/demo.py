"""``make demo``: run something on a compute node of the cluster and say where it ran."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="rk-demo-", dir=Path.home()) as tmp:
        out = Path(tmp) / "out.txt"
        subprocess.run(
            ["sbatch", "--wait", "--quiet", "--job-name=rk-demo", f"--output={out}",
             "--wrap", "echo ran on compute node $(hostname) in job $SLURM_JOB_ID"],
            check=True, timeout=120,
        )
        print(out.read_text().strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
