"""Synthetic control's pictures: treated vs synthetic trajectory, and gaps against placebo donors."""

from __future__ import annotations

import numpy as np

from methods import plots
from methods.sc.core import PLOT_PLACEBO_PRE_RMSPE_CAP, _Panel


def _plots(data: _Panel, synth, gap, placebo: dict, rmspe_pre: float, outcome: str) -> dict[str, bytes]:
    x = plots.plot_x(data.times)
    first_post = int(np.argmax(data.post))
    launch_x = x[first_post] if not np.issubdtype(np.asarray(x).dtype, np.number) else \
        (float(x[first_post - 1]) + float(x[first_post])) / 2 if first_post > 0 else float(x[first_post])
    traj = plots.trajectory_png(x, data.y, synth, launch_x, f"{outcome}: treated vs synthetic control", outcome)
    keep = placebo["pre_rmspe"] <= PLOT_PLACEBO_PRE_RMSPE_CAP * max(rmspe_pre, 1e-12)
    gaps = plots.gaps_png(x, gap, placebo["gaps"][keep], launch_x,
                          f"gap (treated − synthetic) with placebo donors (pre-fit ≤ {PLOT_PLACEBO_PRE_RMSPE_CAP:g}x)",
                          f"gap in {outcome}")
    return {"trajectory": traj, "gaps": gaps}
