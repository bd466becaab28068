"""Small matplotlib helpers shared by the methods: every figure ends up as PNG bytes.

Methods put their figures in ``EstimateResult.plots`` (name -> PNG bytes) so the store,
the CLI and the Dagster asset metadata can pass them around without a display. The Agg
backend is forced here, before pyplot is imported anywhere through this module, so headless
runs (CI, Dagster workers) never try to open a window.

Every figure is saved at ``DPI`` with text at ``TEXT_PT`` or larger: the memo shows the PNG at
its saved size, so a point size here is what the reader gets (9 pt at 100 dpi = 12.5 px, the
size of body text in a browser; the old 6 pt at 80 dpi was 6.7 px and unreadable). Axis labels
say what the numbers are: a share (the mean of a yes/no outcome) is named a share, a difference
of shares says that 0.01 is one percentage point, and a time axis names its unit.
"""

from __future__ import annotations

import contextlib
import contextvars
import io
from collections.abc import Iterator, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

TREATED_COLOR = "#1f4e9c"
COUNTERFACTUAL_COLOR = "#d9480f"
PLACEBO_COLOR = "#b0b0b0"
LAUNCH_COLOR = "#444444"

DPI = 100
TEXT_PT = 9.0  # tick labels, legends
LABEL_PT = 10.0  # axis labels
TITLE_PT = 11.5


def new_figure(width: float = 7.5, height: float = 4.0) -> tuple[plt.Figure, plt.Axes]:
    """A figure with one axes, sized for a report column, its tick labels at ``TEXT_PT``."""
    fig, ax = plt.subplots(figsize=(width, height), dpi=DPI)
    ax.tick_params(labelsize=TEXT_PT)
    return fig, ax


# False inside ``unrendered()``: figures are closed unrendered and ``to_png`` gives ``NOT_RENDERED``.
_RENDER = contextvars.ContextVar("convocausal_render_plots", default=True)
NOT_RENDERED = b""


@contextlib.contextmanager
def unrendered() -> Iterator[None]:
    """Skip PNG rendering for estimates whose figures nobody shows.

    Why: a question's guardrails, net value and segments each re-run the whole method, and every run
    drew its figures — rendering was 7 s of a 1M-row diff-in-diff question with four segments
    (PNG encoding and layout, not the numbers), all of it thrown away: only the primary
    estimate's figures reach the store and the memo. A context variable, so a question answered in
    another thread or task is not affected."""
    token = _RENDER.set(False)
    try:
        yield
    finally:
        _RENDER.reset(token)


def rendering() -> bool:
    """False inside ``unrendered()``: a figure function may return ``NOT_RENDERED`` before drawing anything
    (laying out ticks and labels of a figure that is then closed unrendered is most of its cost)."""
    return _RENDER.get()


def to_png(fig: plt.Figure) -> bytes:
    """Render ``fig`` to PNG bytes and close it (figures left open leak memory in long runs);
    inside ``unrendered()`` only close it."""
    if not _RENDER.get():
        plt.close(fig)
        return NOT_RENDERED
    buf = io.BytesIO()
    try:
        if fig.get_layout_engine() is None:  # a constrained figure (legend below) lays itself out
            fig.tight_layout()
        fig.savefig(buf, format="png", dpi=DPI)
    finally:
        plt.close(fig)
    return buf.getvalue()


def label_axes(ax: plt.Axes, title: str, xlabel: str | None, ylabel: str, legend: bool = True,
               legend_below: bool = False) -> None:
    """Title, axis labels and legend at the shared sizes (one place, so every figure reads alike).

    ``legend_below`` puts the legend under the axes in two columns, for plots whose points fill
    every corner (an event study's intervals), where ``best`` still covers data.
    """
    ax.set_title(title, fontsize=TITLE_PT)
    if xlabel:
        ax.set_xlabel(xlabel, fontsize=LABEL_PT)
    ax.set_ylabel(ylabel, fontsize=LABEL_PT)
    if legend and legend_below:
        # constrained layout reserves room for a figure legend "outside" the axes, below the x label
        # and rotated date ticks; an axes legend anchored below them collides with either
        ax.figure.set_layout_engine("constrained")
        ax.figure.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=2, fontsize=TEXT_PT,
                         frameon=False)
    elif legend:
        ax.legend(loc="best", fontsize=TEXT_PT)


def is_share(*arrays: Any) -> bool:
    """True when every finite value lies in [0, 1]: the plotted means are shares of a yes/no outcome.

    Outcome levels only (means per period or unit), never differences. A mean of a 0–1 score
    would also pass; the label then says "share", which is what a 0–1 mean reads as anyway.
    """
    vals = np.concatenate([np.asarray(a, dtype=float).ravel() for a in arrays]) if arrays else np.array([])
    vals = vals[np.isfinite(vals)]
    return bool(vals.size) and bool(((vals >= 0) & (vals <= 1)).all())


