"""Weighted least squares and 2SLS on cells, with exact row-level robust covariances.

Every function takes a cell design ``W`` (one row per cell, regressors constant in the cell), the
cell sizes ``n``, the cell means ``ybar`` and within-cell sums of squares ``ss`` of the outcome
(``cells.py``). Row-level quantities follow from these exactly: ``X'X = Σ n_c w_c w_c'``,
``X'y = Σ n_c w_c ȳ_c``, and a cell's summed squared residual is ``ss_c + n_c (ȳ_c − w_c'β)²``.

Covariance flavours, named as statsmodels and linearmodels name them:

* ``HC0`` — White's sandwich ``(X'X)⁻¹ Σ e_i² x_i x_i' (X'X)⁻¹`` (linearmodels' ``robust``);
* ``HC1`` — HC0 · N/(N−K);
* ``HC2`` — each e_i² divided by 1 − h_ii (h_ii the row's leverage, one value per cell). For a
  regression on arm indicators alone it equals the Welch/Neyman variance s²₁/n₁ + s²₀/n₀, which
  is why the unadjusted difference in means uses it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COLLINEAR_TOL = 1e-9


def independent_columns(G: np.ndarray, tol: float = COLLINEAR_TOL) -> list[int]:
    """Columns of a Gram matrix not (numerically) spanned by the columns before them.

    A column's residual variance after projecting on the earlier columns is the squared diagonal of
    R in X = QR; R'R = G, so R comes from a K×K square root of G (no pass over cells). Earlier
    columns win: put the ones that must stay (intercept, assignment) first.
    """
    if G.shape[0] == 0:
        return []
    lam, vec = np.linalg.eigh(G)
    root = np.sqrt(np.clip(lam, 0.0, None))[:, None] * vec.T
    r2 = np.diag(np.linalg.qr(root, mode="r")) ** 2
    diag = np.diag(G)
    return [j for j in range(G.shape[0]) if diag[j] > 0 and r2[j] > tol * diag[j]]


@dataclass
class CellOLS:
    """Row-level OLS of the outcome on ``W``, computed from cells."""

    W: np.ndarray
    n: np.ndarray
    beta: np.ndarray
    bread: np.ndarray  # (X'X)^-1
    ssr: np.ndarray  # Σ_{i∈c} e_i² per cell
    resid_sum: np.ndarray  # Σ_{i∈c} e_i per cell

    @property
    def nobs(self) -> int:
        return int(self.n.sum())

    def leverage(self) -> np.ndarray:
        """h_ii of one row of each cell: w_c'(X'X)⁻¹w_c."""
        return np.einsum("ij,jk,ik->i", self.W, self.bread, self.W)

    def cov(self, kind: str = "HC0", dof_k: int | None = None) -> np.ndarray:
        """Robust covariance (module doc). ``dof_k``: the K of HC1's N/(N−K) (default: this fit's)."""
        e2 = self.ssr
        if kind == "HC2":
            h = self.leverage()
            e2 = np.divide(e2, 1.0 - h, out=np.zeros_like(e2), where=h < 1.0 - 1e-12)
        out = sandwich(self.W, self.bread, e2)
        if kind == "HC1":
            k = self.W.shape[1] if dof_k is None else dof_k
            out = out * self.nobs / (self.nobs - k)
        elif kind not in ("HC0", "HC2"):
            raise ValueError(f"unknown covariance {kind!r}: HC0, HC1 or HC2")
        return out


def sandwich(W: np.ndarray, bread: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """bread · Σ_c weights_c w_c w_c' · bread."""
    return bread @ (W.T @ (W * weights[:, None])) @ bread


def gram(W: np.ndarray, n: np.ndarray) -> np.ndarray:
    return W.T @ (W * n[:, None])


def ols(W: np.ndarray, n: np.ndarray, ybar: np.ndarray, ss: np.ndarray) -> CellOLS:
    bread = np.linalg.inv(gram(W, n))
    beta = bread @ (W.T @ (n * ybar))
    resid = ybar - W @ beta
    return CellOLS(W, n, beta, bread, ss + n * resid**2, n * resid)


