"""Multiplicity across the questions (and segments) of one run: BH q-values and Holm p-values.

Why: registering twenty questions and reading each at 5% gives about one false discovery per
run when nothing works. The Benjamini–Hochberg q-value is the smallest false-discovery rate at
which a question would be declared; Holm's step-down adjusted p-value controls the chance of
any false discovery (family-wise). Both match ``statsmodels.stats.multitest.multipletests``
(``fdr_bh`` and ``holm``); the test compares them. Missing p-values (a refused question) are
left out of the family and get a missing q-value, so they neither count as tests nor as
discoveries.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

METHODS = ("bh", "holm")


def adjust(p_values: Sequence[float | None], method: str = "bh") -> np.ndarray:
    """Adjusted p-values in input order; NaN where the input is missing or not finite."""
    if method not in METHODS:
        raise ValueError(f"multiplicity method must be one of {', '.join(METHODS)}; got {method!r}")
    p = np.array([np.nan if v is None else float(v) for v in p_values], dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    m = int(ok.sum())
    if m == 0:
        return out
    pv = np.clip(p[ok], 0.0, 1.0)
    order = np.argsort(pv, kind="mergesort")
    ranked = pv[order]
    ranks = np.arange(1, m + 1)
    if method == "bh":
        adj = np.minimum.accumulate((ranked * m / ranks)[::-1])[::-1]
    else:  # holm
        adj = np.maximum.accumulate(ranked * (m - ranks + 1))
    adj = np.minimum(adj, 1.0)
    back = np.empty(m)
    back[order] = adj
    out[ok] = back
    return out


def n_tested(p_values: Sequence[float | None]) -> int:
    """How many hypotheses the family holds (the memo says it)."""
    return int(sum(1 for v in p_values if v is not None and np.isfinite(float(v))))
