"""``cluster_grams`` (every cluster's Σ n x x' in one sparse product) gives exactly the per-cluster loop's
matrices, bit for bit: the wild bootstrap's draws, p-values and intervals rest on them."""

from __future__ import annotations

import numpy as np
import pytest

from methods.did.compress import design_from_cells
from methods.did.inference import cluster_grams, cluster_grams_loop
from tests.did_cells import event_cells


@pytest.mark.parametrize("seed, c, g", [(0, 50, 3), (1, 3000, 24), (2, 20000, 48), (3, 7, 7)])
def test_cluster_grams_equal_the_loop(seed, c, g):
    cells, numeric, rng = event_cells(seed, c, 10, ["a", "b", "c"], g, 400)
    design = design_from_cells(cells, numeric, ["time", "fe0"], "cluster", protect=list(numeric))
    design.n = design.n * rng.uniform(0.5, 1.5, design.n.size)  # non-integer weights: sums that round
    got, ref = cluster_grams(design), cluster_grams_loop(design)
    assert got.shape == ref.shape == (design.n_groups, design.X.shape[1], design.X.shape[1])
    assert np.array_equal(got, ref)
