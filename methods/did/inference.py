"""Inference for DiD on cells: cluster-robust t/Wald, and the restricted wild cluster bootstrap.

Why a bootstrap: with fewer than ~30 clusters the CR1 covariance is biased down and its t
statistic is far from t(G−1), so nominal 95% intervals under-cover (Cameron, Gelbach & Miller
2008). The restricted wild cluster bootstrap-t (WCR; Roodman, MacKinnon, Nielsen & Webb 2019)
keeps good size with a dozen or two clusters: impose the null, flip each cluster's restricted
residuals with one random weight, refit, and compare the bootstrap t (or Wald) statistics with
the sample one. The interval is the set of null values the test does not reject (test
inversion), found by bisection with the same draws for every null value.

Everything is computed from cluster-level aggregates of the cell table (the bootstrap weight is
constant within a cluster and cells are nested in clusters), so a draw costs O(G·K), not O(N):

* bootstrap sums  sum_y*_c = n_c x_c'β_r + v_g e^r_c  ⇒  β* = β_r + A⁻¹ Σ_g v_g S^r_g,
* bootstrap scores  s*_g = v_g S^r_g − H_g (β* − β_r),  with H_g = Σ_{c∈g} n_c x_c x_c',

where A = X'X, S^r_g the cluster scores of the restricted fit. Draws are seeded (numpy
``default_rng(seed)``): the same seed gives the same p-value and interval.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy import stats

from methods.did.compress import CellDesign, CellFit, cr1_factor, gram, group_matrix, scale_rows

FEW_CLUSTERS = 30  # below this many clusters the wild cluster bootstrap replaces CR1 t inference
WEBB = np.array([-np.sqrt(1.5), -1.0, -np.sqrt(0.5), np.sqrt(0.5), 1.0, np.sqrt(1.5)])


def draw_weights(n_groups: int, n_boot: int, seed: int, kind: str = "webb") -> np.ndarray:
    """G×B cluster weights: Webb's 6-point (default; many distinct draws even with few clusters)
    or Rademacher (±1, only 2^G distinct draws)."""
    rng = np.random.default_rng(seed)
    if kind == "webb":
        return WEBB[rng.integers(0, 6, size=(n_groups, n_boot))]
    if kind == "rademacher":
        return rng.choice(np.array([-1.0, 1.0]), size=(n_groups, n_boot))
    raise ValueError(f"unknown bootstrap weight kind {kind!r}; use 'webb' or 'rademacher'")


@dataclass
class ClusterAggregates:
    """What the bootstrap needs from the cells, summed within clusters."""

    A: np.ndarray  # K×K  X'X
    Ainv: np.ndarray
    Xty: np.ndarray  # K   X'y
    Sy: np.ndarray  # G×K Σ_{c∈g} x_c sum_y_c
    H: np.ndarray  # G×K×K Σ_{c∈g} n_c x_c x_c'
    factor: float  # CR1 small-sample factor


def aggregates(design: CellDesign) -> ClusterAggregates:
    X = design.X
    A = gram(design)
    G = group_matrix(design)
    Sy = np.asarray((G @ scale_rows(X, design.sum_y)).todense())
    k = X.shape[1]
    return ClusterAggregates(A, np.linalg.inv(A), X.T @ design.sum_y, Sy, cluster_grams(design),
                             cr1_factor(design.n_groups, design.nobs, k))


def cluster_grams(design: CellDesign) -> np.ndarray:
    """G×K×K  H_g = Σ_{c∈g} n_c x_c x_c', all clusters in one sparse product.

    The rows sorted by cluster (stable) are spread into a C×(G·K) matrix whose cluster-g rows hold
    x_c in columns g·K…g·K+K−1, so Z'·diag(n)·X stacks the H_g: each entry sums the same products,
    in the same order (a cluster's cells, ascending), as one product per cluster did — the same bits
    (``tests/test_did_cluster_grams.py`` compares with that loop)."""
    X, k, G = design.X, design.X.shape[1], design.n_groups
    order = np.argsort(design.groups, kind="stable")
    Xs = sp.csr_matrix(X[order])
    gs = design.groups[order]
    Z = sp.csr_matrix((Xs.data, Xs.indices + k * np.repeat(gs, np.diff(Xs.indptr)), Xs.indptr), shape=(len(gs), G * k))
    return np.asarray((Z.T @ scale_rows(Xs, design.n[order])).todense()).reshape(G, k, k)


def cluster_grams_loop(design: CellDesign) -> np.ndarray:
    """``cluster_grams`` one cluster at a time (the reference it is tested against)."""
    X, n, k = design.X, design.n, design.X.shape[1]
    H = np.empty((design.n_groups, k, k))
    order = np.argsort(design.groups, kind="stable")
    bounds = np.searchsorted(design.groups[order], np.arange(design.n_groups + 1))
    for g in range(design.n_groups):
        idx = order[bounds[g]:bounds[g + 1]]
        Xg = X[idx]
        H[g] = np.asarray((Xg.T @ scale_rows(Xg, n[idx])).todense())
    return H


def restricted_beta(agg: ClusterAggregates, J: np.ndarray, r0: np.ndarray) -> np.ndarray:
    """OLS under β_J = r0 from the normal equations (X'X, X'y)."""
    k = agg.A.shape[0]
    free = np.setdiff1d(np.arange(k), J)
    beta = np.zeros(k)
    beta[J] = r0
    if free.size:
        rhs = agg.Xty[free] - agg.A[np.ix_(free, J)] @ r0
        beta[free] = np.linalg.solve(agg.A[np.ix_(free, free)], rhs)
    return beta


def _draw_parts(agg: ClusterAggregates, J: np.ndarray, r0: np.ndarray, V: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-draw pieces under the restricted null β_J = r0: d = β*_J − r0 (L×B) and the projected
    bootstrap scores T_g = Q s*_g (G×L×B), Q = rows J of (X'X)⁻¹. Both are affine in r0."""
    beta_r = restricted_beta(agg, J, r0)
    Sr = agg.Sy - np.einsum("gkl,l->gk", agg.H, beta_r)  # restricted cluster scores, G×K
    delta = agg.Ainv @ (Sr.T @ V)  # K×B: β* − β_r
    Q = agg.Ainv[J]  # L×K
    QH = np.einsum("lk,gkm->glm", Q, agg.H)  # G×L×K
    T = V[:, None, :] * (Sr @ Q.T)[:, :, None] - np.einsum("glk,kb->glb", QH, delta)
    return delta[J], T


def _wald_from_parts(agg: ClusterAggregates, d: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Bootstrap Wald statistics (t² when L = 1), each with its own CR1 covariance (pivotal)."""
    if d.shape[0] == 1:
        var = agg.factor * np.einsum("gb,gb->b", T[:, 0, :], T[:, 0, :])
        return d[0] ** 2 / np.maximum(var, 1e-300)
    Vb = agg.factor * np.einsum("glb,gmb->blm", T, T)  # B×L×L
    Vinv = np.linalg.pinv(Vb, hermitian=True)  # pinv guards draws whose covariance is rank-deficient
    return np.einsum("lb,blm,mb->b", d, Vinv, d)


def sample_wald(fit: CellFit, J: np.ndarray, r0: np.ndarray) -> float:
    d = fit.params[J] - r0
    return float(d @ np.linalg.pinv(fit.cov[np.ix_(J, J)]) @ d)


def _pvalue(w: float, wb: np.ndarray) -> float:
    """Share of draws (counting the sample itself) with a statistic at least the sample one."""
    return float((1 + np.sum(wb >= w * (1 - 1e-12))) / (1 + wb.size))


def wild_pvalue(fit: CellFit, agg: ClusterAggregates, J, r0, V: np.ndarray) -> float:
    """Bootstrap p-value of H0: β_J = r0 (Wald, or t² for one coefficient)."""
    J = np.atleast_1d(np.asarray(J, dtype=int))
    r0 = np.atleast_1d(np.asarray(r0, dtype=float))
    d, T = _draw_parts(agg, J, r0, V)
    return _pvalue(sample_wald(fit, J, r0), _wald_from_parts(agg, d, T))


@dataclass
class WildResult:
    p_value: float
    ci_low: float
    ci_high: float
    n_boot: int
    weights: str


def wild_cluster_test(fit: CellFit, name: str, seed: int = 0, n_boot: int = 999, weights: str = "webb",
                      alpha: float = 0.05) -> WildResult:
    """WCR bootstrap-t p-value for H0: β_name = 0 and the (1−α) interval by test inversion."""
    design = fit.design
    agg = aggregates(design)
    V = draw_weights(design.n_groups, n_boot, seed, weights)
    j = design.index(name)
    J = np.array([j])
    # every draw's pieces are affine in the null value: two evaluations give all of them
    d0, T0 = _draw_parts(agg, J, np.zeros(1), V)
    d1, T1 = _draw_parts(agg, J, np.ones(1), V)
    est, se = fit.params[j], float(np.sqrt(fit.cov[j, j]))

    def pfun(b0: float) -> float:
        wb = _wald_from_parts(agg, d0 + b0 * (d1 - d0), T0 + b0 * (T1 - T0))
        return _pvalue((est - b0) ** 2 / se**2 if se > 0 else np.inf, wb)

    lo = _invert(pfun, est, se, -1.0, alpha)
    hi = _invert(pfun, est, se, +1.0, alpha)
    return WildResult(pfun(0.0), lo, hi, n_boot, weights)


def _invert(pfun, est: float, se: float, direction: float, alpha: float) -> float:
    """Null value where the bootstrap p-value falls to α, searching away from the estimate."""
    se = se if se > 0 else 1e-8
    inside, step = est, 2.0 * se
    outside = est + direction * step
    for _ in range(40):  # expand until rejected
        if pfun(outside) < alpha:
            break
        inside, step = outside, step * 2.0
        outside = est + direction * step
    else:
        return float(direction * np.inf)
    for _ in range(40):  # bisection to 1e-4 se (the p-value is a step function of B draws anyway)
        mid = 0.5 * (inside + outside)
        if pfun(mid) < alpha:
            outside = mid
        else:
            inside = mid
        if abs(outside - inside) < 1e-4 * se:
            break
    return float(0.5 * (inside + outside))


def wild_wald_test(fit: CellFit, names: list[str], seed: int = 0, n_boot: int = 999,
                   weights: str = "webb") -> tuple[float, float]:
    """Joint H0: β_names = 0 by the restricted wild cluster bootstrap Wald test → (Wald, p)."""
    design = fit.design
    agg = aggregates(design)
    V = draw_weights(design.n_groups, n_boot, seed, weights)
    J = np.array([design.index(nm) for nm in names])
    r0 = np.zeros(len(J))
    return sample_wald(fit, J, r0), wild_pvalue(fit, agg, J, r0, V)


def cluster_t_inference(fit: CellFit, name: str, alpha: float = 0.05) -> tuple[float, float, float]:
    """CR1 t test with G−1 degrees of freedom (HC1: normal) → (p, ci_low, ci_high)."""
    est, se = fit.coef(name), fit.se(name)
    g = fit.design.n_groups
    crit_dist = stats.t(g - 1) if fit.cov_type == "cluster" else stats.norm()
    tstat = est / se if se > 0 else np.inf
    p = float(2 * crit_dist.sf(abs(tstat)))
    q = float(crit_dist.ppf(1 - alpha / 2))
    return p, est - q * se, est + q * se


def cluster_wald_test(fit: CellFit, names: list[str]) -> tuple[float, float]:
    """Joint Wald with the CR1 covariance, as an F(L, G−1) test (chi2(L) without clusters)."""
    J = np.array([fit.design.index(nm) for nm in names])
    w = sample_wald(fit, J, np.zeros(len(J)))
    L = len(J)
    if fit.cov_type == "cluster":
        return w, float(stats.f(L, fit.design.n_groups - 1).sf(w / L))
    return w, float(stats.chi2(L).sf(w))


@dataclass
class Inference:
    """Estimate of one coefficient with its p-value and interval, and how they were obtained."""

    estimate: float
    std_error: float
    p_value: float
    ci_low: float
    ci_high: float
    kind: str  # "wild_cluster_bootstrap" | "cluster_robust" | "hc1"
    method: str  # in words, for EstimateResult.ci_method


def infer(fit: CellFit, name: str, seed: int = 0, n_boot: int = 999, weights: str = "webb",
          alpha: float = 0.05, few_clusters: int = FEW_CLUSTERS) -> Inference:
    """Pick the inference the cluster count supports: WCR bootstrap below ``few_clusters``, CR1 t(G−1)
    at or above it, HC1 normal without clusters. ``std_error`` is always the analytic CR1/HC1 one."""
    est, se = fit.coef(name), fit.se(name)
    g = fit.design.n_groups
    if fit.cov_type == "cluster" and g < few_clusters and n_boot > 0:
        w = wild_cluster_test(fit, name, seed=seed, n_boot=n_boot, weights=weights, alpha=alpha)
        text = (f"wild cluster bootstrap-t, restricted (WCR), {weights} weights, {n_boot} draws, seed {seed}, "
                f"{g} clusters; interval by test inversion; std_error is CR1")
        return Inference(est, se, w.p_value, w.ci_low, w.ci_high, "wild_cluster_bootstrap", text)
    p, lo, hi = cluster_t_inference(fit, name, alpha)
    if fit.cov_type == "cluster":
        return Inference(est, se, p, lo, hi, "cluster_robust", f"cluster-robust CR1, t({g - 1}), {g} clusters")
    return Inference(est, se, p, lo, hi, "hc1", "heteroskedasticity-robust HC1, normal (no cluster given)")
