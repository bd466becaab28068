"""Synthetic control's diagnostics: the pre-period fit gate, donor pool, inference note, donor
weights and dropped cohorts; each names the check it feeds.

The blocking check ``pre_period_fit`` is fed by three rules, each calibrated to fail about 1% of
honest fits (``tests/test_sc_gate.py`` measures them on simulated worlds):

* ``sc_pre_fit_gate`` — in-sample RMSPE against the treated series' variation around its own
  linear trend (not its raw sd, which a trend inflates), or within the sampling-noise floor;
* ``sc_pre_gap_trend`` — no linear drift in the pre-launch gap (what a flat counterfactual for a
  trending series, or the reverse, leaves behind);
* ``sc_out_of_sample_fit`` — weights trained on the early pre-periods leave no systematic gap on
  the later ones.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from methods.result import Diagnostic
from methods.sc.core import (
    FIT_GATE_RATIO,
    GAP_TREND_ALPHA,
    HOLDOUT_Z,
    MAX_GAP_AUTOCORRELATION,
    NOISE_QUANTILE,
    WEIGHT_EPS,
    _Panel,
)


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


def _trend_residual_sd(y: np.ndarray) -> float:
    """Residual sd of ``y`` around its own least-squares line (``ddof=2``).

    This is the yardstick of the fit gate: how much the treated series moves that a straight
    line does not explain. The raw sd is the wrong yardstick, because a trend inflates it: a
    trending series has a large sd, so a flat counterfactual "fits" relative to it. Around its
    trend the same series varies only by its noise and its wiggles, which a flat or wrongly
    trending counterfactual cannot match. Below 3 periods there is no line to remove: plain sd.
    """
    y = np.asarray(y, float)
    n = len(y)
    if n < 3:
        return float(np.std(y, ddof=1)) if n > 1 else 0.0
    t = np.arange(n, dtype=float)
    t -= t.mean()
    resid = y - y.mean() - t * (t @ (y - y.mean())) / (t @ t)
    return float(np.sqrt(resid @ resid / (n - 2)))


def _fit_gate(rmspe: float, s_ref: float, floor: float | None, n_periods: int) -> Diagnostic:
    """In-sample rule of the gate: RMSPE no larger than the treated series varies around its trend.

    ``s_ref`` is ``_trend_residual_sd`` of the treated pre-series. A counterfactual that misses
    the treated series' level (outside the donors' hull) or its trend (flat donors) leaves a gap
    as large as the missed level or drift, which exceeds that variation. The sampling-noise
    floor rescues genuinely good fits whose misfit is the noise of small cells (the synthetic
    series carries its donors' noise, which the treated series' own variation does not).
    """
    ratio = rmspe / s_ref if s_ref > 0 else (0.0 if rmspe == 0 else math.inf)
    by_sd = ratio <= FIT_GATE_RATIO
    by_noise = _within_noise(rmspe, floor, n_periods)
    passed = by_sd or by_noise
    floor_txt = (f"; sampling noise alone would give about {floor:.4f}" if floor is not None else "")
    head = (f"RMSPE {rmspe:.4f} vs {s_ref:.4f}, the treated series' variation around its own linear trend "
            f"(ratio {ratio:.2f}, gate {FIT_GATE_RATIO:g}){floor_txt}")
    if passed:
        how = ("misses by less than the treated series moves around its trend" if by_sd
               else "misses by no more than sampling noise explains")
        msg = f"pre-launch fit: {head}. The synthetic control {how} before launch."
    else:
        msg = (f"POOR PRE-LAUNCH FIT: {head}. No combination of donors reproduces the treated series' level "
               "and trend before launch, so no post-launch number here should be read as an effect. Look for "
               "donors more like the treated units, a shorter pre-period, or another design.")
    return Diagnostic("sc_pre_fit_gate", float(ratio), FIT_GATE_RATIO, bool(passed), msg, "error",
                      check="pre_period_fit")


def _gap_trend(gap_pre: np.ndarray, alpha: float = GAP_TREND_ALPHA) -> Diagnostic:
    """Drift rule of the gate: the pre-launch gap must not trend.

    A flat counterfactual for a trending series (or a trending one for a flat series) leaves a
    gap that drifts; that drift continues after launch and becomes a spurious "effect". The
    test is the OLS t-statistic of the gap's slope on time, its standard error from the gap's
    own scatter around that line (scale-free: no noise model needed), widened by
    ``sqrt((1+rho)/(1-rho))`` for positive lag-1 autocorrelation ``rho`` of that scatter so
    serially correlated but trendless gaps are not failed. The limit is Student's t with
    ``T0-2`` degrees of freedom at ``alpha`` two-sided, so short pre-periods get wide limits.
    """
    g = np.asarray(gap_pre, float)
    n = len(g)
    if n < 3:
        return Diagnostic("sc_pre_gap_trend", None, None, True, f"only {n} pre-launch periods: no drift to test.",
                          "error", check="pre_period_fit", tested=False)
    t = np.arange(n, dtype=float)
    t -= t.mean()
    stt = float(t @ t)
    slope = float(t @ (g - g.mean()) / stt)
    resid = g - g.mean() - slope * t
    ss = float(resid @ resid)
    rho = float(np.sum(resid[1:] * resid[:-1]) / ss) if ss > 0 else 0.0
    rho = min(max(rho, 0.0), MAX_GAP_AUTOCORRELATION)
    tiny = 1e-9 * max(1.0, float(np.max(np.abs(g))))  # an exact fit: rounding, not a drift
    se = max(math.sqrt(ss / (n - 2) / stt), tiny / math.sqrt(stt)) * math.sqrt((1 + rho) / (1 - rho))
    t_stat = abs(slope) / se
    crit = float(stats.t.ppf(1 - alpha / 2, n - 2))
    passed = t_stat <= crit
    drift = slope * (n - 1)
    msg = (f"the pre-launch gap drifts by {drift:+.4f} over {n} periods (slope {slope:+.5f} a period, |t| = "
           f"{t_stat:.2f} with lag-1 autocorrelation {rho:.2f} allowed for; limit {crit:.2f}, {alpha:.0%} two-sided). "
           + ("No drift: the synthetic control follows the treated series' trend." if passed else
              "DRIFT: the synthetic control does not follow the treated series' trend before launch, so the "
              "post-launch gap would carry that drift as a spurious effect."))
    return Diagnostic("sc_pre_gap_trend", float(t_stat), crit, bool(passed), msg, "error", check="pre_period_fit")


def _out_of_sample(it: dict, s_ref: float) -> Diagnostic:
    """Held-out rule of the gate: weights trained on the early pre-periods predict the later ones.

    The estimate is a mean gap, so what makes it wrong is a *systematic* gap on periods the
    weights never saw (noise is what the interval prices). The held-out mean gap (the fake
    effect of the placebo-in-time fit) is compared with what an honest fit shows: noise ``s``
    averaged over the ``k`` held-out periods plus the error of weights learnt from ``k_train``
    noisy periods, sd ``s * sqrt(1/k + 1/k_train)``, at ``HOLDOUT_Z`` (two-sided 1%). ``s`` is
    the larger of the treated series' variation around its trend and the sampling-noise floor
    of the held-out gap, the same yardsticks as the in-sample rule.
    """
    k, k_train = int(it["validation_periods"]), int(it["train_periods"])
    floor = it["floor_validation"]
    s = max(s_ref, floor or 0.0)
    bound = HOLDOUT_Z * s * math.sqrt(1.0 / max(k, 1) + 1.0 / max(k_train, 1))
    bias = float(it["effect"])
    z = abs(bias) / (bound / HOLDOUT_Z) if bound > 0 else (0.0 if bias == 0 else math.inf)
    passed = abs(bias) <= bound
    floor_txt = f", sampling-noise floor {floor:.4f}" if floor is not None else ""
    msg = (f"weights trained on the first {k_train} pre-launch periods (RMSPE {it['rmspe_train']:.4f}) "
           f"predict the next {k} with mean gap {bias:+.4f} and RMSPE {it['rmspe_validation']:.4f}; an honest fit "
           f"stays within ±{bound:.4f} ({HOLDOUT_Z:g} x noise {s:.4f} x sqrt(1/{k} + 1/{k_train}){floor_txt}). "
           + ("The fit carries over to periods it was not trained on." if passed else
              "HELD-OUT MISFIT: the fit does not carry over to pre-launch periods it was not trained on, so the "
              "post-launch gap is likely the same misfit rather than an effect."))
    return Diagnostic("sc_out_of_sample_fit", float(z), HOLDOUT_Z, bool(passed), msg, "error",
                      check="pre_period_fit")


def _donor_pool(data: _Panel, min_donors: int, min_pre: int) -> Diagnostic:
    D, T0, T1 = len(data.donors), int(data.pre.sum()), int(data.post.sum())
    msg = (f"{D} donor units (at least {min_donors} needed), {T0} periods before launch (at least {min_pre}) and "
           f"{T1} after; the placebo-in-space rank can never be below 1/{D + 1} = {1 / (D + 1):.3f}.")
    return Diagnostic("donor_pool", float(D), float(min_donors), True, msg, "error", check="sample_size")


def _inference_note(placebo: dict, ci: dict, alpha: float) -> Diagnostic:
    """Which number comes from which inference.

    ``p_value`` and the interval come from one test, the conformal permutation test the interval
    inverts, so ``p_value < alpha`` exactly when the interval excludes 0 (up to the bisection
    tolerance of its ends). The placebo-in-space rank is a different, coarser test (never below
    1/(donors+1)); it is kept as the evidence of the ``placebo_rank`` check, not as the p-value,
    so that the two never disagree in one table.
    """
    D = len(placebo["ratios"])
    msg = (f"p_value = {ci['p_value_at_zero']:.3f} is the conformal permutation p-value of a zero effect: the test "
           f"the interval inverts ({ci['permutations']}), so p < {alpha:g} exactly when the {1 - alpha:.0%} interval "
           f"excludes 0. The placebo-in-space rank p = {placebo['rank']}/{D + 1} = {placebo['p_value']:.3f} (treated "
           f"post/pre RMSPE ratio among the {D} donors refit as if treated, never below {1 / (D + 1):.3f}) is a "
           "separate test, reported as the placebo_rank check. std_error is the interval width / (2 x 1.96), not a "
           "sampling standard error.")
    return Diagnostic("sc_inference", float(ci["p_value_at_zero"]), alpha, True, msg, "warn")


PLACEBO_RANK_ALPHA = 0.10  # the treated unit's RMSPE ratio must rank in the top 10% of all units


def _placebo_rank(placebo: dict) -> Diagnostic:
    """Does the treated unit's post/pre RMSPE ratio stand out from the placebo donors'?"""
    p = float(placebo["p_value"])
    ok = p <= PLACEBO_RANK_ALPHA
    D = len(placebo["ratios"])
    msg = (f"placebo-in-space rank p-value {p:.3f} (rank {placebo['rank']} of {D + 1} post/pre RMSPE ratios, "
           f"limit {PLACEBO_RANK_ALPHA:g}): "
           + ("the treated unit stands out from the placebos" if ok else
              "the effect does not stand out from untreated units"))
    return Diagnostic("placebo_rank", p, PLACEBO_RANK_ALPHA, bool(ok), msg, "warn", check="placebo_rank")


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
