"""Propensity matching against known truth and against DoWhy's own estimator.

The simulated data mimic the email-timing question: an agent asks for the email early mostly on
transactional intents and for returning customers, and those conversations resolve more often
anyway, so the naive difference is several times the true effect (a constant +0.03 or whatever
``effect`` says — ATT = ATE = effect by construction).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from methods.result import MethodRefusal

REF = Path(__file__).parent / "reference"
INTENTS = ["order_status", "refund_request", "cancel_subscription", "update_payment",
           "shipping_address", "password_reset", "product_question", "complaint"]
TRANSACTIONAL = INTENTS[:5]
PERSONAS = ["new", "regular", "vip", "at_risk", "unknown"]
COVARIATES = ["intent", "persona_segment", "memory_has_prior_session", "agent_version", "hour_of_day", "channel"]


def simulate(n: int, seed: int, effect: float = 0.03, confounding: float = 1.0) -> pd.DataFrame:
    """Confounded email-timing data with a known constant effect on ``resolved``.

    ``confounding`` scales how strongly intent / memory / persona drive both the choice to ask
    early and the resolution (0 = a randomised experiment).
    """
    rng = np.random.default_rng(seed)
    intent = rng.choice(INTENTS, n)
    trans = np.isin(intent, TRANSACTIONAL).astype(float)
    persona = rng.choice(PERSONAS, n, p=[0.2, 0.35, 0.1, 0.15, 0.2])
    memory = rng.random(n) < np.where(np.isin(persona, ["regular", "vip"]), 0.6, 0.2)
    agent_version = rng.choice(["v1.4", "v2.0"], n, p=[0.7, 0.3])
    hour = rng.integers(0, 24, n)
    channel = rng.choice(["chat", "voice", "email", "sms"], n, p=[0.5, 0.2, 0.2, 0.1])
    vip = (persona == "vip").astype(float)
    new = (persona == "new").astype(float)
    logit = -1.0 + confounding * (2.0 * trans + 0.9 * memory + 0.6 * vip - 0.6 * new) + 0.2 * (channel == "chat")
    treated = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    p0 = 0.35 + confounding * (0.30 * trans + 0.10 * memory + 0.08 * vip - 0.05 * new) + 0.02 * (agent_version == "v2.0")
    resolved = (rng.random(n) < p0 + effect * treated).astype(int)
    return pd.DataFrame({
        "asked_email_first": treated, "resolved": resolved, "intent": intent, "persona_segment": persona,
        "memory_has_prior_session": memory, "agent_version": agent_version, "hour_of_day": hour,
        "channel": channel,
    })


TRUE = 0.03
T, Y = "asked_email_first", "resolved"


@pytest.fixture(scope="module")
def confounded():
    from methods.psm import estimate_psm

    df = simulate(6000, seed=11, effect=TRUE)
    return df, estimate_psm(df, T, Y, COVARIATES, n_bootstrap=200, seed=0, refute=False)


def test_interval_covers_truth_and_excludes_naive(confounded):
    df, r = confounded
    naive = df.loc[df[T] == 1, Y].mean() - df.loc[df[T] == 0, Y].mean()
    assert r.method == "propensity_matching" and r.estimand == "ATT"
    assert r.naive_estimate == pytest.approx(naive)
    assert naive > 4 * TRUE  # the confounding the method must remove
    assert r.ci_low <= TRUE <= r.ci_high
    assert not (r.ci_low <= naive <= r.ci_high)
    assert 0 < r.std_error < 0.05 and 0 <= r.p_value <= 1
    assert "bootstrap" in r.ci_method and "refitted" in r.ci_method


def test_cross_checks_ipw_aipw_cover_truth(confounded):
    _, r = confounded
    for name in ("ipw", "aipw"):
        est, se = r.extras[f"{name}_estimate"], r.extras[f"{name}_std_error"]
        assert abs(est - TRUE) < 1.96 * se + 1e-12, name
        assert se > 0


def test_counts_and_diagnostics(confounded):
    df, r = confounded
    assert r.extras["n_treated_total"] + r.extras["n_control_total"] == len(df)
    names = {d.name for d in r.diagnostics}
    for n in ("matching_sample_size", "common_support_outside_share", "propensity_auc", "propensity_min_treated",
              "propensity_max_control", "unmatched_treated_share", "effective_sample_size_control",
              "rows_excluded_null_treatment", "propensity_model_converged"):
        assert n in names
    assert 0 < r.n_treated <= r.extras["n_treated_total"]
    assert 0 < r.n_control <= r.extras["n_control_total"]
    for plot in ("propensity_overlap", "balance_love_plot"):
        assert r.plots[plot][:8] == b"\x89PNG\r\n\x1a\n"
    js = r.to_json()
    assert js["method"] == "propensity_matching" and "balance" in js and "ipw_estimate" in js


def test_null_effect_interval_covers_zero():
    from methods.psm import estimate_psm

    df = simulate(6000, seed=5, effect=0.0)
    r = estimate_psm(df, T, Y, COVARIATES, n_bootstrap=150, refute=False)
    assert r.ci_low <= 0.0 <= r.ci_high
    assert r.naive_estimate > r.ci_high  # naive still shows a spurious effect


def test_ate_option_covers_truth():
    from methods.psm import estimate_psm

    df = simulate(6000, seed=21, effect=0.05)
    r = estimate_psm(df, T, Y, COVARIATES, estimand="ATE", n_bootstrap=150, refute=False)
    assert r.estimand == "ATE"
    assert r.ci_low <= 0.05 <= r.ci_high
    assert not (r.ci_low <= r.naive_estimate <= r.ci_high)
    assert {"unmatched_control_share", "effective_sample_size_treated"} <= {d.name for d in r.diagnostics}


def test_without_replacement_and_caliper_reporting():
    from methods.psm import estimate_psm

    df = simulate(6000, seed=31, effect=TRUE)
    r = estimate_psm(df, T, Y, COVARIATES, replace=False, n_bootstrap=100, refute=False)
    assert r.ci_low <= TRUE <= r.ci_high
    # without replacement every control is used at most once
    assert r.n_control <= r.extras["n_control_total"]
    unmatched = next(d for d in r.diagnostics if d.name == "unmatched_treated_share")
    # more treated than controls: without replacement some treated must stay unmatched
    n1, n0 = r.extras["n_treated_total"], r.extras["n_control_total"]
    assert unmatched.value >= (n1 - n0) / n1 - 1e-9
    assert r.n_treated == pytest.approx(n0, abs=1) or r.n_treated < n1


def test_tight_caliper_drops_and_reports_units():
    from methods.psm import estimate_psm

    df = simulate(3000, seed=2, effect=TRUE)
    wide = estimate_psm(df, T, Y, COVARIATES, caliper=None, n_bootstrap=0, refute=False)
    tight = estimate_psm(df, T, Y, COVARIATES, caliper=0.0001, n_bootstrap=0, refute=False)
    share = lambda r: next(d.value for d in r.diagnostics if d.name == "unmatched_treated_share")
    assert share(wide) == 0.0
    assert share(tight) > 0.0
    assert tight.n_treated < wide.n_treated


def test_null_treatment_rows_excluded_and_counted():
    from methods.psm import estimate_psm

    df = simulate(3000, seed=3)
    df[T] = df[T].astype("Int64")
    df.loc[df.index[:123], T] = pd.NA
    r = estimate_psm(df, T, Y, COVARIATES, n_bootstrap=0, refute=False)
    d = next(d for d in r.diagnostics if d.name == "rows_excluded_null_treatment")
    assert d.value == 123 and "123" in d.message
    assert r.extras["n_treated_total"] + r.extras["n_control_total"] == 3000 - 123


def test_small_sample_refused_with_what_to_wait_for():
    from methods.psm import estimate_psm

    df = simulate(2000, seed=4)
    treated = df.index[df[T] == 1]
    df = df.drop(treated[30:])
    with pytest.raises(MethodRefusal, match="Wait until at least 50 treated"):
        estimate_psm(df, T, Y, COVARIATES, refute=False)


def test_logit_fit_matches_statsmodels_row_level():
    import statsmodels.api as sm

    from methods.psm.propensity import cell_stats, fit_logit, prepare

    df = simulate(3000, seed=8)
    prep = prepare(df, T, Y, COVARIATES)
    st = cell_stats(prep.atoms.cell, prep.atoms.t, prep.atoms.y, prep.atoms.n, prep.cells.n_cells)
    fit = fit_logit(prep.cells.X, st.n1, st.n0)
    X_rows = prep.cells.X[prep.cell_of_row]
    ref = sm.GLM(prep.treatment_rows, X_rows, family=sm.families.Binomial()).fit()
    np.testing.assert_allclose(fit.beta, ref.params, rtol=1e-6, atol=1e-8)
    assert fit.converged


# ----------------------------------------------------------------------------- DoWhy agreement


@pytest.fixture(scope="module")
def dowhy_ref():
    return pd.read_csv(REF / "dowhy_psm_input.csv"), json.loads((REF / "dowhy_psm_reference.json").read_text())


@pytest.mark.parametrize("estimand,key", [("ATT", "att_default"), ("ATE", "ate_default")])
def test_reproduces_stored_dowhy_estimate(dowhy_ref, estimand, key):
    """caliper=None, with replacement, DoWhy's propensity model and distance: same number."""
    from methods.psm import estimate_psm

    df, ref = dowhy_ref
    r = estimate_psm(df, ref["treatment"], ref["outcome"], ref["covariates"], estimand=estimand, caliper=None,
                     replace=True, propensity_model="sklearn_default", match_on="propensity",
                     n_bootstrap=0, refute=False)
    assert r.estimate == pytest.approx(ref[key], rel=1e-9, abs=1e-12)