def level_label(outcome: str, share: bool) -> str:
    """Axis label for outcome levels: ``share resolved`` for a yes/no outcome, else ``mean csat``."""
    return f"share {outcome}" if share else f"mean {outcome}"


def difference_label(what: str, outcome: str, share: bool | None) -> str:
    """Axis label for a difference of levels (an effect, a gap), with its unit when it is known."""
    if share:
        return f"{what} (share {outcome}; 0.01 = 1 pp)"
    return f"{what} (mean {outcome})"


def period_unit(times: Sequence[Any]) -> str | None:
    """``week``, ``day`` or ``hour`` when ``times`` are dates spaced by that step, else None.

    The time axis then says what one step is (the event study's "period −1" is a week here).
    """
    try:
        arr = np.sort(np.asarray(as_dates(times), dtype="datetime64[s]"))
    except (ValueError, TypeError):
        return None
    if arr.size < 2:
        return None
    step = np.median(np.diff(arr).astype("int64"))
    return {7 * 86400: "week", 86400: "day", 3600: "hour"}.get(int(step))


def as_dates(times: Sequence[Any]) -> np.ndarray:
    """Times as datetime64 (strings like ``2026-03-30`` parsed); raises for anything else."""
    arr = np.asarray([t for t in times if t is not None])
    if np.issubdtype(arr.dtype, np.datetime64):
        return arr
    if np.issubdtype(arr.dtype, np.number) or arr.dtype == bool:
        raise TypeError("numeric times carry no calendar unit")
    return np.asarray(arr, dtype="datetime64[ns]")


def date_text(value: Any) -> str:
    """A launch for a legend: ``2026-03-30`` for a date, the value itself otherwise."""
    try:
        ts = np.datetime64(value, "s")
    except (ValueError, TypeError):
        return str(value)
    day = ts.astype("datetime64[D]")
    return str(day) if day == ts else str(ts)


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


def time_label(times: Sequence[Any]) -> str | None:
    """x-axis label of a calendar axis: ``week starting`` for weekly periods, ``day``, ``hour``."""
    unit = period_unit(times)
    return {"week": "week starting", "day": "day", "hour": "hour (UTC)"}.get(unit or "", None)


def _finish(fig, ax, launch_x: Any, title: str, ylabel: str, xlabel: str | None = None,
            launch_label: str = "launch") -> bytes:
    """Launch marker, labels and legend shared by every time-series plot, then PNG bytes."""
    mark_launch(ax, launch_x, launch_label)
    label_axes(ax, title, xlabel, ylabel, legend_below=True)
    slant_dates(ax)
    return to_png(fig)


def slant_dates(ax: plt.Axes) -> None:
    """Date tick labels at 30°, right-aligned (``fig.autofmt_xdate`` without its ``subplots_adjust``,
    which a constrained-layout figure refuses with a warning)."""
    for label in ax.get_xticklabels():
        label.set_rotation(30)
        label.set_horizontalalignment("right")


def trajectory_png(times: Sequence[Any], treated: np.ndarray, counterfactual: np.ndarray, launch_x: Any,
                   title: str, ylabel: str, treated_label: str = "treated",
                   counterfactual_label: str = "synthetic control", xlabel: str | None = None,
                   launch_label: str = "launch") -> bytes:
    """Treated series against its counterfactual with the launch marked."""
    x = plot_x(times)
    fig, ax = new_figure(7.5, 4.6)
    ax.plot(x, treated, color=TREATED_COLOR, linewidth=2.0, label=treated_label)
    ax.plot(x, counterfactual, color=COUNTERFACTUAL_COLOR, linewidth=1.8, linestyle="--", label=counterfactual_label)
    return _finish(fig, ax, launch_x, title, ylabel, xlabel, launch_label)


def gaps_png(times: Sequence[Any], gap: np.ndarray, placebo_gaps: np.ndarray | None, launch_x: Any,
             title: str, ylabel: str, xlabel: str | None = None, launch_label: str = "launch") -> bytes:
    """The treated gap in colour with placebo gaps (one row each) in grey behind it."""
    x = plot_x(times)
    fig, ax = new_figure(7.5, 4.6)
    if placebo_gaps is not None and len(placebo_gaps):
        pg = np.asarray(placebo_gaps, float)
        for row in pg:
            ax.plot(x, row, color=PLACEBO_COLOR, linewidth=0.7, alpha=0.6, zorder=1)
        ax.plot([], [], color=PLACEBO_COLOR, linewidth=0.7, label=f"placebos ({len(pg)} donors)")
    ax.plot(x, gap, color=TREATED_COLOR, linewidth=2.2, label="treated gap", zorder=3)
    ax.axhline(0.0, color="black", linewidth=0.6)
    return _finish(fig, ax, launch_x, title, ylabel, xlabel, launch_label)
