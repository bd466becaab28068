"""Drift statistics: quiet on stable windows over many seeds, firing on injected drift."""

from __future__ import annotations

import numpy as np

from methods.monitoring import drift

SEEDS = range(200)


def _cats(rng, n, shares):
    levels = np.array(list(shares))
    draw = rng.choice(levels, size=n, p=np.array(list(shares.values())))
    vals, counts = np.unique(draw, return_counts=True)
    return dict(zip(vals.tolist(), counts.tolist()))


def test_sample_ratio_quiet_when_stable_and_fires_on_a_jump():
    rng = np.random.default_rng(0)
    stable = [drift.sample_ratio(3000, 10_000, int(rng.binomial(1500, 0.3)), 1500).drifted for _ in SEEDS]
    jumped = [drift.sample_ratio(3000, 10_000, int(rng.binomial(1500, 0.4)), 1500).drifted for _ in SEEDS]
    assert np.mean(stable) <= 0.01 and np.mean(jumped) >= 0.99


def test_psi_quiet_when_stable_fires_on_a_new_mix():
    rng = np.random.default_rng(1)
    ref = {"chat": 6000, "voice": 3000, "email": 1000}
    same = {"chat": 0.6, "voice": 0.3, "email": 0.1}
    moved = {"chat": 0.25, "voice": 0.35, "email": 0.4}
    quiet = [drift.psi(ref, _cats(rng, 1500, same)).drifted for _ in SEEDS]
    fires = [drift.psi(ref, _cats(rng, 1500, moved)).drifted for _ in SEEDS]
    assert np.mean(quiet) == 0 and np.mean(fires) >= 0.99


def test_psi_does_not_fire_on_a_tiny_window_alone():
    # 12 rows can put PSI above 0.25 by chance; the chi-square guard keeps it quiet
    rng = np.random.default_rng(2)
    ref = {"chat": 6000, "voice": 3000, "email": 1000}
    flags = [drift.psi(ref, _cats(rng, 12, {"chat": 0.6, "voice": 0.3, "email": 0.1})).drifted for _ in SEEDS]
    assert np.mean(flags) <= 0.01


def test_smd_and_binned_psi_on_a_numeric_covariate():
    rng = np.random.default_rng(3)
    ref = rng.normal(5, 2, 5000)
    assert not drift.smd(ref, rng.normal(5, 2, 1500)).drifted
    assert drift.smd(ref, rng.normal(6, 2, 1500)).drifted
    r, q = drift.binned_counts(ref, rng.normal(7, 2, 1500))
    assert drift.psi(r, q).drifted
    r, q = drift.binned_counts(ref, rng.normal(5, 2, 1500))
    assert not drift.psi(r, q).drifted


def test_proportion_shift_needs_both_significance_and_size():
    rng = np.random.default_rng(4)
    quiet = [drift.proportion_shift(2000, 10_000, int(rng.binomial(2000, 0.2)), 2000).drifted for _ in SEEDS]
    fires = [drift.proportion_shift(2000, 10_000, int(rng.binomial(2000, 0.28)), 2000).drifted for _ in SEEDS]
    assert np.mean(quiet) <= 0.01 and np.mean(fires) >= 0.99
    # a 0.5-point move on millions of rows is significant but below the minimum change
    assert not drift.proportion_shift(200_000, 1_000_000, 205_000, 1_000_000).drifted


def test_new_levels_names_what_appeared():
    stat = drift.new_levels(["v1", "v2"], ["v2", "v3"], name="agent_version")
    assert stat.drifted and "v3" in stat.message
    assert not drift.new_levels(["v1", "v2"], ["v2"], name="agent_version").drifted
