"""Synthetic control against panels with a known effect built in.

Donors follow a factor model (common seasonality and trend, unit-specific loadings and
levels, idiosyncratic noise); the treated series is a convex combination of donor signals
plus its own noise plus a known effect after launch. A strong common trend makes the naive
before/after difference wrong, so tests can demand that the interval covers the truth and
excludes the naive number.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize, nnls

from methods.result import MethodRefusal
from methods.sc.estimate import estimate_sc
from methods.sc.weights import fit_weights, objective


def factor_panel(seed: int = 0, n_donors: int = 20, n_periods: int = 30, launch: int = 20, effect: float = 1.0,
                 noise: float = 0.25, trend: float = 0.2, treated_offset: float = 0.0) -> tuple[pd.DataFrame, dict]:
    """Long panel: donors = levels + loadings x (seasonality, trend, random walk) + noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_periods)
    season, rw = np.sin(2 * np.pi * t / 12), np.cumsum(rng.normal(0, 0.3, n_periods))
    loadings = rng.uniform(0.5, 1.5, (n_donors, 3))
    levels = rng.normal(5.0, 1.0, n_donors)
    signal = (levels[None, :] + np.outer(season, loadings[:, 0]) + np.outer(trend * t, loadings[:, 1])
              + np.outer(rw, loadings[:, 2]))  # (T, J)
    donors = signal + rng.normal(0, noise, signal.shape)
    w_true = np.zeros(n_donors)
    w_true[:4] = [0.4, 0.3, 0.2, 0.1]
    treated = signal @ w_true + treated_offset + rng.normal(0, noise, n_periods) + effect * (t >= launch)
    rows = [pd.DataFrame({"unit": f"d{j:02d}", "t": t, "y": donors[:, j]}) for j in range(n_donors)]
    rows.append(pd.DataFrame({"unit": "treated", "t": t, "y": treated}))
    panel = pd.concat(rows, ignore_index=True)
    return panel, {"effect": effect, "launch": launch, "signal": signal, "w_true": w_true}


def run(panel: pd.DataFrame, launch=20, **kw):
    return estimate_sc(panel, unit="unit", time="t", outcome="y", treated_units=["treated"], launch=launch, **kw)


# --------------------------------------------------------------------------- the estimate
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_interval_covers_true_effect_and_excludes_naive(seed):
    panel, truth = factor_panel(seed=seed, effect=1.0)
    res = run(panel)
    assert res.method == "synthetic_control"
    assert res.estimand == "ATT (average post-launch gap, treated units)"
    assert res.ci_low <= truth["effect"] <= res.ci_high
    # the before/after trap: a common trend adds to the naive difference
    assert not (res.ci_low <= res.naive_estimate <= res.ci_high)
    assert abs(res.naive_estimate - truth["effect"]) > 0.5
    # the treated unit's post/pre RMSPE ratio is the most extreme: placebo rank p = 1 / (donors + 1)
    assert res.extras["placebo_p_value"] == pytest.approx(1 / 21)
    # the p-value is the conformal test the interval inverts: it rejects 0 as the interval does
    assert res.p_value == res.extras["conformal"]["p_value_at_zero"] < 0.05
    assert res.std_error == pytest.approx((res.ci_high - res.ci_low) / (2 * 1.959963984540054))
    assert "conformal" in res.ci_method and "Chernozhukov" in res.ci_method


def test_weights_gaps_and_plots_in_result():
    panel, _truth = factor_panel(seed=3)
    res = run(panel)
    w = res.extras["weights"]
    assert all(v > 0 for v in w.values()) and sum(w.values()) == pytest.approx(1.0)
    assert set(w) <= {f"d{j:02d}" for j in range(20)}
    # the donors the treated unit is built from carry most of the weight
    assert sum(w.get(f"d{j:02d}", 0.0) for j in range(4)) > 0.5
    assert len(res.extras["gaps"]) == 30 and len(res.extras["post_gaps"]) == 10
    assert np.mean(list(res.extras["post_gaps"].values())) == pytest.approx(res.estimate)
    for name in ("trajectory", "gaps"):
        assert res.plots[name][:8] == b"\x89PNG\r\n\x1a\n"
    assert res.n_treated == 1 and res.n_control == 20  # unit counts without a weight column
    js = res.to_json()
    assert js["weights"] == pytest.approx(w) and js["ci_method"] == res.ci_method
    inference = next(d for d in res.diagnostics if d.name == "sc_inference")
    assert "conformal permutation p-value of a zero effect" in inference.message and "2 x 1.96" in inference.message
    assert "placebo-in-space rank" in inference.message and "p_value = p(0)" in res.ci_method


def test_placebo_in_time_shows_no_effect():
    panel, truth = factor_panel(seed=4, effect=1.0)
    res = run(panel)
    ref = next(r for r in res.refutations if r.refuter == "placebo_in_time")
    assert ref.passed and ref.p_value > 0.05
    assert abs(ref.new_effect) < 0.3 * truth["effect"]
    loo = next(r for r in res.refutations if r.refuter == "leave_one_out_donors")
    assert loo.passed
    assert all(res.ci_low <= v <= res.ci_high for v in res.extras["leave_one_out"].values())


