"""Synthetic control for a change shipped at a known date (Abadie–Diamond–Hainmueller).

A convex combination of donor units (cohorts the change never reached, or prior weeks for a
global launch) that tracks the treated series before the launch is the counterfactual after
it; the average post-launch gap is the effect. The weight optimisation alone proves little,
so the estimate comes with the checks that make it readable:

* **conformal p-value and confidence interval, one test** — Chernozhukov, Wüthrich & Zhu
  (2021, JASA, "An exact and robust conformal inference method for counterfactual and
  synthetic controls"): for a candidate effect θ the post-launch treated outcomes are shifted
  by −θ, the weights refit on all periods, and the post residuals compared with their
  time-permutations (i.i.d. with a fixed seed by default, or moving blocks). ``p_value`` is
  that test at θ = 0 and the interval is the set of θ with p(θ) ≥ 5 % (grid + bisection), so
  p < 0.05 exactly when the interval excludes 0. Reporting the placebo rank as the p-value
  next to a conformal interval let the two disagree (p = 0.053 with an interval excluding 0);
* **placebo-in-space** — every donor in turn plays the treated unit; the rank of the treated
  post/pre RMSPE ratio among all units (never below 1/(donors+1)) is the ``placebo_rank``
  check's evidence (``extras["placebo_p_value"]``), not the p-value;
* **placebo-in-time** (fake launch at 2/3 of the pre-period), **leave-one-out donors**, and a
  **pre-period fit gate** (check ``pre_period_fit``, blocking): in-sample RMSPE judged against
  the treated series' variation around its own trend (or the sampling-noise floor), no drift
  in the pre-launch gap, and no systematic gap on held-out pre-periods for weights trained on
  the earlier ones (see ``diagnostics.py``). When any of them fails, no post-launch number
  should be read as an effect.

Noise: the conversation panels this runs on have cells of a few dozen conversations, so a
single donor cohort is mostly sampling noise. When a volume column is given, each donor's
weight is priced by its sampling variance (a ridge ``sum_j w_j^2 * T * v_j``, ``v_j`` the
mean variance of the donor's period means), which is the noise the donor would carry into
the counterfactual: the fit leans on many large cohorts instead of chasing a few noisy ones.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from methods.persistence import persistence
from methods.result import Diagnostic, EstimateResult
from methods.sc.core import ALPHA, ESTIMAND, METHOD, PERMUTATION_KINDS, WEIGHT_EPS, _label, _rms
from methods.sc.diagnostics import (
    _donor_pool,
    _dropped_note,
    _fit_gate,
    _gap_trend,
    _inference_note,
    _noise_floor,
    _out_of_sample,
    _placebo_rank,
    _trend_residual_sd,
    _weights_note,
)
from methods.sc.inference import _conformal_ci, _placebo_in_space
from methods.sc.plots import _plots
from methods.sc.prepare import _penalty, _prepare, _refuse_if_thin
from methods.sc.refuters import _in_time_refutation, _leave_one_out, _loo_refutation, _placebo_in_time
from methods.sc.weights import gram, solve_simplex_qp


def estimate_sc(panel: pd.DataFrame, unit: str, time: str, outcome: str, treated_units: list, launch: Any,
                weight: str | None = None, min_pre_periods: int = 4, min_donors: int = 3, seed: int = 0,
                min_post_periods: int = 2, alpha: float = ALPHA, permutations: str = "iid",
                plots: bool = True) -> EstimateResult:
    """Synthetic-control ATT of the change shipped at ``launch`` to ``treated_units``.

    ``panel`` is long (one row per unit and period); periods with ``time >= launch`` are post.
    Several treated units are averaged into one treated series (volume-weighted when
    ``weight`` names a volume column). ``permutations`` picks the conformal interval's
    permutations of time (``"iid"`` or ``"moving_block"``); ``seed`` fixes the i.i.d. draws.
    ``plots=False`` skips the two PNGs (most of the run time on small panels), for simulations.
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

    s_ref = _trend_residual_sd(data.y[data.pre])  # the gate's yardstick: variation around the trend
    floor_pre = _noise_floor(data, w, data.pre)
    in_time = _placebo_in_time(data, alpha, rng_seed, permutations)
    loo = _leave_one_out(data, w, pen_pre, theta, ci_low, ci_high)

    diagnostics = [
        _donor_pool(data, min_donors, min_pre_periods),
        _fit_gate(rmspe_pre, s_ref, floor_pre, T0),
        _gap_trend(gap[data.pre]),
        _out_of_sample(in_time, s_ref),
        _inference_note(placebo, ci_info, alpha),
        _placebo_rank(placebo),
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
    post_gap = gap[data.post]
    fade = persistence(range(len(post_gap)), post_gap, None, unit="period")
    if fade is not None:  # descriptive: the gaps carry no per-period standard errors
        extras["effect_persistence"] = vars(fade)
        diagnostics.append(Diagnostic("effect_persistence", fade.slope, None, not fade.fading, fade.message, "warn"))
    result = EstimateResult(
        method=METHOD, estimand=ESTIMAND, outcome=outcome, estimate=theta, std_error=float(std_error),
        ci_low=float(ci_low), ci_high=float(ci_high), p_value=float(ci_info["p_value_at_zero"]),
        n_treated=round(data.total_treated), n_control=round(data.total_donors),
        naive_estimate=naive, refutations=refutations, diagnostics=diagnostics, extras=extras,
        ci_method=ci_info["method"],
    )
    if plots:
        result.plots = _plots(data, synth, gap, placebo, rmspe_pre, outcome)
    return result
