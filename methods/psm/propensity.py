"""Covariate cells and the logistic propensity model fitted on them.

Why cells: the matching covariates (intent, persona, memory state, agent version, hour,
channel) are categorical or low-cardinality, so a million conversations fall into a few
thousand distinct covariate combinations. Every unit in a cell has the same design row and
hence the same propensity, so the logistic likelihood only needs, per cell, the number of
treated and the number of units (a binomial GLM with frequency weights gives exactly the
row-level coefficients). Everything downstream (matching, bootstrap, refutations) works on
*atoms*: distinct (cell, treatment, outcome value) triples with a count. Resampling rows is
then a multinomial draw over atoms, permuting the treatment a multivariate hypergeometric
draw — exact, and independent of the number of rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd
from scipy.special import expit

MISSING_LEVEL = "missing"
SEPARATION_LOGIT = 25.0  # |logit| beyond this means a cell is (quasi-)perfectly predicted


@dataclass
class Cells:
    """Distinct covariate combinations and their design rows.

    ``X`` is the propensity design (intercept, drop-one dummies with the most frequent level as
    reference, standardised numeric columns); ``Z`` holds the balance features (every level of
    every categorical, numeric columns on their own scale), one row per cell.
    """

    covariates: list[str]
    kinds: dict[str, str]  # covariate -> "categorical" | "numeric"
    values: pd.DataFrame  # one row per cell: the covariate values
    X: np.ndarray
    x_names: list[str]
    Z: np.ndarray
    z_names: list[str]
    z_covariate: list[str]  # which covariate each Z column belongs to

    @property
    def n_cells(self) -> int:
        return len(self.values)


@dataclass
class Atoms:
    """Distinct (cell, treatment, outcome) triples with their row counts."""

    cell: np.ndarray
    t: np.ndarray
    y: np.ndarray
    n: np.ndarray  # counts (float so resampled counts drop straight in)

    @property
    def n_rows(self) -> int:
        return int(self.n.sum())


@dataclass
class CellStats:
    """Per-cell counts, outcome sums and sums of squares by arm."""

    n1: np.ndarray
    n0: np.ndarray
    s1: np.ndarray
    s0: np.ndarray
    q1: np.ndarray
    q0: np.ndarray


@dataclass
class Prepared:
    cells: Cells
    atoms: Atoms
    cell_of_row: np.ndarray
    treatment_rows: np.ndarray
    keep: np.ndarray  # boolean mask of the input rows that were used
    excluded: dict[str, int] = field(default_factory=dict)  # reason -> rows dropped


INTEGER_LEVELS_MAX = 24  # integer covariates with at most this many values are categories


def _kind(s: pd.Series) -> str:
    """``numeric`` (one linear term, one balance row) or ``categorical`` (a dummy per level).

    Booleans and real-valued columns are numeric; strings are categorical; integer columns with
    at most 24 distinct values (hour_of_day, day_of_week, small counts) are categories, because
    their effect on the treatment is rarely linear (night hours, weekends).
    """
    if pd.api.types.is_bool_dtype(s):
        return "numeric"
    if pd.api.types.is_integer_dtype(s) and s.nunique(dropna=True) <= INTEGER_LEVELS_MAX:
        return "categorical"
    if pd.api.types.is_numeric_dtype(s):
        return "numeric"
    return "categorical"


def prepare(df: pd.DataFrame, treatment: str, outcome: str, covariates: list[str],
            weights: str | None = None) -> Prepared:
    """Drop unusable rows (counted, never silently), code covariates, build cells and atoms.

    Null treatment or outcome rows are excluded; a null in a categorical covariate is its own
    level ``missing``; a null in a numeric covariate excludes the row. Treatment must be 0/1.

    ``weights`` names a column of row counts (frequency weights): each row of ``df`` then stands
    for that many identical conversations, so a million rows can arrive already grouped by
    (covariates, treatment, outcome) — the atoms are the same as from the ungrouped rows.
    """
    missing = [c for c in [treatment, outcome, *covariates, *([weights] if weights else [])] if c not in df.columns]
    if missing:
        raise ValueError(f"columns not in the data: {missing}")
    if treatment in covariates or outcome in covariates:
        raise ValueError("treatment and outcome must not be among the covariates")
    w_all = np.ones(len(df)) if weights is None else df[weights].to_numpy(dtype=float)
    if weights is not None and not (np.isfinite(w_all).all() and (w_all >= 0).all()):
        raise ValueError(f"weights column {weights!r} must hold non-negative row counts")
    excluded: dict[str, int] = {}
    keep = np.ones(len(df), dtype=bool)
    t_null = df[treatment].isna().to_numpy()
    excluded["null_treatment"] = int(np.rint(w_all[t_null].sum()))
    keep &= ~t_null
    y_null = df[outcome].isna().to_numpy()
    excluded["null_outcome"] = int(np.rint(w_all[y_null & keep].sum()))
    keep &= ~y_null
    kinds = {c: _kind(df[c]) for c in covariates}
    num_null = np.zeros(len(df), dtype=bool)
    for c in covariates:
        if kinds[c] == "numeric":
            num_null |= df[c].isna().to_numpy()
    excluded["null_numeric_covariate"] = int(np.rint(w_all[num_null & keep].sum()))
    keep &= ~num_null
    d = df.loc[keep, [treatment, outcome, *covariates]]
    w = w_all[keep]

    t = d[treatment].astype("float64").to_numpy()
    if not np.isin(t, (0.0, 1.0)).all():
        bad = sorted(set(np.unique(t)) - {0.0, 1.0})[:5]
        raise ValueError(f"treatment {treatment!r} must be 0/1; found values {bad}")
    t = t.astype(np.int64)
    y = d[outcome].astype("float64").to_numpy()

    codes, uniques = [], []
    for c in covariates:
        s = d[c]
        if kinds[c] == "numeric":
            s = s.astype("float64")
        elif pd.api.types.is_integer_dtype(s):
            s = s.astype(object).where(s.notna(), MISSING_LEVEL)
        else:
            s = s.astype(object).where(s.notna(), MISSING_LEVEL).astype(str)
        code, uniq = pd.factorize(s, sort=not pd.api.types.is_integer_dtype(d[c]))
        codes.append(code.astype(np.int64))
        uniques.append(np.asarray(uniq))
    key = np.zeros(len(d), dtype=np.int64)
    for code, uniq in zip(codes, uniques):
        card = max(len(uniq), 1)
        if key.max(initial=0) > (2**62) // card:
            key = pd.factorize(key)[0].astype(np.int64)
        key = key * card + code
    cell_of_row, first = _factorize_first(key)
    values = pd.DataFrame(
        {c: uniq[code[first]] for c, code, uniq in zip(covariates, codes, uniques)}
    )
    counts = np.bincount(cell_of_row, weights=w, minlength=len(first)).astype(float)
    cells = _design(values, covariates, kinds, counts)
    atoms = _atoms(cell_of_row, t, y, w)
    return Prepared(cells, atoms, cell_of_row, t, keep, excluded)


def _factorize_first(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Compact ids for ``key`` and the first row index of each id."""
    ids, uniq = pd.factorize(key)
    first = np.full(len(uniq), -1, dtype=np.int64)
    # reversed assignment leaves the smallest index per id
    rev = np.arange(len(ids))[::-1]
    first[ids[rev]] = rev
    return ids.astype(np.int64), first


