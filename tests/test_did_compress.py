"""Compression to cells must reproduce row-level statsmodels exactly, and keep SQL safe.

The reference is statsmodels OLS on every row (formula API and an explicit dummy matrix), with
``cov_type="cluster"`` for CR1 and ``"HC1"``; the wild cluster bootstrap on cluster aggregates is
checked against a brute-force row-level bootstrap with the same draws.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf

from methods.did.compress import EFFECT, compress, cov_hc1, fit_cells, frame_cells, two_by_two_design
from methods.did.inference import draw_weights, wild_cluster_test


def simulate_rows(n: int, n_clusters: int = 24, seed: int = 0) -> pd.DataFrame:
    """Clustered rollout rows: cluster levels, common weekly trend, intent/hour effects, effect 0.05."""
    rng = np.random.default_rng(seed)
    cl = rng.integers(0, n_clusters, n)
    treated = (cl % 3 == 1).astype(np.int64)
    week = rng.integers(0, 20, n)
    post = (week >= 10).astype(np.int64)
    intent = rng.integers(0, 8, n)
    hour = rng.integers(0, 24, n)
    y = (0.3 + rng.normal(0, 0.1, n_clusters)[cl] + 0.1 * treated + 0.02 * week + 0.01 * intent
         + 0.003 * hour + 0.05 * treated * post + rng.normal(0, 0.4, n))
    return pd.DataFrame({"y": y, "treated": treated, "post": post, "intent": intent, "hour": hour,
                         "skill": np.char.add("skill-", cl.astype(str))})


def row_design(df: pd.DataFrame) -> np.ndarray:
    """The same regressors built independently with pandas.get_dummies (sorted levels, first dropped)."""
    d = pd.get_dummies(df[["intent", "hour"]].astype(str).apply(lambda s: s.str.zfill(2)), drop_first=True)
    base = np.column_stack([np.ones(len(df)), df["treated"], df["post"], df["treated"] * df["post"]])
    return np.column_stack([base, d.to_numpy(float)])


@pytest.fixture(scope="module")
def big():
    df = simulate_rows(250_000, seed=1)
    con = duckdb.connect()
    con.execute("CREATE TABLE convs AS SELECT * FROM df")
    cells = compress(con, "convs", "y", {"treated": "treated", "post": "post", "fe0": "intent", "fe1": "hour",
                                         "cluster": "skill"})
    yield df, con, cells
    con.close()


def test_compressed_fit_equals_row_level_ols(big):
    df, _, cells = big
    assert len(cells) < len(df) / 10  # the point: far fewer cells than rows
    design = two_by_two_design(cells, ["fe0", "fe1"], "cluster")
    ols = sm.OLS(df["y"].to_numpy(), row_design(df)).fit(method="qr")
    ref = ols.get_robustcov_results(cov_type="cluster", groups=pd.factorize(df["skill"])[0])
    for solver in ("statsmodels", "normal"):
        fit = fit_cells(design, solver=solver)
        np.testing.assert_allclose(fit.params, ref.params, rtol=0, atol=1e-8)
        np.testing.assert_allclose(np.sqrt(np.diag(fit.cov)), ref.bse, rtol=0, atol=1e-6)


def test_formula_reference_agrees_on_the_interaction():
    """Independent design building: statsmodels' formula API on the rows, clustered by skill."""
    df = simulate_rows(15_000, seed=7)
    formula = smf.ols("y ~ treated * post + C(intent) + C(hour)", data=df).fit(
        cov_type="cluster", cov_kwds={"groups": pd.factorize(df["skill"])[0]})
    cells = frame_cells(df, "y", {"treated": "treated", "post": "post", "fe0": "intent", "fe1": "hour",
                                  "cluster": "skill"})
    fit = fit_cells(two_by_two_design(cells, ["fe0", "fe1"], "cluster"), solver="statsmodels")
    assert fit.coef(EFFECT) == pytest.approx(formula.params["treated:post"], abs=1e-8)
    assert fit.se(EFFECT) == pytest.approx(formula.bse["treated:post"], abs=1e-6)
    hc1 = sm.OLS(df["y"].to_numpy(), row_design(df)).fit(cov_type="HC1")  # HC1 needs sum y² per cell
    np.testing.assert_allclose(np.sqrt(np.diag(cov_hc1(fit.design, fit.params))), hc1.bse, rtol=0, atol=1e-6)


