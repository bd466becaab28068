"""Synthetic control for a change shipped at a known date (Abadie–Diamond–Hainmueller).

A convex combination of donor units (cohorts the change never reached, or prior weeks for a
global launch) that tracks the treated series before the launch is the counterfactual after
it; the average post-launch gap is the effect. The weight optimisation alone proves little,
so the estimate comes with the checks that make it readable:

* **placebo-in-space** — every donor in turn plays the treated unit; the p-value is the rank
  of the treated post/pre RMSPE ratio among all units (treated included, so never 0);
* **conformal confidence interval** — Chernozhukov, Wüthrich & Zhu (2021, JASA, "An exact
  and robust conformal inference method for counterfactual and synthetic controls"): for a
  candidate effect θ the post-launch treated outcomes are shifted by −θ, the weights refit on
  all periods, and the post residuals compared with their time-permutations (i.i.d. with a
  fixed seed by default, or moving blocks); the interval is the set of θ not rejected
  at 5 %, found on a grid and sharpened by bisection;
* **placebo-in-time** (fake launch at 2/3 of the pre-period), **leave-one-out donors**,
  **out-of-sample pre-period fit**, and a **pre-period fit gate**: when the synthetic series
  does not track the treated one before launch, an error diagnostic says no post-launch
  number should be read as an effect.

Noise: the conversation panels this runs on have cells of a few dozen conversations, so a
single donor cohort is mostly sampling noise. When a volume column is given, each donor's
weight is priced by its sampling variance (a ridge ``sum_j w_j^2 * T * v_j``, ``v_j`` the
mean variance of the donor's period means), which is the noise the donor would carry into
the counterfactual: the fit leans on many large cohorts instead of chasing a few noisy ones.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from methods import plots
from methods.result import Diagnostic, EstimateResult, MethodRefusal, Refutation
from methods.sc_weights import gram, solve_simplex_qp

METHOD = "synthetic_control"
ESTIMAND = "ATT (average post-launch gap, treated units)"
ALPHA = 0.05
FIT_GATE_RATIO = 1.0  # pre-period RMSPE / sd of the treated pre-period series
NOISE_QUANTILE = 0.95  # a fit within the 95% chi-square band of pure sampling noise is as good as data allow
PLACEBO_TIME_FRACTION = 2.0 / 3.0
N_IID_PERMUTATIONS = 999
PERMUTATION_KINDS = ("iid", "moving_block")
PLOT_PLACEBO_PRE_RMSPE_CAP = 5.0  # placebos fitting 5x worse than the treated unit are not drawn
WEIGHT_EPS = 1e-8
NOISE_PENALTY = 1.0  # multiplier of the sampling-noise ridge (see module docstring)


@dataclass
class _Panel:
    """Wide arrays the estimator works on (periods sorted, post periods last)."""

    times: np.ndarray  # period labels as given
    y: np.ndarray  # treated series (T,)
    X: np.ndarray  # donors (T, D)
    donors: list[str]
    post: np.ndarray  # bool (T,)
    n_treated: np.ndarray  # treated volume per period (T,)
    n_donors: np.ndarray | None  # donor volume per period (T, D) when a weight column is given
    v_treated: np.ndarray | None  # sampling variance of the treated period mean (T,)
    v_donors: np.ndarray | None  # sampling variance of each donor period mean (T, D)
    total_treated: float = 0.0
    total_donors: float = 0.0
    dropped_donors: list[str] = field(default_factory=list)
    dropped_periods: list[str] = field(default_factory=list)

    @property
    def pre(self) -> np.ndarray:
        return ~self.post


# --------------------------------------------------------------------------- public entry
def estimate_sc(panel: pd.DataFrame, unit: str, time: str, outcome: str, treated_units: list, launch: Any,
                weight: str | None = None, min_pre_periods: int = 4, min_donors: int = 3, seed: int = 0,
                min_post_periods: int = 2, alpha: float = ALPHA, permutations: str = "iid") -> EstimateResult:
    """Synthetic-control ATT of the change shipped at ``launch`` to ``treated_units``.

    ``panel`` is long (one row per unit and period); periods with ``time >= launch`` are post.
    Several treated units are averaged into one treated series (volume-weighted when
    ``weight`` names a volume column). ``permutations`` picks the conformal interval's
    permutations of time (``"iid"`` or ``"moving_block"``); ``seed`` fixes the i.i.d. draws.
    Raises ``MethodRefusal`` when the pre-period or the donor pool is too small to say
    anything, and ``ValueError`` for malformed input.
    """
    if permutations not in PERMUTATION_KINDS:
        raise ValueError(f"permutations must be one of {PERMUTATION_KINDS}, got {permutations!r}")
    data = _prepare(panel, unit, time, outcome, treated_units, launch, weight)
    _refuse_if_thin(data, launch, min_pre_periods, min_donors, min_post_periods)
    rng_seed = int(seed)
    T0 = int(data.pre.sum())

    pen_pre = _penalty(data, data.pre)
    w = solve_simplex_qp(gram(data.X[data.pre], pen_pre), data.X[data.pre].T @ data.y[data.pre])
    synth = data.X @ w
    gap = data.y - synth
    theta = float(gap[data.post].mean())
    rmspe_pre = _rms(gap[data.pre])
    rmspe_post = _rms(gap[data.post])

    placebo = _placebo_in_space(data, pen_pre, rmspe_pre, rmspe_post)
    ci_low, ci_high, ci_info = _conformal_ci(data.X, data.y, data.post, data, theta, rmspe_pre, alpha, rng_seed,
                                             permutations)
    width = ci_high - ci_low
    std_error = width / (2 * 1.959963984540054) if math.isfinite(width) else math.inf

    sd_pre = float(np.std(data.y[data.pre], ddof=1)) if T0 > 1 else 0.0
    floor_pre = _noise_floor(data, w, data.pre)
    in_time = _placebo_in_time(data, alpha, rng_seed, permutations)
    loo = _leave_one_out(data, w, pen_pre, theta, ci_low, ci_high)

    diagnostics = [
        _donor_pool(data, min_donors, min_pre_periods),
        _fit_gate(rmspe_pre, sd_pre, floor_pre, T0),
        _out_of_sample(in_time, sd_pre),
        _inference_note(placebo, ci_info, alpha),
        _weights_note(data, w),
    ]
    if data.dropped_donors or data.dropped_periods:
        diagnostics.append(_dropped_note(data))
    refutations = [_in_time_refutation(theta, in_time, alpha), _loo_refutation(theta, loo, ci_low, ci_high)]

    naive = float(data.y[data.post].mean() - data.y[data.pre].mean())
    labels = [_label(t) for t in data.times]
    extras = {
        "weights": {d: float(v) for d, v in sorted(zip(data.donors, w), key=lambda kv: -kv[1]) if v > WEIGHT_EPS},
        "gaps": dict(zip(labels, map(float, gap))),
        "post_gaps": {lab: float(g) for lab, g, p in zip(labels, gap, data.post) if p},
        "treated_series": dict(zip(labels, map(float, data.y))),
        "synthetic_series": dict(zip(labels, map(float, synth))),
        "rmspe_pre": rmspe_pre,
        "rmspe_post": rmspe_post,
        "rmspe_ratio": placebo["ratio_treated"],
        "pre_periods": T0,
        "post_periods": int(data.post.sum()),
        "n_donors": len(data.donors),
        "placebo_p_value": placebo["p_value"],
        "placebo_effects": {d: float(e) for d, e in zip(data.donors, placebo["effects"])},
        "conformal": ci_info,
        "leave_one_out": {d: float(e) for d, e in loo.items()},
        "noise_penalty": pen_pre is not None,
        "dropped_donors": data.dropped_donors,
        "dropped_periods": data.dropped_periods,
    }
    result = EstimateResult(
        method=METHOD, estimand=ESTIMAND, outcome=outcome, estimate=theta, std_error=float(std_error),
        ci_low=float(ci_low), ci_high=float(ci_high), p_value=float(placebo["p_value"]),
        n_treated=round(data.total_treated), n_control=round(data.total_donors),
        naive_estimate=naive, refutations=refutations, diagnostics=diagnostics, extras=extras,
        ci_method=ci_info["method"],
    )
    result.plots = _plots(data, synth, gap, placebo, rmspe_pre, outcome)
    return result


# --------------------------------------------------------------------------- input shaping
def _prepare(panel: pd.DataFrame, unit: str, time: str, outcome: str, treated_units: list, launch: Any,
             weight: str | None) -> _Panel:
    """Long panel -> sorted wide arrays; drops donors with gaps and periods without treated data."""
    cols = [unit, time, outcome] + ([weight] if weight else [])
    missing = [c for c in cols if c not in panel.columns]
    if missing:
        raise ValueError(f"panel has no column(s) {', '.join(map(repr, missing))}; it has {list(panel.columns)}")
    df = panel[cols].copy()
    df[unit] = df[unit].astype(str)
    treated = [str(u) for u in (treated_units or [])]
    if not treated:
        raise ValueError("treated_units is empty: name at least one treated unit")
    absent = sorted(set(treated) - set(df[unit]))
    if absent:
        raise ValueError(f"treated unit(s) {absent} not found in column {unit!r}")
    if df.duplicated([unit, time]).any():
        raise ValueError(f"panel must have one row per ({unit}, {time}); found duplicates")
    df[outcome] = pd.to_numeric(df[outcome], errors="coerce").astype(float)
    if weight:
        df[weight] = pd.to_numeric(df[weight], errors="coerce").astype(float)
        if (df[weight] < 0).any():
            raise ValueError(f"weight column {weight!r} has negative values")
        df.loc[df[weight].isna() | (df[weight] == 0), outcome] = np.nan

    Y = df.pivot(index=time, columns=unit, values=outcome).sort_index()
    N = df.pivot(index=time, columns=unit, values=weight).reindex(Y.index) if weight else None
    times = Y.index.to_numpy()
    post = _post_mask(Y.index, launch)

    yt, nt = Y[treated].to_numpy(float), (N[treated].to_numpy(float) if N is not None else None)
    present = ~np.isnan(yt)
    if nt is None:
        nt = present.astype(float)
    nt = np.where(present, np.nan_to_num(nt), 0.0)
    n1 = nt.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        y1 = np.where(n1 > 0, np.nansum(np.nan_to_num(yt) * nt, axis=1) / np.where(n1 > 0, n1, 1), np.nan)

    keep_t = ~np.isnan(y1)
    dropped_periods = [_label(t) for t in times[~keep_t]]
    donor_names = [c for c in Y.columns if c not in set(treated)]
    Xd = Y[donor_names].to_numpy(float)[keep_t]
    complete = ~np.isnan(Xd).any(axis=0)
    dropped_donors = [d for d, ok in zip(donor_names, complete) if not ok]
    donors = [d for d, ok in zip(donor_names, complete) if ok]
    X = Xd[:, complete]
    Nd = N[donors].to_numpy(float)[keep_t] if N is not None else None

    v1 = vd = None
    if Nd is not None and X.shape[1] > 0 and X.shape[0] > 0:
        v1, vd = _sampling_variances(y1[keep_t], n1[keep_t], X, Nd)
    return _Panel(
        times=times[keep_t], y=y1[keep_t], X=X, donors=donors, post=post[keep_t], n_treated=n1[keep_t],
        n_donors=Nd, v_treated=v1, v_donors=vd,
        total_treated=float(n1[keep_t].sum()) if weight else float(len(treated)),
        total_donors=float(Nd.sum()) if Nd is not None else float(len(donors)),
        dropped_donors=dropped_donors, dropped_periods=dropped_periods,
    )


def _post_mask(index: pd.Index, launch: Any) -> np.ndarray:
    """``time >= launch`` for numeric, date, timestamp or date-string time columns."""
    values = index
    if pd.api.types.is_numeric_dtype(values.dtype) and not isinstance(launch, (dt.date, pd.Timestamp)):
        try:
            return np.asarray(values.to_numpy(float) >= float(launch))
        except (TypeError, ValueError):
            pass
    try:
        tv = pd.to_datetime(values)
        lv = pd.Timestamp(launch)
    except (TypeError, ValueError) as exc:
        try:
            return np.asarray(values.astype(str) >= str(launch))
        except Exception:  # noqa: BLE001 - report the original parse problem
            raise ValueError(f"cannot compare launch {launch!r} with the time column: {exc}") from exc
    if tv.tz is not None and lv.tzinfo is None:
        lv = lv.tz_localize(tv.tz)
    elif tv.tz is None and lv.tzinfo is not None:
        lv = lv.tz_convert(None)
    return np.asarray(tv >= lv)


def _sampling_variances(y1: np.ndarray, n1: np.ndarray, X: np.ndarray, N: np.ndarray):
    """Variance of each period mean from its volume.

    Rates (all values in [0, 1]) use the Bernoulli variance ``p(1-p)/n`` with the unit's
    average rate; other outcomes use one pooled per-conversation variance estimated from
    period-to-period changes (median of squared first differences over ``1/n_t + 1/n_{t-1}``,
    rescaled by the chi-square(1) median), which errs large when the signal itself moves.
    """
    n1 = np.maximum(n1, 1e-12)
    N = np.maximum(N, 1e-12)
    if np.nanmin(X) >= 0 and np.nanmax(X) <= 1 and np.nanmin(y1) >= 0 and np.nanmax(y1) <= 1:
        pj = X.mean(axis=0)
        p1 = float(y1.mean())
        return p1 * (1 - p1) / n1, (pj * (1 - pj))[None, :] / N
    if X.shape[0] < 2:
        s2 = float(np.var(X))
    else:
        ratio = np.diff(X, axis=0) ** 2 / (1 / N[1:] + 1 / N[:-1])
        s2 = float(np.median(ratio) / 0.454936423119572)
    return s2 / n1, s2 / N


def _penalty(data: _Panel, rows: np.ndarray) -> np.ndarray | None:
    """Ridge pricing each donor's sampling noise over the fitted periods (None without volumes)."""
    if data.v_donors is None:
        return None
    return NOISE_PENALTY * rows.sum() * data.v_donors[rows].mean(axis=0)