def _atoms(cell: np.ndarray, t: np.ndarray, y: np.ndarray, w: np.ndarray) -> Atoms:
    ycode, yuniq = pd.factorize(y)
    key = (cell * 2 + t) * max(len(yuniq), 1) + ycode
    ids, first = _factorize_first(key)
    n = np.bincount(ids, weights=w, minlength=len(first)).astype(float)
    return Atoms(cell=cell[first], t=t[first], y=y[first], n=n)


def _design(values: pd.DataFrame, covariates: list[str], kinds: dict[str, str],
            counts: np.ndarray) -> Cells:
    xs, x_names, zs, z_names, z_cov = [np.ones(len(values))], ["intercept"], [], [], []
    w = counts / counts.sum()
    for c in covariates:
        v = values[c].to_numpy()
        if kinds[c] == "numeric":
            v = v.astype(float)
            mu = float(w @ v)
            sd = float(np.sqrt(w @ (v - mu) ** 2))
            if sd > 0:
                xs.append((v - mu) / sd)
                x_names.append(c)
            zs.append(v)
            z_names.append(c)
            z_cov.append(c)
        else:
            levels = pd.unique(v)
            lvl_counts = {lv: counts[v == lv].sum() for lv in levels}
            ordered = sorted(levels, key=lambda lv: (-lvl_counts[lv], str(lv)))
            for lv in ordered:
                ind = (v == lv).astype(float)
                zs.append(ind)
                z_names.append(f"{c}={lv}")
                z_cov.append(c)
                if lv != ordered[0]:
                    xs.append(ind)
                    x_names.append(f"{c}={lv}")
    X = np.column_stack(xs)
    Z = np.column_stack(zs) if zs else np.zeros((len(values), 0))
    X, x_names = _drop_collinear(X, x_names, counts)
    return Cells(list(covariates), dict(kinds), values, X, x_names, Z, z_names, z_cov)


