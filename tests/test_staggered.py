"""Staggered rollouts: Callaway–Sant'Anna recovers the truth where two-way fixed effects is biased."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from methods.did import estimate_did
from methods.result import MethodRefusal


def simulate(n: int = 60_000, n_units: int = 30, n_periods: int = 20, cohorts=(6, 10, 14), n_never: int = 6,
             growth: float = 0.02, base_effect: float = 0.0, seed: int = 0, drift: float = 0.0):
    """Units (skills) switch on at staggered periods; the effect in exposure period k (0 = first) is
    ``base_effect + growth·(k + 1)``. Returns rows and the true overall ATT: the mean true effect over
    treated post-rollout rows (the conversation-weighted average the estimator targets)."""
    rng = np.random.default_rng(seed)
    per = (n_units - n_never) // len(cohorts)
    unit_cohort = np.concatenate([np.repeat(cohorts, per), np.full(n_units - per * len(cohorts), np.nan)])
    u = rng.integers(0, n_units, n)
    t = rng.integers(0, n_periods, n)
    coh = unit_cohort[u]
    exposure = np.where(np.isnan(coh), -1, t - np.nan_to_num(coh, nan=10**6))
    effect = np.where(exposure >= 0, base_effect + growth * (exposure + 1), 0.0)
    pre_drift = drift * np.where(np.isnan(coh), 0.0, np.minimum(t - np.nan_to_num(coh), 0))
    y = (0.3 + rng.normal(0, 0.1, n_units)[u] + 0.03 * t + effect + pre_drift
         + rng.normal(0, 0.01, (n_units, n_periods))[u, t] + rng.normal(0, 0.3, n))
    df = pd.DataFrame({"y": y, "unit": np.char.add("skill-", u.astype(str)), "period": t, "cohort": coh,
                       "treated": (~np.isnan(coh)).astype(int), "intent": rng.integers(0, 5, n)})
    return df, float(effect[exposure >= 0].mean())


def _run(df, **kw):
    args = {"outcome": "y", "treated": "treated", "time": "period", "cluster": "unit", "cohort": "cohort",
            "n_boot": 299}
    args.update(kw)
    return estimate_did(df, **args)


def test_cs_recovers_truth_where_twfe_is_biased():
    df, truth = simulate(seed=1)
    r = _run(df, fixed_effects=["intent"])
    assert r.ci_low < truth < r.ci_high
    twfe, twfe_se = r.extras["twfe_estimate"], r.extras["twfe_se"]
    assert abs(twfe - truth) > 3 * twfe_se  # TWFE misses the truth by a wide margin
    assert not (r.ci_low < twfe < r.ci_high)
    diag = {d.name: d for d in r.diagnostics}
    assert not diag["twfe_vs_cs"].passed and "TWFE" in diag["twfe_vs_cs"].message
    assert diag["pre_trend"].passed
    assert not (r.ci_low < r.naive_estimate < r.ci_high)
    att_gt = r.extras["att_gt"]
    post = att_gt[att_gt["event_time"] >= 0]
    true_gt = 0.02 * (post["event_time"] + 1)
    assert ((post["att"] - true_gt).abs() < 4 * post["se"]).mean() > 0.9
    assert set(r.plots) == {"group_means", "event_study"}


def test_constant_effect_twfe_and_cs_agree_with_never_treated_controls():
    df, truth = simulate(seed=2, growth=0.0, base_effect=0.05)
    r = _run(df, control_group="never")
    assert r.ci_low < 0.05 < r.ci_high and truth == pytest.approx(0.05)
    assert {d.name: d for d in r.diagnostics}["twfe_vs_cs"].passed
    assert "never controls" in r.ci_method


def test_staggered_null_covers_zero_and_diverging_cohorts_fail_pre_trend():
    df, _ = simulate(seed=3, growth=0.0)
    r = _run(df)
    assert r.ci_low < 0 < r.ci_high
    df, _ = simulate(seed=4, drift=0.01)
    pre = {d.name: d for d in _run(df).diagnostics}["pre_trend"]
    assert not pre.passed and pre.message.startswith("pre-launch trajectories diverge")


def test_deterministic_by_seed():
    df, _ = simulate(n=20_000, seed=5)
    a, b = _run(df, seed=3, n_boot=99), _run(df, seed=3, n_boot=99)
    assert (a.estimate, a.ci_low, a.ci_high) == (b.estimate, b.ci_low, b.ci_high)


def test_refusals_and_usage_errors():
    df, _ = simulate(n=10_000, seed=6)
    one = df.assign(cohort=np.where(df["unit"] == "skill-0", 6.0, np.nan))
    with pytest.raises(MethodRefusal, match="Only 1 treated"):
        _run(one)
    mixed = df.assign(cohort=np.where(df.index % 2 == 0, df["cohort"], 8.0))
    with pytest.raises(ValueError, match="constant within each cluster"):
        _run(mixed)
    with pytest.raises(ValueError, match="cluster"):
        _run(df, cluster=None)
