"""The left-out-confounder scores against statsmodels on the rows, and the scans a guardrail shares.

``score_candidate`` works on cells and builds its normal equations from level codes (no design
matrix). Row-level OLS in statsmodels is the reference: the treatment coefficient of
``y ~ d + C(covariates)`` and its change when ``C(candidate)`` is added, and the treatment residuals of
``d ~ C(covariates)`` averaged per candidate level (spread, and the chi-square of those means).
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import stats

from convocausal.questions import confounding as cf
from convocausal.questions.registry import parse_registry


def _rows(seed: int, n: int = 6000, skill_levels: int = 12) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    intent = rng.choice(["refund", "status", "password", "billing"], n, p=[0.3, 0.3, 0.2, 0.2])
    hour = rng.integers(0, 6, n)
    prior = rng.random(n) < 0.4
    # skill levels of clearly different sizes (so the pooling of the rare ones is unambiguous)
    sizes = np.arange(skill_levels, 0, -1, dtype=float)
    skill = rng.choice([f"s{i:02d}" for i in range(skill_levels)], n, p=sizes / sizes.sum())
    push = np.isin(skill, ["s00", "s03"])  # a skill that moves both the treatment and the outcome
    t = (rng.random(n) < 0.3 + 0.2 * (intent == "refund") + 0.25 * push).astype(float)
    y = (rng.random(n) < 0.4 + 0.05 * t + 0.1 * prior + 0.15 * push).astype(float)
    g = (rng.random(n) < 0.2 + 0.1 * push).astype(float)
    y[rng.random(n) < 0.1] = np.nan  # outcomes missing on different rows
    g[rng.random(n) < 0.2] = np.nan
    noise = rng.choice(["n1", "n2", "n3", "n4", "n5"], n)  # moves nothing: its p-value is not 0 or 1
    return pd.DataFrame({"treated": t, "resolved": y, "escalated": g, "intent": intent, "hour_of_day": hour,
                         "memory_has_prior_session": prior, "skill": skill, "noise": noise})


def _question():
    return parse_registry(
        "questions:\n  - id: q\n    design: coexisting_variants\n    outcome: resolved\n    treatment: treated\n"
        "    covariates: [intent, hour_of_day, memory_has_prior_session]\n"
        "    guardrails: [{outcome: escalated, better: lower, tolerance: 0.01}]\n").questions[0]


def _con(df: pd.DataFrame) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.register("signals", df)
    return con


COVARIATES = "C(intent) + C(hour_of_day) + C(memory_has_prior_session)"


def _reference(df: pd.DataFrame, outcome: str, candidate: str) -> tuple[float, float, float, float]:
    rows = df.dropna(subset=[outcome, "treated"]).copy()
    rows["y"] = rows[outcome]
    base = smf.ols(f"y ~ treated + {COVARIATES}", rows).fit().params["treated"]
    full = smf.ols(f"y ~ treated + {COVARIATES} + C({candidate})", rows).fit().params["treated"]
    rows["resid"] = smf.ols(f"treated ~ {COVARIATES}", rows).fit().resid
    lv = rows.groupby(candidate)["resid"].agg(["mean", "count", lambda r: float((r**2).mean())])
    lv.columns = ["mean", "n", "sq"]
    lv = lv[lv["n"] >= cf.MIN_LEVEL_N]
    var = (lv["sq"] - lv["mean"] ** 2).clip(lower=1e-12)
    grand = float((lv["mean"] * lv["n"]).sum() / lv["n"].sum())
    chi2 = float((((lv["mean"] - grand) ** 2) / (var / lv["n"])).sum())
    return float(lv["mean"].max() - lv["mean"].min()), float(stats.chi2.sf(chi2, len(lv) - 1)), full - base, base


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("outcome", ["resolved", "escalated"])
@pytest.mark.parametrize("candidate", ["skill", "noise"])
def test_scores_equal_row_level_ols(seed, outcome, candidate):
    df = _rows(seed)
    question = _question().model_copy(update={"outcome": outcome})
    s = cf.score_candidate(_con(df), question, candidate, "signals", "TRUE", [])
    gap, p, shift, base = _reference(df, outcome, candidate)
    assert (s.treatment_gap, s.treatment_p, s.shift, s.base_effect) == pytest.approx((gap, p, shift, base),
                                                                                    rel=1e-8, abs=1e-12)
    if candidate == "skill":  # the world's skill confounds: the reference moves, so the test is not 0 == 0
        assert abs(shift) > 0.003 and p < 1e-6
    else:  # a p-value away from 0 and 1, where the residual variances decide it
        assert 1e-4 < p < 0.9999


def test_rare_levels_are_pooled_like_a_merged_column():
    """A candidate with more than MAX_LEVELS levels scores as the reference does on a column where every
    level beyond the MAX_LEVELS most frequent is one level."""
    df = _rows(4, n=20000, skill_levels=cf.MAX_LEVELS + 8)
    s = cf.score_candidate(_con(df), _question(), "skill", "signals", "TRUE", [])
    kept = df["skill"].where(df["resolved"].notna()).value_counts().index[:cf.MAX_LEVELS]
    merged = df.assign(skill=df["skill"].where(df["skill"].isin(kept), "other"))
    assert merged["skill"].nunique() == cf.MAX_LEVELS + 1
    assert (s.treatment_gap, s.treatment_p, s.shift, s.base_effect) == pytest.approx(
        _reference(merged, "resolved", "skill"), rel=1e-8, abs=1e-12)


def test_a_guardrail_reads_the_scan_of_its_question():
    """Inside ``shared_scans`` the question's scan carries the guardrail's counts; the guardrail's scores
    equal those of its own scan, and it does not scan again (here: its rows are gone and it still scores).
    Outside the block nothing is kept."""
    df = _rows(5)
    question = _question()
    guard = question.model_copy(update={"outcome": "escalated", "guardrails": []})
    alone = cf.confounding_diagnostics(_con(df), guard, ["skill"], "signals", "TRUE", [], None)
    con = _con(df)
    with cf.shared_scans():
        cf.confounding_diagnostics(con, question, ["skill"], "signals", "TRUE", [], None, also_outcomes=["escalated"])
        con.unregister("signals")
        con.register("signals", df.iloc[:0])
        shared = cf.confounding_diagnostics(con, guard, ["skill"], "signals", "TRUE", [], None)
    assert [(d.name, d.value, d.passed, d.message) for d in shared] == [
        (d.name, d.value, d.passed, d.message) for d in alone]
    assert cf.confounding_diagnostics(con, guard, ["skill"], "signals", "TRUE", [], None)[0].value == 0.0  # empty rows now


def test_one_scan_for_many_candidates_with_two_outcomes_equals_one_scan_each():
    df = _rows(6)
    df["noise"] = np.random.default_rng(6).choice(["n1", "n2", "n3"], len(df))
    df["vip"] = np.random.default_rng(7).random(len(df)) < 0.3
    question = _question()
    candidates = ["skill", "noise", "vip"]
    assert len(candidates) >= cf.PRE_AGGREGATE_FROM
    con = _con(df)
    for outcome in ("resolved", "escalated"):
        q = question.model_copy(update={"outcome": outcome})
        one_each = [cf.score_candidate(con, q, c, "signals", "TRUE", []) for c in candidates]
        table = cf.candidate_cells(con, q, candidates, "signals", "TRUE", [], outcomes=["resolved", "escalated"])
        once = [cf.score_candidate(con, q, c, table, "TRUE", [], pre_aggregated=True,
                                   outcomes=["resolved", "escalated"]) for c in candidates]
        con.execute(f"DROP TABLE {table}")
        for a, b in zip(one_each, once):
            assert (a.treatment_gap, a.treatment_p, a.shift, a.base_effect) == pytest.approx(
                (b.treatment_gap, b.treatment_p, b.shift, b.base_effect), rel=1e-10, abs=1e-14)
