"""Cross-checks reported beside the matching estimate: Hájek IPW and doubly robust AIPW.

They share the propensity with matching but weight instead of match, so a large disagreement
with the matched estimate points at poor overlap or a misfitting propensity model.
"""

from __future__ import annotations

import numpy as np

from methods.psm.propensity import CellGram, CellStats, gram


def _wls(X: np.ndarray, n: np.ndarray, s: np.ndarray, plan: CellGram | None = None) -> np.ndarray:
    """Row-level OLS of y on X from cell counts and sums, predictions per cell (``plan``: the
    design's ``CellGram``, for XᵀNX without the dense product)."""
    A = gram(X, n, plan)
    b = X.T @ s
    beta = np.linalg.lstsq(A, b, rcond=None)[0]
    return X @ beta


def ipw_aipw(eta: np.ndarray, st: CellStats, X: np.ndarray, estimand: str,
             plan: CellGram | None = None) -> tuple[float, float]:
    """Hájek IPW and doubly robust AIPW (linear outcome model per arm on the propensity design).

    ATT weights controls by p/(1−p) = exp(logit); ATE uses 1/p and 1/(1−p). Weights are not
    trimmed: extreme ones show up as a wide bootstrap interval, not as a silent change.

    The treated arm's outcome model ``m1`` enters only the ATE: the ATT's AIPW uses the treated
    outcomes themselves, so ``m1`` is fitted only for the ATE (it ran on every bootstrap replicate
    and was thrown away; the numbers are the same, tests/test_psm_fastpaths.py).
    """
    m0 = _wls(X, st.n0, st.s0, plan)
    if estimand == "ATT":
        odds = np.exp(eta)
        mu1 = st.s1.sum() / st.n1.sum()
        ipw = mu1 - (odds @ st.s0) / (odds @ st.n0)
        aipw = ((st.s1 - st.n1 * m0).sum() - odds @ (st.s0 - st.n0 * m0)) / st.n1.sum()
    else:
        inv1 = 1 + np.exp(-eta)  # 1/p
        inv0 = 1 + np.exp(eta)  # 1/(1-p)
        ipw = (inv1 @ st.s1) / (inv1 @ st.n1) - (inv0 @ st.s0) / (inv0 @ st.n0)
        m1 = _wls(X, st.n1, st.s1, plan)
        n = st.n1 + st.n0
        aipw = (n @ (m1 - m0) + inv1 @ (st.s1 - st.n1 * m1) - inv0 @ (st.s0 - st.n0 * m0)) / n.sum()
    return float(ipw), float(aipw)
