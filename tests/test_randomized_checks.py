"""The randomization checks can fail: each fails on a world built to break it and passes on a sound one.

Worlds (``rollout`` of tests/test_randomized.py, 4,000 conversations): *sound* — assignment 50/50,
independent of everything, half the conversations compliers; *lost logs* — 20% of the assigned
arm's conversations never reach the store (sample ratio); *routing* — billing conversations are
put in the assistant arm 60% of the time, the others 45% (balance); *weak* — assignment changes
uptake for 1% of conversations (weak instrument; measured: at 1.5% it fails 94% of seeds, at 3%,
where the F is about 6, 70%); *attrition* — the assigned arm's outcome is
missing 10 points more often (survivorship). The slow study runs 100 seeds of each and prints the
rates; the quick tests run one seed of each.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

from checks.verdict import states
from convocausal.questions.answer import result_checks
from methods.randomized import estimate_itt, estimate_iv
from tests.test_randomized import rollout

COVARIATES = ["prior", "intent"]
CHECKS = ("sample_ratio", "randomization_balance", "weak_instrument", "survivorship")


def world(kind: str, seed: int, n: int = 4000) -> pd.DataFrame:
    rng = np.random.default_rng(10_000 + seed)
    if kind == "weak":
        return rollout(seed, n=n, compliers=0.01)
    df = rollout(seed, n=n)
    if kind == "lost_logs":
        return df[~((df["z"] == 1) & (rng.random(len(df)) < 0.20))].reset_index(drop=True)
    if kind == "routing":  # re-draw the assignment from the intent, and uptake with it
        p = np.where(df["intent"] == "billing", 0.60, 0.45)
        z = (rng.random(len(df)) < p).astype(int)
        return rollout(seed, n=n).assign(z=z, d=np.where(df["d"] != df["z"], df["d"], z))
    if kind == "attrition":
        lost = (df["z"] == 1) & (rng.random(len(df)) < 0.10)
        return df.assign(resolved=df["resolved"].mask(lost))
    return df


def check_states(data) -> dict[str, str]:
    return states(result_checks(estimate_iv(data, "resolved", "d", "z", covariates=COVARIATES)))


@pytest.mark.parametrize("kind, check", [("lost_logs", "sample_ratio"), ("routing", "randomization_balance"),
                                         ("weak", "weak_instrument"), ("attrition", "survivorship")])
def test_each_check_fails_on_its_broken_world_and_passes_on_the_sound_one(kind, check):
    assert check_states(world("sound", 0))[check] == "passed"
    assert check_states(world(kind, 0))[check] == "failed"


def test_design_shares_are_what_the_sample_ratio_is_judged_against():
    df = rollout(1, p_assign=2 / 3)
    assert states(result_checks(estimate_itt(df, "resolved", "z")))["sample_ratio"] == "failed"
    ok = estimate_itt(df, "resolved", "z", shares={0: 1, 1: 2})
    assert states(result_checks(ok))["sample_ratio"] == "passed"
    assert "33.3%" in next(d.message for d in ok.diagnostics if d.check == "sample_ratio")


def test_weak_instrument_is_an_error_only_for_the_iv_entry():
    """The ITT needs no instrument: its first-stage F is a note, and the ITT interval stays valid."""
    weak = world("weak", 0)
    itt = estimate_itt(weak, "resolved", "z", uptake="d")
    assert states(result_checks(itt))["weak_instrument"] == "not_applicable"
    note = next(d for d in itt.diagnostics if d.name == "first_stage_f")
    assert not note.passed and note.check is None and note.severity == "warn"
    iv = estimate_iv(weak, "resolved", "d", "z")
    ar_low, ar_high, f = iv.extras["anderson_rubin_ci_low"], iv.extras["anderson_rubin_ci_high"], iv.extras["first_stage_f"]
    assert f < 10 and ar_high - ar_low > iv.ci_high - iv.ci_low  # the weak-instrument-robust interval is wider
    assert np.isinf(ar_high) == (f < 1.959963984540054 ** 2)  # and unbounded when the first stage is insignificant


@pytest.mark.slow
def test_failure_rates_over_100_seeds():
    con = duckdb.connect()
    seeds = 100
    fails = {}
    for kind in ("sound", "lost_logs", "routing", "weak", "attrition"):
        counts = dict.fromkeys(CHECKS, 0)
        for seed in range(seeds):
            con.register("rows", world(kind, seed))
            st = check_states((con, "rows"))
            for c in CHECKS:
                counts[c] += st[c] == "failed"
        fails[kind] = {c: v / seeds for c, v in counts.items()}
    print("failure rates over 100 seeds:", fails)
    for c in CHECKS:
        assert fails["sound"][c] <= 0.03, (c, fails["sound"])
    assert fails["lost_logs"]["sample_ratio"] >= 0.95
    assert fails["routing"]["randomization_balance"] >= 0.95
    assert fails["weak"]["weak_instrument"] >= 0.95
    assert fails["attrition"]["survivorship"] >= 0.95
