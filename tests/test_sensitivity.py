"""Partial-R² sensitivity (Cinelli & Hazlett 2020) against statsmodels and PySensemakr.

Three layers are checked separately: the regression fitted on covariate cells equals the
row-level statsmodels OLS; the sensitivity statistics, robustness values and benchmark bounds
equal PySensemakr 0.0.8's on a stored data set (tests/reference/make_sensemakr_reference.py
regenerates it in an environment that has PySensemakr, which the project does not depend on);
and the refutation built on them passes and fails where its rule says.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from methods.psm.propensity import cell_stats, prepare
from methods.psm.sensitivity import (
    benchmark_bounds,
    confounder_robustness,
    covariate_groups,
    grouped_ols,
    matched_sensitivity,
    regression_sensitivity,
    sensitivity_stats,
)

REF = Path(__file__).parent / "reference"


@pytest.fixture(scope="module")
def ref():
    return json.loads((REF / "sensemakr_reference.json").read_text())


@pytest.fixture(scope="module")
def ours(ref):
    df = pd.read_csv(REF / "sensemakr_input.csv")
    prep = prepare(df, ref["treatment"], ref["outcome"], ref["covariates"])
    st = cell_stats(prep.atoms.cell, prep.atoms.t, prep.atoms.y, prep.atoms.n, prep.cells.n_cells)
    groups = covariate_groups(prep.cells.x_names, ref["covariates"])
    return df, prep, st, regression_sensitivity(prep.cells.X, groups, st)


def test_cell_regression_equals_row_level_ols(ours):
    import statsmodels.api as sm

    df, prep, st, reg = ours
    assert prep.cells.n_cells < len(df) / 5  # really grouped: ~120 cells for 1500 rows
    Xrows = prep.cells.X[prep.cell_of_row]
    d = prep.treatment_rows.astype(float)
    y = df.loc[prep.keep, "y"].to_numpy(float)
    row = sm.OLS(y, np.column_stack([d, Xrows])).fit()
    W = np.vstack([np.hstack([np.ones((prep.cells.n_cells, 1)), prep.cells.X]),
                   np.hstack([np.zeros((prep.cells.n_cells, 1)), prep.cells.X])])
    fit = grouped_ols(W, np.r_[st.n1, st.n0], np.r_[st.s1, st.s0], np.r_[st.q1, st.q0])
    assert fit.beta[1:] == pytest.approx(row.params[1:], rel=1e-9, abs=1e-12)
    assert fit.beta[0] == pytest.approx(row.params[0], rel=1e-10)  # the treatment coefficient
    assert fit.rss == pytest.approx(row.ssr, rel=1e-10) and fit.dof == row.df_resid
    assert np.sqrt(np.diag(fit.cov))[1:] == pytest.approx(row.bse[1:], rel=1e-9)
    assert reg["estimate"] == pytest.approx(row.params[0], rel=1e-10)
    assert reg["se"] == pytest.approx(row.bse[0], rel=1e-10)
    # the treatment regression (D ~ X), grouped by cell
    trow = sm.OLS(d, Xrows).fit()
    n = st.n1 + st.n0
    tfit = grouped_ols(prep.cells.X, n, st.n1, st.n1)
    assert tfit.beta[1:] == pytest.approx(trow.params[1:], rel=1e-9)
    assert tfit.rss == pytest.approx(trow.ssr, rel=1e-10)


def test_sensitivity_statistics_equal_pysensemakr(ours, ref):
    _, _, _, reg = ours
    s = ref["sensitivity_stats"]
    for key in ("estimate", "se", "t_statistic", "dof", "r2yd_x", "rv_q", "rv_qa"):
        assert reg[key] == pytest.approx(s[key], rel=1e-9), key


@pytest.mark.parametrize("case", range(6))
def test_robustness_values_equal_pysensemakr(ref, case):
    c = ref["robustness_values"][case]
    ours = sensitivity_stats(c["t_statistic"], 1.0, c["dof"], q=c["q"], alpha=c["alpha"])["rv_qa"]
    assert ours == pytest.approx(c["rv"], rel=1e-9, abs=1e-12)


def test_benchmark_bounds_equal_pysensemakr(ours, ref):
    """Exact against PySensemakr's bound and adjustment functions fed the correct partial R²s;
    within 1% of its model-based bounds, whose treatment regression carries a duplicated
    constant (a PySensemakr 0.0.8 quirk, see the reference script)."""
    _, _, _, reg = ours
    mine = {b["covariate"]: b for b in reg["benchmarks"]}
    for r in ref["benchmarks_from_partial_r2"]:
        b = mine[r["covariate"]]
        for key in ("r2dxj_x", "r2yxj_dx", "r2dz_x", "r2yz_dx", "adjusted_estimate", "adjusted_se",
                    "adjusted_lower_ci", "adjusted_upper_ci"):
            assert b[key] == pytest.approx(r[key], rel=1e-8, abs=1e-12), (r["covariate"], key)
    for r in ref["benchmarks_model_based"]:
        b = mine[r["covariate"]]
        assert b["r2dz_x"] == pytest.approx(r["r2dz_x"], rel=0.02)
        assert b["adjusted_estimate"] == pytest.approx(r["adjusted_estimate"], rel=0.02)
    # strongest first: segment drives both treatment and outcome in the reference data
    assert reg["benchmarks"][0]["covariate"] == "segment"


def test_benchmark_bound_formula_by_hand():
    # C&H 2020 §6.2 with kd = ky = 1: r2dz = r2d/(1-r2d); r2zxj = r2d²/(1-r2d)²;
    # r2yz = ((1 + sqrt(r2zxj)) / sqrt(1 - r2zxj))² · r2y/(1-r2y)
    r2d, r2y = 0.1, 0.05
    r2dz, r2yz = benchmark_bounds(r2d, r2y)
    assert r2dz == pytest.approx(0.1 / 0.9)
    r2zxj = 0.01 / 0.81
    assert r2yz == pytest.approx((1 + np.sqrt(r2zxj)) ** 2 / (1 - r2zxj) * 0.05 / 0.95)
    assert all(np.isnan(benchmark_bounds(0.5, 0.1)))  # "as strong as" a covariate explaining half of D


def test_matched_version_reduces_to_sensemakr_when_estimates_agree(ours):
    """Fed the regression's own estimate and SE, the matched-estimate numbers are sensemakr's
    (up to the normal vs t critical value at dof ≈ 1500)."""
    _, _, _, reg = ours
    est, se = reg["estimate"], reg["se"]
    m = matched_sensitivity(est, se, est - 1.96 * se, est + 1.96 * se, reg)
    assert m["rv_q"] == pytest.approx(reg["rv_q"], rel=1e-12)
    assert m["rv_qa"] == pytest.approx(reg["rv_qa"], rel=2e-3)
    top = reg["benchmarks"][0]
    assert m["benchmark"]["covariate"] == top["covariate"]
    assert m["benchmark"]["adjusted_estimate"] == pytest.approx(top["adjusted_estimate"], rel=1e-12)
    assert m["benchmark"]["adjusted_se"] == pytest.approx(top["adjusted_se"], rel=1e-12)


def _reg(df, covs, t="t", y="y"):
    prep = prepare(df, t, y, covs)
    st = cell_stats(prep.atoms.cell, prep.atoms.t, prep.atoms.y, prep.atoms.n, prep.cells.n_cells)
    return regression_sensitivity(prep.cells.X, covariate_groups(prep.cells.x_names, covs), st)


def _world(n=6000, seed=0, effect=0.5, conf=1.0):
    rng = np.random.default_rng(seed)
    x = rng.choice(["a", "b", "c"], n)
    w = rng.choice(["p", "q"], n)
    t = (rng.random(n) < 1 / (1 + np.exp(-(conf * (x == "b") - 0.3 * (w == "q"))))).astype(int)
    y = effect * t + conf * (x == "b") + 0.2 * (w == "q") + rng.normal(size=n)
    return pd.DataFrame({"t": t, "y": y, "x": x, "w": w})


def test_refutation_pass_and_fail_rules():
    reg = _reg(_world(effect=0.5), ["x", "w"])
    est, se = reg["estimate"], reg["se"]
    ok, extras = confounder_robustness(est, se, est - 1.96 * se, est + 1.96 * se, reg)
    assert ok.refuter == "unobserved_confounder_robustness" and ok.passed, ok.message
    assert "strongest measured covariate, x," in ok.message and "Pass rule" in ok.message
    assert extras["matched"]["benchmark"]["covariate"] == "x"
    assert 0 < ok.new_effect < est
    # the same confounding with a small effect: a confounder as strong as x explains it away,
    # which is reported, not failed (the benchmark is strong by construction in a confounded design)
    reg = _reg(_world(effect=0.08, seed=1), ["x", "w"])
    est, se = reg["estimate"], reg["se"]
    assert est - 1.96 * se > 0  # significant ...
    strong, _ = confounder_robustness(est, se, est - 1.96 * se, est + 1.96 * se, reg)
    assert strong.passed and "lies on the other side of 0" in strong.message
    # a barely significant estimate is fragile: a confounder explaining < 0.5% of both removes significance
    fragile, ex = confounder_robustness(est, est / 1.99, est - 1.96 * est / 1.99, est + 1.96 * est / 1.99, reg)
    assert ex["matched"]["rv_qa"] < 0.01
    assert not fragile.passed and "FAILED" in fragile.message and "fragile" in fragile.message
    # an interval that includes 0: nothing to explain away
    null, ex = confounder_robustness(0.01, 0.02, -0.03, 0.05, reg)
    assert null.passed and "no effect to explain away" in null.message
    assert ex["matched"]["rv_qa"] == 0.0
    # no regression (treatment constant within cells): computed as not available, nulls pass
    none, _ = confounder_robustness(0.2, 0.05, 0.1, 0.3, None)
    assert not none.passed and "not computable" in none.message


def test_estimate_psm_reports_sensitivity_in_extras():
    from methods.psm import estimate_psm
    from tests.test_psm import COVARIATES, simulate

    df = simulate(3000, seed=4, effect=0.3)
    r = estimate_psm(df, "asked_email_first", "resolved", COVARIATES, n_bootstrap=30, seed=0, n_refute_sims=3)
    rob = r.refutations[3]
    assert rob.refuter == "unobserved_confounder_robustness"
    s = r.extras["sensitivity"]
    assert s["matched"]["benchmark"]["covariate"] == "intent"  # the simulation's main confounder
    assert 0 < s["matched"]["rv_qa"] <= s["matched"]["rv_q"] < 1
    assert s["regression"]["dof"] == 3000 - 1 - len(r.extras["propensity_terms"])
    assert s["evalue"]["point"] > 1 and "risk ratio" in s["evalue"]["scale"]
    assert f"{s['matched']['rv_q']:.1%}" in rob.message
    json.dumps(r.to_json())  # the extras are JSON-safe
