"""Balance, overlap and sample-size checks, against direct computations on the rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from methods.psm.balance import balance_rows, check_sample_size, overlap_diagnostics, propensity_auc
from methods.result import MethodRefusal
from tests.test_psm import COVARIATES, simulate

T, Y = "asked_email_first", "resolved"


@pytest.fixture(scope="module")
def matched():
    from methods.psm import estimate_psm

    df = simulate(6000, seed=13)
    return df, estimate_psm(df, T, Y, COVARIATES, n_bootstrap=0, refute=False)


def test_balance_fails_before_and_passes_after(matched):
    _, r = matched
    rows = {b.covariate: b for b in r.balance}
    # the confounders are badly imbalanced before matching ...
    assert abs(rows["memory_has_prior_session"].smd_before) > 0.1
    assert max(abs(rows[f"intent={i}"].smd_before) for i in ("order_status", "complaint")) > 0.1
    assert not all(abs(b.smd_before) < 0.1 for b in r.balance)
    # ... and every covariate level passes |SMD| < 0.1 after
    assert all(b.passed for b in r.balance), [(b.covariate, b.smd_after) for b in r.balance if not b.passed]
    from convocausal.questions.answer import result_checks

    assert {c.name: c.state for c in result_checks(r)}["balance"] == "passed"


def test_one_row_per_categorical_level(matched):
    df, r = matched
    names = [b.covariate for b in r.balance]
    # integer covariates with few values (hour_of_day) are categories too: one row per hour
    for c in ("intent", "persona_segment", "channel", "agent_version", "hour_of_day"):
        for lv in df[c].unique():
            assert f"{c}={lv}" in names
    assert "memory_has_prior_session" in names  # booleans: one row
    assert len(names) == len(set(names))


def test_smd_before_matches_direct_row_computation(matched):
    df, r = matched
    rows = {b.covariate: b for b in r.balance}
    t = df[T] == 1
    for name, x in (("intent=order_status", (df["intent"] == "order_status").astype(float)),
                    ("hour_of_day=3", (df["hour_of_day"] == 3).astype(float)),
                    ("memory_has_prior_session", df["memory_has_prior_session"].astype(float))):
        v1, v0 = x[t].var(ddof=0), x[~t].var(ddof=0)
        smd = (x[t].mean() - x[~t].mean()) / np.sqrt((v1 + v0) / 2)
        assert rows[name].smd_before == pytest.approx(smd, rel=1e-9)
        assert rows[name].variance_ratio_before == pytest.approx(v1 / v0, rel=1e-9)
        assert rows[name].variance_ratio_after is not None


def test_balance_rows_with_weights():
    Z = np.array([[0.0], [1.0]])
    rows = balance_rows(Z, ["x"], w1_before=np.array([1.0, 3.0]), w0_before=np.array([3.0, 1.0]),
                        w1_after=np.array([1.0, 3.0]), w0_after=np.array([1.0, 3.0]))
    # before: means .75 vs .25, variances .1875 each -> SMD = .5/sqrt(.1875)
    assert rows[0].smd_before == pytest.approx(0.5 / np.sqrt(0.1875))
    assert rows[0].smd_after == pytest.approx(0.0) and rows[0].passed
    assert rows[0].variance_ratio_after == pytest.approx(1.0)


def test_auc_matches_sklearn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    eta = rng.normal(size=50).round(1)  # ties on purpose
    n1 = rng.integers(0, 5, 50).astype(float)
    n0 = rng.integers(0, 5, 50).astype(float)
    y = np.r_[np.ones(int(n1.sum())), np.zeros(int(n0.sum()))]
    s = np.r_[np.repeat(eta, n1.astype(int)), np.repeat(eta, n0.astype(int))]
    assert propensity_auc(eta, n1, n0) == pytest.approx(roc_auc_score(y, s))


def test_overlap_flags_groups_that_do_not_overlap():
    eta = np.array([-4.0, -3.0, -1.0, 0.0, 1.0, 3.0, 4.0])
    n1 = np.array([0, 0, 5, 5, 5, 50, 50], float)  # many treated with no comparable control
    n0 = np.array([50, 50, 5, 5, 5, 0, 0], float)
    d = {x.name: x for x in overlap_diagnostics(eta, n1, n0, "ATT")}
    assert not d["common_support_outside_share"].passed
    assert d["common_support_outside_share"].value == pytest.approx(200 / 230)
    assert not d["propensity_auc"].passed and d["propensity_auc"].value > 0.9
    assert d["propensity_max_treated"].value == pytest.approx(1 / (1 + np.exp(-4)))
    assert d["propensity_min_control"].value == pytest.approx(1 / (1 + np.exp(4)))
    good = {x.name: x for x in overlap_diagnostics(eta, n0 + 5, n0 + 5, "ATT")}
    assert good["common_support_outside_share"].passed and good["propensity_auc"].value == pytest.approx(0.5)


def test_sample_size_refusal_says_what_to_wait_for():
    with pytest.raises(MethodRefusal) as e:
        check_sample_size(12, 4000, "asked_email_first")
    assert "12 treated" in str(e.value) and "Wait until" in str(e.value)
    d = check_sample_size(60, 4000, "asked_email_first")
    assert d.passed and d.value == 60


def test_categorical_nulls_are_a_level_not_dropped():
    from methods.psm import estimate_psm

    df = simulate(3000, seed=14)
    df["persona_segment"] = df["persona_segment"].astype(object)
    df.loc[df.index[:200], "persona_segment"] = None
    r = estimate_psm(df, T, Y, COVARIATES, n_bootstrap=0, refute=False)
    assert "persona_segment=missing" in [b.covariate for b in r.balance]
    assert r.extras["n_treated_total"] + r.extras["n_control_total"] == 3000
    assert pd.notna(r.estimate)
