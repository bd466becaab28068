"""Random event-study cells for the diff-in-diff fast-path tests (design builders against their slow routes)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def event_cells(seed: int, c: int, times: int, levels: list[str], clusters: int, max_n: int):
    """``c`` cells (treated, time, fe0, cluster, n, sum_y, sum_y2) and the event-time columns of an event
    study launched at the middle time, as ``design_from_cells`` takes them."""
    rng = np.random.default_rng(seed)
    cells = pd.DataFrame({"treated": rng.integers(0, 2, c), "time": rng.integers(0, times, c),
                          "fe0": rng.choice(np.array(levels), c), "cluster": rng.integers(0, clusters, c),
                          "n": rng.integers(1, max_n, c)})
    cells["sum_y"] = rng.binomial(cells["n"], 0.3).astype(float)
    cells["sum_y2"] = cells["sum_y"]
    t = cells["treated"].to_numpy(float)
    e = cells["time"].to_numpy() - times // 2
    numeric = {"treated": t, **{f"event={k}": t * (e == k) for k in range(-(times // 2), times - times // 2) if k != -1}}
    return cells, numeric, rng
