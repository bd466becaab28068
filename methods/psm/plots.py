"""The two pictures of a matching design: propensity overlap and the Love plot of balance.

Both are drawn at the shared report sizes of ``methods.plots`` (100 dpi, 9 pt labels), with a
title saying what is compared. The Love plot shows the covariate levels that matter, not all of
them: every level still unbalanced after matching, then the largest imbalances before or after
up to ``LOVE_TOP`` rows. With ~50 levels (hours of the day, intents…) the full list needed 6 pt
labels to fit and hid the few rows a reader has to see; the memo's balance note names the
count shown and the largest |SMD| of all levels.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit

from methods.plots import (
    COUNTERFACTUAL_COLOR,
    NOT_RENDERED,
    TEXT_PT,
    TREATED_COLOR,
    label_axes,
    new_figure,
    rendering,
    to_png,
)
from methods.psm.balance import SMD_THRESHOLD

LOVE_TOP = 20
OVERLAP_BINS = 40


def _overlap_png(eta: np.ndarray, n1: np.ndarray, n0: np.ndarray, treatment: str) -> bytes:
    """Histogram of propensities by group (unit-weighted), the picture behind the overlap checks."""
    if not rendering():  # a guardrail's or segment's figure: nobody shows it, so it is not even laid out
        return NOT_RENDERED
    p = expit(eta)
    fig, ax = new_figure(7.5, 4.0)
    bins = np.linspace(0, 1, OVERLAP_BINS + 1)
    ax.hist(p, bins=bins, weights=n1 / max(n1.sum(), 1), alpha=0.55, color=TREATED_COLOR,
            label=f"treated ({treatment} = 1)")
    ax.hist(p, bins=bins, weights=n0 / max(n0.sum(), 1), alpha=0.55, color=COUNTERFACTUAL_COLOR,
            label=f"control ({treatment} = 0)")
    label_axes(ax, f"Propensity overlap: treated vs control on {treatment}",
               f"estimated propensity P({treatment} = 1 | covariates)",
               f"share of the group's conversations (bin width {1 / OVERLAP_BINS:g})")
    return to_png(fig)


def love_rows(rows, top: int = LOVE_TOP) -> list:
    """The balance rows the Love plot draws: every row failing after matching, then the largest
    max(|SMD before|, |SMD after|) until ``top`` rows; ordered largest first."""
    key = [max(abs(b.smd_before), abs(b.smd_after)) for b in rows]
    order = sorted(range(len(rows)), key=lambda i: -key[i])
    failing = [i for i in order if not rows[i].passed]
    rest = [i for i in order if rows[i].passed][: max(top - len(failing), 0)]
    keep = set(failing) | set(rest)
    return [rows[i] for i in order if i in keep]


def _love_png(rows) -> bytes:
    """Love plot: |SMD| before and after matching of the levels ``love_rows`` keeps, with the 0.1 line."""
    if not rendering():
        return NOT_RENDERED
    shown = love_rows(rows, LOVE_TOP)  # the module constant read at call time (a test can widen it)
    fig, ax = new_figure(7.5, 0.28 * len(shown) + 1.6)
    y = np.arange(len(shown))[::-1]  # largest at the top
    ax.scatter([abs(b.smd_before) for b in shown], y, marker="o", facecolors="none", edgecolors="grey",
               label="before matching")
    ax.scatter([abs(b.smd_after) for b in shown], y, marker="o", color=TREATED_COLOR, label="after matching")
    ax.axvline(SMD_THRESHOLD, color="C3", linestyle="--", linewidth=1, label=f"|SMD| = {SMD_THRESHOLD:g} (balance limit)")
    ax.set_yticks(y)
    ax.set_yticklabels([b.covariate for b in shown])
    ax.set_ylim(-0.7, len(shown) - 0.3)
    which = (f"all {len(rows)} covariate levels" if len(shown) == len(rows)
             else f"the {len(shown)} of {len(rows)} levels with the largest |SMD|")
    label_axes(ax, f"Covariate balance: {which}", "|standardised mean difference| before and after matching",
               "covariate = level", legend=False)
    ax.legend(fontsize=TEXT_PT, loc="lower right")  # the largest |SMD| rows sit at the top, the corner is free
    return to_png(fig)
