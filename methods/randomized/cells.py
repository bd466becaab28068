"""Sufficient statistics for randomized designs: one GROUP BY in DuckDB, linear models on the cells.

Why cells: every regressor of the randomized estimators — the arm, the uptake, the covariates —
is constant within a cell (one distinct combination of their values), and only the outcome varies
inside it. Keeping ``n`` (rows with an outcome), the mean and the within-cell sum of squares of
the outcome per cell loses nothing a linear model needs: weighted least squares on cell means
with weight ``n`` solves the row-level normal equations, and a row's squared residual summed
over its cell is ``ss + n·(ȳ − fit)²``, so HC0/HC1 *and* HC2 covariances are exact too (a row's
leverage depends on its regressors only, so it is one number per cell). Uptake is a grouping key,
so first-stage residuals are cell constants and 2SLS's robust covariance is exact as well.

The within-cell sum of squares comes from DuckDB's ``var_pop`` (a stable one-pass algorithm), not
from ``Σy² − n·ȳ²``, so residual sums do not cancel catastrophically when the outcome's level is
large against its spread. Rows whose outcome is null stay in the cell counts (``n_all``): the
sample-ratio and balance checks count every assigned conversation, not only those with an outcome.

Categorical covariates compress well (arms × uptake × levels); a numeric covariate with many
distinct values (a pre-period rate for CUPED) gives about one cell per distinct value, at most
one per row — still exact, only less compressed (round such a covariate to compress it). Only
the cell table leaves DuckDB.

Missing covariates are kept, not dropped: a numeric covariate's null becomes 0 plus a missing
indicator, a categorical one's null a level of its own. Dropping rows on a pre-period covariate
would change the population the intent-to-treat effect is about (e.g. new customers without a
pre-period), and filling plus an indicator is the standard, assignment-independent fix.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd

from methods.result import MethodRefusal
from methods.sql import quote_ident, relation_sql

MISSING_LEVEL = "(missing)"
MAX_DESIGN_COLUMNS = 300  # covariate columns after dummies: beyond this a typo (an id column) is likelier
_NUMERIC = re.compile(r"^(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|UTINYINT|USMALLINT|UINTEGER|UBIGINT|UHUGEINT|"
                      r"FLOAT|REAL|DOUBLE|DECIMAL.*|BOOLEAN)$", re.IGNORECASE)


@dataclass
class Cells:
    """The cell table of one randomized question.

    ``table`` columns: ``arm`` (the arm's label, text), ``d`` (uptake 0/1, when given), one key
    column per covariate (``v0``, ``v1``, … by position, so user names never collide with the
    statistics) plus ``m<i>`` missing indicators of numeric covariates, ``n_all`` (rows), and per
    outcome ``k``: ``n_k`` (rows with that outcome), ``ybar_k``, ``ss_k``.
    """

    table: pd.DataFrame
    outcomes: list[str]
    covariates: list[str]
    numeric: dict[str, bool]  # covariate -> treated as a number (else categories)
    has_uptake: bool

    def arms(self) -> list[str]:
        return sorted(self.table["arm"].unique(), key=_sort_key)

    def counts(self, k: int | None = None) -> pd.Series:
        """Rows per arm: every assigned row (``k`` None) or rows with outcome ``k``."""
        col = "n_all" if k is None else f"n_{k}"
        return self.table.groupby("arm", sort=False)[col].sum().reindex(self.arms()).astype(np.int64)


def arm_label(value: object) -> str:
    """One text label per arm, so 0/1, true/false and 0.0/1.0 assignments read alike ("0", "1")."""
    if isinstance(value, (bool, np.bool_)):
        return "1" if value else "0"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return str(int(value)) if math.isfinite(value) and float(value).is_integer() else repr(float(value))
    text = str(value)
    return {"true": "1", "false": "0"}.get(text.lower(), text)


def _sort_key(label: str):
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def column_types(con: duckdb.DuckDBPyConnection, relation: str) -> dict[str, str]:
    try:
        rows = con.execute(f"DESCRIBE SELECT * FROM {relation_sql(relation)}").fetchall()
    except duckdb.Error as exc:
        raise ValueError(f"no table or view named {relation!r} in the DuckDB connection") from exc
    return {r[0]: str(r[1]) for r in rows}


def compress(con: duckdb.DuckDBPyConnection, relation: str, outcomes: Sequence[str], assignment: str,
             uptake: str | None = None, covariates: Sequence[str] = ()) -> Cells:
    """Cell table of ``relation`` (module doc). Rows with a null assignment are left out (counted in
    no arm); a null uptake counts as not taken up (a tool never called, a behaviour never shown)."""
    types = column_types(con, relation)
    wanted = {"assignment": assignment, **({"uptake": uptake} if uptake else {}),
              **{f"outcome {o}": o for o in outcomes}, **{f"covariate {c}": c for c in covariates}}
    missing = [f"{role}={name!r}" for role, name in wanted.items() if name not in types]
    if missing:
        raise ValueError("unknown column(s) " + ", ".join(missing) + "; available: " + ", ".join(types))
    covariates = list(dict.fromkeys(c for c in covariates if c not in (assignment, uptake)))
    keys, names = [f"{quote_ident(assignment)} AS arm"], ["arm"]
    if uptake:
        keys.append(f"coalesce(CAST({quote_ident(uptake)} AS DOUBLE), 0.0) AS d")
        names.append("d")
    numeric: dict[str, bool] = {}
    for i, c in enumerate(covariates):
        cq = quote_ident(c)
        numeric[c] = bool(_NUMERIC.match(types[c]))
        if numeric[c]:
            keys += [f"coalesce(CAST({cq} AS DOUBLE), 0.0) AS v{i}", f"CAST({cq} IS NULL AS INTEGER) AS m{i}"]
            names += [f"v{i}", f"m{i}"]
        else:
            keys.append(f"coalesce(CAST({cq} AS VARCHAR), '{MISSING_LEVEL}') AS v{i}")
            names.append(f"v{i}")
    stats = ["COUNT(*)::BIGINT AS n_all"]
    for k, o in enumerate(outcomes):
        y = f"CAST({quote_ident(o)} AS DOUBLE)"
        stats += [f"COUNT({y})::BIGINT AS n_{k}", f"AVG({y}) AS ybar_{k}",
                  f"coalesce(VAR_POP({y}) * COUNT({y}), 0.0) AS ss_{k}"]
    sql = (f"SELECT {', '.join(keys)}, {', '.join(stats)} FROM {relation_sql(relation)} "
           f"WHERE {quote_ident(assignment)} IS NOT NULL GROUP BY ALL")
    try:
        table = con.execute(sql).df()
    except duckdb.ConversionException as exc:
        raise MethodRefusal(f"an outcome or the uptake is not numeric or true/false ({str(exc).splitlines()[0]})") from exc
    table["arm"] = [arm_label(v) for v in table["arm"]]
    for k in range(len(outcomes)):
        table[f"ybar_{k}"] = table[f"ybar_{k}"].astype(float).fillna(0.0)
        table[f"ss_{k}"] = table[f"ss_{k}"].astype(float)
    if uptake:
        bad = sorted(set(table["d"].unique()) - {0.0, 1.0})
        if bad:
            raise MethodRefusal(f"uptake `{uptake}` must be 0/1 or true/false (null counts as 0); found "
                                + ", ".join(f"{v:g}" for v in bad[:6]))
    return Cells(table, list(outcomes), covariates, numeric, bool(uptake))


def frame_cells(df: pd.DataFrame, outcomes: Sequence[str], assignment: str, uptake: str | None = None,
                covariates: Sequence[str] = ()) -> Cells:
    """The same cell table from an in-memory pandas frame (registered in a private DuckDB connection)."""
    con = duckdb.connect()
    try:
        con.register("randomized_frame", df)
        return compress(con, "randomized_frame", outcomes, assignment, uptake, covariates)
    finally:
        con.close()


def to_cells(data, outcomes: Sequence[str], assignment: str, uptake: str | None = None,
             covariates: Sequence[str] = ()) -> Cells:
    """``data``: a pandas frame, or a ``(duckdb_connection, relation_name)`` pair compressed in DuckDB."""
    if isinstance(data, tuple):
        con, relation = data
        return compress(con, relation, outcomes, assignment, uptake, covariates)
    return frame_cells(data, outcomes, assignment, uptake, covariates)


@dataclass
class Covariates:
    """Covariate design columns on the cells: numeric values, missing indicators, level dummies."""

    X: np.ndarray  # C x p
    names: list[str]
    source: list[str]  # the covariate each column comes from


def covariate_matrix(cells: Cells, rows: np.ndarray | None = None) -> Covariates:
    """Design columns of the covariates on the cells (``rows``: a boolean mask of cells, else all).

    Numbers enter linearly with their missing indicator (only when some value is missing); text
    enters as one dummy per level but the first in sorted order (the intercept carries it).
    Levels and indicators are chosen on the rows used, so an absent level never makes a zero column.
    """
    t = cells.table if rows is None else cells.table.loc[rows]
    cols, names, source = [], [], []
    for i, c in enumerate(cells.covariates):
        if cells.numeric[c]:
            cols.append(t[f"v{i}"].to_numpy(float))
            names.append(c)
            source.append(c)
            m = t[f"m{i}"].to_numpy(float)
            if m.any() and not m.all():
                cols.append(m)
                names.append(f"{c}[missing]")
                source.append(c)
        else:
            values = t[f"v{i}"].astype(str).to_numpy()
            for level in sorted(set(values))[1:]:
                cols.append((values == level).astype(float))
                names.append(f"{c}={level}")
                source.append(c)
    if len(cols) > MAX_DESIGN_COLUMNS:
        raise MethodRefusal(f"the covariates make {len(cols)} design columns (more than {MAX_DESIGN_COLUMNS}): "
                            "a covariate with that many levels is likely an identifier; drop it or group its levels")
    X = np.column_stack(cols) if cols else np.zeros((len(t), 0))
    return Covariates(X, names, source)
