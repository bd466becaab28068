"""Net value (issue 16 item 2): Σ weight × outcome per conversation, estimated as one outcome for the
row-level methods (the interval carries the covariance), combined conservatively otherwise."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from configs.questions import ConfigError, Question, validate_against_catalog
from convocausal.questions.answer import answer_question
from tests.outcome_cases import CATALOG, connection, randomized_signals, rollout_signals

WEIGHTS = {"resolved": 14.0, "handle_minutes": -0.8}


def test_net_value_interval_matches_a_direct_computation():
    df = randomized_signals(n=5000, seed=4)
    con = connection(df)
    q = Question(id="q", design="randomized", outcome="resolved", assignment="arm", value=WEIGHTS)
    answer = answer_question(con, q, CATALOG)
    (nv,) = answer.info["outcomes"]
    assert nv.kind == "net_value" and nv.status == "ok"
    v = 14.0 * df["resolved"] - 0.8 * df["handle_minutes"]
    v1, v0 = v[df["arm"] == 1], v[df["arm"] == 0]
    est = v1.mean() - v0.mean()
    se = np.sqrt(v1.var(ddof=1) / len(v1) + v0.var(ddof=1) / len(v0))  # Neyman = HC2 for a difference in means
    assert nv.estimate == pytest.approx(est, rel=1e-9)
    assert nv.std_error == pytest.approx(se, rel=1e-6)
    z = stats.norm.ppf(0.975)
    assert nv.ci_low == pytest.approx(est - z * se, rel=1e-5) and nv.ci_high == pytest.approx(est + z * se, rel=1e-5)
    # the covariance matters: resolved and handle time are correlated, so the naive sum of variances is wrong
    y1, h1 = df["resolved"][df["arm"] == 1], df["handle_minutes"][df["arm"] == 1]
    y0, h0 = df["resolved"][df["arm"] == 0], df["handle_minutes"][df["arm"] == 0]
    indep = np.sqrt(14 ** 2 * (y1.var() / len(y1) + y0.var() / len(y0))
                    + 0.8 ** 2 * (h1.var() / len(h1) + h0.var() / len(h0)))
    assert abs(indep - se) / se > 0.05
    assert "covariance" in nv.message


def test_aggregate_method_combines_conservatively():
    con = connection(rollout_signals(n=6000, seed=5))
    base = {"id": "d", "design": "partial_rollout", "treated": {"skill": ["a1", "a2", "a3", "a4"]},
            "launch": "2026-03-30", "fixed_effects": [], "cluster": "skill", "time_bucket": "week"}
    answer = answer_question(con, Question(outcome="resolved", value=WEIGHTS, **base), CATALOG)
    (nv,) = answer.info["outcomes"]
    assert nv.status == "conservative" and "perfectly correlated" in nv.message
    r_y = answer.result
    r_h = answer_question(con, Question(outcome="handle_minutes", **base), CATALOG).result
    assert nv.estimate == pytest.approx(14 * r_y.estimate - 0.8 * r_h.estimate)
    assert nv.ci_low == pytest.approx(14 * r_y.ci_low - 0.8 * r_h.ci_high)
    assert nv.ci_high == pytest.approx(14 * r_y.ci_high - 0.8 * r_h.ci_low)


def test_value_keys_must_be_outcomes():
    q = Question(id="q", design="randomized", outcome="resolved", assignment="arm", value={"n_turns": -1.0})
    with pytest.raises(ConfigError, match="value weight `n_turns` is a covariate, not an outcome"):
        validate_against_catalog(q, CATALOG, {"outcome": ["resolved"]})


def test_value_needs_a_nonzero_weight():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="non-zero weight"):
        Question(id="q", design="randomized", outcome="resolved", assignment="arm", value={"resolved": 0.0})
