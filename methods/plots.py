"""Small matplotlib helpers shared by the methods: every figure ends up as PNG bytes.

Methods put their figures in ``EstimateResult.plots`` (name -> PNG bytes) so the store,
the CLI and the Dagster asset metadata can pass them around without a display. The Agg
backend is forced here, before pyplot is imported anywhere through this module, so headless
runs (CI, Dagster workers) never try to open a window.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

TREATED_COLOR = "#1f4e9c"
COUNTERFACTUAL_COLOR = "#d9480f"
PLACEBO_COLOR = "#b0b0b0"
LAUNCH_COLOR = "#444444"


def new_figure(width: float = 7.5, height: float = 4.0) -> tuple[plt.Figure, plt.Axes]:
    """A figure with one axes, sized for a report column."""
    fig, ax = plt.subplots(figsize=(width, height), dpi=100)
    return fig, ax


def to_png(fig: plt.Figure) -> bytes:
    """Render ``fig`` to PNG bytes and close it (figures left open leak memory in long runs)."""
    buf = io.BytesIO()
    try:
        fig.tight_layout()
        fig.savefig(buf, format="png")
    finally:
        plt.close(fig)
    return buf.getvalue()


def mark_launch(ax: plt.Axes, launch: Any, label: str = "launch") -> None:
    """Dashed vertical line at the launch (works for numeric and datetime axes)."""
    ax.axvline(launch, color=LAUNCH_COLOR, linestyle="--", linewidth=1.0, label=label)


def plot_x(times: Sequence[Any]) -> np.ndarray:
    """Values matplotlib can place on an axis: datetimes stay datetimes, the rest numbers or positions."""
    arr = np.asarray(times)
    if np.issubdtype(arr.dtype, np.datetime64) or np.issubdtype(arr.dtype, np.number):
        return arr
    try:
        return np.asarray(arr, dtype="datetime64[ns]")
    except (ValueError, TypeError):
        return np.arange(len(arr))


def _finish(fig, ax, launch_x: Any, title: str, ylabel: str) -> bytes:
    """Launch marker, labels and legend shared by every time-series plot, then PNG bytes."""
    mark_launch(ax, launch_x)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.legend(loc="best", fontsize=8)
    fig.autofmt_xdate()
    return to_png(fig)


def trajectory_png(times: Sequence[Any], treated: np.ndarray, counterfactual: np.ndarray, launch_x: Any,
                   title: str, ylabel: str, treated_label: str = "treated",
                   counterfactual_label: str = "synthetic control") -> bytes:
    """Treated series against its counterfactual with the launch marked."""
    x = plot_x(times)
    fig, ax = new_figure()
    ax.plot(x, treated, color=TREATED_COLOR, linewidth=2.0, label=treated_label)
    ax.plot(x, counterfactual, color=COUNTERFACTUAL_COLOR, linewidth=1.8, linestyle="--", label=counterfactual_label)
    return _finish(fig, ax, launch_x, title, ylabel)


def gaps_png(times: Sequence[Any], gap: np.ndarray, placebo_gaps: np.ndarray | None, launch_x: Any,
             title: str, ylabel: str) -> bytes:
    """The treated gap in colour with placebo gaps (one row each) in grey behind it."""
    x = plot_x(times)
    fig, ax = new_figure()
    if placebo_gaps is not None and len(placebo_gaps):
        pg = np.asarray(placebo_gaps, float)
        for row in pg:
            ax.plot(x, row, color=PLACEBO_COLOR, linewidth=0.7, alpha=0.6, zorder=1)
        ax.plot([], [], color=PLACEBO_COLOR, linewidth=0.7, label=f"placebos ({len(pg)} donors)")
    ax.plot(x, gap, color=TREATED_COLOR, linewidth=2.2, label="treated gap", zorder=3)
    ax.axhline(0.0, color="black", linewidth=0.6)
    return _finish(fig, ax, launch_x, title, ylabel)
