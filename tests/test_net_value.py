"""Net value (issue 16 item 2): Σ weight × outcome per conversation, estimated as one outcome for the
row-level methods (the interval carries the covariance), combined conservatively otherwise."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from configs.questions import ConfigError, Question, validate_against_catalog
from convocausal.questions.answer import answer_question
from tests.outcome_cases import (
    CATALOG,
    MATCHING_CATALOG,
    ROLLOUT_EFFECTS,
    SHIPPED_LAUNCH,
    connection,
    matching_signals,
    matching_truth,
    randomized_signals,
    rollout_signals,
    shipped_signals,
)

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


# --- coverage against the simulated truth ------------------------------------------------------------

DID = {"id": "d", "design": "partial_rollout", "treated": {"skill": ["a1", "a2", "a3", "a4"]},
       "launch": "2026-03-30", "fixed_effects": [], "cluster": "skill", "time_bucket": "week"}
SC = {"id": "s", "design": "shipped_change", "treated": {"channel": ["chat"]}, "launch": SHIPPED_LAUNCH.isoformat(),
      "unit_by": ["channel", "skill"], "time_bucket": "week", "min_volume": 20}
ROLLOUT_TRUTH = sum(w * ROLLOUT_EFFECTS[o] for o, w in WEIGHTS.items())  # 14 × 0.08 − 0.8 × (−0.5) = 1.52


def _net_row(answer):
    (nv,) = [o for o in answer.info["outcomes"] if o.kind == "net_value"]
    return nv


def _exact(con, fields: dict):
    """The same design on the per-conversation value column: the combination with its exact covariance."""
    con.execute("CREATE OR REPLACE TEMP VIEW with_value AS SELECT *, "
                + " + ".join(f"({w!r}) * {o}" for o, w in WEIGHTS.items()) + " AS net_value FROM signals")
    catalog = CATALOG + [{"name": "net_value", "kind": "outcome", "measured_at": "end", "source": "weights",
                          "agent_controlled": False, "dtype": "double", "turn_column": None}]
    return answer_question(con, Question(outcome="net_value", **fields), catalog, relation="with_value").result


def test_matching_net_value_covers_the_truth_over_seeds():
    """Confounded by channel (naive net value biased upward); the matched net value's interval covers the
    truth 14 × 0.06 − 0.8 × (−0.6 − 2 × 0.06) = 1.416 in at least 10 of 12 worlds (95% nominal)."""
    truth = matching_truth(WEIGHTS)["net_value"]
    q = Question(id="p", design="coexisting_variants", outcome="resolved", treatment="asked_email_first",
                 covariates=["channel"], estimand="ATT", value=WEIGHTS)
    covered, estimates, naive_covered = [], [], []
    for seed in range(12):
        df = matching_signals(n=3000, seed=200 + seed)
        con = connection(df)
        nv = _net_row(answer_question(con, q, MATCHING_CATALOG))
        con.close()
        assert nv.status == "ok" and "covariance" in nv.message
        covered.append(nv.ci_low <= truth <= nv.ci_high)
        estimates.append(nv.estimate)
        v = 14.0 * df["resolved"] - 0.8 * df["handle_minutes"]
        naive = v[df["asked_email_first"] == 1].mean() - v[df["asked_email_first"] == 0].mean()
        naive_covered.append(nv.ci_low <= naive <= nv.ci_high)
    print(f"matching net value: coverage {np.mean(covered):.2f}, mean {np.mean(estimates):+.3f} vs truth {truth:+.3f}")
    assert sum(covered) >= 10, (covered, estimates)
    assert abs(np.mean(estimates) - truth) < 0.25  # unbiased within Monte Carlo error (SD ≈ 0.35 / √12 ≈ 0.1)
    assert sum(naive_covered) <= 6  # the naive contrast (confounded) mostly falls outside: the world is not trivial


def test_did_net_value_covers_the_truth_and_is_conservative_over_seeds():
    """Diff-in-diff combines the per-outcome estimates conservatively: it covers the truth 1.52 in at least
    11 of 12 worlds, its interval is never narrower than the exact one (the same design on the value column,
    same point estimate since DiD is linear in the outcome), and its standard error is at least the true
    sampling spread of the net value over the worlds."""
    covered, exact_covered, estimates, ses = [], [], [], []
    for seed in range(12):
        con = connection(rollout_signals(n=6000, seed=300 + seed))
        nv = _net_row(answer_question(con, Question(outcome="resolved", value=WEIGHTS, **DID), CATALOG))
        exact = _exact(con, DID)
        con.close()
        assert nv.status == "conservative"
        assert nv.estimate == pytest.approx(exact.estimate, rel=1e-6, abs=1e-9)
        assert nv.ci_high - nv.ci_low >= exact.ci_high - exact.ci_low - 1e-9
        covered.append(nv.ci_low <= ROLLOUT_TRUTH <= nv.ci_high)
        exact_covered.append(exact.ci_low <= ROLLOUT_TRUTH <= exact.ci_high)
        estimates.append(nv.estimate)
        ses.append(nv.std_error)
    sd = float(np.std(estimates, ddof=1))
    print(f"DiD net value: coverage {np.mean(covered):.2f} (exact {np.mean(exact_covered):.2f}), mean "
          f"{np.mean(estimates):+.3f} vs truth {ROLLOUT_TRUTH:+.3f}, mean SE {np.mean(ses):.3f} vs spread {sd:.3f}")
    assert sum(covered) >= 11, (covered, estimates)
    assert sum(covered) >= sum(exact_covered)
    assert abs(np.mean(estimates) - ROLLOUT_TRUTH) < 0.3
    assert np.mean(ses) >= 0.8 * sd  # 12 worlds: the spread itself is uncertain by about ±20%


def test_sc_conservative_net_value_is_no_narrower_than_the_exact_one():
    """Synthetic control on the shipped change (truth 1.52): both the conservative combination and the value
    column's own synthetic control cover the truth, and the conservative interval is the wider."""
    for seed in (1, 2):
        con = connection(shipped_signals(n=30000, seed=seed))
        nv = _net_row(answer_question(con, Question(outcome="resolved", value=WEIGHTS, **SC), CATALOG))
        exact = _exact(con, SC)
        con.close()
        print(f"SC seed {seed}: conservative {nv.estimate:+.3f} [{nv.ci_low:+.3f}, {nv.ci_high:+.3f}], exact "
              f"{exact.estimate:+.3f} [{exact.ci_low:+.3f}, {exact.ci_high:+.3f}], truth {ROLLOUT_TRUTH:+.3f}")
        assert nv.status == "conservative"
        assert nv.ci_low <= ROLLOUT_TRUTH <= nv.ci_high
        assert exact.ci_low <= ROLLOUT_TRUTH <= exact.ci_high
        assert nv.ci_high - nv.ci_low >= exact.ci_high - exact.ci_low