def _drop_collinear(X: np.ndarray, names: list[str], counts: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Keep a full-rank set of design columns (a level implied by others would make the MLE
    non-unique); greedy in column order so the intercept and earlier covariates win."""
    G = (X * counts[:, None]).T @ X
    scale = max(1.0, float(np.abs(np.diag(G)).max()))
    keep: list[int] = []
    for j in range(X.shape[1]):
        cand = keep + [j]
        ev = np.linalg.eigvalsh(G[np.ix_(cand, cand)])
        if ev.min() > 1e-10 * scale:
            keep.append(j)
    return X[:, keep], [names[j] for j in keep]


def cell_stats(atoms_cell: np.ndarray, atoms_t: np.ndarray, atoms_y: np.ndarray, n: np.ndarray,
               n_cells: int) -> CellStats:
    """Aggregate atom counts into per-cell treated/control counts and outcome sums."""
    key = atoms_cell * 2 + atoms_t
    m = 2 * n_cells
    cnt = np.bincount(key, weights=n, minlength=m).reshape(n_cells, 2)
    s = np.bincount(key, weights=n * atoms_y, minlength=m).reshape(n_cells, 2)
    qq = np.bincount(key, weights=n * atoms_y * atoms_y, minlength=m).reshape(n_cells, 2)
    return CellStats(cnt[:, 1], cnt[:, 0], s[:, 1], s[:, 0], qq[:, 1], qq[:, 0])


@dataclass(frozen=True)
class CellGram:
    """Weighted Gram matrices XᵀWX of one cell design, without the dense cells × terms² product.

    Why: the logistic fit needs XᵀWX at every Newton step and the outcome models of the
    cross-checks need XᵀNX, thousands of times per question (bootstrap and refuter refits); as a
    dense product over a few thousand cells × 40 terms it was most of the matching question's
    time. The design is mostly one-hot blocks, so split the columns into the largest block ``B`` of
    mutually exclusive 0/1 columns (a covariate's dummies; ``hour_of_day`` has 23) and the rest
    ``R``. A cell is then (a distinct row ``g`` of X_R, which column of B it sets, if any), and with
    M[b, g] = Σ of the weights of those cells

        X_RᵀWX_R = X_Rgᵀ diag(Σ_b M[b, g]) X_Rg,   X_BᵀWX_R = M[1:] X_Rg,   X_BᵀWX_B = diag(Σ_g M[1:, g]),

    products over the few hundred distinct rows of X_R instead of the cells. The entries are the
    same sums taken in another order, so they agree with the dense product to rounding (≈1e-16
    relative; tests/test_psm_fastpaths.py), not bit for bit.
    """

    p: int  # design columns
    block: np.ndarray  # the columns of B
    rest: np.ndarray  # the columns of R
    level: np.ndarray  # per cell: 1 + which column of B it sets, 0 if none
    group: np.ndarray  # per cell: its distinct row of X_R
    XR: np.ndarray  # the distinct rows of X_R (groups × |R|)

    @classmethod
    def build(cls, X: np.ndarray) -> CellGram | None:
        """The plan for design ``X`` (cells × terms), or None when it would not beat the dense
        product (no one-hot block, or almost as many distinct X_R rows as cells)."""
        block = _largest_onehot_block(X)
        if len(block) < 2:
            return None
        rest = np.setdiff1d(np.arange(X.shape[1]), block)
        level = np.rint(X[:, block] @ np.arange(1, len(block) + 1)).astype(np.int64)
        group, first = _factorize_first(_row_key(X[:, rest]))
        plan = cls(X.shape[1], block, rest, level, group, np.ascontiguousarray(X[first][:, rest]))
        return plan if plan._cost() < 0.5 * X.shape[0] * X.shape[1] ** 2 else None

    def _cost(self) -> float:
        m, r = self.XR.shape
        return m * r * (r + len(self.block)) + len(self.level)

    def extend(self, rows: np.ndarray, codes: np.ndarray, levels: int) -> CellGram:
        """The plan of ``hstack([X[rows], one-hot(codes)[:, 1:]])`` (the random-common-cause
        refuter's design: each cell split by a new categorical), derived without rescanning X."""
        group, first = _factorize_first(self.group[rows] * levels + codes)
        dummies = np.eye(levels)[codes[first]][:, 1:]
        XR = np.hstack([self.XR[self.group[rows[first]]], dummies])
        rest = np.concatenate([self.rest, np.arange(self.p, self.p + levels - 1)])
        return CellGram(self.p + levels - 1, self.block, rest, self.level[rows], group, XR)

    def __call__(self, w: np.ndarray, cells: np.ndarray | None = None) -> np.ndarray:
        """XᵀWX for cell weights ``w`` (one per cell, or per cell of ``cells`` when given)."""
        m, nb = len(self.XR), len(self.block)
        level, group = (self.level, self.group) if cells is None else (self.level[cells], self.group[cells])
        M = np.bincount(level * m + group, weights=w, minlength=(nb + 1) * m).reshape(nb + 1, m)
        XR, r = self.XR, len(self.rest)
        H = np.zeros((self.p, self.p))  # rows and columns in the order R, B; put back below
        H[:r, :r] = (XR * M.sum(axis=0)[:, None]).T @ XR
        H[r:, :r] = M[1:] @ XR
        H[:r, r:] = H[r:, :r].T
        H[r:, r:].flat[::nb + 1] = M[1:].sum(axis=1)
        return H[self._unpermute]

    @cached_property
    def _unpermute(self) -> tuple[np.ndarray, np.ndarray]:
        """Index that takes a matrix in (R, B) order back to the design's column order."""
        back = np.argsort(np.concatenate([self.rest, self.block]))
        return np.ix_(back, back)

    def on(self, cells: np.ndarray | None = None) -> _PlannedDesign:
        """The three products the logistic fit needs, over ``cells`` (all when None)."""
        return _PlannedDesign(self, cells)


class _PlannedDesign:
    """Xβ, Xᵀr and XᵀWX over some cells of a ``CellGram``'s design, from its distinct X_R rows:
    X_Rβ_R is computed once per distinct row and gathered, Xᵀr is summed per distinct row (and
    per column of B) first, so no pass touches the cells × terms matrix. Same sums in another
    order as the dense products: equal to rounding."""

    def __init__(self, plan: CellGram, cells: np.ndarray | None):
        self.plan = plan
        self.cells = cells
        self.group = plan.group if cells is None else plan.group[cells]
        self.level = plan.level if cells is None else plan.level[cells]
        self.m = len(plan.XR)

    def dot(self, beta: np.ndarray) -> np.ndarray:
        pl = self.plan
        on_block = np.concatenate([[0.0], beta[pl.block]])
        return (pl.XR @ beta[pl.rest])[self.group] + on_block[self.level]

    def tdot(self, r: np.ndarray) -> np.ndarray:
        pl = self.plan
        out = np.empty(pl.p)
        out[pl.rest] = pl.XR.T @ np.bincount(self.group, weights=r, minlength=self.m)
        out[pl.block] = np.bincount(self.level, weights=r, minlength=len(pl.block) + 1)[1:]
        return out

    def gram(self, w: np.ndarray) -> np.ndarray:
        return self.plan(w, self.cells)


class _DenseDesign:
    """The same three products as ``_PlannedDesign``, straight from the rows of X."""

    def __init__(self, X: np.ndarray):
        self.X = X

    def dot(self, beta: np.ndarray) -> np.ndarray:
        return self.X @ beta

    def tdot(self, r: np.ndarray) -> np.ndarray:
        return self.X.T @ r

    def gram(self, w: np.ndarray) -> np.ndarray:
        return (self.X * w[:, None]).T @ self.X


def gram(X: np.ndarray, w: np.ndarray, plan: CellGram | None = None) -> np.ndarray:
    """XᵀWX through ``plan`` when there is one, else the dense product."""
    return plan(w) if plan is not None else (X * w[:, None]).T @ X


def _largest_onehot_block(X: np.ndarray) -> np.ndarray:
    """The longest run of adjacent non-constant 0/1 columns that no row sets twice (``_design``
    writes each covariate's dummies side by side). Any such run would do; the longest saves most."""
    binary = ((X == 0) | (X == 1)).all(axis=0) & (X.min(axis=0) != X.max(axis=0))
    best: list[int] = []
    run: list[int] = []
    used = np.zeros(X.shape[0])
    for j in range(X.shape[1]):  # over the design's columns, a few dozen
        if binary[j] and run and not (used + X[:, j] > 1).any():
            run.append(j)
            used += X[:, j]
        elif binary[j]:
            run, used = [j], X[:, j].copy()
        else:
            run, used = [], np.zeros(X.shape[0])
        if len(run) > len(best):
            best = list(run)
    return np.array(best, dtype=np.int64)


def _row_key(A: np.ndarray) -> np.ndarray:
    """An integer per row, equal exactly when the rows are (column codes combined, re-compacted
    before they could overflow)."""
    key = np.zeros(len(A), dtype=np.int64)
    span = 1
    for j in range(A.shape[1]):
        code, uniq = pd.factorize(A[:, j])
        card = max(len(uniq), 1)
        if span > (2**62) // card:
            key = pd.factorize(key)[0].astype(np.int64)
            span = int(key.max(initial=0)) + 1
        key = key * card + code
        span *= card
    return key


@dataclass
class LogitFit:
    beta: np.ndarray
    eta: np.ndarray  # linear predictor (logit of the propensity) per cell
    converged: bool
    n_iter: int

    @property
    def propensity(self) -> np.ndarray:
        return expit(self.eta)


def _loglik(eta: np.ndarray, n1: np.ndarray, n: np.ndarray) -> float:
    # n1*eta - n*log(1+exp(eta)), computed stably
    return float(n1 @ eta - n @ np.logaddexp(0.0, eta))


def fit_logit(X: np.ndarray | None, n1: np.ndarray, n0: np.ndarray, beta0: np.ndarray | None = None,
              max_iter: int = 100, tol: float = 1e-10, plan: CellGram | None = None) -> LogitFit:
    """Unpenalised grouped-binomial logistic regression by Newton–Raphson with step halving.

    Same coefficients as ``statsmodels.GLM(t, X, family=Binomial(), freq_weights=…)`` on the
    rows (tested). Cells with no units contribute nothing. Under (quasi-)separation the
    coefficients run off; we stop at ``max_iter`` and report ``converged=False`` instead of
    clipping anything. ``plan`` (``CellGram.build(X)``) computes Xβ, Xᵀr and the Hessian from
    the design's one-hot structure instead of the cells × terms matrix; they change by rounding.
    With a plan ``X`` may be None: the plan holds the design (the random-common-cause refits never
    write their split design out).
    """
    if X is None and plan is None:
        raise ValueError("fit_logit needs the design X or its CellGram")
    terms = X.shape[1] if X is not None else plan.p
    n = n1 + n0
    use = n > 0
    n1u, nu = n1[use], n[use]
    if plan is None:
        Xu = _DenseDesign(X[use])
    else:
        Xu = plan.on(None if use.all() else np.flatnonzero(use))
    beta = np.zeros(terms) if beta0 is None else beta0.copy()
    if beta0 is None:
        pbar = n1u.sum() / nu.sum()
        beta[0] = np.log(pbar / (1 - pbar)) if 0 < pbar < 1 else 0.0
    eta = Xu.dot(beta)
    ll = _loglik(eta, n1u, nu)
    converged = False
    it = 0
    for it in range(1, max_iter + 1):
        p = expit(eta)
        wgt = nu * p * (1 - p)
        grad = Xu.tdot(n1u - nu * p)
        H = Xu.gram(wgt)
        try:
            step = np.linalg.solve(H + 1e-12 * np.eye(len(beta)), grad)
        except np.linalg.LinAlgError:
            step = np.linalg.lstsq(H, grad, rcond=None)[0]
        t = 1.0
        while True:
            nb = beta + t * step
            neta = Xu.dot(nb)
            nll = _loglik(neta, n1u, nu)
            if nll >= ll - 1e-12 * abs(ll) or t < 1e-6:
                break
            t /= 2
        gain = nll - ll
        beta, eta, ll = nb, neta, nll
        if np.max(np.abs(t * step)) < tol or (0 <= gain < 1e-12 * max(1.0, abs(ll))):
            converged = bool(np.max(np.abs(eta)) < SEPARATION_LOGIT)  # eta is Xu·beta
            break
    eta_all = X @ beta if plan is None else plan.on().dot(beta)
    return LogitFit(beta, eta_all, converged, it)


def dowhy_design(df: pd.DataFrame, covariates: list[str]) -> pd.DataFrame:
    """DoWhy 0.14's propensity design: its own ``one_hot_encode(drop_first=True)`` (numeric
    columns first in sorted order, then the dummies of object/string/category columns)."""
    from dowhy.utils.encoding import one_hot_encode

    enc, _ = one_hot_encode(df[covariates], drop_first=True)
    return enc


def fit_sklearn_default(X: np.ndarray, t: np.ndarray, sample_weight: np.ndarray | None = None) -> np.ndarray:
    """DoWhy's default propensity model: ``sklearn.linear_model.LogisticRegression()`` (L2, C=1,
    lbfgs). Returns the logit per row of ``X``. Only for reproducing DoWhy's numbers."""
    from sklearn.linear_model import LogisticRegression

    m = LogisticRegression().fit(X, t, sample_weight=sample_weight)
    return m.decision_function(X)
