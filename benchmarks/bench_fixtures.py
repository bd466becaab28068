"""Time the fixture generator at 100k and 1M conversations, and report peak memory.

Each size runs in a fresh subprocess so peak RSS (``resource.getrusage``, ru_maxrss in KiB on
Linux) belongs to that size alone. Usage: ``python benchmarks/bench_fixtures.py [N ...]``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, resource, sys, time
from data_fixtures.generator import generate
n, out = int(sys.argv[1]), sys.argv[2]
t0 = time.perf_counter()
res = generate(out, n_conversations=n, seed=0)
secs = time.perf_counter() - t0
rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"n": n, "seconds": round(secs, 2), "peak_rss_mb": round(rss_mb),
                  "n_messages": res["n_messages"], "truth": res["truth"]}))
"""


def run(n: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench_fixtures_") as out:
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, str(n), out], capture_output=True, text=True, check=True, cwd=ROOT
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> None:
    sizes = [int(a) for a in argv] or [100_000, 1_000_000]
    print(f"{'conversations':>13} {'messages':>10} {'seconds':>8} {'peak RSS MB':>12}")
    for n in sizes:
        r = run(n)
        print(f"{r['n']:>13,} {r['n_messages']:>10,} {r['seconds']:>8.2f} {r['peak_rss_mb']:>12,}")


if __name__ == "__main__":
    main(sys.argv[1:])