def test_null_effect_is_not_significant():
    panel, _ = factor_panel(seed=5, effect=0.0)
    res = run(panel)
    assert res.p_value > 0.1
    assert res.ci_low <= 0.0 <= res.ci_high


def test_poor_pre_fit_triggers_the_gate():
    # treated level far above every donor: no convex combination can reach it
    panel, _ = factor_panel(seed=6, treated_offset=6.0)
    res = run(panel)
    gate = next(d for d in res.diagnostics if d.name == "sc_pre_fit_gate")
    assert not gate.passed and gate.severity == "error"
    assert "should be read as an effect" in gate.message
    good = next(d for d in run(factor_panel(seed=6)[0]).diagnostics if d.name == "sc_pre_fit_gate")
    assert good.passed


def test_out_of_sample_fit_diagnostic_present():
    res = run(factor_panel(seed=7)[0])
    oos = next(d for d in res.diagnostics if d.name == "sc_out_of_sample_fit")
    assert oos.passed and "trained on the first" in oos.message


# --------------------------------------------------------------------------- refusals & input
def test_refuses_short_pre_period():
    panel, _ = factor_panel(seed=0)
    with pytest.raises(MethodRefusal, match="before the launch"):
        run(panel, launch=3)


def test_refuses_too_few_donors():
    panel, _ = factor_panel(seed=0)
    with pytest.raises(MethodRefusal, match="only 2 donor"):
        run(panel[panel.unit.isin(["treated", "d00", "d01"])])


def test_refuses_without_post_period_and_says_what_to_wait_for():
    panel, _ = factor_panel(seed=0)
    with pytest.raises(MethodRefusal, match="Wait for 2 more full period"):
        run(panel, launch=30)
    panel["week"] = pd.Timestamp("2026-01-05") + pd.to_timedelta(panel["t"] * 7, unit="D")
    last = panel["week"].max()  # one week after launch so far: wait one more week
    with pytest.raises(MethodRefusal, match=f"until about {(last + pd.Timedelta(days=7)).date().isoformat()}"):
        estimate_sc(panel, "unit", "week", "y", ["treated"], last)


def test_bad_input_raises_value_error():
    panel, _ = factor_panel(seed=0)
    with pytest.raises(ValueError, match="not found"):
        estimate_sc(panel, "unit", "t", "y", ["nope"], 20)
    with pytest.raises(ValueError, match="one row per"):
        estimate_sc(pd.concat([panel, panel.iloc[:1]]), "unit", "t", "y", ["treated"], 20)


def test_date_time_column_and_string_launch():
    panel, _truth = factor_panel(seed=8)
    panel["week"] = pd.Timestamp("2026-01-05") + pd.to_timedelta(panel["t"] * 7, unit="D")
    launch = (pd.Timestamp("2026-01-05") + pd.Timedelta(days=7 * 20)).date().isoformat()
    res = estimate_sc(panel, "unit", "week", "y", ["treated"], launch)
    ref = run(panel)
    assert res.estimate == pytest.approx(ref.estimate)
    assert res.extras["post_periods"] == 10


# --------------------------------------------------------------------------- volume-weighted panels
def binomial_cohorts(seed: int, effect: float = 0.06, n_weeks: int = 26, launch: int = 20):
    """Fixture-like rates: 8 treated and 24 donor cohorts, ~20-80 conversations per cell."""
    rng = np.random.default_rng(seed)
    wk = np.arange(n_weeks)
    season = 0.03 * np.sin(2 * np.pi * wk / n_weeks) + 0.001 * wk + rng.normal(0, 0.006, n_weeks)
    season[13] -= 0.06
    level = rng.uniform(0.45, 0.75, 32)
    vol = rng.integers(20, 80, 32)
    frames, truth_num, truth_den = [], 0.0, 0
    for u in range(32):
        is_t = u < 8
        p = np.clip(level[u] + season + (effect * (wk >= launch) if is_t else 0.0), 0.02, 0.98)
        n = rng.poisson(vol[u], n_weeks) + 1
        y = rng.binomial(n, p) / n
        frames.append(pd.DataFrame({"unit": f"{'t' if is_t else 'd'}{u:02d}", "t": wk, "y": y, "n": n}))
        if is_t:
            truth_num += effect * n[wk >= launch].sum()
            truth_den += n[wk >= launch].sum()
    return pd.concat(frames, ignore_index=True), [f"t{u:02d}" for u in range(8)], truth_num / truth_den


