"""DiD figures as PNG bytes: treated vs control means by period, and the event-study coefficients.

The group-means plot is the first thing to look at (do the pre-launch lines move together?);
the event-study plot is its formal version (lead coefficients near zero, lags showing the
effect). Matplotlib runs on the Agg backend via ``methods.plots``. Axes carry units: the period
step (week, day) read from the period labels, "share" for the mean of a yes/no outcome, and the
error bars are named as 95% intervals in the legend (they are ``ci_low``/``ci_high`` of the
event-study table, which the estimators build at 95%).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from methods.plots import (
    COUNTERFACTUAL_COLOR,
    NOT_RENDERED,
    TREATED_COLOR,
    date_text,
    difference_label,
    is_share,
    label_axes,
    level_label,
    mark_launch,
    new_figure,
    period_unit,
    plot_x,
    rendering,
    slant_dates,
    time_label,
    to_png,
)


def group_means_png(means: pd.DataFrame, launch, outcome: str, title: str | None = None) -> bytes:
    """``means``: columns period, group (label), mean. One line per group, launch dashed.

    ``title`` None names the plot from the data (``Share resolved by week: treated vs control``).
    """
    if not rendering():  # inside ``unrendered()``: nothing to draw
        return NOT_RENDERED
    fig, ax = new_figure(7.5, 4.6)
    palette = [TREATED_COLOR, COUNTERFACTUAL_COLOR, "#2b8a3e", "#7048e8", "#e67700", "#495057"]
    groups = sorted(means["group"].unique(), key=lambda g: (str(g) != "treated", str(g)))  # treated in its colour
    for i, label in enumerate(groups):
        g = means[means["group"] == label].sort_values("period")
        ax.plot(plot_x(g["period"].to_numpy()), g["mean"].to_numpy(), marker="o", markersize=3,
                color=palette[i % len(palette)], linewidth=1.8, label=str(label))
    numeric = isinstance(launch, (int, float, np.number))
    if launch is not None:
        mark_launch(ax, plot_x(np.asarray([launch]))[0] if not numeric else launch,
                    "launch" if numeric else f"launch {date_text(launch)}")
    share = is_share(means["mean"].to_numpy())
    periods = means["period"].drop_duplicates().to_numpy()
    unit = period_unit(periods)
    if title is None:
        title = f"{level_label(outcome, share).capitalize()}{f' by {unit}' if unit else ''}: treated vs control"
    xlabel = time_label(periods) or ("period (0 = before launch, 1 = after)" if set(np.unique(periods)) <= {0, 1}
                                      else "period")
    label_axes(ax, title, xlabel, level_label(outcome, share), legend_below=True)
    slant_dates(ax)
    return to_png(fig)


def event_study_png(table: pd.DataFrame, outcome: str, title: str | None = None, share: bool | None = None) -> bytes:
    """``table``: event_time, coef, ci_low, ci_high (optionally ``period``, the calendar label of
    each event time). Points with 95% intervals, zero line, launch line.

    The x axis is in the table's period step when the ``period`` labels show one ("weeks relative
    to launch"), else in periods. ``share``: the outcome is yes/no, so the axis says that 0.01 is
    one percentage point; None when the caller does not know (the label then says "mean").
    """
    if not rendering():  # inside ``unrendered()``: nothing to draw
        return NOT_RENDERED
    fig, ax = new_figure(7.5, 4.8)
    t = table.sort_values("event_time")
    x = t["event_time"].to_numpy(float)
    y = t["coef"].to_numpy(float)
    lo, hi = t["ci_low"].to_numpy(float), t["ci_high"].to_numpy(float)
    # the normalised reference period (coefficient fixed at 0, no interval) is drawn apart
    ref = (x == -1) & (y == 0) & (lo == 0) & (hi == 0)
    err = np.vstack([y - lo, hi - y])
    pre, post = (x < 0) & ~ref, x >= 0
    ax.errorbar(x[pre], y[pre], yerr=err[:, pre], fmt="o", color=COUNTERFACTUAL_COLOR, capsize=3,
                label="before launch (leads), 95% interval")
    ax.errorbar(x[post], y[post], yerr=err[:, post], fmt="o", color=TREATED_COLOR, capsize=3,
                label="after launch (lags), 95% interval")
    if ref.any():
        ax.plot(x[ref], y[ref], "o", markerfacecolor="white", markeredgecolor="black",
                label="reference period (fixed at 0)")
    ax.axhline(0.0, color="black", linewidth=0.6)
    mark_launch(ax, -0.5)
    periods = t["period"].dropna().to_numpy() if "period" in t else np.array([])
    unit = period_unit(periods) or "period"
    first_post = t.loc[t["event_time"] == 0, "period"] if "period" in t else pd.Series(dtype=object)
    zero = (f"the {unit} starting {date_text(first_post.iloc[0])}" if len(first_post) and first_post.iloc[0]
            is not None else f"first {unit} after launch")
    if title is None:
        title = f"Event study: effect by {unit} relative to launch (reference: {unit} −1)"
    label_axes(ax, title, f"{unit}s relative to launch (0 = {zero})", difference_label("effect", outcome, share),
               legend_below=True)
    return to_png(fig)
