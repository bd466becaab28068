"""The fast paths of propensity matching against the computations they replaced.

Each fast path must give the numbers of the straightforward computation: the ATT's cross-checks
without the unused treated-arm outcome model (bit for bit); the structured Gram matrices
(``CellGram``) against the dense XᵀWX product (to rounding, 1e-12), and through them the whole
estimator, whose matches must not change at all. The references are written out here on their
own (or are the dense path itself), not copied from an output.
"""

from __future__ import annotations

import numpy as np
import pytest

import methods.psm.estimate as psm_estimate
from methods.psm.crosschecks import ipw_aipw
from methods.psm.estimate import PSMEstimator, estimate_psm
from methods.psm.propensity import CellGram, cell_stats, fit_logit, prepare
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


def _dense(X, w):
    return (X * w[:, None]).T @ X


def _close(a, b, tol=1e-12):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return np.abs(a - b).max() <= tol * max(1.0, np.abs(b).max())


def _reweightings(prep, rng, k):
    a = prep.atoms
    for _ in range(k):
        nb = rng.multinomial(int(a.n.sum()), a.n / a.n.sum()).astype(float)
        yield cell_stats(a.cell, a.t, a.y, nb, prep.cells.n_cells)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cell_gram_equals_the_dense_product(seed):
    prep, _ = _cells(4000, seed)
    X = prep.cells.X
    plan = CellGram.build(X)
    assert plan is not None and len(plan.block) == 23  # the hour-of-day dummies
    rng = np.random.default_rng(seed)
    for w in (rng.random(len(X)), rng.integers(0, 3, len(X)).astype(float), np.zeros(len(X))):
        assert _close(plan(w), _dense(X, w))


@pytest.mark.parametrize("subset", [False, True])
def test_planned_design_products_equal_the_dense_ones(subset):
    prep, _ = _cells(4000, 4)
    X = prep.cells.X
    plan = CellGram.build(X)
    rng = np.random.default_rng(4)
    cells = np.flatnonzero(rng.random(len(X)) < 0.7) if subset else None
    Xs = X if cells is None else X[cells]
    d = plan.on(cells)
    beta, r, w = rng.normal(size=X.shape[1]), rng.normal(size=len(Xs)), rng.random(len(Xs))
    assert _close(d.dot(beta), Xs @ beta)
    assert _close(d.tdot(r), Xs.T @ r)
    assert _close(d.gram(w), _dense(Xs, w))


def test_cell_gram_finds_a_block_anywhere_and_declines_without_one():
    rng = np.random.default_rng(5)
    n = 600
    a, b = rng.integers(0, 6, n), rng.integers(0, 9, n)
    num = rng.normal(size=n)
    X = np.column_stack([np.ones(n), np.eye(6)[a][:, 1:], num, np.eye(9)[b][:, 1:]])
    w = rng.random(n)
    plan = CellGram.build(X)
    assert plan is not None and list(plan.block) == list(range(7, 15))
    assert _close(plan(w), _dense(X, w))
    perm = rng.permutation(X.shape[1])  # columns in any order: still the right sums
    plan_p = CellGram.build(X[:, perm])
    assert plan_p is None or _close(plan_p(w), _dense(X[:, perm], w))
    assert CellGram.build(np.column_stack([np.ones(n), num, num**2])) is None  # nothing one-hot


def test_extended_cell_gram_equals_the_dense_product_of_the_split_design():
    prep, _ = _cells(4000, 3)
    X = prep.cells.X
    plan = CellGram.build(X)
    rng = np.random.default_rng(3)
    rows = rng.integers(0, len(X), 3 * len(X))
    codes = rng.integers(0, 4, len(rows))
    X4 = np.hstack([X[rows], np.eye(4)[codes][:, 1:]])
    w = rng.random(len(rows))
    assert _close(plan.extend(rows, codes, 4)(w), _dense(X4, w))


@pytest.mark.parametrize("seed", [0, 1])
def test_logit_fit_and_matches_with_the_cell_gram_equal_the_dense_fit(seed):
    prep, st = _cells(4000, seed)
    X = prep.cells.X
    plan = CellGram.build(X)
    est = PSMEstimator(X, "ATE", 0.2, True)
    rng = np.random.default_rng(seed)
    for s in [st, *_reweightings(prep, rng, 8)]:
        dense, fast = fit_logit(X, s.n1, s.n0), fit_logit(X, s.n1, s.n0, plan=plan)
        assert fast.converged == dense.converged
        assert _close(fast.beta, dense.beta) and _close(fast.eta, dense.eta)
        m_dense, _ = est.run(X, s, dense.eta)
        m_fast, _ = est.run(X, s, fast.eta)
        assert m_fast.estimate == m_dense.estimate  # the matches themselves are the same
        assert np.array_equal(m_fast.w1, m_dense.w1) and np.array_equal(m_fast.w0, m_dense.w0)
        for estimand in ("ATT", "ATE"):
            assert _close(ipw_aipw(dense.eta, s, X, estimand, plan), ipw_aipw(dense.eta, s, X, estimand))


@pytest.mark.parametrize("estimand,replace", [("ATT", True), ("ATE", False)])
def test_estimator_with_the_cell_gram_equals_the_dense_estimator(monkeypatch, estimand, replace):
    df = simulate(3000, 11)
    kw = {"estimand": estimand, "replace": replace, "n_bootstrap": 40, "seed": 3, "n_refute_sims": 6}
    fast = estimate_psm(df, T, Y, COVARIATES, **kw)
    monkeypatch.setattr(psm_estimate.CellGram, "build", classmethod(lambda cls, X: None))
    dense = estimate_psm(df, T, Y, COVARIATES, **kw)
    for f in ("estimate", "std_error", "ci_low", "ci_high", "p_value", "n_treated", "n_control"):
        assert getattr(fast, f) == getattr(dense, f), f
    assert [vars(b) for b in fast.balance] == [vars(b) for b in dense.balance]
    assert [vars(r) for r in fast.refutations] == [vars(r) for r in dense.refutations]
    assert fast.extras["bootstrap_percentile_ci"] == dense.extras["bootstrap_percentile_ci"]
    for k in ("ipw_estimate", "ipw_std_error", "aipw_estimate", "aipw_std_error"):
        assert _close(fast.extras[k], dense.extras[k]), k
    for a, b in zip(fast.diagnostics, dense.diagnostics):
        assert a.name == b.name and a.passed == b.passed and a.message == b.message
        assert (a.value is None and b.value is None) or _close(a.value, b.value), a.name


def test_sorted_lookup_gives_searchsorteds_positions():
    from methods.psm.matching import _searchsorted

    rng = np.random.default_rng(8)
    G = np.unique(np.round(rng.normal(size=3000), 2))  # ties in the keys and keys equal to G
    keys = np.concatenate([np.round(rng.normal(size=4000), 2), G[:50], [-np.inf, np.inf]])
    rng.shuffle(keys)
    assert np.array_equal(_searchsorted(G, keys), np.searchsorted(G, keys))
    assert np.array_equal(_searchsorted(G, keys[:0]), np.searchsorted(G, keys[:0]))
