"""Time the CPU smoke pipeline: runs `bespoke smoke-test` in a fresh folder and prints a table.

    SD_SCRIPTS_DIR=.cache/sd-scripts .venv-kohya/bin/python bench/smoke_bench.py

Targets (issue 3): <= 2 minutes and <= 2 GB RSS on 2 cores.
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import tempfile
import time


def main() -> None:
    ws = tempfile.mkdtemp(prefix="bespoke-smoke-bench-")
    t0 = time.time()
    r = subprocess.run([sys.executable, "-m", "bespoke", "smoke-test", "--workspace", ws],
                       capture_output=True, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    wall = time.time() - t0
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if r.returncode != 0:
        print(r.stdout[-3000:], r.stderr[-3000:], sep="\n")
        sys.exit(r.returncode)
    stages = re.findall(r"^  (\S.*?)\s{2,}([\d.]+) s", r.stdout.split("stage timings:")[1], re.M)
    print(f"{'stage':32} {'seconds':>8}")
    for name, seconds in stages:
        print(f"{name:32} {float(seconds):8.1f}")
    print(f"{'wall (whole command)':32} {wall:8.1f}")
    print(f"{'peak RSS of one process (MiB)':32} {rss:8.0f}")
    print(f"cores: {os.cpu_count()}  workspace: {ws}")


if __name__ == "__main__":
    main()