@dataclass
class CellIV:
    """Just-identified 2SLS of y on [exog, d] with instruments [exog, z], from cells.

    Parameter order as linearmodels' IV2SLS: the exogenous columns, then the endogenous one last.
    """

    beta: np.ndarray
    cov: np.ndarray  # HC0 (linearmodels' "robust", debiased=False)
    first: CellOLS  # d on [exog, z]
    reduced: CellOLS  # y on [exog, z]
    cross: float  # robust covariance of the reduced-form and first-stage coefficients on z

    @property
    def effect(self) -> float:
        return float(self.beta[-1])

    @property
    def se(self) -> float:
        return float(np.sqrt(self.cov[-1, -1]))

    @property
    def first_stage(self) -> float:
        return float(self.first.beta[-1])

    @property
    def first_stage_var(self) -> float:
        return float(self.first.cov("HC0")[-1, -1])

    @property
    def first_stage_f(self) -> float:
        """Robust Wald statistic of the excluded instrument (one instrument: F = t²), as linearmodels' ``f.stat``."""
        v = self.first_stage_var
        return float(self.first_stage**2 / v) if v > 0 else float("inf")

    @property
    def itt(self) -> float:
        return float(self.reduced.beta[-1])

    @property
    def itt_var(self) -> float:
        return float(self.reduced.cov("HC0")[-1, -1])


def tsls(E: np.ndarray, z: np.ndarray, d: np.ndarray, n: np.ndarray, ybar: np.ndarray, ss: np.ndarray) -> CellIV:
    """2SLS on cells: d (uptake) and z (assignment) are cell constants, so first-stage residuals are
    exact per cell and the structural residual sum of squares is ``ss + n (ȳ − [E, d]β)²``.
    Raises ZeroDivisionError when the first stage is exactly 0 (no ratio exists)."""
    Z = np.column_stack([E, z])
    zero = np.zeros_like(n, dtype=float)
    first = ols(Z, n, d, zero)
    if abs(first.beta[-1]) < 1e-12:
        raise ZeroDivisionError("the instrument does not move the endogenous regressor (first stage 0)")
    reduced = ols(Z, n, ybar, ss)
    dhat = Z @ first.beta
    Xhat = np.column_stack([E, dhat])
    bread = np.linalg.inv(gram(Xhat, n))
    beta = bread @ (Xhat.T @ (n * ybar))
    resid = ybar - np.column_stack([E, d]) @ beta
    cov = sandwich(Xhat, bread, ss + n * resid**2)
    u = d - dhat  # first-stage residual, one value per cell
    cross = first.bread @ (Z.T @ (Z * (u * reduced.resid_sum)[:, None])) @ first.bread
    return CellIV(beta, cov, first, reduced, float(cross[-1, -1]))


def anderson_rubin(itt: float, fs: float, v_itt: float, v_fs: float, cov: float, crit: float) -> tuple[float, float, str]:
    """Weak-instrument-robust (Anderson–Rubin) confidence set for itt/fs, one instrument.

    The set of β with (itt − β·fs)² ≤ crit² · Var(itt − β·fs) is a quadratic inequality in β; it is
    a bounded interval exactly when the first stage is itself significant (fs²/v_fs > crit²),
    otherwise unbounded. Returns (low, high, shape) with shape ``interval`` | ``unbounded`` |
    ``empty``; an unbounded set is (-inf, inf) even when it is two rays (shape says so).
    """
    c2 = crit * crit
    a = fs * fs - c2 * v_fs
    b = -2.0 * (itt * fs - c2 * cov)
    c = itt * itt - c2 * v_itt
    disc = b * b - 4.0 * a * c
    if a > 0:
        if disc < 0:
            return float("nan"), float("nan"), "empty"
        r = np.sqrt(disc)
        return float((-b - r) / (2 * a)), float((-b + r) / (2 * a)), "interval"
    return float("-inf"), float("inf"), "unbounded"
