"""The two pictures of a matching design: propensity overlap and the Love plot of balance."""

from __future__ import annotations

import io

import numpy as np
from scipy.special import expit


def _overlap_png(eta: np.ndarray, n1: np.ndarray, n0: np.ndarray, treatment: str) -> bytes:
    """Histogram of propensities by group (unit-weighted), the picture behind the overlap checks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = expit(eta)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.linspace(0, 1, 41)
    ax.hist(p, bins=bins, weights=n1 / max(n1.sum(), 1), alpha=0.5, label=f"{treatment}=1")
    ax.hist(p, bins=bins, weights=n0 / max(n0.sum(), 1), alpha=0.5, label=f"{treatment}=0")
    ax.set_xlabel("propensity score")
    ax.set_ylabel("share of group")
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


def _love_png(rows) -> bytes:
    """Love plot: |SMD| of every covariate level before and after matching, with the 0.1 line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [b.covariate for b in rows]
    before = [abs(b.smd_before) for b in rows]
    after = [abs(b.smd_after) for b in rows]
    fig, ax = plt.subplots(figsize=(6, 0.18 * len(rows) + 1.2))
    y = np.arange(len(rows))
    ax.scatter(before, y, marker="o", facecolors="none", edgecolors="grey", label="before matching")
    ax.scatter(after, y, marker="o", color="C0", label="after matching")
    ax.axvline(0.1, color="C3", linestyle="--", linewidth=1)
    ax.set_yticks(y)
    ax.set_yticklabels(names, fontsize=6)
    ax.set_xlabel("|standardised mean difference|")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()
