"""Synthetic control at scale: one weight fit, placebo inference, and the full estimate.

    .venv/bin/python benchmarks/bench_sc.py --donors 1000 --periods 100

The panel is a factor model (seasonality, trend, random walk, unit levels, noise) with a
known effect on one treated unit that is a convex combination of four donors. Prints one
JSON object: seconds for a single weight fit, for placebo-in-space inference (every donor
refit as if treated), for the whole ``estimate_sc`` (placebos, conformal interval,
refuters, plots), and the estimate against the truth.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd

from methods.sc import estimate as sc
from methods.sc.weights import fit_weights


def make_panel(n_donors: int, n_periods: int, launch: int, effect: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    t = np.arange(n_periods)
    factors = np.column_stack([np.sin(2 * np.pi * t / 12), 0.05 * t, np.cumsum(rng.normal(0, 0.3, n_periods))])
    loadings = rng.uniform(0.5, 1.5, (n_donors, 3))
    signal = rng.normal(5.0, 1.0, n_donors)[None, :] + factors @ loadings.T
    donors = signal + rng.normal(0, 0.25, signal.shape)
    treated = signal[:, :4] @ np.array([0.4, 0.3, 0.2, 0.1]) + rng.normal(0, 0.25, n_periods) + effect * (t >= launch)
    units = np.concatenate([[f"d{j:04d}" for j in range(n_donors)], ["treated"]])
    values = np.column_stack([donors, treated])
    return pd.DataFrame({"unit": np.repeat(units, n_periods), "t": np.tile(t, n_donors + 1),
                         "y": values.T.ravel()})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--donors", type=int, default=1000)
    ap.add_argument("--periods", type=int, default=100)
    ap.add_argument("--effect", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    launch = round(args.periods * 0.8)
    panel = make_panel(args.donors, args.periods, launch, args.effect, args.seed)
    data = sc._prepare(panel, "unit", "t", "y", ["treated"], launch, None)
    pre = data.pre

    t0 = time.perf_counter()
    w = fit_weights(data.X[pre], data.y[pre])
    one_fit = time.perf_counter() - t0
    gap = data.y - data.X @ w
    t0 = time.perf_counter()
    placebo = sc._placebo_in_space(data, None, sc._rms(gap[pre]), sc._rms(gap[data.post]))
    placebo_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = sc.estimate_sc(panel, "unit", "t", "y", ["treated"], launch)
    full_s = time.perf_counter() - t0
    print(json.dumps({
        "donors": args.donors, "periods": args.periods, "pre_periods": int(pre.sum()),
        "one_weight_fit_s": round(one_fit, 4), "placebo_in_space_s": round(placebo_s, 2),
        "placebo_fits_per_s": round(args.donors / placebo_s, 1), "estimate_sc_total_s": round(full_s, 2),
        "nonzero_weights": int((w > 1e-8).sum()), "placebo_p_value": placebo["p_value"],
        "true_effect": args.effect, "estimate": round(res.estimate, 4),
        "ci": [round(res.ci_low, 4), round(res.ci_high, 4)], "checks": {d.name: d.passed for d in res.diagnostics},
    }, indent=1))


if __name__ == "__main__":
    main()
