"""Event study around one launch: leads and lags of treated × period, a joint pre-trend test, a placebo.

Why: the DiD estimate is only causal if treated and control outcomes would have moved in
parallel. The leads (periods before launch, relative to the reference period −1) estimate the
pre-launch gap trajectory; under parallel trends they are all zero. One joint Wald test of all
lead coefficients, with their full cluster-robust covariance, answers "did trajectories diverge
before launch?" — individual t tests would be too many looks.

Few clusters. The CR1 covariance of L lead coefficients is built from G cluster scores, so its
rank is at most G−1, and each lead's variation comes mostly from the treated clusters, so with
8 treated skills an 11-lead covariance is nearly singular and its inverse turns noise into huge
Wald values — while a steady divergence is spread thinly over many degrees of freedom. Two guards,
both stated in the test's text: (1) adjacent leads are pooled (a binned event study: one
coefficient per bin, equal-size bins of adjacent leads) into at most ``MAX_LEAD_BINS`` = 4 bins and at most
min(treated clusters, control clusters) − 1; (2) below 30 clusters the Wald statistic's p-value
comes from the restricted wild cluster bootstrap (each draw recomputes its own CR1 covariance, so the
statistic is pivotal), not from the chi2/F reference. At 30+ clusters: F(L, G−1). Without
clusters: HC1 and chi2(L).

Pointwise intervals of the plotted coefficients use CR1 with t(G−1) quantiles.

Placebo launch: the 2×2 rerun on pre-launch data only with a fake launch halfway through the
pre-period must find no effect (pass rule: p ≥ 0.05, i.e. the 95% interval covers 0).

One or a few treated clusters (``methods.did.randomization``): the lead covariance then has next
to nothing from the treated side, so the joint test is a randomization test over placebo groups
(``placebo_lead_test``; reported as not run when too few groups exist for a 5% test to reject),
and the placebo launch is judged against the space-time placebo estimates. The pointwise
intervals of the plotted coefficients stay CR1 t(G−1) and are too narrow in that case.

Launch inside a bucket (``launch_bucket``): with weekly periods and a midweek launch the launch
week is partly treated; the caller leaves it out, so period −1 is the last whole pre-launch week.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

from methods.did.compress import (
    EFFECT,
    CellFit,
    coarsen,
    design_from_cells,
    dummies,
    fit_cells,
    two_by_two_design,
)
from methods.did.inference import FEW_CLUSTERS, cluster_wald_test, infer, wild_wald_test
from methods.did.randomization import PlaceboPanel, min_placebos, rank_inference
from methods.result import Refutation

PRE_TREND_ALPHA = 0.05
MAX_LEAD_BINS = 4  # leads pooled into at most this many bins for the joint test (rank and power guard)
DIVERGE_MESSAGE = "pre-launch trajectories diverge: consider synthetic control"


def comparable(values: pd.Series | np.ndarray, launch):
    """Period values and the launch in one comparable type (datetimes as numpy datetime64)."""
    arr = np.asarray(values)
    if np.issubdtype(arr.dtype, np.datetime64) or isinstance(launch, (pd.Timestamp,)) or hasattr(launch, "isoformat"):
        return pd.to_datetime(pd.Series(arr)).to_numpy(), pd.Timestamp(launch).to_datetime64() if launch is not None else None
    if np.issubdtype(arr.dtype, np.number):
        return arr, (float(launch) if launch is not None else None)
    try:
        return pd.to_datetime(pd.Series(arr)).to_numpy(), (pd.Timestamp(launch).to_datetime64() if launch is not None else None)
    except (ValueError, TypeError):
        return arr.astype(str), (str(launch) if launch is not None else None)


def period_index(times: pd.Series, launch) -> tuple[np.ndarray, np.ndarray, int]:
    """Each cell's period position, the sorted periods, and the position of the first post period."""
    vals, lv = comparable(times, launch)
    periods, idx = np.unique(vals, return_inverse=True)
    launch_idx = int(np.searchsorted(periods, lv, side="left")) if lv is not None else len(periods)
    return idx.astype(np.int64), periods, launch_idx


BUCKET_WIDTHS = {"week": pd.Timedelta(days=7), "date": pd.Timedelta(days=1), "day": pd.Timedelta(days=1)}


