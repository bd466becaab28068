"""The fast paths of propensity matching against the computations they replaced.

Each fast path must give the numbers of the straightforward computation: the ATT's cross-checks
without the unused treated-arm outcome model (bit for bit). The references are written out here
on their own, not copied from an output.
"""

from __future__ import annotations

import numpy as np
import pytest

from methods.psm.crosschecks import ipw_aipw
from methods.psm.propensity import cell_stats, fit_logit, prepare
from tests.test_psm import COVARIATES, T, Y, simulate


def _cells(n: int, seed: int):
    prep = prepare(simulate(n, seed), T, Y, COVARIATES)
    a = prep.atoms
    return prep, cell_stats(a.cell, a.t, a.y, a.n, prep.cells.n_cells)


def _reference_ipw_aipw(eta, st, X, estimand):
    """The cross-checks as they were: both arms' outcome models fitted, whatever the estimand."""
    def wls(n, s):
        A = (X * n[:, None]).T @ X
        return X @ np.linalg.lstsq(A, X.T @ s, rcond=None)[0]

    m1, m0 = wls(st.n1, st.s1), wls(st.n0, st.s0)
    if estimand == "ATT":
        odds = np.exp(eta)
        ipw = st.s1.sum() / st.n1.sum() - (odds @ st.s0) / (odds @ st.n0)
        aipw = ((st.s1 - st.n1 * m0).sum() - odds @ (st.s0 - st.n0 * m0)) / st.n1.sum()
    else:
        inv1, inv0 = 1 + np.exp(-eta), 1 + np.exp(eta)
        ipw = (inv1 @ st.s1) / (inv1 @ st.n1) - (inv0 @ st.s0) / (inv0 @ st.n0)
        n = st.n1 + st.n0
        aipw = (n @ (m1 - m0) + inv1 @ (st.s1 - st.n1 * m1) - inv0 @ (st.s0 - st.n0 * m0)) / n.sum()
    return float(ipw), float(aipw)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("estimand", ["ATT", "ATE"])
def test_cross_checks_without_the_unused_outcome_model_are_bit_identical(seed, estimand):
    prep, st = _cells(3000, seed)
    X = prep.cells.X
    rng = np.random.default_rng(seed)
    eta = fit_logit(X, st.n1, st.n0).eta
    for _ in range(5):  # the data's own counts, then bootstrap-like reweightings
        assert ipw_aipw(eta, st, X, estimand) == _reference_ipw_aipw(eta, st, X, estimand)
        nb = rng.multinomial(int(prep.atoms.n.sum()), prep.atoms.n / prep.atoms.n.sum()).astype(float)
        a = prep.atoms
        st = cell_stats(a.cell, a.t, a.y, nb, prep.cells.n_cells)