def test_unpenalised_model_reproduces_dowhy_with_same_model(dowhy_ref):
    """Our default (unpenalised) propensity equals DoWhy run with an unpenalised sklearn model."""
    from methods.psm import estimate_psm

    df, ref = dowhy_ref
    r = estimate_psm(df, ref["treatment"], ref["outcome"], ref["covariates"], caliper=None,
                     match_on="propensity", n_bootstrap=0, refute=False)
    assert r.estimate == pytest.approx(ref["att_unpenalized"], rel=1e-9, abs=1e-12)


def test_live_dowhy_agrees_on_fresh_data():
    """Not only the stored file: DoWhy run now on other data gives our number."""
    import importlib.util
    import sys

    from methods.psm import estimate_psm

    spec = importlib.util.spec_from_file_location("make_dowhy_reference", REF / "make_dowhy_reference.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["make_dowhy_reference"] = mod
    spec.loader.exec_module(mod)
    df = mod.make_input(n=300, seed=99)
    theirs = mod.dowhy_estimate(df, "att")
    ours = estimate_psm(df, "t", "y", mod.COVARIATES, caliper=None, propensity_model="sklearn_default",
                        match_on="propensity", n_bootstrap=0, refute=False).estimate
    assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-12)


# ----------------------------------------------------------------------------- coverage study


