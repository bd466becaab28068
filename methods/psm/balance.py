"""Covariate balance, overlap and sample-size checks for propensity matching.

Matching is only as good as the comparison it builds: after matching, treated and matched
control conversations must look alike on every covariate (standardised mean difference,
|SMD| < 0.1, the usual rule of Austin 2009), the two groups must overlap in propensity (no
region where only one group lives), and there must be enough of each to compare at all.
All functions work on covariate cells with unit weights (every unit of a cell has the same
covariate values), so they cost nothing at a million rows.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit

from methods.result import BalanceRow, Diagnostic, MethodRefusal

SMD_THRESHOLD = 0.1
MIN_GROUP = 50  # treated / control units below which matching is refused
OUTSIDE_SUPPORT_MAX = 0.05  # share of units outside common support that is still fine
UNMATCHED_MAX = 0.05  # share of target units dropped by the caliper that is still fine
AUC_MAX = 0.9  # propensity AUC above this: the groups barely overlap
EXTREME_P = 0.01  # a propensity closer than this to 0 or 1 means no comparable counterpart


def _wmean_var(Z: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tot = w.sum()
    if tot <= 0:
        k = Z.shape[1]
        return np.full(k, np.nan), np.full(k, np.nan)
    m = (w @ Z) / tot
    v = (w @ (Z - m) ** 2) / tot
    return m, v


def balance_rows(Z: np.ndarray, names: list[str], w1_before: np.ndarray, w0_before: np.ndarray,
                 w1_after: np.ndarray, w0_after: np.ndarray,
                 threshold: float = SMD_THRESHOLD) -> list[BalanceRow]:
    """SMD and variance ratio of every balance feature before and after matching.

    ``Z`` is cells × features (one column per categorical level, e.g. ``intent=order_status``,
    numeric covariates on their scale); the weights are units per cell (before: all units;
    after: matched weights). The SMD denominator is the pooled SD *before* matching,
    sqrt((var_t + var_c)/2), for both columns so that "after" measures how the means moved
    rather than how the spread changed. Pass rule: |SMD after| < ``threshold``.
    """
    m1b, v1b = _wmean_var(Z, w1_before)
    m0b, v0b = _wmean_var(Z, w0_before)
    m1a, v1a = _wmean_var(Z, w1_after)
    m0a, v0a = _wmean_var(Z, w0_after)
    sd = np.sqrt((v1b + v0b) / 2)
    rows = []
    for j, name in enumerate(names):
        smd_b = _smd(m1b[j], m0b[j], sd[j])
        smd_a = _smd(m1a[j], m0a[j], sd[j])
        rows.append(
            BalanceRow(
                covariate=name,
                smd_before=smd_b,
                smd_after=smd_a,
                passed=bool(np.isfinite(smd_a) and abs(smd_a) < threshold),
                variance_ratio_before=_ratio(v1b[j], v0b[j]),
                variance_ratio_after=_ratio(v1a[j], v0a[j]),
            )
        )
    return rows


def _smd(a: float, b: float, sd: float) -> float:
    if not (np.isfinite(a) and np.isfinite(b)):
        return float("nan")
    if sd > 0:
        return float((a - b) / sd)
    return 0.0 if a == b else float("inf")


def _ratio(a: float, b: float) -> float | None:
    if not (np.isfinite(a) and np.isfinite(b)) or b <= 0:
        return None
    return float(a / b)


def check_sample_size(n_treated: int, n_control: int, treatment: str,
                      min_group: int = MIN_GROUP) -> Diagnostic:
    """Refuse (MethodRefusal) when either group is below ``min_group`` units, else a passed
    diagnostic. The refusal says what to wait for."""
    small = [(lbl, n) for lbl, n in (("treated", n_treated), ("control", n_control)) if n < min_group]
    if small:
        parts = ", ".join(f"{n} {lbl}" for lbl, n in small)
        raise MethodRefusal(
            f"Too few conversations to match on {treatment!r}: {parts} (need at least {min_group} "
            f"in each group). Wait until at least {min_group} treated and {min_group} control "
            f"conversations with a known outcome are logged, then re-run."
        )
    return Diagnostic(
        name="matching_sample_size",
        value=float(min(n_treated, n_control)),
        threshold=float(min_group),
        passed=True,
        message=(f"{n_treated} treated and {n_control} control conversations enter the matching after rows "
                 f"without a treatment, outcome or numeric covariate are excluded (minimum {min_group} each)."),
        check="sample_size",
    )


def propensity_auc(eta: np.ndarray, n1: np.ndarray, n0: np.ndarray) -> float:
    """P(propensity of a random treated > that of a random control), ties counted half
    (Mann–Whitney on cells). 0.5 = no separation, 1 = the groups do not overlap at all."""
    key = np.round(eta, 10)
    uniq, inv = np.unique(key, return_inverse=True)
    a1 = np.bincount(inv, weights=n1, minlength=len(uniq))
    a0 = np.bincount(inv, weights=n0, minlength=len(uniq))
    below0 = np.cumsum(a0) - a0
    tot = a1.sum() * a0.sum()
    return float((a1 @ (below0 + 0.5 * a0)) / tot) if tot > 0 else float("nan")


def overlap_diagnostics(eta: np.ndarray, n1: np.ndarray, n0: np.ndarray, estimand: str) -> list[Diagnostic]:
    """Common support, propensity AUC and the extreme propensities of each group.

    ``eta`` is the logit of the propensity per cell (propensities are reported, never clipped).
    Common support is the propensity range where both groups have units:
    [max(min_t, min_c), min(max_t, max_c)]; the share of all units outside it should stay
    below 5%.
    """
    has1, has0 = n1 > 0, n0 > 0
    lo = max(eta[has1].min(), eta[has0].min())
    hi = min(eta[has1].max(), eta[has0].max())
    outside = ((eta < lo) | (eta > hi)).astype(float)
    n = n1 + n0
    share = float(outside @ n / n.sum())
    share_t = float(outside @ n1 / n1.sum())
    p = expit(eta)
    auc = propensity_auc(eta, n1, n0)
    out = [
        Diagnostic(
            name="common_support_outside_share",
            value=share,
            threshold=OUTSIDE_SUPPORT_MAX,
            passed=share <= OUTSIDE_SUPPORT_MAX,
            message=(
                f"{share:.1%} of conversations ({share_t:.1%} of treated) have a propensity outside "
                f"the range where both groups exist [{_expit(lo):.3f}, {_expit(hi):.3f}]; "
                f"pass if at most {OUTSIDE_SUPPORT_MAX:.0%}."
            ),
            check="overlap",
        ),
        Diagnostic(
            name="propensity_auc",
            value=auc,
            threshold=AUC_MAX,
            passed=bool(auc <= AUC_MAX),
            message=(
                f"The propensity model tells treated from control with AUC {auc:.3f} "
                f"(0.5 = groups alike, 1 = no overlap); pass if at most {AUC_MAX}."
            ),
            check="overlap",
        ),
    ]
    for grp, has in (("treated", has1), ("control", has0)):
        pmin, pmax = float(p[has].min()), float(p[has].max())
        # For the ATT only treated units near 1 lack a counterpart; for the ATE also controls near 0.
        ok_max = pmax <= 1 - EXTREME_P if grp == "treated" else True
        ok_min = pmin >= EXTREME_P if (grp == "control" and estimand == "ATE") else True
        out.append(Diagnostic(
            name=f"propensity_min_{grp}", value=pmin, threshold=EXTREME_P if grp == "control" else None,
            passed=bool(ok_min),
            message=f"Smallest propensity among {grp} conversations: {pmin:.4f}.",
        ))
        out.append(Diagnostic(
            name=f"propensity_max_{grp}", value=pmax, threshold=1 - EXTREME_P if grp == "treated" else None,
            passed=bool(ok_max),
            message=f"Largest propensity among {grp} conversations: {pmax:.4f}.",
        ))
    return out


def _expit(x: float) -> float:
    return float(expit(x))
