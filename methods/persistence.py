"""Effect persistence: does a launch's effect hold up week after week, or fade like a novelty?

Why: synthetic control and diff-in-diff report one average over the post-launch weeks. An
effect of +6 points in week one and 0 in week eight averages to +3 and hides that the change
stopped working. ``persistence`` fits a line through the per-week effects (inverse-variance
weighted when standard errors exist, as for diff-in-diff's event-study lags; unweighted for
synthetic control's gaps, where it is descriptive only) and compares the first and last
thirds of the post-launch weeks.

A fade is flagged when the slope points against the effect's sign, its p-value is below
``alpha`` and the last third has lost at least half of the first third's effect.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Persistence:
    weeks: list[int]
    effects: list[float]
    slope: float  # change of the effect per week since launch
    slope_se: float | None
    p_value: float | None
    first_third: float
    last_third: float
    fading: bool
    message: str


def persistence(weeks: Sequence[int], effects: Sequence[float], std_errors: Sequence[float] | None = None,
                alpha: float = 0.05, unit: str = "week") -> Persistence | None:
    """Slope of the per-week effect on weeks since launch; None with fewer than 3 post-launch weeks."""
    w = np.asarray(weeks, dtype=float)
    y = np.asarray(effects, dtype=float)
    ok = np.isfinite(w) & np.isfinite(y)
    se = None
    if std_errors is not None:
        se = np.asarray(std_errors, dtype=float)
        ok &= np.isfinite(se) & (se > 0)
    w, y = w[ok], y[ok]
    if se is not None:
        se = se[ok]
    if w.size < 3:
        return None
    k = max(1, w.size // 3)
    first, last = float(y[:k].mean()), float(y[-k:].mean())
    if se is not None:
        # weighted least squares: each week's coefficient weighted by 1/se^2 (lags are independent
        # enough for a trend read; the event-study covariance is not stored per pair)
        wt = 1.0 / se**2
        xm = (wt * w).sum() / wt.sum()
        ym = (wt * y).sum() / wt.sum()
        sxx = (wt * (w - xm) ** 2).sum()
        slope = float((wt * (w - xm) * (y - ym)).sum() / sxx)
        slope_se = float(math.sqrt(1.0 / sxx))
        p = float(2 * stats.norm.sf(abs(slope / slope_se)))
    else:
        fit = stats.linregress(w, y)
        slope, slope_se, p = float(fit.slope), float(fit.stderr), float(fit.pvalue)
    overall = float(y.mean())
    against = overall != 0 and np.sign(slope) == -np.sign(overall)
    lost_half = abs(last) <= 0.5 * abs(first) if first != 0 else False
    fading = bool(against and p < alpha and lost_half)
    trend = "fading" if fading else ("stable" if p >= alpha else ("growing" if not against else "declining"))
    msg = (f"effect by {unit} since launch: first third {first:+.4f}, last third {last:+.4f}, slope {slope:+.4f} per "
           f"{unit} (p {p:.2g}{'' if se is not None else ', descriptive: no per-week standard errors'}) — {trend}")
    return Persistence([int(v) for v in w], [float(v) for v in y], slope, slope_se, p, first, last, fading, msg)