def _refuse_if_thin(data: _Panel, launch: Any, min_pre: int, min_donors: int, min_post: int) -> None:
    n_pre, n_post, n_don = int(data.pre.sum()), int(data.post.sum()), len(data.donors)
    min_donors = max(min_donors, 2)  # placebo-in-space needs a donor left over to fit each placebo
    min_pre = max(min_pre, 3)  # placebo-in-time needs two training periods and one to validate
    if n_pre < min_pre:
        raise MethodRefusal(
            f"only {n_pre} period(s) before the launch ({launch}); synthetic control needs at least {min_pre} "
            "to learn the donor weights. Waiting does not add history: include earlier data (widen the window), "
            "use a finer time bucket, or, for a global launch, compare against prior weeks."
        )
    if n_don < min_donors:
        dropped = f" ({len(data.dropped_donors)} more dropped for missing periods)" if data.dropped_donors else ""
        raise MethodRefusal(
            f"only {n_don} donor unit(s) the change never reached{dropped}; synthetic control needs at least "
            f"{min_donors}. Split cohorts finer (more unit_by columns) or keep a holdout the change does not reach."
        )
    if n_post < min_post:
        step = _period_step(data.times)
        until = f" (until about {_label(_advance(data.times[-1], step, min_post - n_post))})" if step is not None else ""
        raise MethodRefusal(
            f"only {n_post} period(s) after the launch ({launch}); need at least {min_post}. "
            f"Launched recently? Wait for {min_post - n_post} more full period(s) of data{until} and re-run."
        )


