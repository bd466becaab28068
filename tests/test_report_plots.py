"""The memo's plots read on their own (issue 18): every figure has a title and labelled axes, text
of at least 9 pt at the saved 100 dpi (12.5 px; the old Love plot had 6 pt labels at 80 dpi,
6.7 px), a time axis names its step (weeks), a share is called a share, event-study error bars
are named as 95% intervals, and the Love plot shows the covariate levels that matter (every
unbalanced one, then the largest imbalances, 20 rows at most) instead of all ~50.

Figures are inspected when they are saved (as ``test_privacy`` does): the text drawn is what
the PNG shows.
"""

from __future__ import annotations

import matplotlib.figure
import matplotlib.text
import numpy as np
import pandas as pd
import pytest

from methods.plots import DPI, TEXT_PT, TREATED_COLOR
from methods.psm.plots import LOVE_TOP, _love_png, _overlap_png
from methods.result import BalanceRow


@pytest.fixture()
def saved(monkeypatch):
    """Every figure saved during the test: title, labels, legend texts, tick labels, text sizes, dpi."""
    out: list[dict] = []
    original = matplotlib.figure.Figure.savefig

    def savefig(fig, *args, **kwargs):
        result = original(fig, *args, **kwargs)  # drawn now: tick labels and layout exist
        ax = fig.axes[0]
        legends = list(fig.legends) + ([ax.get_legend()] if ax.get_legend() else [])
        texts = [t for t in fig.findobj(matplotlib.text.Text) if t.get_text().strip() and t.get_visible()]
        out.append({
            "title": ax.get_title(), "xlabel": ax.get_xlabel(), "ylabel": ax.get_ylabel(),
            "legend": [t.get_text() for leg in legends for t in leg.get_texts()],
            "yticks": [t.get_text() for t in ax.get_yticklabels() if t.get_text()],
            "min_pt": min(t.get_fontsize() for t in texts), "dpi": kwargs.get("dpi", fig.dpi),
            "lines": [(line.get_label(), matplotlib.colors.to_hex(line.get_color())) for line in ax.get_lines()],
        })
        return result

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    return out


def _legible(fig: dict) -> None:
    assert fig["title"] and fig["xlabel"] and fig["ylabel"], fig
    assert fig["dpi"] == DPI and fig["min_pt"] >= TEXT_PT, fig
    assert fig["min_pt"] * fig["dpi"] / 72 >= 12.5  # pixels of the smallest text in the saved PNG


def test_love_plot_shows_top_levels_and_every_unbalanced_one(saved):
    rows = [BalanceRow(f"hour_of_day={h}", 0.02 + 0.001 * h, 0.01, True) for h in range(24)]
    rows += [BalanceRow(f"intent=i{k}", 0.5 - 0.02 * k, 0.03, True) for k in range(18)]
    rows += [BalanceRow("channel=sms", 0.05, 0.12, False), BalanceRow("channel=voice", 0.04, -0.11, False)]
    _love_png(rows)
    fig = saved[-1]
    _legible(fig)
    assert len(fig["yticks"]) == LOVE_TOP < len(rows)
    assert {"channel=sms", "channel=voice"} <= set(fig["yticks"])  # unbalanced levels are never left out
    # the rest are the largest imbalances: all 18 intents (|SMD| before ≥ 0.16) beat every hour (≤ 0.043)
    assert {f"intent=i{k}" for k in range(18)} <= set(fig["yticks"])
    assert f"{LOVE_TOP} of {len(rows)}" in fig["title"]
    assert any("0.1" in t for t in fig["legend"])  # the balance limit is named


def test_overlap_plot_is_titled_and_labelled(saved):
    eta = np.linspace(-2, 2, 9)
    _overlap_png(eta, np.arange(9.0), np.arange(9.0)[::-1], "asked_email_first")
    fig = saved[-1]
    _legible(fig)
    assert "overlap" in fig["title"].lower() and "asked_email_first" in fig["title"]
    assert "propensity" in fig["xlabel"] and "share" in fig["ylabel"]