@dataclass
class LaunchBucket:
    """The period bucket a launch falls strictly inside (its start, width, and the rows it holds)."""

    start: np.datetime64
    width: pd.Timedelta
    launch: np.datetime64
    n_rows: int
    share_rows: float
    previous: np.datetime64 | None  # the last whole pre-launch bucket (the new reference period)

    def note(self) -> str:
        after = (self.start + self.width.to_timedelta64() - self.launch) / self.width.to_timedelta64()
        prev = f"; the reference period is now the last whole pre-launch bucket, {fmt_period(self.previous)}" \
            if self.previous is not None else ""
        return (f"the launch ({fmt_period(self.launch)}) falls inside the {_fmt_width(self.width)} bucket starting "
                f"{fmt_period(self.start)} ({after:.0%} of it after launch): that bucket's {self.n_rows} rows "
                f"({self.share_rows:.1%}) are partly treated, so they are left out of the 2×2, the event study and "
                f"the placebo launch instead of being counted as pre-launch{prev}")


def _fmt_width(width: pd.Timedelta) -> str:
    if width == pd.Timedelta(days=7):
        return "week"
    if width == pd.Timedelta(days=1):
        return "day"
    return str(width)


def bucket_width(periods: np.ndarray, bucket=None) -> pd.Timedelta | None:
    """Width of the time buckets: ``bucket`` ("week", "date"/"day" or a timedelta) when given, else the most
    common gap between consecutive distinct periods (the smallest on ties). None for non-datetime periods."""
    if bucket is not None:
        if isinstance(bucket, str):
            if bucket not in BUCKET_WIDTHS:
                raise ValueError(f"time_bucket must be one of {sorted(BUCKET_WIDTHS)} or a timedelta, not {bucket!r}")
            return BUCKET_WIDTHS[bucket]
        return pd.Timedelta(bucket)
    if not np.issubdtype(periods.dtype, np.datetime64) or periods.size < 2:
        return None
    gaps = np.diff(periods).astype("timedelta64[ns]").astype(np.int64)
    vals, counts = np.unique(gaps[gaps > 0], return_counts=True)
    return pd.Timedelta(int(vals[np.argmax(counts)]), unit="ns") if vals.size else None


def launch_bucket(cells: pd.DataFrame, launch, bucket=None) -> LaunchBucket | None:
    """The bucket that straddles the launch, when the ``time`` role holds bucket starts (e.g. Mondays).

    Why: ``period_index`` puts the launch at the first period ≥ launch, so with weekly buckets a
    Wednesday launch leaves its own week (5 of 7 days treated) in the pre-period — where it becomes
    the event study's reference period and makes every lead look shifted by most of the effect: the
    pre-trend test then fails on data whose trends are truly parallel. A partly treated bucket is
    neither pre nor post; the caller drops it. Only for date/timestamp periods (integer periods have
    no sub-period launch to speak of); None when the launch is itself a period start or falls in no
    bucket (e.g. in a gap between buckets).
    """
    if launch is None or "time" not in cells:
        return None
    vals, lv = comparable(cells["time"], launch)
    if not np.issubdtype(np.asarray(vals).dtype, np.datetime64):
        return None
    periods = np.unique(vals)
    width = bucket_width(periods, bucket)
    if width is None:
        return None
    pos = int(np.searchsorted(periods, lv, side="right")) - 1  # last period start ≤ launch
    if pos < 0 or periods[pos] == lv or not (lv < periods[pos] + width.to_timedelta64()):
        return None
    inside = vals == periods[pos]
    n = cells["n"].to_numpy()
    return LaunchBucket(start=periods[pos], width=width, launch=lv, n_rows=int(n[inside].sum()),
                        share_rows=float(n[inside].sum() / max(n.sum(), 1)),
                        previous=periods[pos - 1] if pos > 0 else None)


def drop_launch_bucket(cells: pd.DataFrame, lb: LaunchBucket) -> pd.DataFrame:
    vals, _ = comparable(cells["time"], lb.launch)
    return cells.loc[vals != lb.start].reset_index(drop=True)


def fmt_period(value) -> str:
    """A period for messages: dates as YYYY-MM-DD, the rest as str."""
    if isinstance(value, (np.datetime64, pd.Timestamp)):
        ts = pd.Timestamp(value)
        return str(ts.date()) if ts == ts.normalize() else str(ts)
    return str(value)


@dataclass
class EventStudy:
    table: pd.DataFrame  # event_time, coef, se, ci_low, ci_high (reference −1 has coef 0)
    wald: float | None
    p_value: float | None
    test: str  # how the joint pre-trend test was done, in words
    n_leads: int
    n_lead_bins: int
    fit: CellFit
    untestable: bool = False  # True when the joint test could not be run (``test`` says why)