# --------------------------------------------------------------------------- inference
def _placebo_in_space(data: _Panel, pen_pre: np.ndarray | None, rmspe_pre: float, rmspe_post: float) -> dict:
    """Each donor as treated, fitted on the other donors; rank of post/pre RMSPE ratios.

    One Gram matrix serves every fit: donor ``j``'s problem is ``G`` without row/column ``j``
    and ``c = G[:, j]`` (the cross-products with donor ``j``), so the loop is D small QPs.
    """
    pre = data.pre
    Xp = data.X[pre]
    G_raw = Xp.T @ Xp
    D = len(data.donors)
    gaps = np.empty((D, data.X.shape[0]))
    idx = np.arange(D)
    for j in range(D):
        others = idx[idx != j]
        G = G_raw[np.ix_(others, others)]
        if pen_pre is not None:
            G[np.diag_indices_from(G)] += pen_pre[others]
        wj = solve_simplex_qp(G, G_raw[others, j])
        gaps[j] = data.X[:, j] - data.X[:, others] @ wj
    pre_r = np.sqrt(np.mean(gaps[:, pre] ** 2, axis=1))
    post_r = np.sqrt(np.mean(gaps[:, data.post] ** 2, axis=1))
    tiny = 1e-12 * max(1.0, float(np.max(np.abs(data.X))))
    ratios = post_r / np.maximum(pre_r, tiny)
    ratio_t = rmspe_post / max(rmspe_pre, tiny)
    rank = 1 + int(np.sum(ratios >= ratio_t * (1 - 1e-12)))
    return {
        "gaps": gaps, "pre_rmspe": pre_r, "post_rmspe": post_r, "ratios": ratios, "ratio_treated": float(ratio_t),
        "effects": gaps[:, data.post].mean(axis=1), "p_value": rank / (D + 1), "rank": rank,
    }


