"""The whole nightly graph at production size: per-stage seconds and peak memory.

    .venv/bin/python benchmarks/bench_pipeline.py --conversations 1000000

Generates N conversations (about 8 messages each) in a child process, then runs `convocausal
run`'s in-process Dagster materialization (extraction of every day, store publish, all three
questions with every check) and prints one line per stage. Peak RSS of the run is this
process's maximum so far, so it is non-decreasing across stages; the stage that raised it is
the one whose figure jumps. Generation is measured on its own (its child's peak), because the
generator is not part of a nightly run. ``--raw DIR`` reuses a landing directory written earlier.

At 10M conversations: ``--conversations 10000000 --workdir /big/disk --keep`` (about 12 GB of
parquet and DuckDB parts).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipelines.runner import run_pipeline


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--conversations", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--raw", type=Path, default=None, help="reuse this landing directory instead of generating")
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="convocausal_bench_"))
    raw, store = args.raw or work / "raw", work / "store.duckdb"
    for stale in (store, store.with_name(store.name + ".parts")):
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
    timings: dict = {}
    if args.raw is None:
        t0 = time.perf_counter()
        code = ("import sys; from data_fixtures.generator import generate; "
                "generate(sys.argv[1], n_conversations=int(sys.argv[2]), seed=int(sys.argv[3]))")
        subprocess.run([sys.executable, "-c", code, str(raw), str(args.conversations), str(args.seed)], check=True)
        timings["generate (child process, not part of the run)"] = {
            "seconds": round(time.perf_counter() - t0, 2),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
        }
    t1 = time.perf_counter()
    rows = run_pipeline(raw, store, timings=timings)
    total = time.perf_counter() - t1
    truth = json.loads((raw / "truth.json").read_text())
    print(f"conversations: {args.conversations:,}" if args.raw is None else f"landing directory: {raw}")
    from stage_table import print_estimates, print_stages  # benchmarks/, the script's folder

    print_stages(timings, "nightly run total", total)
    print_estimates(rows, truth)
    if not args.keep and args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