def _event_columns(e: np.ndarray, treated: np.ndarray, bins: list[list[int]] | None, lags: list[int],
                   leads: list[int]) -> dict[str, np.ndarray]:
    cols: dict[str, np.ndarray] = {}
    if bins is None:
        for k in leads:
            cols[f"event={k}"] = treated * (e == k)
    else:
        for b in bins:
            cols[f"leads={min(b)}..{max(b)}"] = treated * np.isin(e, b)
    for k in lags:
        cols[f"event={k}"] = treated * (e == k)
    return cols


def _fit(cells: pd.DataFrame, e: np.ndarray, fe_roles, cluster_role, bins, lags, leads) -> CellFit:
    t = cells["treated"].to_numpy(float)
    cols = {"treated": t, **{k: v.astype(float) for k, v in _event_columns(e, t, bins, lags, leads).items()}}
    design = design_from_cells(cells, cols, ["time", *fe_roles], cluster_role, protect=list(cols))
    return fit_cells(design)


def run_event_study(cells: pd.DataFrame, launch, fe_roles=(), cluster_role: str | None = None, seed: int = 0,
                    n_boot: int = 999, weights: str = "webb", placebo_pre_trend: bool = False) -> EventStudy | None:
    """Leads/lags regression on cells (roles treated, time, FE…, cluster) with the joint pre-trend test.

    ``placebo_pre_trend``: the joint test by randomization over placebo groups (``placebo_lead_test``),
    for one or a few treated clusters, where neither the CR1 Wald nor the wild bootstrap is valid.
    Returns None when there is no lead to test (fewer than two pre-launch periods)."""
    c = coarsen(cells, ["treated", "time", *fe_roles, *([cluster_role] if cluster_role else [])])
    idx, periods, launch_idx = period_index(c["time"], launch)
    e = idx - launch_idx
    leads = sorted(k for k in np.unique(e) if k <= -2)
    lags = sorted(k for k in np.unique(e) if k >= 0)
    if not leads:
        return None
    fit = _fit(c, e, fe_roles, cluster_role, None, lags, leads)
    g = fit.design.n_groups if cluster_role else 0
    names = [n for n in fit.design.names if n.startswith("event=")]
    dist = stats.t(g - 1) if g else stats.norm()
    q = float(dist.ppf(0.975))
    rows = [{"event_time": -1, "coef": 0.0, "se": 0.0, "ci_low": 0.0, "ci_high": 0.0}]
    for nm in names:
        b, s = fit.coef(nm), fit.se(nm)
        rows.append({"event_time": int(nm.split("=")[1]), "coef": b, "se": s, "ci_low": b - q * s, "ci_high": b + q * s})
    table = pd.DataFrame(rows).sort_values("event_time").reset_index(drop=True)
    table["period"] = [fmt_period(periods[launch_idx + k]) if 0 <= launch_idx + k < len(periods) else None for k in table["event_time"]]

    cap = min(len(leads), MAX_LEAD_BINS)
    if g:
        tr = c["treated"] == 1
        cap = min(cap, max(1, min(c.loc[tr, cluster_role].nunique(), c.loc[~tr, cluster_role].nunique()) - 1))
    test_fit, bins = fit, None
    if len(leads) > cap:
        desc = sorted(leads, reverse=True)
        bins = [list(map(int, b)) for b in np.array_split(np.array(desc), cap) if len(b)]
        test_fit = _fit(c, e, fe_roles, cluster_role, bins, lags, leads)
    lead_names = [n for n in test_fit.design.names if n.startswith("leads=") or
                  (n.startswith("event=") and int(n.split("=")[1]) <= -2)]
    if not lead_names:
        return EventStudy(table, None, None, "lead coefficients not identified", len(leads), 0, fit)
    binned = f", {len(leads)} leads pooled into {len(lead_names)} bins" if bins else ""
    if placebo_pre_trend and g:
        stat, p, test = placebo_lead_test(c, e, fe_roles, cluster_role, leads, seed=seed)
        return EventStudy(table, stat, p, test, len(leads), min(len(leads), MAX_LEAD_BINS), fit,
                          untestable=p is None)
    if g and g < FEW_CLUSTERS and n_boot > 0:
        wald, p = wild_wald_test(test_fit, lead_names, seed=seed, n_boot=n_boot, weights=weights)
        test = (f"joint Wald of {len(lead_names)} lead coefficients = 0, p from restricted wild cluster bootstrap "
                f"({weights}, {n_boot} draws, {g} clusters){binned}")
    elif g:
        wald, p = cluster_wald_test(test_fit, lead_names)
        test = f"joint Wald of {len(lead_names)} lead coefficients = 0 with CR1 covariance, F({len(lead_names)}, {g - 1}){binned}"
    else:
        wald, p = cluster_wald_test(test_fit, lead_names)
        test = f"joint Wald of {len(lead_names)} lead coefficients = 0 with HC1 covariance, chi2({len(lead_names)})"
    return EventStudy(table, float(wald), float(p), test, len(leads), len(lead_names), fit)