class _PermutationTest:
    """CWZ permutation p-value of the post-period residuals with ``S = |sum of post residuals|``.

    CWZ's default statistic sums ``|u_t|``; any statistic keeps the test exact under
    exchangeability, and the absolute *sum* targets the estimand (a constant shift of the
    mean), which on noisy weekly cohorts gives markedly shorter intervals at the same coverage.
    ``kind="iid"`` (default) draws random permutations of time with a fixed seed;
    ``kind="moving_block"`` uses the T cyclic shifts, robust to serial correlation but coarse
    (it needs T >= 1/alpha periods to reject anything, and loses power when donors trend).
    """

    def __init__(self, T: int, n_post: int, alpha: float, seed: int, kind: str = "iid"):
        if kind not in PERMUTATION_KINDS:
            raise ValueError(f"permutations must be one of {PERMUTATION_KINDS}, got {kind!r}")
        self.T, self.n_post = T, n_post
        self.moving_block = kind == "moving_block" and T >= math.ceil(1.0 / alpha)
        if not self.moving_block:
            rng = np.random.default_rng(seed)
            self.perms = np.argsort(rng.random((N_IID_PERMUTATIONS, T)), axis=1)[:, T - n_post:]

    @property
    def name(self) -> str:
        return (f"moving-block (all {self.T} cyclic shifts of time)" if self.moving_block
                else f"i.i.d. ({N_IID_PERMUTATIONS} random permutations of time, fixed seed)")

    def p_value(self, u: np.ndarray) -> float:
        a = u
        s_obs = abs(a[self.T - self.n_post:].sum())
        thresh = s_obs * (1 - 1e-10) - 1e-300
        if self.moving_block:
            cs = np.concatenate([[0.0], np.cumsum(np.concatenate([a, a]))])
            starts = np.arange(self.T)
            s_all = np.abs(cs[starts + self.n_post] - cs[starts])
            return float(np.mean(s_all >= thresh))
        s_b = np.abs(a[self.perms].sum(axis=1))
        return float((1 + np.sum(s_b >= thresh)) / (N_IID_PERMUTATIONS + 1))