@pytest.mark.slow
def test_coverage_over_seeds():
    """≥100 seeds: the 95% bootstrap interval should cover the true ATT at least 90% of the time."""
    from methods.psm import estimate_psm

    covered = []
    for s in range(100):
        r = estimate_psm(simulate(4000, seed=1000 + s, effect=TRUE), T, Y, COVARIATES,
                         n_bootstrap=100, seed=s, refute=False)
        covered.append(r.ci_low <= TRUE <= r.ci_high)
    assert np.mean(covered) >= 0.90


def test_separation_is_reported_not_clipped():
    from methods.psm import estimate_psm

    df = simulate(4000, seed=3)
    df.loc[df.index[df[T] == 1][:80], "channel"] = "whatsapp"  # a level only treated units have
    r = estimate_psm(df, T, Y, COVARIATES, n_bootstrap=20, refute=False)
    d = {x.name: x for x in r.diagnostics}
    assert not d["propensity_model_converged"].passed
    assert "channel=whatsapp (treated only)" in d["propensity_model_converged"].message
    assert d["propensity_max_treated"].value > 0.999 and not d["propensity_max_treated"].passed


def test_grouped_rows_with_counts_give_the_ungrouped_answer():
    """``weights=``: rows grouped by covariates × treatment × outcome with a count (what the question
    layer sends, ``GROUP BY ALL``) give the ungrouped rows' result to the last digit — estimate,
    bootstrap interval, balance, refutations — when both come in the same order."""
    from methods.psm import estimate_psm

    df = simulate(6000, seed=11)
    df.loc[df.index[:40], "channel"] = None  # a missing level survives the grouping
    covs = [c for c in COVARIATES if c != "hour_of_day"]  # so that rows share cells
    cols = [T, Y, *covs]
    rows = df.sort_values(cols, na_position="last", kind="stable").reset_index(drop=True)
    grouped = rows.groupby(cols, dropna=False, sort=False).size().rename("n_rows").reset_index()
    assert len(grouped) < len(rows) / 2
    a = estimate_psm(rows, T, Y, covs, n_bootstrap=40, n_refute_sims=8, seed=3)
    b = estimate_psm(grouped, T, Y, covs, n_bootstrap=40, n_refute_sims=8, seed=3, weights="n_rows")
    for field in ("estimate", "std_error", "ci_low", "ci_high", "naive_estimate", "n_treated", "n_control"):
        assert getattr(a, field) == pytest.approx(getattr(b, field), rel=1e-12, abs=1e-14), field
    assert [(x.covariate, round(x.smd_after, 12)) for x in a.balance] == [
        (x.covariate, round(x.smd_after, 12)) for x in b.balance]
    assert [(x.refuter, x.passed, round(x.new_effect, 12)) for x in a.refutations] == [
        (x.refuter, x.passed, round(x.new_effect, 12)) for x in b.refutations]
    assert {d.name: d.value for d in a.diagnostics} == pytest.approx({d.name: d.value for d in b.diagnostics})


def test_grouped_rows_are_refused_for_dowhys_row_level_model():
    from methods.psm import estimate_psm

    df = simulate(500, seed=1).assign(n_rows=1)
    with pytest.raises(ValueError, match="ungrouped rows"):
        estimate_psm(df, T, Y, COVARIATES, propensity_model="sklearn_default", weights="n_rows")
