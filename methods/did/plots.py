"""DiD figures as PNG bytes: treated vs control means by period, and the event-study coefficients.

The group-means plot is the first thing to look at (do the pre-launch lines move together?);
the event-study plot is its formal version (lead coefficients near zero, lags showing the
effect). Matplotlib runs on the Agg backend via ``methods.plots``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from methods.plots import COUNTERFACTUAL_COLOR, TREATED_COLOR, mark_launch, new_figure, plot_x, to_png


def group_means_png(means: pd.DataFrame, launch, outcome: str, title: str = "Treated vs control by period") -> bytes:
    """``means``: columns period, group (label), mean. One line per group, launch dashed."""
    fig, ax = new_figure()
    palette = [TREATED_COLOR, COUNTERFACTUAL_COLOR, "#2b8a3e", "#7048e8", "#e67700", "#495057"]
    for i, (label, g) in enumerate(means.groupby("group", sort=True)):
        g = g.sort_values("period")
        ax.plot(plot_x(g["period"].to_numpy()), g["mean"].to_numpy(), marker="o", markersize=3,
                color=palette[i % len(palette)], linewidth=1.8, label=str(label))
    if launch is not None:
        mark_launch(ax, plot_x(np.asarray([launch]))[0] if not isinstance(launch, (int, float)) else launch)
    ax.set_title(title)
    ax.set_ylabel(f"mean {outcome}")
    ax.legend(loc="best", fontsize=8)
    fig.autofmt_xdate()
    return to_png(fig)


def event_study_png(table: pd.DataFrame, outcome: str, title: str = "Event study (reference period −1)") -> bytes:
    """``table``: event_time, coef, ci_low, ci_high. Points with 95% intervals, zero line, launch line."""
    fig, ax = new_figure()
    t = table.sort_values("event_time")
    x = t["event_time"].to_numpy(float)
    y = t["coef"].to_numpy(float)
    err = np.vstack([y - t["ci_low"].to_numpy(float), t["ci_high"].to_numpy(float) - y])
    pre = x < 0
    ax.errorbar(x[pre], y[pre], yerr=err[:, pre], fmt="o", color=COUNTERFACTUAL_COLOR, capsize=3, label="leads")
    ax.errorbar(x[~pre], y[~pre], yerr=err[:, ~pre], fmt="o", color=TREATED_COLOR, capsize=3, label="lags")
    ax.axhline(0.0, color="black", linewidth=0.6)
    mark_launch(ax, -0.5)
    ax.set_xlabel("period relative to launch")
    ax.set_ylabel(f"effect on {outcome}")
    ax.set_title(title)
    ax.legend(loc="best", fontsize=8)
    return to_png(fig)