def _conformal_pvalue_fn(X: np.ndarray, y: np.ndarray, post: np.ndarray, data: _Panel, alpha: float, seed: int,
                         kind: str = "iid"):
    """p(θ): shift post outcomes by −θ, refit weights on all periods, permute the residuals in time."""
    pen = _penalty(data, np.ones(X.shape[0], bool))  # ``data`` holds exactly the rows of ``X``
    G = gram(X, pen)
    c0 = X.T @ y
    cp = X[post].sum(axis=0)
    test = _PermutationTest(len(y), int(post.sum()), alpha, seed, kind)
    postf = post.astype(float)

    def p_of(theta: float) -> float:
        w = solve_simplex_qp(G, c0 - theta * cp)
        return test.p_value(y - theta * postf - X @ w)

    return p_of, test


def _conformal_ci(X, y, post, data: _Panel, theta_hat: float, rmspe_pre: float, alpha: float, seed: int,
                  kind: str = "iid"):
    """Test-inversion interval {θ : p(θ) > α} on an expanding grid, edges refined by bisection."""
    p_of, test = _conformal_pvalue_fn(X, y, post, data, alpha, seed, kind)
    scale = max(rmspe_pre, float(np.std(y)) * 1e-3, 1e-12 * max(1.0, float(np.max(np.abs(y)))))
    half = 4.0 * scale
    cache: dict[float, float] = {}

    def p(theta: float) -> float:
        if theta not in cache:
            cache[theta] = p_of(theta)
        return cache[theta]

    for _ in range(8):
        grid = theta_hat + np.linspace(-half, half, 41)
        acc = np.array([p(t) > alpha for t in grid])
        if acc.any() and not acc[0] and not acc[-1]:
            break
        if not acc.any():
            grid = theta_hat + np.linspace(-half, half, 401)
            acc = np.array([p(t) > alpha for t in grid])
            if acc.any() and not acc[0] and not acc[-1]:
                break
        half *= 2.0
    info = {"method": "", "permutations": test.name, "statistic": "S = |sum of post-period residuals|",
            "p_value_at_zero": p(0.0), "alpha": alpha, "grid_half_width": half}
    base = (f"conformal test inversion (Chernozhukov–Wüthrich–Zhu 2021): sharp null of a constant effect θ, "
            f"weights refit on all periods, {test.name} permutations; interval = θ not rejected at "
            f"{alpha:.0%}, grid + bisection")
    if not acc.any():
        info["method"] = base + "; every θ was rejected (the model does not describe the data): no interval"
        return math.nan, math.nan, info
    lo_i, hi_i = int(np.argmax(acc)), len(acc) - 1 - int(np.argmax(acc[::-1]))
    lo = -math.inf if lo_i == 0 else _bisect(p, grid[lo_i - 1], grid[lo_i], alpha)
    hi = math.inf if hi_i == len(acc) - 1 else _bisect(p, grid[hi_i + 1], grid[hi_i], alpha)
    holes = not acc[lo_i:hi_i + 1].all()
    info["method"] = base + ("; accepted set not convex, its hull reported" if holes else "")
    if not (math.isfinite(lo) and math.isfinite(hi)):
        info["method"] += "; unbounded: too few periods for the permutations to reject any effect size"
    return lo, hi, info


