"""Mediation against simulated truth (methods/mediation): total, direct and indirect effects."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from methods.mediation import estimate_mediation
from methods.result import MethodRefusal

DIRECT, MED_SHIFT, MED_EFFECT = 0.3, 0.4, 0.6
TOTAL = DIRECT + MED_SHIFT * MED_EFFECT  # 0.54
SHARE = MED_SHIFT * MED_EFFECT / TOTAL


def simulate(n: int, seed: int, interaction: float = 0.0) -> pd.DataFrame:
    """x confounds treatment, mediator and outcome; the tool call (m) carries part of the effect."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, n)
    t = (rng.random(n) < 0.5 + 0.3 * x).astype(int)
    m = (rng.random(n) < 0.25 + MED_SHIFT * t + 0.1 * x).astype(int)
    y = 1 + DIRECT * t + MED_EFFECT * m + interaction * t * m + 0.4 * x + rng.normal(size=n)
    return pd.DataFrame({"treated": t, "tool_lookup_order": m, "resolved": y, "x": x})


def _fit(df, **kw):
    return estimate_mediation(df, treatment="treated", outcome="resolved", mediator="tool_lookup_order",
                              covariates=["x"], **kw)


def _coverage_study(seeds, n, n_boot, tol):
    cover = {"total": 0, "cde_0": 0, "share_mediated": 0}
    truth = {"total": TOTAL, "cde_0": DIRECT, "share_mediated": SHARE}
    est = {k: [] for k in cover}
    naive = []
    for s in seeds:
        res = _fit(simulate(n, s), seed=s, n_boot=n_boot)
        tab = res.extras["effects"].set_index("effect")
        for k in cover:
            cover[k] += tab.loc[k, "ci_low"] <= truth[k] <= tab.loc[k, "ci_high"]
            est[k].append(tab.loc[k, "estimate"])
        naive.append(res.naive_estimate)
    rates = {k: v / len(seeds) for k, v in cover.items()}
    means = {k: float(np.mean(v)) for k, v in est.items()}
    print(f"truth {truth} means {means} coverage {rates} naive {np.mean(naive):.3f}")
    for k in cover:
        assert 0.88 <= rates[k] <= 1.0, k
        assert abs(means[k] - truth[k]) < tol, k
    assert np.mean(naive) - TOTAL > 0.1  # x confounds the unadjusted difference


def test_total_and_direct_effects_recover_a_simulated_mediation_over_seeds():
    _coverage_study(range(100), n=1500, n_boot=200, tol=0.04)


@pytest.mark.slow
def test_mediation_coverage_study_larger():
    _coverage_study(range(100, 400), n=3000, n_boot=500, tol=0.02)


def test_natural_effects_with_an_interaction():
    res = _fit(simulate(100_000, 3, interaction=0.2), n_boot=20)
    p0 = 0.25  # E[M | t=0] (x averages to 0)
    assert res.extras["natural_direct_effect"] == pytest.approx(DIRECT + 0.2 * p0, abs=0.03)
    assert res.extras["indirect_effect"] == pytest.approx((MED_EFFECT + 0.2) * MED_SHIFT, abs=0.03)
    assert res.extras["direct_effect_mediator_on"] == pytest.approx(DIRECT + 0.2, abs=0.04)
    assert "different question" in res.extras["note"]


def test_refusals():
    df = simulate(500, 0)
    with pytest.raises(MethodRefusal, match="0/1"):
        _fit(df.assign(tool_lookup_order=df.tool_lookup_order * 3))
    with pytest.raises(MethodRefusal, match="cells"):
        _fit(df.assign(tool_lookup_order=df.treated))


def test_a_mediator_only_the_treated_can_use_gives_the_direct_effect_with_it_off():
    """A tool a rollout made available (never called without it): CDE(0) = NDE identified, CDE(1) not."""
    rng = np.random.default_rng(4)
    n = 6000
    x = rng.uniform(-1, 1, n)
    t = (rng.random(n) < 0.5 + 0.3 * x).astype(int)
    m = t * (rng.random(n) < 0.6 + 0.2 * x).astype(int)
    y = 1 + DIRECT * t + MED_EFFECT * m + 0.4 * x + rng.normal(size=n)
    res = estimate_mediation(pd.DataFrame({"treated": t, "tool": m, "y": y, "x": x}), treatment="treated",
                             outcome="y", mediator="tool", covariates=["x"], n_boot=300)
    tab = res.extras["effects"].set_index("effect")
    total = DIRECT + MED_EFFECT * m[t == 1].mean()
    assert tab.loc["total", "ci_low"] <= total <= tab.loc["total", "ci_high"]
    assert tab.loc["cde_0", "ci_low"] <= DIRECT <= tab.loc["cde_0", "ci_high"]
    assert tab.loc["nde", "estimate"] == pytest.approx(tab.loc["cde_0", "estimate"])
    assert np.isnan(res.extras["direct_effect_mediator_on"]) and res.extras["mediator_only_under_treatment"]


def test_cli_mediation_as_the_issue_writes_it(tmp_path, capsys):
    import json

    from convocausal.cli import main

    simulate(2000, 9).to_parquet(tmp_path / "d.parquet")
    assert main(["estimate", "mediation", "--data", str(tmp_path / "d.parquet"), "--treatment", "treated",
                 "--outcome", "resolved", "--mediators", "tool_lookup_order", "--covariates", "x", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ci_low"] <= TOTAL <= out["ci_high"]
    assert {"direct_effect", "share_mediated"} <= set(out)