def placebo_lead_test(c: pd.DataFrame, e: np.ndarray, fe_roles, cluster_role: str, leads: list[int],
                      seed: int = 0, cap: int = 999, alpha: float = PRE_TREND_ALPHA) -> tuple[float, float | None, str]:
    """Joint pre-trend test for one or a few treated clusters, by randomization over placebo groups.

    Why: with G₁ < 5 treated clusters the lead coefficients' CR1 covariance has (almost) nothing from
    the treated side — with one treated cluster its scores are zero — and the wild bootstrap
    almost never rejects. Instead: on pre-launch rows only (where no cluster is treated), fit the
    binned leads regression (up to ``MAX_LEAD_BINS`` bins of adjacent leads, relative to the last
    pre-launch period) once with the real minority group as "treated" and once for every other set of
    as many clusters (sampled beyond ``cap``); statistic S = Σ (binned lead coefficient)². Under
    parallel trends and exchangeable clusters the real S is one draw among them:
    p = (1 + #{S_placebo ≥ S}) / (1 + J). With fewer than 19 placebo groups a 5% test cannot
    reject; then the test is reported as not run, not as passed. Returns (S, p or None, text)."""
    pre = e < 0
    cp, ep = c.loc[pre].reset_index(drop=True), e[pre]
    desc = np.array(sorted(leads, reverse=True))
    bins = [list(map(int, b)) for b in np.array_split(desc, min(len(leads), MAX_LEAD_BINS)) if len(b)]
    per = cp.groupby(cluster_role)["treated"].max()
    labels = per.index.to_numpy()
    is_tr = per.to_numpy() == 1
    minority = is_tr if is_tr.sum() <= (~is_tr).sum() else ~is_tr
    m = int(minority.sum())
    codes = np.asarray(pd.Categorical(cp[cluster_role], categories=labels).codes, dtype=np.int64)
    first = int(ep.min())
    pos = (ep - first).astype(np.int64)
    fixed = [sp.csr_matrix(np.ones((len(cp), 1))), dummies(cp["time"], "time")[0],
             *(dummies(cp[r], r)[0] for r in fe_roles)]
    panel = PlaceboPanel(sp.csr_matrix(sp.hstack(fixed)), cp["n"].to_numpy(np.float64),
                         cp["sum_y"].to_numpy(np.float64), codes, pos, labels.size, int(pos.max()) + 1,
                         np.ones(len(cp)))
    period_sets = [np.arange(int(pos.max()) + 1), *(np.array(b) - first for b in bins)]

    def stat(members: np.ndarray) -> np.ndarray:  # B×G memberships → B statistics (NaN: not identified)
        return (panel.interacted(members, period_sets)[:, 1:] ** 2).sum(1)

    rng = np.random.default_rng(seed)
    g = labels.size
    real = tuple(np.nonzero(minority)[0])
    if math.comb(g, m) <= cap + 1:
        sets = [s for s in itertools.combinations(range(g), m) if s != real]
    else:
        sets = [s for s in {tuple(sorted(rng.choice(g, m, replace=False))) for _ in range(cap)} if s != real]
    s_real = float(stat(minority[None, :])[0])
    M = np.zeros((len(sets), g))
    for i, st in enumerate(sets):
        M[i, list(st)] = 1.0
    sims = stat(M) if sets else np.zeros(0)
    sims = sims[np.isfinite(sims)]
    need = min_placebos(alpha)
    who = f"{m} {'treated' if minority is is_tr else 'control'} cluster{'s' if m > 1 else ''}"
    if sims.size < need or not np.isfinite(s_real):
        return s_real, None, (f"with {who} and {sims.size} other placebo groups the smallest attainable placebo "
                              f"p-value is 1/{sims.size + 1} > {alpha}, so the pre-trend cannot be tested; "
                              "see the placebo launch, and add clusters that did not get the change")
    p = float((1 + np.sum(sims >= s_real * (1 - 1e-12))) / (1 + sims.size))
    return s_real, p, (f"sum of squared binned lead coefficients ({len(bins)} bins) against {sims.size} placebo "
                       f"groups of {m} cluster(s) on pre-launch rows (randomization test, {who})")


