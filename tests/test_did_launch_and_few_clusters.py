"""Issue 13: time buckets aligned to the launch, and valid inference with one or a few treated clusters.

Every truth is built into the simulations (never read back from the estimator).

1. Launch inside a bucket. Daily conversations, bucketed by their Monday week, launch on a
   Wednesday: the launch week is 5/7 treated. Counted as pre-launch it became the event study's
   reference period and the pre-trend test failed on truly parallel trends. Now that bucket is
   left out (a ``launch_bucket`` note says so) and the pre-trend check passes at its nominal rate.
2. One treated cluster. A tool given to one skill queue of 12: cluster-robust errors and the wild
   bootstrap are not valid (CR1 and row-level HC1 over-reject badly, WCR almost never rejects), so
   inference is by randomization over space-time placebos; its null rejection rate and coverage
   are measured over many seeds here.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import methods.did.estimate as did_estimate
from methods.did import estimate_did
from methods.did.compress import EFFECT, fit_cells, frame_cells, two_by_two_design
from methods.did.event_study import launch_bucket, period_index
from methods.did.inference import cluster_t_inference, infer
from methods.did.randomization import SpaceTimePlacebos, rank_inference
from methods.result import MethodRefusal

START = pd.Timestamp("2026-01-05")  # a Monday


@pytest.fixture
def no_plots(monkeypatch):
    """The studies below measure statistics over many seeds; PNG rendering would dominate their time."""
    monkeypatch.setattr(did_estimate, "event_study_png", lambda *a, **k: b"")
    monkeypatch.setattr(did_estimate, "group_means_png", lambda *a, **k: b"")


# --------------------------------------------------------------------------- 1. launch inside a bucket
def simulate_daily(seed: int, n_skills: int = 12, n_weeks: int = 16, n_treated: int = 6, launch_week: int = 8,
                   launch_weekday: int = 2, effect: float = 0.10, per_day: int = 30):
    """Daily rows per skill with ``date`` and its Monday ``week``; common trend and seasonality, skill
    levels, skill × week shocks; parallel trends by construction; ``effect`` from the launch day on
    (``launch_weekday`` 2 = Wednesday). Returns (rows, launch date)."""
    rng = np.random.default_rng(seed)
    n_days = 7 * n_weeks
    skill = np.repeat(np.arange(n_skills), n_days * per_day)
    day = np.tile(np.repeat(np.arange(n_days), per_day), n_skills)
    launch = START + pd.Timedelta(days=7 * launch_week + launch_weekday)
    date = START + pd.to_timedelta(day, unit="D")
    treated = (skill < n_treated).astype(np.int64)
    p = (0.4 + rng.normal(0, 0.05, n_skills)[skill] + 0.004 * day + 0.03 * np.sin(day / 9.0)
         + rng.normal(0, 0.02, (n_skills, n_weeks))[skill, day // 7] + effect * treated * (date >= launch))
    y = rng.binomial(1, np.clip(p, 0.01, 0.99)).astype(float)
    week = START + pd.to_timedelta(7 * (day // 7), unit="D")
    return pd.DataFrame({"y": y, "treated": treated, "date": date, "week": week,
                         "skill": np.char.add("skill-", skill.astype(str))}), launch.date()


def _did_weekly(df, launch, seed=0, **kw):
    args = {"outcome": "y", "treated": "treated", "time": "week", "launch": launch, "cluster": "skill",
            "n_boot": 199, "seed": seed}
    args.update(kw)
    return estimate_did(df, **args)


def test_wednesday_launch_drops_its_week_and_says_so(no_plots):
    df, launch = simulate_daily(0)
    r = _did_weekly(df, launch)
    diags = {d.name: d for d in r.diagnostics}
    note = diags["launch_bucket"]
    in_week = int((df["week"] == pd.Timestamp("2026-03-02")).sum())
    assert note.check is None and note.value == in_week
    assert "2026-03-02" in note.message and "reference period" in note.message and "2026-02-23" in note.message
    assert r.n_treated + r.n_control == len(df) - in_week
    es = r.extras["event_study"].set_index("event_time")
    assert es.loc[-1, "period"] == "2026-02-23" and es.loc[0, "period"] == "2026-03-09"
    assert r.ci_low < 0.10 < r.ci_high and diags["pre_trend"].passed
    # the explicit bucket width (what the question layer passes) agrees with the inferred one
    r2 = _did_weekly(df, launch, time_bucket="week")
    assert (r2.estimate, r2.ci_low, r2.ci_high) == (r.estimate, r.ci_low, r.ci_high)


def test_launch_on_a_bucket_start_or_daily_periods_or_integers_drop_nothing(no_plots):
    df, launch = simulate_daily(1, launch_weekday=0)
    assert "launch_bucket" not in {d.name for d in _did_weekly(df, launch).diagnostics}
    df, launch = simulate_daily(1, n_weeks=6, launch_week=3)
    cells = frame_cells(df, "y", {"treated": "treated", "time": "date"})
    assert launch_bucket(cells, launch) is None  # daily periods: the Wednesday is itself a period
    assert launch_bucket(cells, pd.Timestamp(launch) + pd.Timedelta(hours=9)) is not None  # mid-day launch
    ints = cells.assign(time=np.arange(len(cells)) % 10)
    assert launch_bucket(ints, 3.5) is None  # integer periods are left as they are
    # a launch inside the last bucket leaves no post-launch data: the refusal names the dropped bucket
    with pytest.raises(MethodRefusal, match="partly treated bucket starting 2026-02-02"):
        _did_weekly(simulate_daily(2, n_weeks=5, launch_week=4)[0], (START + pd.Timedelta(days=30)).date())


def _pre_trend_pass_rate(seeds, launch_weekday: int = 2) -> tuple[float, float]:
    passes, covers = [], []
    for s in seeds:
        df, launch = simulate_daily(s, launch_weekday=launch_weekday)
        r = _did_weekly(df, launch, seed=s)
        passes.append({d.name: d for d in r.diagnostics}["pre_trend"].passed)
        covers.append(r.ci_low < 0.10 < r.ci_high)
    return float(np.mean(passes)), float(np.mean(covers))


def test_pre_trend_passes_on_parallel_trends_with_a_midweek_launch(no_plots):
    """12 seeds in the default suite (before the fix 24 of 40 seeds passed in this world, after it 36)."""
    passed, covered = _pre_trend_pass_rate(range(12))
    assert passed >= 10 / 12 and covered >= 10 / 12


@pytest.mark.slow
def test_pre_trend_pass_rate_over_40_seeds(no_plots):
    """Measured: 36/40 pass after the fix, 24/40 before (the launch week was the reference period); the
    95% interval covers the true effect in 39/40 (37/40 before). A Monday launch in the same world
    also passes 36/40: the remaining failures are the wild-bootstrap pre-trend test's own size with
    12 clusters, not the launch bucket."""
    passed, covered = _pre_trend_pass_rate(range(40))
    monday, _ = _pre_trend_pass_rate(range(40), launch_weekday=0)
    assert passed >= 0.9 and covered >= 0.9
    assert passed >= monday - 0.05


# --------------------------------------------------------------------------- 2. one or a few treated clusters
def simulate_few(seed: int, n_clusters: int = 12, n_treated: int = 1, n_weeks: int = 20, launch_week: int = 10,
                 effect: float = 0.0, per_cell: int = 100, shock: float = 0.1, noise: float = 0.5,
                 drift: float = 0.0, sizes=None):
    """Weekly rows (Monday dates) per cluster: cluster levels, a common trend, independent cluster ×
    week shocks (sd ``shock`` — what makes row-level errors wrong), row noise; the first ``n_treated``
    clusters get ``effect`` from ``launch_week``; ``drift`` adds a treated-only slope before launch.
    ``sizes``: rows per cluster-week for each cluster (default ``per_cell`` for all)."""
    rng = np.random.default_rng(seed)
    sizes = np.full(n_clusters, per_cell) if sizes is None else np.asarray(sizes)
    cl = np.repeat(np.arange(n_clusters), sizes * n_weeks)
    wk = np.concatenate([np.repeat(np.arange(n_weeks), s) for s in sizes])
    tr = (cl < n_treated).astype(np.int64)
    y = (0.5 + rng.normal(0, 0.1, n_clusters)[cl] + 0.01 * wk + rng.normal(0, shock, (n_clusters, n_weeks))[cl, wk]
         + effect * tr * (wk >= launch_week) + drift * tr * np.minimum(wk - launch_week, 0)
         + rng.normal(0, noise, cl.size))
    return (pd.DataFrame({"y": y, "treated": tr, "week": START + pd.to_timedelta(7 * wk, unit="D"),
                          "skill": np.char.add("s", cl.astype(str))}),
            (START + pd.Timedelta(weeks=launch_week)).date())


def test_one_treated_skill_of_four_gets_an_interval_not_a_refusal(no_plots):
    df, launch = simulate_few(0, n_clusters=4, n_weeks=16, launch_week=8, effect=0.3)
    r = _did_weekly(df, launch)
    assert np.isfinite(r.ci_low) and np.isfinite(r.ci_high) and r.ci_low < r.estimate < r.ci_high
    assert r.ci_low < 0.3 < r.ci_high
    assert "space-time placebos" in r.ci_method and "Conley–Taber" in r.ci_method
    assert r.extras["inference"] == "placebo_randomization"
    inf = {d.name: d for d in r.diagnostics}["inference"]
    assert inf.check is None and "Assumption" in inf.message and "same distribution" in inf.message
    pre = {d.name: d for d in r.diagnostics}["pre_trend"]
    assert not pre.tested and "cannot be tested" in pre.message  # 3 other clusters: a 5% test cannot reject


def test_refusals_say_why_and_what_to_do(no_plots):
    df, launch = simulate_few(1, n_clusters=4)
    with pytest.raises(MethodRefusal, match="Only 0 treated and 4 control skill"):
        _did_weekly(df.assign(treated=0), launch)
    short, launch = simulate_few(1, n_clusters=3, n_weeks=6, launch_week=3)
    with pytest.raises(MethodRefusal, match=r"Only \d+ placebo estimates .* at least 19; add skills"):
        _did_weekly(short, launch)


def test_no_cluster_still_uses_hc1_and_says_so(no_plots):
    df, launch = simulate_few(2, n_clusters=4)
    r = _did_weekly(df, launch, cluster=None)
    assert "HC1" in r.ci_method and "no cluster given" in {d.name: d for d in r.diagnostics}["inference"].message


def test_placebo_estimates_are_the_did_regression_rerun():
    """A space placebo and a time placebo equal estimate_did on the relabelled rows (with a fixed effect),
    and the working-model shock weight equals the brute-force one (perturb one cluster-week at a time)."""
    df, launch = simulate_few(3, n_treated=2, per_cell=20, effect=0.1)
    df["intent"] = np.random.default_rng(0).integers(0, 4, len(df))
    keys = {"treated": "treated", "time": "week", "fe0": "intent", "cluster": "skill"}
    cells = frame_cells(df, "y", keys)
    idx, _, L = period_index(cells["time"], launch)
    stp = SpaceTimePlacebos(cells, idx, L, ["fe0"], "cluster")
    codes = list(stp.cluster_codes.categories)

    def did(rows, lo, at):
        c = frame_cells(rows, "y", keys)
        i, _, _ = period_index(c["time"], lo)
        return fit_cells(two_by_two_design(c.assign(post=(i >= at).astype(int)), ["fe0"], "cluster")).coef(EFFECT)

    assert stp.real_estimate()[0] == pytest.approx(did(df, launch, L), abs=1e-10)
    M = np.zeros((1, stp.n_groups))
    M[0, codes.index("s5")] = 1
    space = df[~df["skill"].isin(["s0", "s1"])].assign(treated=lambda d: (d["skill"] == "s5").astype(int))
    assert stp._run("space", M, np.array([L]))[0][0] == pytest.approx(did(space, launch, L), abs=1e-10)
    pre = df[df["week"] < pd.Timestamp(launch)].assign(treated=lambda d: (d["skill"] == "s5").astype(int))
    assert stp._run("pre", M, np.array([4]))[0][0] == pytest.approx(did(pre, launch, 4), abs=1e-10)

    panel = stp.panel("all")
    _, shock, row = panel.estimates(stp.treated_cluster[None, :].astype(float), [L])
    base = cells.assign(_g=pd.Categorical(cells["cluster"], categories=codes).codes, _p=idx, post=(idx >= L).astype(int))
    weights = []
    for part in base.groupby(["_g", "_p"]).groups.values():
        bumped = base.assign(sum_y=0.0)
        bumped.loc[part, "sum_y"] = bumped.loc[part, "n"].astype(float)  # a unit shock to cluster g in week p
        weights.append(fit_cells(two_by_two_design(bumped, ["fe0"], "cluster")).coef(EFFECT))
    assert shock[0] == pytest.approx(np.sum(np.square(weights)), rel=1e-8)
    design = two_by_two_design(base, ["fe0"], "cluster")
    assert row[0] == pytest.approx(np.linalg.inv(design.gram)[design.index(EFFECT)][design.index(EFFECT)], rel=1e-8)


def _calibration(seeds, effect: float, contrast: bool = False, **kw) -> dict[str, float]:
    """Null rejection / coverage of the placebo inference (and, for contrast, of CR1, row-level HC1 and WCR)
    on the headline 2×2, from the building blocks estimate_did uses (no plots, no event study)."""
    out: dict[str, list] = {"reject": [], "cover": [], "hc1": [], "cr1": [], "wcr": []}
    for s in seeds:
        df, launch = simulate_few(s, effect=effect, **kw)
        cells = frame_cells(df, "y", {"treated": "treated", "time": "week", "cluster": "skill"})
        idx, _, L = period_index(cells["time"], launch)
        cells["post"] = (idx >= L).astype(np.int64)
        fit = fit_cells(two_by_two_design(cells, [], "cluster"), solver="statsmodels")
        d = SpaceTimePlacebos(cells, idx, L, [], "cluster").draws(seed=s)
        r = rank_inference(fit.coef(EFFECT), d.estimates, scale=d.real_scale, placebo_scales=d.scale, df=d.df)
        out["reject"].append(r.p_value <= 0.05)
        out["cover"].append(r.ci_low < effect < r.ci_high)
        if contrast:
            out["cr1"].append(cluster_t_inference(fit, EFFECT)[0] <= 0.05)
            hc1 = fit_cells(two_by_two_design(cells, [], None))
            out["hc1"].append(cluster_t_inference(hc1, EFFECT)[0] <= 0.05)
            out["wcr"].append(infer(fit, EFFECT, seed=s, n_boot=199).p_value <= 0.05)
    return {k: float(np.mean(v)) for k, v in out.items() if v}


def test_one_treated_of_twelve_null_rejection_and_coverage():
    """Fast version (60 seeds; measured 3.3% null rejection, 96.7% coverage, 82% power against 0.15).
    1 treated of 12 skills, 20 weeks, skill-week shocks."""
    null = _calibration(range(60), effect=0.0)
    assert null["reject"] <= 0.10
    alt = _calibration(range(60), effect=0.15)
    assert alt["cover"] >= 0.88 and alt["reject"] >= 0.5  # covers the truth, and still has power


@pytest.mark.slow
def test_one_treated_of_twelve_calibration_over_200_seeds():
    """Measured (200 seeds): placebo inference rejects a true null in 2.5% and covers a true 0.15 in
    97.5% (it rejects 0 in 77%); in the same world CR1 t(11) rejects a true null in 53%, row-level
    HC1 in 34%, the restricted wild cluster bootstrap in 0% (its intervals are unbounded)."""
    null = _calibration(range(200), effect=0.0, contrast=True)
    assert null["reject"] <= 0.08
    assert null["cr1"] > 0.3 and null["hc1"] > 0.2 and null["wcr"] < 0.02
    alt = _calibration(range(200), effect=0.15)
    assert alt["cover"] >= 0.9


def test_a_small_treated_cluster_is_rescaled_not_held_to_the_big_clusters_noise(no_plots):
    """A treated skill with a tenth of the others' volume has noisier means: raw Conley–Taber placebos
    (the big clusters' spread) under-state its noise (measured: 16% of 200 runs reject a true null);
    standardized placebos do not (3.5%). Fast version: 60 seeds."""
    sizes = [20] + [200] * 11
    null = _calibration(range(60), effect=0.0, sizes=sizes, noise=1.0, shock=0.05)
    assert null["reject"] <= 0.10
    df, launch = simulate_few(0, sizes=sizes, noise=1.0, shock=0.05)
    note = {d.name: d for d in _did_weekly(df, launch).diagnostics}["inference"].message
    assert "0.10× the median rows" in note and "rescaled" in note


def test_few_control_clusters_swap_sides(no_plots):
    """Ten treated skills and two controls: the minority side is the control one; same inference."""
    df, launch = simulate_few(4, n_treated=10, effect=0.2)
    r = _did_weekly(df, launch)
    assert r.extras["inference"] == "placebo_randomization" and r.ci_low < 0.2 < r.ci_high
    assert "2 control skill clusters" in {d.name: d for d in r.diagnostics}["inference"].message


def test_placebo_pre_trend_test_and_placebo_launch_with_one_treated_cluster(no_plots):
    """With 24 skills the randomization pre-trend test can reject: a treated-only pre-launch slope fails it."""
    df, launch = simulate_few(5, n_clusters=24, effect=0.1, drift=0.04)
    r = _did_weekly(df, launch)
    pre = {d.name: d for d in r.diagnostics}["pre_trend"]
    assert pre.tested and not pre.passed and "placebo groups" in pre.message
    ok = _did_weekly(*simulate_few(6, n_clusters=24, effect=0.1))
    assert {d.name: d for d in ok.diagnostics}["pre_trend"].passed
    placebo = {x.refuter: x for x in ok.refutations}["placebo_launch"]
    assert placebo.passed and "placebo estimates" in placebo.message
