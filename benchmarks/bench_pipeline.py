"""The whole nightly graph at production size: per-stage seconds and peak memory.

    .venv/bin/python benchmarks/bench_pipeline.py --conversations 1000000

Generates N conversations (about 8 messages each), then runs `convocausal run`'s in-process
Dagster materialization (extraction of every day, store publish, all three questions with
every check) and prints one line per stage. Peak RSS is the process maximum so far, so it is
non-decreasing across stages; the stage that raised it is the one whose figure jumps.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time
from pathlib import Path

from convocausal.runner import run_pipeline
from data_fixtures.generator import generate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--conversations", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="convocausal_bench_"))
    raw, store = work / "raw", work / "store.duckdb"
    timings: dict = {}
    t0 = time.perf_counter()
    generate(raw, n_conversations=args.conversations, seed=args.seed)
    timings["generate (not part of the nightly run)"] = {
        "seconds": round(time.perf_counter() - t0, 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    t1 = time.perf_counter()
    rows = run_pipeline(raw, store, timings=timings)
    total = time.perf_counter() - t1
    truth = json.loads((raw / "truth.json").read_text())
    print(f"conversations: {args.conversations:,}")
    for stage, t in timings.items():
        print(f"  {stage:<45} {t['seconds']:>8.1f} s   peak RSS {t['peak_rss_mib']:>7,} MiB")
    print(f"  {'nightly run total':<45} {total:>8.1f} s")
    for r in rows:
        print(f"  {r['question_id']:<24} estimate {r.get('estimate')} CI [{r.get('ci_low')}, {r.get('ci_high')}] "
              f"truth {truth.get(r['question_id'])}")
    if not args.keep and args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