@pytest.mark.parametrize("seed", [0, 1])
def test_noisy_volume_weighted_cohorts(seed):
    panel, treated, effect = binomial_cohorts(seed)
    res = estimate_sc(panel, "unit", "t", "y", treated, 20, weight="n")
    assert res.ci_low <= effect <= res.ci_high
    assert res.ci_low > 0.0  # a 6-point lift is visible through ~50-conversation cells
    assert res.n_treated == int(panel.loc[panel.unit.isin(treated), "n"].sum())
    assert res.n_control == int(panel.loc[~panel.unit.isin(treated), "n"].sum())
    # the treated series is the volume-weighted mean of the treated cohorts
    tp = panel[panel.unit.isin(treated)]
    manual = tp.assign(yn=tp.y * tp.n).groupby("t")[["yn", "n"]].sum()
    series = pd.Series(res.extras["treated_series"]).to_numpy()
    np.testing.assert_allclose(series, (manual.yn / manual.n).to_numpy())
    assert res.extras["noise_penalty"] is True
    gate = next(d for d in res.diagnostics if d.name == "sc_pre_fit_gate")
    assert gate.passed


# --------------------------------------------------------------------------- solver
def _slsqp(X, y, pen):
    J = X.shape[1]
    res = minimize(lambda v: objective(X, y, v, pen), np.full(J, 1.0 / J), method="SLSQP",
                   jac=lambda v: -2 * X.T @ (y - X @ v) + (0 if pen is None else 2 * pen * v),
                   bounds=[(0, None)] * J, constraints=[{"type": "eq", "fun": lambda v: v.sum() - 1}],
                   options={"ftol": 1e-15, "maxiter": 5000})
    return res.fun


@pytest.mark.parametrize("seed", range(8))
def test_solver_matches_independent_formulations(seed):
    rng = np.random.default_rng(100 + seed)
    T, J = int(rng.integers(5, 25)), int(rng.integers(2, 30))
    X = np.cumsum(rng.normal(size=(T, J)), axis=0) + rng.normal(0, 2, J)
    y = X[:, : min(3, J)].mean(axis=1) + rng.normal(0, 0.5, T) + (3.0 if seed % 3 == 0 else 0.0)
    pen = rng.uniform(0, 2, J) if seed % 2 else None
    w = fit_weights(X, y, pen)
    assert np.all(w >= 0) and w.sum() == pytest.approx(1.0, abs=1e-12)
    f = objective(X, y, w, pen)
    assert f <= _slsqp(X, y, pen) + 1e-6 * max(1.0, f)
    if pen is None:  # scipy NNLS with a heavy sum-to-one row
        M = 1e4 * max(1.0, float(np.abs(X).max()))
        v, _ = nnls(np.vstack([X, M * np.ones(J)]), np.r_[y, M], maxiter=50 * J)
        assert f == pytest.approx(objective(X, y, v / v.sum()), abs=1e-6 * max(1.0, f))


def test_solver_recovers_exact_convex_combination():
    rng = np.random.default_rng(9)
    X = rng.normal(size=(40, 12))
    w_true = np.zeros(12)
    w_true[[1, 5, 7]] = [0.5, 0.3, 0.2]
    np.testing.assert_allclose(fit_weights(X, X @ w_true), w_true, atol=1e-8)


# --------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("permutations", ["iid", "moving_block"])
def test_two_runs_are_identical(permutations):
    panel, _ = factor_panel(seed=10)
    a, b = run(panel, permutations=permutations), run(panel, permutations=permutations)
    assert a.to_json() == b.to_json()
    assert a.plots == b.plots
    assert a.extras["conformal"]["permutations"].startswith("moving-block" if permutations != "iid" else "i.i.d.")
    moved = run(panel, permutations=permutations, seed=1)
    # the seed only touches the i.i.d. permutation draws: the conformal p-value moves with it, nothing else
    assert moved.estimate == a.estimate and moved.extras["placebo_p_value"] == a.extras["placebo_p_value"]
    assert (moved.p_value == a.p_value) == (permutations == "moving_block")


# --------------------------------------------------------------------------- calibration (slow)
@pytest.mark.slow
def test_coverage_and_null_rejection_rate_over_many_panels():
    cover, reject = [], []
    for seed in range(60):
        panel, _truth = factor_panel(seed=1000 + seed, effect=0.5)
        res = run(panel)
        cover.append(res.ci_low <= 0.5 <= res.ci_high)
        null = run(factor_panel(seed=2000 + seed, effect=0.0)[0])
        reject.append(null.p_value <= 0.05)
    assert np.mean(cover) >= 0.88
    assert np.mean(reject) <= 0.15


def test_non_rate_outcome_uses_pooled_noise_estimate():
    """A 1-5 score (not a rate) takes the first-difference noise estimate instead of p(1-p)/n:
    on a rescaled rate panel both paths should price donors alike and give the same answer."""
    panel, treated, effect = binomial_cohorts(0)
    rate = estimate_sc(panel, "unit", "t", "y", treated, 20, weight="n")
    score = estimate_sc(panel.assign(y=1 + 4 * panel.y), "unit", "t", "y", treated, 20, weight="n")
    assert score.estimate == pytest.approx(4 * rate.estimate, rel=0.1)
    assert score.ci_low <= 4 * effect <= score.ci_high