def _event_table(weeks: pd.DatetimeIndex, launch_idx: int) -> pd.DataFrame:
    et = np.arange(len(weeks)) - launch_idx
    coef = np.where(et == -1, 0.0, 0.01 * np.sin(et))
    se = np.where(et == -1, 0.0, 0.02)
    return pd.DataFrame({"event_time": et, "coef": coef, "se": se, "ci_low": coef - 1.96 * se,
                         "ci_high": coef + 1.96 * se, "period": [str(d.date()) for d in weeks]})


def test_event_study_axis_unit_and_interval_legend(saved):
    from methods.did.plots import event_study_png

    weeks = pd.date_range("2026-01-05", periods=20, freq="7D")
    event_study_png(_event_table(weeks, 12), "resolved", share=True)
    fig = saved[-1]
    _legible(fig)
    assert fig["xlabel"].startswith("weeks relative to launch") and str(weeks[12].date()) in fig["xlabel"]
    intervals = [t for t in fig["legend"] if "95% interval" in t]
    assert len(intervals) == 2 and any("before" in t for t in intervals) and any("after" in t for t in intervals)
    assert "share resolved" in fig["ylabel"] and "1 pp" in fig["ylabel"]
    assert "week" in fig["title"]


def test_group_means_share_axis_weeks_and_treated_colour(saved):
    from methods.did.plots import group_means_png

    weeks = pd.date_range("2026-01-05", periods=10, freq="7D")
    means = pd.DataFrame({"period": np.tile(weeks, 2), "group": np.repeat(["control", "treated"], 10),
                          "mean": np.linspace(0.55, 0.7, 20)})
    group_means_png(means, weeks[6], "resolved")
    fig = saved[-1]
    _legible(fig)
    assert fig["ylabel"] == "share resolved" and fig["xlabel"] == "week starting" and "by week" in fig["title"]
    assert dict(fig["lines"])["treated"] == TREATED_COLOR  # treated keeps the treated colour of every plot
    assert any(str(weeks[6].date()) in t for t in fig["legend"])  # the launch line says when


def test_synthetic_control_plots_name_share_and_gap_units(saved):
    from methods.sc.estimate import estimate_sc

    rng = np.random.default_rng(3)
    weeks = pd.date_range("2026-01-05", periods=24, freq="7D")
    base = 0.6 + 0.05 * np.sin(np.arange(24) / 3)
    rows = [pd.DataFrame({"unit": f"d{j}", "week": weeks, "resolved": base + rng.normal(0, 0.01, 24) + 0.01 * j})
            for j in range(8)]
    treated = base + 0.035 + rng.normal(0, 0.01, 24) + 0.05 * (np.arange(24) >= 18)
    rows.append(pd.DataFrame({"unit": "t", "week": weeks, "resolved": treated}))
    estimate_sc(pd.concat(rows), unit="unit", time="week", outcome="resolved", treated_units=["t"],
                launch=weeks[18])
    traj, gaps = saved[-2], saved[-1]
    for fig in (traj, gaps):
        _legible(fig)
        assert fig["xlabel"] == "week starting" and "by week" in fig["title"]
        assert any(str(weeks[18].date()) in t for t in fig["legend"])
    assert traj["ylabel"] == "share resolved" and "synthetic control" in traj["title"]
    assert gaps["ylabel"].startswith("gap (share resolved") and "1 pp" in gaps["ylabel"]


def test_matching_figures_are_not_even_drawn_inside_unrendered(monkeypatch):
    """A guardrail's or segment's figures (``unrendered()``) come back empty and no figure is laid out;
    outside the block the same calls give PNGs."""
    import matplotlib.pyplot as plt

    from methods import plots
    from methods.plots import NOT_RENDERED, unrendered

    made = []
    real = plots.new_figure
    monkeypatch.setattr("methods.psm.plots.new_figure", lambda *a, **k: made.append(1) or real(*a, **k))
    rows = [BalanceRow(f"c=l{i}", 0.3 / (i + 1), 0.02, True) for i in range(5)]
    eta, n1, n0 = np.linspace(-2, 2, 50), np.ones(50), np.ones(50)
    with unrendered():
        assert _overlap_png(eta, n1, n0, "t") == NOT_RENDERED and _love_png(rows) == NOT_RENDERED
    assert made == [] and plt.get_fignums() == []
    assert _overlap_png(eta, n1, n0, "t").startswith(b"\x89PNG") and _love_png(rows).startswith(b"\x89PNG")
    assert len(made) == 2
