"""Synthetic-control weights: a convex combination of donors that tracks the treated series.

The problem is the quadratic programme

    minimise  ||y - X w||^2 + sum_j p_j w_j^2     subject to  w >= 0,  sum(w) = 1

(``X``: periods x donors, ``y``: the treated series, ``p``: an optional per-donor ridge that
prices each donor's sampling noise). It is solved in Gram form (``G = X'X + diag(p)``,
``c = X'y``) by a primal active-set method in the style of Lawson–Hanson NNLS, with the
sum-to-one constraint kept *exactly* through the KKT system of the free ("passive") set
instead of a heavy penalty row. Why not a generic solver: placebo inference refits the
problem once per donor (1,000 donors x 100 periods must finish in well under a minute), and
the Gram form lets every placebo fit reuse one precomputed ``G`` — the placebo for donor
``j`` is the same problem with row/column ``j`` removed and ``c = G[:, j]``. The solution
has at most about ``periods + 1`` non-zero weights, so the active set stays small and each
iteration is a tiny dense solve.

Independent cross-checks live in ``tests/test_synthetic_control.py`` (scipy SLSQP and
scipy's NNLS on an augmented system with a heavy sum-to-one row).
"""

from __future__ import annotations

import numpy as np


def gram(X: np.ndarray, penalty: np.ndarray | None = None) -> np.ndarray:
    """``X'X`` (+ ``diag(penalty)``): the quadratic term shared by every fit on these donors."""
    G = X.T @ X
    if penalty is not None:
        G[np.diag_indices_from(G)] += penalty
    return G


def solve_simplex_qp(G: np.ndarray, c: np.ndarray, tol: float = 1e-12, max_iter: int | None = None) -> np.ndarray:
    """Minimise ``w'Gw - 2 c'w`` over the probability simplex by a primal active-set method.

    ``G`` must be symmetric positive semi-definite. Returns weights ``w >= 0`` with
    ``sum(w) == 1`` (to rounding). Deterministic: ties are broken by the lowest index.
    """
    J = G.shape[0]
    if J == 0:
        raise ValueError("no donors to weight")
    if J == 1:
        return np.ones(1)
    diag = np.diag(G)
    scale = max(float(np.max(np.abs(diag))), float(np.max(np.abs(c))), 1e-300)
    tol_abs = tol * scale
    jitter = 1e-13 * scale  # keeps the passive-set KKT system solvable when donors coincide
    max_iter = max_iter or 5 * J + 50

    # Start at the best single donor (the best vertex of the simplex).
    start = int(np.argmin(diag - 2.0 * c))
    w = np.zeros(J)
    w[start] = 1.0
    passive = [start]
    in_p = np.zeros(J, bool)
    in_p[start] = True

    for _ in range(max_iter):
        # Negative half-gradient; on the passive set it equals the multiplier nu at optimum.
        r = c - G[:, passive] @ w[passive]
        nu = float(np.dot(r[passive], w[passive]))  # weighted mean: exact when r_P is constant
        dual = r - nu
        dual[in_p] = -np.inf
        j = int(np.argmax(dual))
        if dual[j] <= tol_abs:
            break
        passive.append(j)
        in_p[j] = True
        # Inner loop: move towards the equality-constrained optimum on the passive set,
        # dropping donors whose weight would turn negative (Lawson–Hanson step).
        while True:
            z = _passive_solution(G, c, passive, jitter)
            if np.all(z > 0):
                w[:] = 0.0
                w[passive] = z
                break
            wp = w[passive]
            neg = z <= 0
            alpha = float(np.min(wp[neg] / (wp[neg] - z[neg])))
            wp = wp + alpha * (z - wp)
            keep = wp > 1e-15
            # the blocking donor leaves even if rounding left it a hair above zero
            blocking = neg & (wp <= 1e-12 + 1e-12 * np.max(wp))
            keep &= ~blocking
            if not keep.any():  # degenerate: fall back to the entering donor alone
                keep[-1] = True
                wp[-1] = 1.0
            w[:] = 0.0
            new_passive = [p for p, k in zip(passive, keep) if k]
            w[new_passive] = wp[keep] / wp[keep].sum()
            for p, k in zip(passive, keep):
                if not k:
                    in_p[p] = False
            passive = new_passive
    w[w < 0] = 0.0
    return w / w.sum()


def _passive_solution(G: np.ndarray, c: np.ndarray, passive: list[int], jitter: float) -> np.ndarray:
    """Minimiser of ``w'Gw - 2c'w`` on the passive set with ``sum(w) = 1`` (KKT system)."""
    k = len(passive)
    K = np.empty((k + 1, k + 1))
    K[:k, :k] = G[np.ix_(passive, passive)]
    K[np.diag_indices(k)] += jitter
    K[:k, k] = 1.0
    K[k, :k] = 1.0
    K[k, k] = 0.0
    rhs = np.empty(k + 1)
    rhs[:k] = c[passive]
    rhs[k] = 1.0
    try:
        sol = np.linalg.solve(K, rhs)
    except np.linalg.LinAlgError:
        sol = np.linalg.lstsq(K, rhs, rcond=None)[0]
    return sol[:k]


def fit_weights(X: np.ndarray, y: np.ndarray, penalty: np.ndarray | None = None) -> np.ndarray:
    """Weights over the columns of ``X`` (periods x donors) that best reproduce ``y``."""
    X = np.asarray(X, float)
    y = np.asarray(y, float)
    return solve_simplex_qp(gram(X, penalty), X.T @ y)


def objective(X: np.ndarray, y: np.ndarray, w: np.ndarray, penalty: np.ndarray | None = None) -> float:
    """The value the solver minimises: squared pre-period error plus the optional ridge."""
    resid = np.asarray(y, float) - np.asarray(X, float) @ w
    out = float(resid @ resid)
    if penalty is not None:
        out += float(np.sum(penalty * w * w))
    return out
