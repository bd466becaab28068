"""Synthetic control's diagnostics: the pre-period fit gate, out-of-sample fit, donor pool,
inference note, donor weights and dropped cohorts; each names the check it feeds."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from methods.result import Diagnostic
from methods.sc.core import FIT_GATE_RATIO, NOISE_QUANTILE, WEIGHT_EPS, _Panel


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
    return Diagnostic("sc_pre_fit_gate", float(ratio), FIT_GATE_RATIO, bool(passed), msg, "error",
                      check="pre_period_fit")


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
    return Diagnostic("donor_pool", float(D), float(min_donors), True, msg, "error", check="sample_size")


def _inference_note(placebo: dict, ci: dict, alpha: float) -> Diagnostic:
    D = len(placebo["ratios"])
    msg = (f"p_value is the placebo-in-space permutation p-value: the treated unit's post/pre RMSPE ratio "
           f"ranks {placebo['rank']} of {D + 1} (each of the {D} donors refit as if treated), p = rank/(donors+1), "
           f"so it can never be below {1 / (D + 1):.3f}. The interval is {ci['method']}. std_error is "
           "the interval width / (2 x 1.96), not a sampling standard error.")
    return Diagnostic("sc_inference", float(placebo["p_value"]), alpha, True, msg, "warn")


PLACEBO_RANK_ALPHA = 0.10  # the treated unit's RMSPE ratio must rank in the top 10% of all units


def _placebo_rank(placebo: dict) -> Diagnostic:
    """Does the treated unit's post/pre RMSPE ratio stand out from the placebo donors'?"""
    p = float(placebo["p_value"])
    ok = p <= PLACEBO_RANK_ALPHA
    msg = (f"permutation p-value {p:.3f} from the rank of the post/pre RMSPE ratio among "
           + ("placebos" if ok else "placebos: the effect does not stand out from untreated units"))
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