def test_compress_pulls_only_cells_and_drops_nulls():
    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT (i % 7)::DOUBLE AS y, i % 2 AS g, CASE WHEN i % 5 = 0 THEN NULL "
                "ELSE i % 3 END AS k FROM range(1000) r(i)")
    cells = compress(con, "t", "y", {"g": "g", "k": "k"})
    assert len(cells) == 6
    assert cells["n"].sum() == 800
    ref = con.execute("SELECT SUM(y), SUM(y*y) FROM t WHERE k IS NOT NULL").fetchone()
    assert cells["sum_y"].sum() == pytest.approx(ref[0]) and cells["sum_y2"].sum() == pytest.approx(ref[1])


def test_hostile_column_name_is_rejected_and_odd_names_are_quoted():
    from methods.did import estimate_did

    df = simulate_rows(4000, seed=2).assign(week=lambda d: d["post"] * 2)
    con = duckdb.connect()
    con.execute("CREATE TABLE convs AS SELECT * FROM df")
    hostile = 'y" FROM convs; DROP TABLE convs; --'
    with pytest.raises(ValueError, match="unknown column"):
        estimate_did((con, "convs"), outcome=hostile, treated="treated", post="post", cluster="skill")
    with pytest.raises(ValueError, match="unknown column"):
        estimate_did((con, "convs"), outcome="y", treated="treated", post="post", fixed_effects=["intent) + (1"],
                     cluster="skill")
    with pytest.raises(ValueError):
        estimate_did((con, 'convs"; DROP TABLE convs; --'), outcome="y", treated="treated", post="post")
    assert con.execute("SELECT COUNT(*) FROM convs").fetchone()[0] == 4000
    # a real column whose name is odd is quoted, not pasted: same answer as the plain name
    odd = df.rename(columns={"y": 'resolved "v2"; --', "intent": "n"})
    a = estimate_did(odd, outcome='resolved "v2"; --', treated="treated", post="post", fixed_effects=["n"],
                     cluster="skill", n_boot=0)
    b = estimate_did(df, outcome="y", treated="treated", post="post", fixed_effects=["intent"], cluster="skill",
                     n_boot=0)
    assert a.estimate == pytest.approx(b.estimate, abs=1e-12)


def _row_wild_pvalue(df: pd.DataFrame, V: np.ndarray) -> float:
    """Brute-force WCR bootstrap-t on the rows: restricted fit, flip cluster residuals, refit, CR1 t."""
    X = row_design(df)[:, :4]
    y = df["y"].to_numpy()
    groups = pd.factorize(df["skill"], sort=True)[0]
    k = 3
    t0 = sm.OLS(y, X).fit(cov_type="cluster", cov_kwds={"groups": groups}).tvalues[k]
    Xr = np.delete(X, k, axis=1)
    br = np.linalg.lstsq(Xr, y, rcond=None)[0]
    fitted, resid = Xr @ br, y - Xr @ br
    hits = 0
    for b in range(V.shape[1]):  # reference implementation: one statsmodels fit per draw
        ys = fitted + V[groups, b] * resid
        tb = sm.OLS(ys, X).fit(cov_type="cluster", cov_kwds={"groups": groups}).tvalues[k]
        hits += abs(tb) >= abs(t0) * (1 - 1e-12)
    return (1 + hits) / (1 + V.shape[1])


def test_wild_bootstrap_on_cells_matches_row_level_bootstrap():
    df = simulate_rows(3000, n_clusters=12, seed=3)
    df["y"] += 0.04 * df["treated"] * df["post"]  # p-value away from the floor
    cells = compress_frame(df)
    fit = fit_cells(two_by_two_design(cells, [], "cluster"))
    res = wild_cluster_test(fit, EFFECT, seed=5, n_boot=199)
    V = draw_weights(12, 199, 5)
    assert res.p_value == pytest.approx(_row_wild_pvalue(df, V), abs=1e-12)


def compress_frame(df: pd.DataFrame) -> pd.DataFrame:
    return frame_cells(df, "y", {"treated": "treated", "post": "post", "cluster": "skill"})


def test_wild_bootstrap_is_deterministic_by_seed():
    df = simulate_rows(20_000, n_clusters=16, seed=4)
    fit = fit_cells(two_by_two_design(compress_frame(df), [], "cluster"))
    a = wild_cluster_test(fit, EFFECT, seed=11, n_boot=399)
    b = wild_cluster_test(fit, EFFECT, seed=11, n_boot=399)
    c = wild_cluster_test(fit, EFFECT, seed=12, n_boot=399)
    assert (a.p_value, a.ci_low, a.ci_high) == (b.p_value, b.ci_low, b.ci_high)
    assert (a.ci_low, a.ci_high) != (c.ci_low, c.ci_high)
    assert a.ci_low < 0.05 < a.ci_high
