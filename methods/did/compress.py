"""Sufficient statistics for linear diff-in-diff: compress rows to cells in DuckDB, fit WLS on cells.

Why: every regressor of the DiD models (treated, period, fixed-effect levels) is categorical, so
rows that share all of them share one row of the design matrix. Grouping by those keys plus the
cluster and keeping ``n = count``, ``sum_y`` and ``sum_y2`` per cell loses nothing a linear model
needs:

* point estimates — WLS of the cell mean on the cell's design row with weight ``n`` solves the
  same normal equations as row-level OLS (``X'X = Σ n_c x_c x_c'``, ``X'y = Σ x_c sum_y_c``):
  **exact**;
* cluster-robust (CR1) covariance — the cluster score ``Σ_{i∈g} x_i e_i`` equals
  ``Σ_{c∈g} x_c (sum_y_c − n_c x_c'β)`` because cells are nested in clusters (the cluster is a
  GROUP BY key): **exact**, including statsmodels' small-sample factor G/(G−1)·(N−1)/(N−K);
* heteroskedasticity-robust (HC1) covariance — needs ``Σ_{i∈c} e_i² = sum_y2 − 2 fit·sum_y +
  n fit²``: **exact** (up to floating-point cancellation when residuals are tiny vs. levels);
* the classical (non-robust) covariance — needs the residual sum of squares, same formula: exact.

Only the cell table ever leaves DuckDB; the conversation table is never pulled whole. Column
names come from configuration: they are checked against the relation's columns and quoted, and
design matrices are built with numpy/pandas dummies, never with formula strings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pandas as pd
import scipy.linalg as sla
import scipy.sparse as sp
import statsmodels.api as sm

from methods.sql import quote_ident, relation_columns


def validate_columns(available: Sequence[str], wanted: dict[str, str | None]) -> None:
    """Raise ValueError naming every requested column (by role) that the relation lacks."""
    have = set(available)
    missing = [f"{role}={name!r}" for role, name in wanted.items() if name is not None and name not in have]
    if missing:
        raise ValueError(
            "unknown column(s) " + ", ".join(missing) + "; available: " + ", ".join(map(str, available))
        )


def compress(con: duckdb.DuckDBPyConnection, relation: str, outcome: str, keys: dict[str, str],
             nullable: Sequence[str] = ()) -> pd.DataFrame:
    """Cell table: one row per distinct combination of the ``keys`` columns with n, sum_y, sum_y2.

    ``keys`` maps a role name (the cell table's column, e.g. ``"treated"``) to a column of the
    relation; one column may serve several roles (a fixed effect that is also the cluster) and is
    grouped once. Using role names, not the user's names, keeps user columns called ``n`` or
    ``sum_y`` from colliding with the statistics. Rows with a null outcome or a null key are
    dropped (listwise, like statsmodels' ``missing="drop"``) except for roles in ``nullable``
    (e.g. a staggered rollout's cohort, null for never-treated units). The outcome is cast to
    DOUBLE (booleans become 0/1).
    """
    validate_columns(relation_columns(con, relation), {"outcome": outcome, **keys})
    return compress_from(con, quote_ident(relation), outcome, keys, nullable)


def compress_from(con: duckdb.DuckDBPyConnection, source: str, outcome: str, keys: dict[str, str],
                  nullable: Sequence[str] = (), params: Sequence = ()) -> pd.DataFrame:
    """``compress`` on a FROM item given as SQL (a quoted relation, or a parenthesised subquery with an
    alias whose ``?`` placeholders take ``params``); its columns are not checked here."""
    cols = list(dict.fromkeys(keys.values()))
    y = f"CAST({quote_ident(outcome)} AS DOUBLE)"
    kq = [quote_ident(c) for c in cols]
    aliases = [f"k{i}" for i in range(len(cols))]
    skip_null = {keys[r] for r in nullable if r in keys} - {c for r, c in keys.items() if r not in nullable}
    select = "".join(f"{k} AS {a}, " for k, a in zip(kq, aliases))
    not_null = " AND ".join([f"{y} IS NOT NULL", *(f"{k} IS NOT NULL" for k, c in zip(kq, cols) if c not in skip_null)])
    sql = (
        f"SELECT {select}COUNT(*)::BIGINT AS n, SUM({y}) AS sum_y, SUM({y} * {y}) AS sum_y2 "
        f"FROM {source} WHERE {not_null}" + (f" GROUP BY {', '.join(aliases)}" if cols else "")
    )
    raw = result_frame(con, sql, params)
    cells = pd.DataFrame({role: _values(raw[aliases[cols.index(col)]]) for role, col in keys.items()},
                         index=raw.index)
    cells["n"] = raw["n"].to_numpy(np.int64)
    cells["sum_y"] = raw["sum_y"].to_numpy(np.float64)
    cells["sum_y2"] = raw["sum_y2"].to_numpy(np.float64)
    return cells


# result types whose Arrow round trip gives DuckDB back the same type (so the same pandas conversion)
_ARROW_SAFE = {"BOOLEAN", "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER",
               "UBIGINT", "FLOAT", "DOUBLE", "DATE", "VARCHAR"}


def result_frame(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence = ()) -> pd.DataFrame:
    """``con.execute(sql, params).df()``, the same frame (dtypes and values), with its text columns taken
    from Arrow: ``df()`` makes a Python string per value and pandas then converts them back to an Arrow
    string array (1 s of the 560k cells a segmented 10M question pulls). The other columns still go
    through DuckDB's own conversion (of the same types, read back from the Arrow table); a result with a
    type outside ``_ARROW_SAFE`` is fetched with ``df()``."""
    rel = con.sql(sql, params=list(params))
    types = [str(t) for t in rel.types]
    if "VARCHAR" not in types or not set(types) <= _ARROW_SAFE:
        return rel.df()
    table = rel.to_arrow_table()
    if table.num_rows == 0 or any(table[n].null_count == table.num_rows for n, t in zip(table.column_names, types)
                                  if t == "VARCHAR"):
        return con.from_arrow(table).df()  # no text to infer a string dtype from: df()'s own answer
    names = table.column_names
    text = {n for n, t in zip(names, types) if t == "VARCHAR"}
    rest = con.from_arrow(table.drop_columns(list(text))).df() if len(text) < len(names) else None
    string = pd.StringDtype("pyarrow", na_value=np.nan)
    return pd.DataFrame({n: pd.array(table[n], dtype=string) if n in text else rest[n].array for n in names},
                        index=pd.RangeIndex(table.num_rows))


def _values(column: pd.Series):
    """A result column's values for the cell table: text as it came (its string array: a round trip
    through numpy objects re-infers the same dtype and values, at 0.1 s per 10⁵ cells), the rest as numpy."""
    return column.array if isinstance(column.dtype, pd.StringDtype) else column.to_numpy()


def compress_sets(con: duckdb.DuckDBPyConnection, source: str, outcome: str, keys: dict[str, str],
                  also: Sequence[str], level_role: str = "level",
                  params: Sequence = ()) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
    """``compress_from``'s cells, and for each column of ``also`` the cells grouped by it as well (a
    nullable key, its values in role ``level_role``), from one scan (``GROUP BY GROUPING SETS``).

    Each is the table its own ``compress_from`` returns — ``keys``, and ``{**keys, level_role: col}`` with
    ``nullable=[level_role]`` — up to the order of its rows: the same WHERE keeps the same rows, and
    every grouping set aggregates them by its own keys. No ``nullable`` keys here."""
    cols = list(dict.fromkeys(keys.values()))
    y = f"CAST({quote_ident(outcome)} AS DOUBLE)"
    kq = [quote_ident(c) for c in cols]
    aliases = [f"k{i}" for i in range(len(cols))]
    lq = [quote_ident(c) for c in also]
    lvl = [f"l{i}" for i in range(len(also))]
    select = "".join(f"{k} AS {a}, " for k, a in zip(kq, aliases))
    select += "".join(f"{k} AS {a}, GROUPING({k}) AS g{i}, " for i, (k, a) in enumerate(zip(lq, lvl)))
    not_null = " AND ".join([f"{y} IS NOT NULL", *(f"{k} IS NOT NULL" for k in kq)])
    sets = [f"({', '.join(kq)})", *(f"({', '.join([*kq, k])})" for k in lq)]
    sql = (f"SELECT {select}COUNT(*)::BIGINT AS n, SUM({y}) AS sum_y, SUM({y} * {y}) AS sum_y2 "
           f"FROM {source} WHERE {not_null} GROUP BY GROUPING SETS ({', '.join(sets)})")
    raw = result_frame(con, sql, params)
    rolled = np.column_stack([raw[f"g{i}"].to_numpy() == 1 for i in range(len(also))]) if also else \
        np.ones((len(raw), 0), dtype=bool)

    def cells_of(mask: np.ndarray, extra: dict[str, str]) -> pd.DataFrame:
        part = raw.loc[mask].reset_index(drop=True)
        cells = pd.DataFrame({role: _values(part[aliases[cols.index(col)]]) for role, col in keys.items()},
                             index=part.index)
        for role, alias in extra.items():
            cells[role] = _values(part[alias])
        cells["n"] = part["n"].to_numpy(np.int64)
        cells["sum_y"] = part["sum_y"].to_numpy(np.float64)
        cells["sum_y2"] = part["sum_y2"].to_numpy(np.float64)
        return cells

    own = cells_of(rolled.all(axis=1), {})
    return own, [cells_of(~rolled[:, i], {level_role: lvl[i]}) for i in range(len(also))]


def frame_cells(df: pd.DataFrame, outcome: str, keys: dict[str, str], nullable: Sequence[str] = ()) -> pd.DataFrame:
    """Same cell table from an in-memory pandas frame (registered in a private DuckDB connection)."""
    validate_columns([str(c) for c in df.columns], {"outcome": outcome, **keys})
    con = duckdb.connect()
    try:
        con.register("did_frame", df)
        return compress(con, "did_frame", outcome, keys, nullable)
    finally:
        con.close()


def dummies(values: pd.Series, prefix: str) -> tuple[sp.csr_matrix, list[str]]:
    """Sparse indicator columns for every level but the first (sorted); names ``prefix=level``."""
    cat = pd.Categorical(values)
    codes = np.asarray(cat.codes)
    k = len(cat.categories)
    if k <= 1:
        return sp.csr_matrix((len(values), 0)), []
    rows = np.nonzero(codes > 0)[0]
    mat = sp.csr_matrix((np.ones(rows.size), (rows, codes[rows] - 1)), shape=(len(values), k - 1))
    return mat, [f"{prefix}={lvl}" for lvl in cat.categories[1:]]


def scale_rows(X: sp.spmatrix, v: np.ndarray) -> sp.csr_matrix:
    """diag(v) X without densifying."""
    return sp.csr_matrix(sp.diags(v) @ X)


@dataclass
class CellDesign:
    """A weighted design on cells: X (C×K, sparse: mostly dummies), n, sum_y, sum_y2, cluster codes."""

    X: sp.csr_matrix
    names: list[str]
    n: np.ndarray
    sum_y: np.ndarray
    sum_y2: np.ndarray
    groups: np.ndarray | None = None
    dropped: list[str] = field(default_factory=list)
    gram: np.ndarray | None = None  # X'X of the row-level design = Σ n_c x_c x_c' (computed once)

    @property
    def nobs(self) -> int:
        return int(self.n.sum())

    @property
    def n_groups(self) -> int:
        return 0 if self.groups is None else int(self.groups.max()) + 1

    def index(self, name: str) -> int:
        return self.names.index(name)


def make_design(X: np.ndarray | sp.spmatrix, names: list[str], cells: pd.DataFrame, cluster: str | None,
                protect: Sequence[str] = ()) -> CellDesign:
    """Drop collinear columns (later ones first, never a ``protect`` name unless unavoidable).

    A column is collinear when its residual variance after projecting on the earlier columns is
    tiny relative to its own: it adds nothing they don't span (e.g. a skill fixed effect absorbing
    ``treated``). Those residual variances are the squared diagonal of R in X = QR; R'R = X'WX, so
    R comes from a K×K square root of the Gram matrix (QR of the C×K cell design itself costs
    seconds at 100k cells). Which collinear column goes does not change the coefficients that
    stay identified.
    """
    n = cells["n"].to_numpy(np.float64)
    X = sp.csc_matrix(X)
    order = [i for i, nm in enumerate(names) if nm in protect] + [i for i, nm in enumerate(names) if nm not in protect]
    full = np.asarray((X.T @ scale_rows(X, n)).todense())
    A = full[np.ix_(order, order)]
    lam, vec = np.linalg.eigh(A)
    root = np.sqrt(np.clip(lam, 0.0, None))[:, None] * vec.T
    r2 = np.diag(sla.qr(root, mode="r")[0]) ** 2 if len(order) else np.zeros(0)
    diag = np.diag(A)
    keep = sorted(order[j] for j in range(len(order)) if diag[j] > 0 and r2[j] > 1e-9 * diag[j])
    groups = None
    if cluster is not None:
        groups = pd.Categorical(cells[cluster]).codes.astype(np.int64)
    return CellDesign(
        X=sp.csr_matrix(X[:, keep]), names=[names[i] for i in keep], n=n,
        sum_y=cells["sum_y"].to_numpy(np.float64), sum_y2=cells["sum_y2"].to_numpy(np.float64),
        groups=groups, dropped=[names[i] for i in range(len(names)) if i not in keep],
        gram=full[np.ix_(keep, keep)],
    )


@dataclass
class CellFit:
    """WLS fit on cells with the exact row-level covariance matrices."""

    design: CellDesign
    params: np.ndarray
    cov: np.ndarray
    cov_type: str  # "cluster" (CR1) | "HC1" | "nonrobust"

    def coef(self, name: str) -> float:
        return float(self.params[self.design.index(name)])

    def se(self, name: str) -> float:
        i = self.design.index(name)
        return float(np.sqrt(self.cov[i, i]))


def fit_wls(design: CellDesign, solver: str = "normal") -> np.ndarray:
    """Coefficients of row-level OLS from the cells.

    ``solver="statsmodels"``: statsmodels WLS of the cell means with weight n (QR; the reference,
    used for the headline 2×2 whose cells are few). ``"normal"``: Cholesky solve of the cell
    normal equations Σ n_c x_c x_c' β = Σ x_c sum_y_c — the same equations, at K×K cost, for the
    larger event-study and bootstrap designs (dummy designs are well conditioned).
    """
    if solver == "statsmodels":
        ybar = design.sum_y / design.n
        return np.asarray(sm.WLS(ybar, design.X.toarray(), weights=design.n).fit(method="qr").params, dtype=float)
    return sla.cho_solve(sla.cho_factor(gram(design)), design.X.T @ design.sum_y)


def group_matrix(design: CellDesign) -> sp.csr_matrix:
    """Sparse G×C indicator: multiplying it sums cell rows within clusters."""
    c = len(design.n)
    return sp.csr_matrix((np.ones(c), (design.groups, np.arange(c))), shape=(design.n_groups, c))


def cluster_scores(design: CellDesign, beta: np.ndarray, sum_y: np.ndarray | None = None) -> np.ndarray:
    """G×K cluster scores Σ_{c∈g} x_c (sum_y_c − n_c x_c'β) — equal to the row-level Σ_i x_i e_i."""
    sy = design.sum_y if sum_y is None else sum_y
    resid_sum = sy - design.n * (design.X @ beta)
    return np.asarray((group_matrix(design) @ scale_rows(design.X, resid_sum)).todense())


def gram(design: CellDesign) -> np.ndarray:
    """X'X of the row-level design from cells (cached on the design)."""
    if design.gram is None:
        design.gram = np.asarray((design.X.T @ scale_rows(design.X, design.n)).todense())
    return design.gram


def bread(design: CellDesign) -> np.ndarray:
    """(X'X)^{-1} of the row-level design, from cells."""
    return np.linalg.inv(gram(design))


def cr1_factor(n_groups: int, nobs: int, k: int) -> float:
    """statsmodels' default cluster correction: G/(G−1) · (N−1)/(N−K)."""
    return n_groups / (n_groups - 1.0) * (nobs - 1.0) / (nobs - k)


def cov_cluster(design: CellDesign, beta: np.ndarray) -> np.ndarray:
    """Exact CR1 covariance (as ``statsmodels.OLS(...).fit(cov_type="cluster")`` on the rows)."""
    Ainv = bread(design)
    S = cluster_scores(design, beta)
    k = design.X.shape[1]
    return cr1_factor(design.n_groups, design.nobs, k) * Ainv @ (S.T @ S) @ Ainv


def cell_sq_resid(design: CellDesign, beta: np.ndarray) -> np.ndarray:
    """Σ_{i∈c} e_i² per cell from the sufficient statistics (needs sum_y2)."""
    fit = design.X @ beta
    return np.maximum(design.sum_y2 - 2.0 * fit * design.sum_y + design.n * fit * fit, 0.0)


def cov_hc1(design: CellDesign, beta: np.ndarray) -> np.ndarray:
    """Exact HC1 covariance: (X'X)^{-1} Σ_c e²_c x_c x_c' (X'X)^{-1} · N/(N−K)."""
    Ainv = bread(design)
    e2 = cell_sq_resid(design, beta)
    meat = np.asarray((design.X.T @ scale_rows(design.X, e2)).todense())
    nobs, k = design.nobs, design.X.shape[1]
    return nobs / (nobs - k) * Ainv @ meat @ Ainv


def cov_nonrobust(design: CellDesign, beta: np.ndarray) -> np.ndarray:
    """Classical σ²(X'X)^{-1} with σ² = RSS/(N−K)."""
    rss = cell_sq_resid(design, beta).sum()
    return rss / (design.nobs - design.X.shape[1]) * bread(design)


def fit_cells(design: CellDesign, solver: str = "normal") -> CellFit:
    """WLS on cells with CR1 when a cluster is given, HC1 otherwise."""
    beta = fit_wls(design, solver)
    if design.groups is not None:
        return CellFit(design, beta, cov_cluster(design, beta), "cluster")
    return CellFit(design, beta, cov_hc1(design, beta), "HC1")


def numeric_block(n_rows: int, columns: Sequence[np.ndarray]) -> sp.csr_matrix:
    """The intercept and ``columns`` as a sparse C×(1+k) block: the matrix
    ``sp.csr_matrix(np.column_stack([ones, *columns]))`` (same entries, same sorted indices) without the
    dense C×(1+k) array in between (event-study designs: 10⁵ cells × dozens of mostly-zero columns)."""
    vals = [np.ones(n_rows)] + [np.asarray(v, dtype=float).reshape(n_rows) for v in columns]
    nz = [np.arange(n_rows)] + [np.flatnonzero(v) for v in vals[1:]]  # flatnonzero: what csr_matrix keeps
    indptr = np.concatenate([[0], np.cumsum([len(i) for i in nz])])
    csc = sp.csc_matrix((np.concatenate([v[i] for v, i in zip(vals, nz)]), np.concatenate(nz), indptr),
                        shape=(n_rows, len(vals)))
    return csc.tocsr()


def design_from_cells(cells: pd.DataFrame, numeric: dict[str, np.ndarray], fe_roles: Sequence[str] = (),
                      cluster_role: str | None = None, protect: Sequence[str] = ()) -> CellDesign:
    """Design on cells: intercept, the given numeric columns, then dummies for each fixed effect."""
    cols = [numeric_block(len(cells), list(numeric.values()))]
    names = ["const", *numeric.keys()]
    for role in fe_roles:
        mat, nm = dummies(cells[role], role)
        cols.append(mat)
        names.extend(nm)
    X = sp.hstack(cols, format="csc")
    return make_design(X, names, cells, cluster_role, protect=("const", *protect))


def coarsen(cells: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Sum cells over the roles not in ``keys`` (exactness holds at any level the model is constant on)."""
    keys = list(dict.fromkeys(keys))
    return cells.groupby(keys, as_index=False, sort=True, observed=True, dropna=False)[["n", "sum_y", "sum_y2"]].sum()


EFFECT = "treated:post"


def two_by_two_design(cells: pd.DataFrame, fe_roles: Sequence[str] = (), cluster_role: str | None = None) -> CellDesign:
    """outcome ~ treated + post + treated:post + fixed-effect dummies, on cells with 0/1 roles
    ``treated`` and ``post``. Cells are first summed to the model's own keys."""
    keys = ["treated", "post", *fe_roles, *([cluster_role] if cluster_role else [])]
    c = coarsen(cells, keys)
    t = c["treated"].to_numpy(float)
    p = c["post"].to_numpy(float)
    return design_from_cells(c, {"treated": t, "post": p, EFFECT: t * p}, fe_roles, cluster_role, protect=(EFFECT,))