def _bisect(p, rejected: float, accepted: float, alpha: float, steps: int = 30) -> float:
    """Boundary between a rejected and an accepted θ (returns the accepted side)."""
    tol = abs(accepted - rejected) * 1e-6
    for _ in range(steps):
        mid = 0.5 * (rejected + accepted)
        if p(mid) > alpha:
            accepted = mid
        else:
            rejected = mid
        if abs(accepted - rejected) <= tol:
            break
    return float(accepted)


# --------------------------------------------------------------------------- refutations
def _placebo_in_time(data: _Panel, alpha: float, seed: int, kind: str = "iid") -> dict:
    """Fake launch at 2/3 of the pre-period, using pre-launch data only.

    Weights are trained on the early pre-period; the late pre-period's mean gap is the fake
    effect (it should be ~0), its RMSPE the out-of-sample fit, and the conformal p-value of
    a zero effect there says whether the fake effect is distinguishable from noise.
    """
    pre_idx = np.flatnonzero(data.pre)
    T0 = len(pre_idx)
    k = min(max(round(PLACEBO_TIME_FRACTION * T0), 2), T0 - 1)
    Xp, yp = data.X[pre_idx], data.y[pre_idx]
    fake_post = np.arange(T0) >= k
    sub = _sub_panel(data, pre_idx)
    pen = _penalty(sub, ~fake_post)
    w = solve_simplex_qp(gram(Xp[~fake_post], pen), Xp[~fake_post].T @ yp[~fake_post])
    gap = yp - Xp @ w
    p_of, test = _conformal_pvalue_fn(Xp, yp, fake_post, sub, alpha, seed, kind)
    return {
        "fake_launch": _label(data.times[pre_idx[k]]), "train_periods": k, "validation_periods": T0 - k,
        "effect": float(gap[fake_post].mean()), "rmspe_train": _rms(gap[~fake_post]),
        "rmspe_validation": _rms(gap[fake_post]), "p_value": p_of(0.0), "permutations": test.name,
        "floor_validation": _noise_floor(sub, w, fake_post),
    }


def _sub_panel(data: _Panel, rows: np.ndarray) -> _Panel:
    return _Panel(
        times=data.times[rows], y=data.y[rows], X=data.X[rows], donors=data.donors, post=data.post[rows],
        n_treated=data.n_treated[rows], n_donors=None if data.n_donors is None else data.n_donors[rows],
        v_treated=None if data.v_treated is None else data.v_treated[rows],
        v_donors=None if data.v_donors is None else data.v_donors[rows],
    )


def _leave_one_out(data: _Panel, w: np.ndarray, pen_pre, theta: float, lo: float, hi: float) -> dict[str, float]:
    """Re-estimate without each donor that carries weight (the largest first)."""
    pre = data.pre
    Xp = data.X[pre]
    G_full = gram(Xp, pen_pre)
    c_full = Xp.T @ data.y[pre]
    out: dict[str, float] = {}
    idx = np.arange(len(data.donors))
    for j in np.argsort(-w):
        if w[j] <= WEIGHT_EPS:
            break
        others = idx[idx != j]
        wj = solve_simplex_qp(G_full[np.ix_(others, others)], c_full[others])
        out[data.donors[j]] = float((data.y[data.post] - data.X[data.post][:, others] @ wj).mean())
    return out


def _in_time_refutation(theta: float, it: dict, alpha: float) -> Refutation:
    passed = it["p_value"] > alpha
    msg = (f"fake launch at {it['fake_launch']} (2/3 into the pre-period, {it['train_periods']} training and "
           f"{it['validation_periods']} placebo periods): fake effect {it['effect']:+.4f}, conformal p-value of a "
           f"zero effect {it['p_value']:.3f}"
           + (f" (the fake effect is {abs(it['effect'] / theta):.0%} of the post-launch estimate's size)" if theta else "")
           + f". Pass rule: p > {alpha:g}, i.e. no effect before the change shipped. "
           + ("Passed." if passed else "FAILED: the synthetic control drifts away from the treated series before "
              "launch, so the post-launch gap may be drift rather than effect."))
    return Refutation("placebo_in_time", theta, it["effect"], it["p_value"], passed, msg)


