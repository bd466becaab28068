"""Pure numerics for effects that differ between segments: Cochran's Q, I², re-weighting, forest plot.

Why here: the question layer estimates one effect per segment with the question's own method;
combining those estimates is the same arithmetic whatever the method, and it needs no config,
check or orchestrator. Segments are disjoint sets of conversations, so their estimates are
treated as independent (the combined intervals below assume it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from methods.plots import TEXT_PT, label_axes, new_figure, to_png


@dataclass(frozen=True)
class Heterogeneity:
    q: float  # Cochran's Q: sum of inverse-variance-weighted squared deviations from the pooled effect
    df: int  # number of segments - 1
    p_value: float  # P(chi2_df >= Q): small means the segment effects differ by more than chance
    i2: float  # I² = max(0, (Q - df) / Q): share of the variation beyond sampling error
    pooled: float  # fixed-effect (inverse-variance) pooled estimate
    pooled_se: float


def cochran_q(estimates: Sequence[float], std_errors: Sequence[float]) -> Heterogeneity:
    """Cochran's Q test of equal effects over independent segment estimates, with I².

    Q = Σ wᵢ (θᵢ − θ̄)², wᵢ = 1/seᵢ², θ̄ = Σ wᵢθᵢ / Σ wᵢ; under equal effects Q ~ χ²(k−1).
    Needs at least two estimates with positive finite standard errors.
    """
    est = np.asarray(estimates, dtype=float)
    se = np.asarray(std_errors, dtype=float)
    if est.shape != se.shape or est.size < 2:
        raise ValueError("Cochran's Q needs at least two segment estimates with their standard errors")
    if not (np.all(np.isfinite(est)) and np.all(np.isfinite(se)) and np.all(se > 0)):
        raise ValueError("Cochran's Q needs finite estimates and positive finite standard errors")
    w = 1.0 / se**2
    pooled = float(np.sum(w * est) / np.sum(w))
    q = float(np.sum(w * (est - pooled) ** 2))
    df = int(est.size - 1)
    p = float(stats.chi2.sf(q, df))
    i2 = float(max(0.0, (q - df) / q)) if q > 0 else 0.0
    return Heterogeneity(q, df, p, i2, pooled, float(np.sqrt(1.0 / np.sum(w))))


@dataclass(frozen=True)
class Projection:
    estimate: float
    std_error: float
    ci_low: float
    ci_high: float
    weights: dict  # level -> normalized weight actually used


def project(estimates: Mapping, std_errors: Mapping, mix: Mapping, alpha: float = 0.05) -> Projection:
    """The effect re-weighted to a target mix of segments: Σ wₛ θₛ with wₛ = mix normalized to sum 1.

    The standard error assumes independent segments (disjoint conversations): √(Σ wₛ² seₛ²).
    Every level with a positive weight must have an estimate (``KeyError`` names the first missing).
    """
    total = float(sum(mix.values()))
    if not total > 0:
        raise ValueError("the target mix needs a positive total weight")
    weights = {k: float(v) / total for k, v in mix.items() if v > 0}
    missing = [k for k in weights if k not in estimates]
    if missing:
        raise KeyError(missing[0])
    est = float(sum(w * float(estimates[k]) for k, w in weights.items()))
    se = float(np.sqrt(sum((w * float(std_errors[k])) ** 2 for k, w in weights.items())))
    z = float(stats.norm.ppf(1 - alpha / 2))
    return Projection(est, se, est - z * se, est + z * se, weights)


def forest_png(labels: Sequence[str], estimates: Sequence[float], ci_low: Sequence[float],
               ci_high: Sequence[float], outcome: str, column: str, pooled: float | None = None,
               note: str = "") -> bytes:
    """A forest plot: one row per segment, its estimate and 95% interval, zero and the pooled effect marked."""
    n = len(labels)
    fig, ax = new_figure(7.5, max(2.2, 0.45 * n + 1.4))
    y = np.arange(n)[::-1]
    est = np.asarray(estimates, dtype=float)
    lo, hi = np.asarray(ci_low, dtype=float), np.asarray(ci_high, dtype=float)
    ax.errorbar(est, y, xerr=[est - lo, hi - est], fmt="s", color="#1f4e9c", ecolor="#1f4e9c", capsize=3,
                label="segment estimate, 95% interval")
    ax.axvline(0.0, color="#444444", lw=1, ls="--")
    if pooled is not None and np.isfinite(pooled):
        ax.axvline(pooled, color="#d9480f", lw=1, label=f"pooled (inverse-variance) {pooled:+.4f}")
    ax.set_yticks(y)
    ax.set_yticklabels([str(x) for x in labels], fontsize=TEXT_PT)
    label_axes(ax, f"Effect on {outcome} by {column}" + (f" ({note})" if note else ""),
               f"effect on {outcome}", column, legend=True)
    return to_png(fig)
