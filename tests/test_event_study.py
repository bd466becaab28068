"""Event study: coefficients equal row-level statsmodels, the joint pre-trend test, the placebo launch."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from methods.did.compress import frame_cells
from methods.did.event_study import placebo_launch, run_event_study


def simulate(n: int, n_clusters: int = 24, n_weeks: int = 20, launch: int = 10, seed: int = 0,
             dynamic=lambda k: 0.02 + 0.005 * k, step_at: int | None = None, noise: float = 0.3) -> pd.DataFrame:
    """Rows with integer weeks; treated clusters get ``dynamic(k)`` in post week k (0 = launch week);
    ``step_at`` adds a treated-only jump of 0.1 at that (pre-launch) week."""
    rng = np.random.default_rng(seed)
    cl = rng.integers(0, n_clusters, n)
    tr = (cl < n_clusters // 3).astype(np.int64)
    wk = rng.integers(0, n_weeks, n)
    k = wk - launch
    eff = np.where(k >= 0, np.vectorize(dynamic)(np.maximum(k, 0)), 0.0) * tr
    step = 0.1 * tr * (wk >= step_at) * (wk < launch) if step_at is not None else 0.0
    y = (0.5 + rng.normal(0, 0.1, n_clusters)[cl] + 0.03 * wk + eff + step
         + rng.normal(0, 0.01, (n_clusters, n_weeks))[cl, wk] + rng.normal(0, noise, n))
    return pd.DataFrame({"y": y, "treated": tr, "week": wk, "intent": rng.integers(0, 5, n), "skill": cl})


def cells_of(df: pd.DataFrame, cluster: bool = True) -> pd.DataFrame:
    keys = {"treated": "treated", "time": "week", "fe0": "intent"}
    if cluster:
        keys["cluster"] = "skill"
    return frame_cells(df, "y", keys)


def row_reference(df: pd.DataFrame, launch: int):
    """The same event study on the rows with statsmodels (dummies built independently with pandas)."""
    e = df["week"] - launch
    events = sorted(set(e) - {-1})
    ev = np.column_stack([df["treated"] * (e == k) for k in events]).astype(float)
    fe = pd.get_dummies(df[["week", "intent"]].astype("category"), drop_first=True).to_numpy(float)
    X = np.column_stack([np.ones(len(df)), df["treated"], ev, fe])
    res = sm.OLS(df["y"].to_numpy(), X).fit(method="qr")
    return res.get_robustcov_results(cov_type="cluster", groups=df["skill"].to_numpy()), events


def test_event_study_coefficients_equal_row_level_statsmodels():
    df = simulate(30_000, seed=1)
    es = run_event_study(cells_of(df), launch=10, fe_roles=["fe0"], cluster_role="cluster", n_boot=99)
    ref, events = row_reference(df, 10)
    tab = es.table.set_index("event_time")
    got = tab.loc[events, "coef"].to_numpy()
    np.testing.assert_allclose(got, ref.params[2:2 + len(events)], atol=1e-8, rtol=0)
    np.testing.assert_allclose(tab.loc[events, "se"].to_numpy(), ref.bse[2:2 + len(events)], atol=1e-6, rtol=0)
    assert tab.loc[-1, "coef"] == 0.0  # the reference period


def test_lags_recover_a_growing_effect_and_leads_pass():
    df = simulate(60_000, seed=2, dynamic=lambda k: 0.02 + 0.01 * k)
    es = run_event_study(cells_of(df), launch=10, fe_roles=["fe0"], cluster_role="cluster", n_boot=199)
    lags = es.table[es.table["event_time"] >= 0]
    truth = 0.02 + 0.01 * lags["event_time"]
    covered = ((lags["ci_low"] < truth) & (truth < lags["ci_high"])).mean()
    assert covered >= 0.8
    assert np.corrcoef(lags["coef"], truth)[0, 1] > 0.8
    assert es.p_value > 0.05
    assert "wild cluster bootstrap" in es.test and "pooled into 4 bins" in es.test


def test_cr1_wald_with_many_clusters_matches_statsmodels_f_test():
    df = simulate(40_000, n_clusters=45, n_weeks=8, launch=4, seed=3)
    es = run_event_study(cells_of(df), launch=4, fe_roles=["fe0"], cluster_role="cluster")
    ref, events = row_reference(df, 4)
    leads = [i for i, k in enumerate(events) if k <= -2]
    R = np.zeros((len(leads), len(ref.params)))
    R[np.arange(len(leads)), [2 + i for i in leads]] = 1.0
    f = ref.f_test(R)
    assert es.n_lead_bins == len(leads) == 3
    assert es.wald / 3 == pytest.approx(float(np.squeeze(f.fvalue)), rel=1e-6)
    assert "F(3, 44)" in es.test


def test_treated_jump_before_launch_fails_pre_trend_and_placebo():
    df = simulate(60_000, seed=4, step_at=5)
    cells = cells_of(df)
    es = run_event_study(cells, launch=10, fe_roles=["fe0"], cluster_role="cluster", n_boot=199)
    assert es.p_value < 0.05
    ref = placebo_launch(cells, 10, estimate=0.0, fe_roles=["fe0"], cluster_role="cluster", n_boot=199)
    assert ref.refuter == "placebo_launch" and not ref.passed
    assert ref.new_effect == pytest.approx(0.1, abs=0.05)


def test_placebo_passes_under_parallel_trends():
    cells = cells_of(simulate(60_000, seed=5))
    ref = placebo_launch(cells, 10, estimate=0.05, fe_roles=["fe0"], cluster_role="cluster", n_boot=199)
    assert ref.passed and ref.p_value >= 0.05


def test_hc1_path_and_too_short_pre_period():
    df = simulate(20_000, seed=6)
    es = run_event_study(cells_of(df, cluster=False), launch=10, fe_roles=["fe0"])
    assert "HC1" in es.test and "chi2" in es.test
    assert run_event_study(cells_of(df), launch=1, fe_roles=["fe0"], cluster_role="cluster") is None
    assert placebo_launch(cells_of(df), 1, 0.0, ["fe0"], "cluster") is None


def test_relative_magnitudes_breakdown_grows_with_the_effect():
    """A larger true effect with the same pre-period noise survives larger relative violations."""
    from methods.did.event_study import relative_magnitudes

    small = relative_magnitudes(run_event_study(cells_of(simulate(40_000, seed=7, dynamic=lambda k: 0.03)), 10,
                                                ["fe0"], "cluster", n_boot=0))
    large = relative_magnitudes(run_event_study(cells_of(simulate(40_000, seed=7, dynamic=lambda k: 0.3)), 10,
                                                ["fe0"], "cluster", n_boot=0))
    assert large["theta_avg_post"] == pytest.approx(0.3, abs=0.03)
    assert large["breakdown_Mbar"] > small["breakdown_Mbar"] >= 0
    lo, hi = large["ci_at_Mbar_1"]
    assert lo < large["theta_avg_post"] < hi
