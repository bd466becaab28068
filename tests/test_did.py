"""estimate_did against simulated rollouts with a known effect, a large common trend, and clusters.

Every truth here is built into the simulation (never read back from the estimator): skills with
different resolution levels move in parallel over the weeks; the treated skills gain ``effect``
after launch. The naive post − pre change of the treated skills carries the large common trend,
so a correct interval must cover ``effect`` and exclude that naive difference.
"""

from __future__ import annotations

import datetime as dt

import duckdb
import numpy as np
import pandas as pd
import pytest

from methods.did import estimate_did
from methods.result import EstimateResult, MethodRefusal

LAUNCH = dt.date(2026, 3, 30)
START = pd.Timestamp("2026-01-05")


def simulate(n: int = 30_000, n_skills: int = 24, n_weeks: int = 26, launch_week: int = 12, effect: float = 0.06,
             trend: float = 0.015, drift: float = 0.0, seed: int = 0, binary: bool = True) -> pd.DataFrame:
    """Fixture-like rows: skills tier1/tier2/billing-1..8 (tier2 treated), weekly common trend + a
    holiday dip, skill levels, intent effects, a skill×week shock, ``effect`` on tier2 after launch.
    ``drift`` adds a treated-only slope before launch (violates parallel trends)."""
    rng = np.random.default_rng(seed)
    skill = rng.integers(0, n_skills, n)
    fam = np.array(["tier1", "tier2", "billing"])[skill * 3 // n_skills]
    treated = (fam == "tier2").astype(np.int64)
    week = rng.integers(0, n_weeks, n)
    intent = rng.integers(0, 8, n)
    level = rng.normal(0, 0.05, n_skills)[skill] + np.where(fam == "tier2", -0.1, np.where(fam == "billing", 0.05, 0))
    season = trend * week - 0.04 * (week == 13)
    shock = rng.normal(0, 0.01, (n_skills, n_weeks))[skill, week]
    pre_drift = drift * treated * (week - launch_week) * (week < launch_week)
    p = 0.35 + level + season + 0.03 * (intent % 3) + shock + pre_drift + effect * treated * (week >= launch_week)
    y = rng.binomial(1, np.clip(p, 0.01, 0.99)).astype(float) if binary else p + rng.normal(0, 0.3, n)
    return pd.DataFrame({
        "resolved": y, "treated": treated, "week": START + pd.to_timedelta(7 * week, unit="D"),
        "post": (week >= launch_week).astype(np.int64), "intent": np.char.add("intent-", intent.astype(str)),
        "skill": np.char.add(fam, np.char.add("-", (skill % (n_skills // 3) + 1).astype(str))),
    })


def _did(df, **kw) -> EstimateResult:
    args = {"outcome": "resolved", "treated": "treated", "time": "week", "launch": LAUNCH,
            "fixed_effects": ["intent"], "cluster": "skill", "n_boot": 399}
    args.update(kw)
    return estimate_did(df, **args)


@pytest.fixture(scope="module")
def standard():
    df = simulate(seed=1)
    return df, _did(df)


def test_interval_covers_truth_and_excludes_naive(standard):
    _, r = standard
    assert r.method == "diff_in_diff" and r.estimand == "ATT (treated × post)"
    assert r.ci_low < 0.06 < r.ci_high
    assert not (r.ci_low < r.naive_estimate < r.ci_high)
    assert r.naive_estimate > 0.15  # the common trend dominates the naive change
    assert r.n_treated + r.n_control == 30_000
    assert "wild cluster bootstrap" in r.ci_method
    checks = {d.name: d for d in r.diagnostics}
    assert checks["n_clusters"].value == 24 and "8 treated, 16 control" in checks["n_clusters"].message
    assert "wild cluster bootstrap" in checks["inference"].message
    assert checks["pre_trend"].passed
    placebo = {x.refuter: x for x in r.refutations}["placebo_launch"]
    assert placebo.passed and "pass rule" in placebo.message


def test_plots_are_png(standard):
    _, r = standard
    assert set(r.plots) >= {"group_means", "event_study"}
    assert all(png[:8] == b"\x89PNG\r\n\x1a\n" for png in r.plots.values())


def test_duckdb_relation_gives_the_same_answer(standard):
    df, r = standard
    con = duckdb.connect()
    con.register("src", df)
    con.execute("CREATE TABLE convs AS SELECT * FROM src")
    r2 = _did((con, "convs"))
    assert r2.estimate == pytest.approx(r.estimate, abs=1e-12)
    assert (r2.ci_low, r2.ci_high, r2.p_value) == pytest.approx((r.ci_low, r.ci_high, r.p_value), abs=1e-9)


def test_diverging_pre_trends_fail_the_pre_trend_check():
    r = _did(simulate(seed=2, drift=0.008))
    pre = {d.name: d for d in r.diagnostics}["pre_trend"]
    assert not pre.passed
    assert pre.message.startswith("pre-launch trajectories diverge: consider synthetic control")
    assert pre.severity == "error"
    from convocausal.questions.answer import result_checks

    assert {c.name: c.state for c in result_checks(r)}["pre_trend"] == "failed"


def test_null_effect_interval_covers_zero():
    r = _did(simulate(seed=3, effect=0.0))
    assert r.ci_low < 0.0 < r.ci_high
    assert r.p_value > 0.05
    assert not (r.ci_low < r.naive_estimate < r.ci_high)


def test_post_column_without_time_and_many_clusters_uses_cr1():
    df = simulate(n=20_000, n_skills=60, seed=4, binary=False)
    r = estimate_did(df, outcome="resolved", treated="treated", post="post", cluster="skill")
    assert r.ci_low < 0.06 < r.ci_high
    assert "CR1" in r.ci_method and "t(59)" in r.ci_method
    pre = {d.name: d for d in r.diagnostics}["pre_trend"]
    assert not pre.passed and not pre.tested and "without a time column" in pre.message
    assert "group_means" in r.plots
    # untestable is not the same as diverging: the check did not run, it did not fail
    from convocausal.questions.answer import result_checks

    check = {c.name: c for c in result_checks(r)}["pre_trend"]
    assert check.state == "not_run" and "without a time column" in check.message


def test_no_cluster_uses_hc1_with_a_warning():
    df = simulate(n=20_000, seed=5, binary=False)
    r = estimate_did(df, outcome="resolved", treated="treated", time="week", launch=LAUNCH, n_boot=199)
    assert "HC1" in r.ci_method
    assert "no cluster given" in {d.name: d for d in r.diagnostics}["inference"].message


def test_one_treated_cluster_gets_placebo_inference_not_a_refusal():
    """Issue 13: one treated skill used to be refused; now the interval comes from space-time placebos
    (``tests/test_did_launch_and_few_clusters.py`` measures its size and coverage). No treated cluster
    at all is still refused."""
    df = simulate(n=20_000, seed=6)
    df["treated"] = (df["skill"] == "tier2-1").astype(int)
    r = _did(df)
    assert np.isfinite(r.ci_low) and np.isfinite(r.ci_high) and r.ci_low < r.estimate < r.ci_high
    assert "space-time placebos" in r.ci_method
    assert "Conley–Taber" in {d.name: d for d in r.diagnostics}["inference"].message
    with pytest.raises(MethodRefusal, match="Only 0 treated and 24 control skill"):
        _did(df.assign(treated=0))


def test_refuses_without_post_launch_data():
    df = simulate(n=5_000, seed=7)
    with pytest.raises(MethodRefusal, match="after launch"):
        _did(df, launch=dt.date(2027, 1, 4))


def test_unit_fixed_effect_absorbing_treated_is_handled():
    """skill dummies absorb ``treated``: the interaction stays identified and unchanged in meaning."""
    df = simulate(n=20_000, seed=8, binary=False)
    r = _did(df, fixed_effects=["intent", "skill"], n_boot=199)
    assert r.ci_low < 0.06 < r.ci_high
    assert "collinear_columns" in {d.name for d in r.diagnostics}


def test_bad_arguments_are_usage_errors():
    df = simulate(n=2_000, seed=9)
    with pytest.raises(ValueError, match="needs post"):
        estimate_did(df, outcome="resolved", treated="treated")
    with pytest.raises(ValueError, match="0/1"):
        estimate_did(df.assign(treated=df["treated"] * 2), outcome="resolved", treated="treated", post="post")
    with pytest.raises(TypeError):
        estimate_did([1, 2], outcome="resolved", treated="treated", post="post")


@pytest.mark.slow
def test_coverage_over_repeated_simulations():
    """Across 40 simulated rollouts with 24 clusters the 95% wild-bootstrap interval covers the truth
    at close to its nominal rate (≥ 85% allows Monte Carlo error)."""
    hits = []
    for s in range(40):
        r = _did(simulate(n=15_000, seed=100 + s), n_boot=199)
        hits.append(r.ci_low < 0.06 < r.ci_high)
    assert np.mean(hits) >= 0.85