def _loo_refutation(theta: float, loo: dict[str, float], lo: float, hi: float) -> Refutation:
    if not loo:
        return Refutation("leave_one_out_donors", theta, theta, None, True, "no donor carries weight")
    vals = np.array(list(loo.values()))
    worst_name = max(loo, key=lambda k: abs(loo[k] - theta))
    within = bool(np.all((vals >= lo) & (vals <= hi)))  # False when the interval is empty (NaN)
    same_sign = bool(np.all(np.sign(vals) == np.sign(theta)))
    msg = (f"dropping each of the {len(loo)} weighted donors in turn gives estimates from {vals.min():+.4f} to "
           f"{vals.max():+.4f} (full estimate {theta:+.4f}; largest move without {worst_name!r}); sign "
           f"{'holds' if same_sign else 'flips'} in every re-fit. Pass rule: every re-estimate stays inside the "
           f"confidence interval [{lo:+.4f}, {hi:+.4f}]. " + ("Passed." if within else
           "FAILED: the answer hinges on a single donor."))
    return Refutation("leave_one_out_donors", theta, float(loo[worst_name]), None, within, msg)


# --------------------------------------------------------------------------- diagnostics
def _noise_floor(data: _Panel, w: np.ndarray, rows: np.ndarray) -> float | None:
    """RMSPE a perfect synthetic control would still show from sampling noise alone."""
    if data.v_donors is None or data.v_treated is None or not rows.any():
        return None
    v = data.v_treated[rows] + data.v_donors[rows] @ (w * w)
    return float(np.sqrt(np.mean(v)))


def _within_noise(rmspe: float, floor: float | None, n_periods: int) -> bool:
    """Is the misfit no larger than sampling noise alone would produce 95% of the time?

    With independent cell noise the mean squared gap is ``floor^2 * chi2(k)/k`` for ``k``
    periods, so the bound widens for short windows instead of failing honest fits by chance.
    """
    if floor is None or n_periods < 1:
        return False
    return rmspe**2 <= floor**2 * float(stats.chi2.ppf(NOISE_QUANTILE, n_periods)) / n_periods


def _fit_gate(rmspe: float, sd: float, floor: float | None, n_periods: int) -> Diagnostic:
    ratio = rmspe / sd if sd > 0 else (0.0 if rmspe == 0 else math.inf)
    by_sd = ratio <= FIT_GATE_RATIO
    by_noise = _within_noise(rmspe, floor, n_periods)
    passed = by_sd or by_noise
    floor_txt = (f"; sampling noise alone would give about {floor:.4f}" if floor is not None else "")
    if passed:
        how = ("tracks the treated series' movements" if by_sd
               else "misses by no more than sampling noise explains")
        msg = (f"pre-launch fit: RMSPE {rmspe:.4f} vs sd {sd:.4f} of the treated series (ratio {ratio:.2f}, "
               f"gate {FIT_GATE_RATIO:g}){floor_txt}. The synthetic control {how} before launch.")
    else:
        msg = (f"POOR PRE-LAUNCH FIT: RMSPE {rmspe:.4f} is {ratio:.2f}x the treated series' sd {sd:.4f} "
               f"(gate {FIT_GATE_RATIO:g}){floor_txt}. No combination of donors reproduces the treated series "
               "before launch, so no post-launch number here should be read as an effect. Look for donors "
               "more like the treated units, a shorter pre-period, or another design.")
    return Diagnostic("sc_pre_fit_gate", float(ratio), FIT_GATE_RATIO, bool(passed), msg, "error")


def _out_of_sample(it: dict, sd: float) -> Diagnostic:
    r = it["rmspe_validation"]
    ratio = r / sd if sd > 0 else (0.0 if r == 0 else math.inf)
    floor = it["floor_validation"]
    passed = ratio <= FIT_GATE_RATIO or _within_noise(r, floor, it["validation_periods"])
    floor_txt = f", sampling-noise floor {floor:.4f}" if floor is not None else ""
    msg = (f"weights trained on the first {it['train_periods']} pre-launch periods (RMSPE {it['rmspe_train']:.4f}) "
           f"predict the next {it['validation_periods']} with RMSPE {r:.4f} ({ratio:.2f}x the treated sd{floor_txt}). "
           + ("The fit carries over to periods it was not trained on." if passed else
              "The fit does not carry over out of sample: the weights may be fitting noise, so treat the "
              "post-launch gap with caution."))
    return Diagnostic("sc_out_of_sample_fit", float(ratio), FIT_GATE_RATIO, bool(passed), msg, "warn")


