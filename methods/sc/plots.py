"""Synthetic control's pictures: treated vs synthetic trajectory, and gaps against placebo donors.

Titles say what is compared, axes say the unit: the outcome's level is a share when every
plotted mean lies in [0, 1] (a yes/no outcome such as ``resolved``), and the gap axis then says
that 0.01 is one percentage point; a calendar axis names its step (week starting, day, hour).
"""

from __future__ import annotations

import numpy as np

from methods import plots
from methods.sc.core import PLOT_PLACEBO_PRE_RMSPE_CAP, _Panel


def _plots(data: _Panel, synth, gap, placebo: dict, rmspe_pre: float, outcome: str) -> dict[str, bytes]:
    x = plots.plot_x(data.times)
    first_post = int(np.argmax(data.post))
    numeric = np.issubdtype(np.asarray(x).dtype, np.number)
    launch_x = x[first_post] if not numeric else \
        (float(x[first_post - 1]) + float(x[first_post])) / 2 if first_post > 0 else float(x[first_post])
    launch_label = "launch" if numeric else f"launch (first post period {plots.date_text(x[first_post])})"
    share = plots.is_share(data.y, synth)
    unit = plots.period_unit(data.times)
    xlabel = plots.time_label(data.times) or "period"
    by = f" by {unit}" if unit else ""
    traj = plots.trajectory_png(
        x, data.y, synth, launch_x, f"{plots.level_label(outcome, share).capitalize()}{by}: treated vs synthetic control",
        plots.level_label(outcome, share), treated_label="treated units",
        counterfactual_label="synthetic control (weighted donors)", xlabel=xlabel, launch_label=launch_label)
    keep = placebo["pre_rmspe"] <= PLOT_PLACEBO_PRE_RMSPE_CAP * max(rmspe_pre, 1e-12)
    gaps = plots.gaps_png(
        x, gap, placebo["gaps"][keep], launch_x,
        f"Gap{by}: treated − synthetic, beside placebo donors (pre-fit ≤ {PLOT_PLACEBO_PRE_RMSPE_CAP:g}× treated's)",
        plots.difference_label("gap", outcome, share), xlabel=xlabel, launch_label=launch_label)
    return {"trajectory": traj, "gaps": gaps}
