"""Figures for monitoring: an estimate's trajectory over runs, and daily rates around the new window."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from methods.plots import TREATED_COLOR, new_figure, plot_x, to_png

SEQUENCE_COLOR = "#2b8a3e"


def trajectory_plot(run_dates: Sequence[Any], estimate: Sequence[float], ci_low: Sequence[float],
                    ci_high: Sequence[float], cs_low: Sequence[float | None] | None = None,
                    cs_high: Sequence[float | None] | None = None, outcome: str = "outcome",
                    title: str = "Estimate by run") -> bytes:
    """Estimate with its fixed 95% interval (bars) and the anytime-valid sequence (band) by run date."""
    x = plot_x(list(run_dates))
    est = np.asarray(estimate, dtype=float)
    lo, hi = np.asarray(ci_low, dtype=float), np.asarray(ci_high, dtype=float)
    fig, ax = new_figure(7.5, 3.6)
    ax.errorbar(x, est, yerr=[est - lo, hi - est], fmt="o", color=TREATED_COLOR, capsize=3,
                label="estimate, fixed 95% interval (one look)")
    if cs_low is not None and cs_high is not None:
        cl = np.array([np.nan if v is None else v for v in cs_low], dtype=float)
        ch = np.array([np.nan if v is None else v for v in cs_high], dtype=float)
        if np.isfinite(cl).any():
            ax.fill_between(x, cl, ch, color=SEQUENCE_COLOR, alpha=0.18, step="mid",
                            label="anytime-valid 95% sequence (all looks)")
    ax.axhline(0, color="#444444", linewidth=0.8)
    ax.set_title(title)
    ax.set_xlabel("run date (UTC)")
    ax.set_ylabel(f"effect on {outcome} (difference)")
    ax.legend(loc="best", fontsize=9)
    fig.autofmt_xdate()
    return to_png(fig)


def daily_rates_plot(days: Sequence[Any], series: Mapping[str, Sequence[float]], since: Any,
                     title: str = "Daily rates: reference window and new days") -> bytes:
    """A few daily shares (treated share, default-intent share, outcome rate) with the window boundary."""
    x = plot_x(list(days))
    fig, ax = new_figure(7.5, 3.6)
    for name, values in series.items():
        ax.plot(x, np.asarray(values, dtype=float), marker=".", linewidth=1.0, label=name)
    ax.axvline(plot_x([since])[0], color="#444444", linestyle="--", linewidth=1.0, label="last monitored day")
    ax.set_title(title)
    ax.set_xlabel("conversation date (UTC)")
    ax.set_ylabel("share of conversations")
    ax.set_ylim(0, 1)
    ax.legend(loc="best", fontsize=8)
    fig.autofmt_xdate()
    return to_png(fig)
