"""Between-run drift statistics: is the population the new days bring the one the design assumed?

Why: matching, synthetic control and diff-in-diff each assume something stable (the treated share,
the covariate mix, the outcome's base rate, what the extractor sees). A nightly run re-estimates
on a population that can drift under the estimate without any check of the estimate noticing.
These are the numerics only: each takes the reference window (what the last run saw) and the
new window (the days added since) as counts or arrays and returns a statistic with its
threshold rule; the question layer turns them into checks.

- ``sample_ratio``: chi-square of the new window's treated/control counts against the
  reference window's share (the sample-ratio-mismatch test of online experiments).
- ``psi``: population stability index of a categorical or binned numeric covariate;
  rule of thumb 0.1 (moderate) / 0.25 (major shift); we flag at 0.25 and with a chi-square
  test so a tiny window does not flag on noise alone.
- ``smd``: standardized mean difference of a covariate between windows (pooled SD).
- ``proportion_shift``: two-proportion z-test for a base rate (outcome, default-intent share).
- ``new_levels``: categories present in the new window and absent from the reference.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

PSI_MAJOR = 0.25


@dataclass(frozen=True)
class DriftStat:
    """A statistic, its p-value where there is one, and whether it flags drift."""

    name: str
    value: float
    p_value: float | None
    threshold: float
    drifted: bool
    message: str


def sample_ratio(ref_treated: int, ref_total: int, new_treated: int, new_total: int,
                 alpha: float = 0.001) -> DriftStat:
    """Chi-square (1 df) of the new window's treated count against the reference share.

    alpha 0.001 as in sample-ratio-mismatch practice: the test runs every night, and a real
    mismatch (a routing change) is usually large.
    """
    if ref_total <= 0 or new_total <= 0 or not 0 < ref_treated < ref_total:
        return DriftStat("treated_share", math.nan, None, alpha, False, "not enough data in one window to compare")
    p0 = ref_treated / ref_total
    expected = np.array([new_total * p0, new_total * (1 - p0)])
    observed = np.array([new_treated, new_total - new_treated], dtype=float)
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    p = float(stats.chi2.sf(chi2, 1))
    share = new_treated / new_total
    return DriftStat("treated_share", share, p, alpha, p < alpha,
                     f"treated share {share:.3f} in the new days against {p0:.3f} before (chi-square {chi2:.1f}, p {p:.2g})")


def psi(ref_counts: Mapping[str, float], new_counts: Mapping[str, float], eps: float = 1e-4,
        alpha: float = 0.001) -> DriftStat:
    """Population stability index sum((q - p) ln(q / p)) over the union of levels.

    Drift is flagged when PSI >= 0.25 *and* the chi-square of the new counts against the
    reference shares rejects at ``alpha``; PSI alone flags noise on a window of a few dozen rows.
    """
    levels = sorted(set(ref_counts) | set(new_counts), key=str)
    r = np.array([float(ref_counts.get(k, 0.0)) for k in levels])
    q = np.array([float(new_counts.get(k, 0.0)) for k in levels])
    if r.sum() <= 0 or q.sum() <= 0:
        return DriftStat("psi", math.nan, None, PSI_MAJOR, False, "an empty window")
    p_share = np.clip(r / r.sum(), eps, None)
    q_share = np.clip(q / q.sum(), eps, None)
    value = float(((q_share - p_share) * np.log(q_share / p_share)).sum())
    expected = p_share / p_share.sum() * q.sum()
    chi2 = float(((q - expected) ** 2 / expected).sum())
    p = float(stats.chi2.sf(chi2, max(len(levels) - 1, 1)))
    drifted = value >= PSI_MAJOR and p < alpha
    top = levels[int(np.argmax(np.abs(q_share - p_share)))]
    return DriftStat("psi", value, p, PSI_MAJOR, drifted,
                     f"PSI {value:.3f} (largest move: {top!s} {p_share[levels.index(top)]:.3f} -> "
                     f"{q_share[levels.index(top)]:.3f}; chi-square p {p:.2g})")


def binned_counts(ref: Sequence[float], new: Sequence[float], bins: int = 10) -> tuple[dict, dict]:
    """Decile bins of the reference applied to both windows, for ``psi`` on a numeric covariate."""
    ref_a = np.asarray(ref, dtype=float)
    new_a = np.asarray(new, dtype=float)
    ref_a, new_a = ref_a[np.isfinite(ref_a)], new_a[np.isfinite(new_a)]
    edges = np.unique(np.quantile(ref_a, np.linspace(0, 1, bins + 1)[1:-1])) if ref_a.size else np.array([])
    def count(x):
        idx = np.searchsorted(edges, x, side="right")
        return {int(k): int(v) for k, v in zip(*np.unique(idx, return_counts=True))}
    return count(ref_a), count(new_a)


def smd(ref: Sequence[float], new: Sequence[float], threshold: float = 0.1) -> DriftStat:
    """Standardized mean difference between the windows (pooled SD), flagged at |SMD| > 0.1."""
    a, b = np.asarray(ref, dtype=float), np.asarray(new, dtype=float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size < 2 or b.size < 2:
        return DriftStat("smd", math.nan, None, threshold, False, "fewer than 2 rows in a window")
    sd = math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    value = 0.0 if sd == 0 else float((b.mean() - a.mean()) / sd)
    return DriftStat("smd", value, None, threshold, abs(value) > threshold,
                     f"mean {a.mean():.3g} before, {b.mean():.3g} in the new days (SMD {value:+.3f})")


def proportion_shift(ref_hits: int, ref_total: int, new_hits: int, new_total: int,
                     alpha: float = 0.001, min_change: float = 0.02, name: str = "rate") -> DriftStat:
    """Two-proportion z-test; flags when p < alpha and the rate moved by at least ``min_change``.

    The minimum change keeps a store of millions of rows from flagging a 0.1-point wobble.
    """
    if ref_total <= 0 or new_total <= 0:
        return DriftStat(name, math.nan, None, alpha, False, "an empty window")
    p1, p2 = ref_hits / ref_total, new_hits / new_total
    pooled = (ref_hits + new_hits) / (ref_total + new_total)
    se = math.sqrt(pooled * (1 - pooled) * (1 / ref_total + 1 / new_total))
    z = 0.0 if se == 0 else (p2 - p1) / se
    p = float(2 * stats.norm.sf(abs(z)))
    drifted = p < alpha and abs(p2 - p1) >= min_change
    return DriftStat(name, p2 - p1, p, alpha, drifted,
                     f"{name} {p2:.3f} in the new days against {p1:.3f} before (z {z:.1f}, p {p:.2g})")


def new_levels(ref_levels: Sequence[str], new_levels_seen: Sequence[str], name: str = "level") -> DriftStat:
    """Categories (agent versions, tools, intents) that appear only in the new window."""
    fresh = sorted(set(map(str, new_levels_seen)) - set(map(str, ref_levels)))
    return DriftStat(f"new_{name}", float(len(fresh)), None, 0.0, bool(fresh),
                     f"new {name}: {', '.join(fresh)}" if fresh else f"no new {name}")
