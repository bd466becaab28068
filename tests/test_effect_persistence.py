"""Effect persistence: a launch effect that fades is flagged, one that holds is not (simulated truth)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import methods.did.estimate as did_estimate
from methods.did import estimate_did
from methods.persistence import persistence

SEEDS = range(100)


def test_constant_effects_with_noise_are_rarely_called_fading():
    rng = np.random.default_rng(0)
    calls = [persistence(range(10), 0.05 + rng.normal(0, 0.01, 10), np.full(10, 0.01)).fading for _ in SEEDS]
    assert np.mean(calls) <= 0.05


def test_a_novelty_effect_that_decays_to_zero_is_called_fading():
    rng = np.random.default_rng(1)
    truth = 0.08 * np.exp(-np.arange(10) / 3)
    calls = [persistence(range(10), truth + rng.normal(0, 0.01, 10), np.full(10, 0.01)).fading for _ in SEEDS]
    assert np.mean(calls) >= 0.9


def test_growing_effect_is_not_fading_and_too_few_periods_give_nothing():
    fit = persistence(range(6), [0.01, 0.02, 0.03, 0.04, 0.05, 0.06], [0.005] * 6)
    assert not fit.fading and "growing" in fit.message
    assert persistence([0, 1], [0.1, 0.0]) is None


def _panel(seed: int, fade: bool, n_skills=12, n_weeks=20, launch_week=10, per_week=400):
    rng = np.random.default_rng(seed)
    skill = np.repeat(np.arange(n_skills), n_weeks * per_week)
    week = np.tile(np.repeat(np.arange(n_weeks), per_week), n_skills)
    treated = (skill < 6).astype(int)
    since = week - launch_week
    effect = np.where(since >= 0, 0.12 * (np.exp(-since / 2.5) if fade else 1.0), 0.0)
    p = 0.4 + rng.normal(0, 0.03, n_skills)[skill] + 0.005 * week + effect * treated
    y = rng.binomial(1, np.clip(p, 0.01, 0.99)).astype(float)
    start = pd.Timestamp("2026-01-05")
    return pd.DataFrame({"y": y, "treated": treated, "week": start + pd.to_timedelta(7 * week, unit="D"),
                         "skill": np.char.add("s", skill.astype(str))}), (start + pd.Timedelta(weeks=launch_week)).date()


@pytest.mark.parametrize("fade", [True, False])
def test_did_reports_effects_by_period_and_flags_only_the_fading_one(monkeypatch, fade):
    monkeypatch.setattr(did_estimate, "event_study_png", lambda *a, **k: b"")
    monkeypatch.setattr(did_estimate, "group_means_png", lambda *a, **k: b"")
    df, launch = _panel(3, fade)
    r = estimate_did(df, outcome="y", treated="treated", time="week", launch=launch, cluster="skill",
                     n_boot=99, seed=0)
    p = r.extras["effect_persistence"]
    assert len(p["weeks"]) == 10
    assert p["fading"] is fade
    note = next(d for d in r.diagnostics if d.name == "effect_persistence")
    assert note.passed is (not fade)
