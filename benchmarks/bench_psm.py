"""Benchmark of propensity matching: 1M-row timing, DoWhy's defaults alone, coverage study.

Run: ``.venv/bin/python benchmarks/bench_psm.py [--rows 1000000] [--seeds 100] [--skip-dowhy]``.

1. The full question at ``--rows`` conversations (estimate, 200-replicate bootstrap interval,
   balance, overlap, four refutations with refitted propensities), timed; target < 2 minutes.
2. DoWhy 0.14's defaults alone on the same data: ``backdoor.propensity_score_matching`` (ATT)
   and one refuter (``random_common_cause``, few simulations), timed; we also record whether
   that refuter merely returned the original estimate (the stale-propensity problem).
3. Coverage of the 95% interval of the true ATT over ``--seeds`` simulated data sets
   (4,000 conversations each), plus how often each refuter passes on these correct models.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from methods.psm import estimate_psm
from tests.test_psm import COVARIATES, simulate

T, Y = "asked_email_first", "resolved"
TRUE = 0.03


def bench_full(rows: int) -> dict:
    df = simulate(rows, seed=2026, effect=TRUE)
    t0 = time.perf_counter()
    r = estimate_psm(df, T, Y, COVARIATES, n_bootstrap=200, seed=0, refute=True, n_refute_sims=30)
    secs = time.perf_counter() - t0
    return {
        "rows": rows, "seconds": round(secs, 2), "estimate": r.estimate, "ci": [r.ci_low, r.ci_high],
        "covers_truth": bool(r.ci_low <= TRUE <= r.ci_high), "naive": r.naive_estimate,
        "ipw": r.extras["ipw_estimate"], "aipw": r.extras["aipw_estimate"], "n_cells": r.extras["n_cells"],
        "balance_passed": all(b.passed for b in r.balance),
        "refutations": {x.refuter: x.passed for x in r.refutations},
        "diagnostics_failed": [d.name for d in r.diagnostics if not d.passed],
    }


def bench_dowhy(rows: int, sims: int = 3) -> dict:
    from dowhy import CausalModel

    logging.getLogger("dowhy").setLevel(logging.ERROR)
    df = simulate(rows, seed=2026, effect=TRUE)
    t0 = time.perf_counter()
    model = CausalModel(data=df, treatment=T, outcome=Y, common_causes=COVARIATES)
    estimand = model.identify_effect(proceed_when_unidentifiable=True)
    est = model.estimate_effect(estimand, method_name="backdoor.propensity_score_matching", target_units="att")
    t_est = time.perf_counter() - t0
    t1 = time.perf_counter()
    ref = model.refute_estimate(estimand, est, method_name="random_common_cause", num_simulations=sims,
                                n_jobs=1, show_progress_bar=False)
    t_ref = time.perf_counter() - t1
    return {
        "rows": rows, "estimate": float(est.value), "estimate_seconds": round(t_est, 2),
        "refuter": "random_common_cause", "refuter_sims": sims, "refuter_seconds": round(t_ref, 2),
        "refuter_new_effect": float(ref.new_effect),
        "refuter_returned_original_exactly": bool(float(ref.new_effect) == float(est.value)),
        "interval": None, "balance": None, "caliper": None,
    }


def coverage(seeds: int, rows: int = 4000) -> dict:
    hits, refute_pass, ests = [], {}, []
    t0 = time.perf_counter()
    for s in range(seeds):
        r = estimate_psm(simulate(rows, seed=10_000 + s, effect=TRUE), T, Y, COVARIATES,
                         n_bootstrap=100, seed=s, refute=True, n_refute_sims=20)
        hits.append(r.ci_low <= TRUE <= r.ci_high)
        ests.append(r.estimate)
        for x in r.refutations:
            refute_pass.setdefault(x.refuter, []).append(x.passed)
    return {
        "seeds": seeds, "rows_each": rows, "true_att": TRUE, "coverage": float(np.mean(hits)),
        "mean_estimate": float(np.mean(ests)), "sd_estimate": float(np.std(ests, ddof=1)),
        "refuter_pass_rate": {k: float(np.mean(v)) for k, v in refute_pass.items()},
        "seconds": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--skip-dowhy", action="store_true")
    a = ap.parse_args()
    out = {"full_question": bench_full(a.rows)}
    print(json.dumps(out, indent=2), flush=True)
    if not a.skip_dowhy:
        out["dowhy_defaults"] = bench_dowhy(a.rows)
        print(json.dumps({"dowhy_defaults": out["dowhy_defaults"]}, indent=2), flush=True)
    if a.seeds:
        out["coverage"] = coverage(a.seeds)
        print(json.dumps({"coverage": out["coverage"]}, indent=2), flush=True)


if __name__ == "__main__":
    main()
