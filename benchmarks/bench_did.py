"""Diff-in-diff at scale: the DuckDB-compressed path vs row-level statsmodels.

    .venv/bin/python benchmarks/bench_did.py --rows 10000000 --row-level 1000000,5000000

Builds a conversation-like table in a temporary DuckDB file (24 skills = clusters, 8 treated;
26 weeks, launch at week 12; fixed effects intent (8) and hour_of_day (24); binary outcome with a
true effect of +0.04). Every measurement runs in its own child process so its peak RSS
(``ru_maxrss``) is its own: the compressed path (cells only, then the full ``estimate_did`` with
event study, wild cluster bootstrap, placebo and plots) at each size, and the row-level
reference (pull the rows into pandas, dummy matrix, ``sm.OLS(...).fit(cov_type="cluster")``)
at the sizes given in ``--row-level``. A child that exceeds ``--timeout`` seconds is stopped and
reported as such. Prints one JSON object per measurement, then a summary table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = "2026-03-30"
TRUE_EFFECT = 0.04


def generate(db: str, rows: int, seed: int) -> dict:
    """The benchmark table, generated inside DuckDB (never through pandas)."""
    import duckdb

    t0 = time.perf_counter()
    con = duckdb.connect(db)
    con.execute(f"SELECT setseed({(seed % 1000) / 1000.0})")
    con.execute(f"""
        CREATE OR REPLACE TABLE convs AS
        WITH base AS (
            SELECT floor(random() * 24)::INTEGER AS s, floor(random() * 26)::INTEGER AS w,
                   floor(random() * 8)::INTEGER AS intent, floor(random() * 24)::INTEGER AS hour_of_day,
                   random() AS u
            FROM range({rows}) r(i)
        )
        SELECT CASE WHEN s < 8 THEN 'tier1-' WHEN s < 16 THEN 'tier2-' ELSE 'billing-' END || (s % 8 + 1) AS skill,
               (s >= 8 AND s < 16)::INTEGER AS treated,
               DATE '2026-01-05' + INTERVAL (7 * w) DAY AS week,
               'intent-' || intent AS intent, hour_of_day,
               (u < 0.35 + 0.01 * (s % 8) - 0.05 * (s >= 8 AND s < 16)::INTEGER + 0.01 * w + 0.02 * (intent % 3)
                    + 0.002 * hour_of_day + {TRUE_EFFECT} * ((s >= 8 AND s < 16) AND w >= 12)::INTEGER)::INTEGER
                   AS resolved
        FROM base
    """)
    n = con.execute("SELECT COUNT(*) FROM convs").fetchone()[0]
    con.close()
    return {"step": "generate", "rows": n, "seconds": round(time.perf_counter() - t0, 2)}


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def child_compressed(db: str, rows: int, n_boot: int) -> dict:
    import duckdb

    from methods.did import estimate_did
    from methods.did.compress import compress

    base_mb = _peak_mb()
    con = duckdb.connect(db, read_only=True)
    rel = "convs" if rows <= 0 else "bench_rows"
    if rows > 0:
        con.execute(f"CREATE TEMP VIEW bench_rows AS SELECT * FROM convs LIMIT {int(rows)}")
    n = con.execute(f"SELECT COUNT(*) FROM {rel}").fetchone()[0]
    t0 = time.perf_counter()
    cells = compress(con, rel, "resolved", {"treated": "treated", "time": "week", "fe0": "intent",
                                            "fe1": "hour_of_day", "cluster": "skill"})
    t_cells = time.perf_counter() - t0
    t0 = time.perf_counter()
    r = estimate_did((con, rel), outcome="resolved", treated="treated", time="week", launch=LAUNCH,
                     fixed_effects=["intent", "hour_of_day"], cluster="skill", n_boot=n_boot)
    t_full = time.perf_counter() - t0
    con.close()
    return {"step": "compressed", "rows": n, "cells": len(cells), "seconds_cells": round(t_cells, 2),
            "seconds_estimate_did": round(t_full, 2), "peak_rss_mb": round(_peak_mb(), 1),
            "rss_after_imports_mb": round(base_mb, 1), "estimate": r.estimate, "std_error": r.std_error,
            "ci": [r.ci_low, r.ci_high], "truth": TRUE_EFFECT, "ci_method": r.ci_method}


def child_rowlevel(db: str, rows: int) -> dict:
    import duckdb
    import numpy as np
    import pandas as pd
    import statsmodels.api as sm

    base_mb = _peak_mb()
    con = duckdb.connect(db, read_only=True)
    t0 = time.perf_counter()
    df = con.execute(f"SELECT resolved, treated, week, intent, hour_of_day, skill FROM convs LIMIT {int(rows)}").df()
    con.close()
    t_pull = time.perf_counter() - t0
    t0 = time.perf_counter()
    post = (df["week"] >= pd.Timestamp(LAUNCH)).to_numpy(float)
    tr = df["treated"].to_numpy(float)
    fe = pd.get_dummies(df[["intent", "hour_of_day"]].astype("category"), drop_first=True, dtype=float)
    X = np.column_stack([np.ones(len(df)), tr, post, tr * post, fe.to_numpy()])
    res = sm.OLS(df["resolved"].to_numpy(float), X).fit(cov_type="cluster",
                                                        cov_kwds={"groups": pd.factorize(df["skill"])[0]})
    t_fit = time.perf_counter() - t0
    return {"step": "row_level_statsmodels", "rows": len(df), "seconds_pull": round(t_pull, 2),
            "seconds_fit": round(t_fit, 2), "peak_rss_mb": round(_peak_mb(), 1),
            "rss_after_imports_mb": round(base_mb, 1), "estimate": float(res.params[3]),
            "std_error": float(res.bse[3])}


def run_child(args: list[str], timeout: float) -> dict:
    cmd = [sys.executable, __file__, *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired:
        return {"step": args[1], "args": args, "error": f"timed out after {timeout:.0f}s"}
    if out.returncode != 0:
        return {"step": args[1], "args": args, "error": (out.stderr.strip().splitlines() or ["?"])[-1],
                "wall_seconds": round(time.perf_counter() - t0, 1)}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--compressed-sizes", default="1000000,5000000", help="extra sizes for the compressed path")
    ap.add_argument("--row-level", default="1000000,5000000", help="sizes for row-level statsmodels")
    ap.add_argument("--n-boot", type=int, default=999)
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per child measurement")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--db", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child == "compressed":
        print(json.dumps(child_compressed(args.db, args.n, args.n_boot)))
        return
    if args.child == "rowlevel":
        print(json.dumps(child_rowlevel(args.db, args.n)))
        return

    sizes = [int(s) for s in args.compressed_sizes.split(",") if s.strip()]
    rowsizes = [int(s) for s in args.row_level.split(",") if s.strip()]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "bench.duckdb")
        results.append(generate(db, args.rows, args.seed))
        print(json.dumps(results[-1]), flush=True)
        for n in [*sizes, 0]:
            results.append(run_child(["--child", "compressed", "--db", db, "--n", str(n), "--n-boot",
                                      str(args.n_boot)], args.timeout))
            print(json.dumps(results[-1]), flush=True)
        for n in rowsizes:
            results.append(run_child(["--child", "rowlevel", "--db", db, "--n", str(n)], args.timeout))
            print(json.dumps(results[-1]), flush=True)
    print("\nstep                     rows        seconds                      peak RSS MB  estimate")
    for r in results[1:]:
        if "error" in r:
            print(f"{r['step']:<24} {r['args'][-1] if 'args' in r else '':>10}  {r['error']}")
        elif r["step"] == "compressed":
            print(f"{'compressed (cells)':<24} {r['rows']:>10,}  cells {r['seconds_cells']:>6}s, "
                  f"estimate_did {r['seconds_estimate_did']:>6}s  {r['peak_rss_mb']:>9}  {r['estimate']:.5f}")
        else:
            print(f"{'row-level statsmodels':<24} {r['rows']:>10,}  pull {r['seconds_pull']:>6}s, "
                  f"fit {r['seconds_fit']:>6}s          {r['peak_rss_mb']:>9}  {r['estimate']:.5f}")


if __name__ == "__main__":
    main()
