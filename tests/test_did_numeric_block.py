"""``numeric_block`` builds the intercept-and-numeric part of a DiD cell design without the dense C×K
array: it must be exactly the matrix the dense route gave (same entries, same sorted indices), so the
designs, fits and every number downstream are unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from methods.did.compress import design_from_cells, dummies, make_design, numeric_block
from tests.did_cells import event_cells


def _same(a: sp.spmatrix, b: sp.spmatrix) -> bool:
    a, b = sp.csr_matrix(a), sp.csr_matrix(b)
    return (a.shape == b.shape and a.dtype == b.dtype and a.indices.dtype == b.indices.dtype
            and np.array_equal(a.indptr, b.indptr) and np.array_equal(a.indices, b.indices)
            and np.array_equal(a.data, b.data, equal_nan=True))


@pytest.mark.parametrize("n", [0, 1, 7, 5000])
def test_numeric_block_is_the_dense_route(n):
    rng = np.random.default_rng(n)
    cols = [rng.integers(0, 2, n) * rng.choice([1.0, 2.5, -0.0, np.nan, -3.0], n) for _ in range(6)]
    cols += [np.zeros(n), np.ones(n), rng.integers(0, 2, n).astype(bool), rng.integers(0, 3, n)]
    dense = sp.csr_matrix(np.column_stack([np.ones(n)] + [np.asarray(v, dtype=float) for v in cols]))
    assert _same(numeric_block(n, cols), dense)
    assert numeric_block(n, cols).has_sorted_indices


def test_design_from_cells_is_the_dense_route():
    c = 3000
    cells, numeric, _ = event_cells(1, c, 12, ["a", "b", "c", "d"], 20, 50)
    got = design_from_cells(cells, numeric, ["time", "fe0"], "cluster", protect=list(numeric))
    dense = np.column_stack([np.ones(c)] + [np.asarray(v, dtype=float) for v in numeric.values()])
    blocks, names = [sp.csr_matrix(dense)], ["const", *numeric]
    for role in ("time", "fe0"):
        mat, nm = dummies(cells[role], role)
        blocks.append(mat)
        names.extend(nm)
    ref = make_design(sp.hstack(blocks, format="csc"), names, cells, "cluster", protect=("const", *numeric))
    assert got.names == ref.names and got.dropped == ref.dropped
    assert _same(got.X, ref.X)
    assert np.array_equal(got.gram, ref.gram) and np.array_equal(got.groups, ref.groups)