def placebo_launch(cells: pd.DataFrame, launch, estimate: float, fe_roles=(), cluster_role: str | None = None,
                   seed: int = 0, n_boot: int = 999, weights: str = "webb", placebos=None) -> Refutation | None:
    """2×2 on pre-launch periods with a fake launch halfway through; None if under two pre periods.

    ``placebos``: ``(SpaceTimePlacebos, PlaceboDraws)`` when inference is by placebos (few treated
    clusters): the fake-launch estimate is then judged against the other placebo estimates (the
    same randomization test as the headline estimate), not by the wild bootstrap."""
    idx, periods, launch_idx = period_index(cells["time"], launch)
    if launch_idx < 2:
        return None
    fake = launch_idx // 2
    if placebos is not None:
        stp, draws = placebos
        est, scale = stp.pre_launch_estimate(fake)
        pool, scales = draws.estimates[~draws.own], draws.scale[~draws.own]
        if not np.isfinite(est) or pool.size < min_placebos(PRE_TREND_ALPHA):
            return None
        r = rank_inference(est, pool, alpha=PRE_TREND_ALPHA, scale=scale, placebo_scales=scales, df=draws.df)
        return Refutation(
            refuter="placebo_launch", estimate=float(estimate), new_effect=est, p_value=r.p_value,
            passed=bool(r.p_value > PRE_TREND_ALPHA),
            message=(f"fake launch at {fmt_period(periods[fake])} on pre-launch data only: effect {est:.4g} "
                     f"[{r.ci_low:.4g}, {r.ci_high:.4g}] (against {pool.size} placebo estimates); pass rule: "
                     f"p > {PRE_TREND_ALPHA} (the placebo interval covers 0)"),
        )
    pre = cells.loc[idx < launch_idx].copy()
    pre["post"] = (idx[idx < launch_idx] >= fake).astype(int)
    design = two_by_two_design(pre, fe_roles, cluster_role)
    if EFFECT not in design.names or (cluster_role and design.n_groups < 2):
        return None
    fit = fit_cells(design)
    inf = infer(fit, EFFECT, seed=seed, n_boot=n_boot, weights=weights)
    passed = bool(inf.p_value >= PRE_TREND_ALPHA)
    return Refutation(
        refuter="placebo_launch", estimate=float(estimate), new_effect=inf.estimate, p_value=inf.p_value,
        passed=passed,
        message=(f"fake launch at {fmt_period(periods[fake])} on pre-launch data only: effect {inf.estimate:.4g} "
                 f"[{inf.ci_low:.4g}, {inf.ci_high:.4g}] ({inf.kind}); pass rule: p ≥ {PRE_TREND_ALPHA} "
                 f"(interval covers 0)"),
    )


def relative_magnitudes(es: EventStudy, alpha: float = 0.05) -> dict | None:
    """Rambachan–Roth-style sensitivity with relative magnitudes (a conservative simplification).

    Target: θ = average of the lag coefficients (post effect relative to period −1). Under
    Δ^RM(M̄) each post-launch one-period change in the violation of parallel trends is at most
    M̄ × m, where m = the largest one-period change of the lead coefficients (the pre-launch
    "violation" scale, plugged in). The bias of the period-t lag is then at most M̄·m·(t+1), so
    the bias of θ is at most b(M̄) = M̄·m·(T+1)/2 for T lags, and the robust interval is
    θ̂ ± (b(M̄) + z·se(θ̂)). The breakdown M̄* is the smallest M̄ whose interval includes 0: how
    large post-launch violations may be, relative to the worst pre-launch one, before the
    conclusion flips. This union-bound interval is wider than Rambachan & Roth's optimal
    (FLCI/ARP) intervals and ignores the uncertainty in m, so read M̄* as indicative.
    """
    t = es.table
    lags = t[t["event_time"] >= 0]
    pre = t[t["event_time"] <= -1].sort_values("event_time")
    if lags.empty or len(pre) < 2:
        return None
    names = [f"event={k}" for k in lags["event_time"]]
    idx = [es.fit.design.index(n) for n in names if n in es.fit.design.names]
    if len(idx) != len(names):
        return None
    a = np.full(len(idx), 1.0 / len(idx))
    theta = float(a @ es.fit.params[idx])
    se = float(np.sqrt(a @ es.fit.cov[np.ix_(idx, idx)] @ a))
    m = float(np.max(np.abs(np.diff(pre["coef"].to_numpy()))))
    z = float(stats.norm.ppf(1 - alpha / 2))
    scale = m * (len(idx) + 1) / 2.0
    slack = abs(theta) - z * se
    breakdown = 0.0 if slack <= 0 else (float("inf") if scale == 0 else slack / scale)
    return {"theta_avg_post": theta, "se": se, "max_pre_change": m, "breakdown_Mbar": breakdown,
            "ci_at_Mbar_1": [theta - scale - z * se, theta + scale + z * se],
            "note": "relative magnitudes, union bound (conservative), m plugged in"}