def _donor_pool(data: _Panel, min_donors: int, min_pre: int) -> Diagnostic:
    D, T0, T1 = len(data.donors), int(data.pre.sum()), int(data.post.sum())
    msg = (f"{D} donor units (at least {min_donors} needed), {T0} periods before launch (at least {min_pre}) and "
           f"{T1} after; the smallest attainable placebo p-value is 1/{D + 1} = {1 / (D + 1):.3f}.")
    return Diagnostic("donor_pool", float(D), float(min_donors), True, msg, "error")


def _inference_note(placebo: dict, ci: dict, alpha: float) -> Diagnostic:
    D = len(placebo["ratios"])
    msg = (f"p_value is the placebo-in-space permutation p-value: the treated unit's post/pre RMSPE ratio "
           f"ranks {placebo['rank']} of {D + 1} (each of the {D} donors refit as if treated), p = rank/(donors+1), "
           f"so it can never be below {1 / (D + 1):.3f}. The interval is {ci['method']}. std_error is "
           "the interval width / (2 x 1.96), not a sampling standard error.")
    return Diagnostic("sc_inference", float(placebo["p_value"]), alpha, True, msg, "warn")


def _weights_note(data: _Panel, w: np.ndarray) -> Diagnostic:
    nz = w[w > WEIGHT_EPS]
    eff = float(1.0 / np.sum(nz**2)) if nz.size else 0.0
    top = ", ".join(f"{data.donors[j]} {w[j]:.2f}" for j in np.argsort(-w)[:5] if w[j] > WEIGHT_EPS)
    how = ("each donor's weight priced by its sampling noise (volume column given)" if data.v_donors is not None
           else "plain least squares, no volume column")
    msg = (f"{nz.size} of {len(data.donors)} donors carry weight (effective number {eff:.1f}; {how}); "
           f"largest: {top}.")
    return Diagnostic("sc_donor_weights", eff, None, True, msg, "warn")


def _dropped_note(data: _Panel) -> Diagnostic:
    parts = []
    if data.dropped_donors:
        parts.append(f"{len(data.dropped_donors)} donor(s) with missing periods left out "
                     f"({', '.join(data.dropped_donors[:8])}{'…' if len(data.dropped_donors) > 8 else ''})")
    if data.dropped_periods:
        parts.append(f"{len(data.dropped_periods)} period(s) without treated data left out")
    return Diagnostic("sc_incomplete_panel", float(len(data.dropped_donors)), 0.0, False,
                      "; ".join(parts) + ".", "warn")


# --------------------------------------------------------------------------- plots & helpers
def _plots(data: _Panel, synth, gap, placebo: dict, rmspe_pre: float, outcome: str) -> dict[str, bytes]:
    x = plots.plot_x(data.times)
    first_post = int(np.argmax(data.post))
    launch_x = x[first_post] if not np.issubdtype(np.asarray(x).dtype, np.number) else \
        (float(x[first_post - 1]) + float(x[first_post])) / 2 if first_post > 0 else float(x[first_post])
    traj = plots.trajectory_png(x, data.y, synth, launch_x, f"{outcome}: treated vs synthetic control", outcome)
    keep = placebo["pre_rmspe"] <= PLOT_PLACEBO_PRE_RMSPE_CAP * max(rmspe_pre, 1e-12)
    gaps = plots.gaps_png(x, gap, placebo["gaps"][keep], launch_x,
                          f"gap (treated − synthetic) with placebo donors (pre-fit ≤ {PLOT_PLACEBO_PRE_RMSPE_CAP:g}x)",
                          f"gap in {outcome}")
    return {"trajectory": traj, "gaps": gaps}


def _rms(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(a)))) if len(a) else 0.0


def _label(t: Any) -> str:
    if isinstance(t, (np.datetime64, pd.Timestamp, dt.datetime)):
        ts = pd.Timestamp(t)
        return ts.date().isoformat() if ts == ts.normalize() else ts.isoformat()
    if isinstance(t, (np.integer, np.floating)):
        return str(t.item())
    return str(t)


def _period_step(times: np.ndarray):
    if len(times) < 2:
        return None
    try:
        s = pd.Series(pd.to_datetime(times)) if not np.issubdtype(np.asarray(times).dtype, np.number) else pd.Series(times)
        return s.diff().dropna().median()
    except (TypeError, ValueError):
        return None


def _advance(last, step, k: int):
    try:
        if isinstance(step, pd.Timedelta):
            return pd.Timestamp(last) + step * k
        return last + step * k
    except (TypeError, ValueError):
        return last
