"""Judge calibration against simulated truth (methods/judge): a verbose model the judge over-rates."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from methods.judge import estimate_judge_effect
from methods.result import MethodRefusal

TRUE_EFFECT = 0.5  # effect of the new model on human-rated quality


def simulate(n: int, seed: int, audit_share: float = 0.1, differential: float = 0.0):
    """The new model (t=1) writes longer answers; the judge adds 0.5 per unit of length, so the raw-score
    effect is 0.5 + 0.5 * 1.0 = 2 x the human-quality effect. ``differential`` adds a judge bias toward arm 1
    that no covariate explains."""
    rng = np.random.default_rng(seed)
    t = rng.integers(0, 2, n)
    length = 1.0 + 1.0 * t + rng.normal(scale=0.5, size=n)
    human = 3.0 + TRUE_EFFECT * t + rng.normal(size=n)
    judge = human + 0.5 * length + differential * t + rng.normal(scale=0.5, size=n)
    ids = np.arange(n)
    df = pd.DataFrame({"conversation_id": ids, "new_model": t, "judge_score": judge, "length": length})
    audited = rng.random(n) < audit_share
    audit = pd.DataFrame({"conversation_id": ids[audited], "human_score": human[audited]})
    return df, audit


def _fit(df, audit, **kw):
    return estimate_judge_effect(df, audit, treatment="new_model", judge="judge_score", bias_covariates=["length"],
                                 **kw)


def test_raw_effect_is_twice_the_truth_and_ppi_covers_it_over_seeds():
    raws, ppis, cover, widths = [], [], 0, []
    seeds = range(200)
    for s in seeds:
        res = _fit(*simulate(4000, s))
        raws.append(res.extras["raw_effect"])
        ppis.append(res.estimate)
        cover += res.ci_low <= TRUE_EFFECT <= res.ci_high
        widths.append((res.ci_high - res.ci_low, res.extras["audit_std_error"] * 2 * 1.96))
    rate = cover / len(seeds)
    w = np.array(widths)
    print(f"raw {np.mean(raws):.3f} ppi {np.mean(ppis):.3f} coverage {rate:.3f} "
          f"ppi width {w[:, 0].mean():.3f} vs audit-only width {w[:, 1].mean():.3f}")
    assert abs(np.mean(raws) / TRUE_EFFECT - 2.0) < 0.1
    assert abs(np.mean(ppis) - TRUE_EFFECT) < 0.03
    assert 0.91 <= rate <= 0.99
    assert w[:, 0].mean() < w[:, 1].mean()  # the judge scores narrow the interval against the audit alone


def test_bias_check_fires_on_differential_bias_only():
    def fired(differential):
        out = []
        for s in range(100):
            res = _fit(*simulate(4000, 1000 + s, differential=differential))
            (d,) = [d for d in res.diagnostics if d.check == "judge_bias_by_arm"]
            out.append(not d.passed)
        return float(np.mean(out))

    null_rate, alt_rate = fired(0.0), fired(0.6)
    print(f"judge_bias_by_arm fires: {null_rate:.2f} without differential bias, {alt_rate:.2f} with it")
    assert null_rate <= 0.04
    assert alt_rate >= 0.9


def test_ppi_stays_near_truth_under_differential_bias_while_raw_does_not():
    res = _fit(*simulate(20000, 7, differential=0.6))
    assert abs(res.extras["raw_effect"] - 1.6) < 0.1
    assert res.ci_low - 0.05 <= TRUE_EFFECT <= res.ci_high + 0.05


def test_refusals():
    df, audit = simulate(2000, 0, audit_share=0.01)
    with pytest.raises(MethodRefusal, match="too few audited"):
        _fit(df, audit)
    df, audit = simulate(2000, 0)
    with pytest.raises(MethodRefusal, match="repeats"):
        _fit(df, pd.concat([audit, audit.head(3)]))
    with pytest.raises(MethodRefusal, match="0/1"):
        _fit(df.assign(new_model=df.new_model * 2), audit)


def test_cli_judge(tmp_path, capsys):
    import json

    from convocausal.cli import main

    df, audit = simulate(4000, 5)
    df.to_parquet(tmp_path / "d.parquet")
    audit.to_csv(tmp_path / "audit.csv", index=False)
    # the spelling (--score COL --human COL); --judge stays an alias
    assert main(["estimate", "judge", "--data", str(tmp_path / "d.parquet"), "--treatment", "new_model", "--score",
                 "judge_score", "--audit", str(tmp_path / "audit.csv"), "--human", "human_score",
                 "--bias-covariates", "length", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["method"] == "judge_calibration" and abs(out["estimate"] - TRUE_EFFECT) < 4 * out["std_error"]
    assert out["raw_effect"] > 0.8 and "audit_effect" in out
    assert out["checks"]["judge_bias_by_arm"] == "passed"
    assert main(["estimate", "judge", "--data", str(tmp_path / "d.parquet"), "--treatment", "new_model", "--judge",
                 "judge_score", "--audit", str(tmp_path / "audit.csv"), "--human", "rating"]) == 2
    assert "no column rating" in capsys.readouterr().err


def test_audit_ids_as_text_join_numeric_ids():
    df, audit = simulate(3000, 2)
    a = _fit(df, audit)
    b = _fit(df, audit.assign(conversation_id=audit.conversation_id.astype(str)))
    assert a.estimate == pytest.approx(b.estimate) and a.extras["n_audited"] == b.extras["n_audited"] == len(audit)


@pytest.mark.slow
def test_ppi_coverage_study_larger():
    fits = (_fit(*simulate(4000, s)) for s in range(5000, 5800))
    hits = [r.ci_low <= TRUE_EFFECT <= r.ci_high for r in fits]
    print(f"PPI coverage over 800 seeds: {np.mean(hits):.3f}")
    assert 0.93 <= np.mean(hits) <= 0.97
