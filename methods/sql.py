"""The few SQL fragments every method's data pull shares, written once.

Names reaching SQL come from configuration or the command line; they are validated identifiers
upstream and are still double-quoted here. Values (selector values, dates) are always bound as
parameters, never pasted into the statement.
"""

from __future__ import annotations

import datetime as dt

import duckdb


def quote_ident(name: str) -> str:
    """A DuckDB identifier literal: double quotes, embedded quotes doubled."""
    return '"' + str(name).replace('"', '""') + '"'


def relation_sql(relation: str) -> str:
    """A table or view name (optionally schema-qualified) as quoted SQL; anything else is refused."""
    parts = relation.split(".") if isinstance(relation, str) else []
    if not parts or any(not p or not p.replace("_", "").isalnum() for p in parts):
        raise ValueError(f"relation {relation!r} is not a plain (optionally schema-qualified) table name")
    return ".".join(quote_ident(p) for p in parts)


def relation_columns(con: duckdb.DuckDBPyConnection, relation: str) -> list[str]:
    """Column names of ``relation`` (a table or view in ``con``)."""
    try:
        return [d[0] for d in con.execute(f"SELECT * FROM {relation_sql(relation)} LIMIT 0").description]
    except duckdb.Error as exc:
        raise ValueError(f"no table or view named {relation!r} in the DuckDB connection") from exc


def treated_selector_sql(treated: dict[str, list] | None) -> tuple[str, list]:
    """SQL boolean "this conversation is in the treated group", values bound as parameters.

    Every ``column: [values]`` pair must match (AND). A NULL in a selector column counts as not
    selected (``coalesce(…, FALSE)``), so the expression is never NULL: a conversation the selector
    does not name is untreated, in every design alike. An empty selector selects nothing.
    """
    parts, params = [], []
    for col, values in (treated or {}).items():
        if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
            values = [values]
        parts.append(f"coalesce(CAST({quote_ident(col)} AS VARCHAR) IN (SELECT unnest(?)), FALSE)")
        params.append([str(v).lower() if isinstance(v, bool) else str(v) for v in values])
    return (" AND ".join(parts) or "FALSE"), params


def date_window_sql(start: dt.date | None = None, end: dt.date | None = None,
                    column: str = "date") -> tuple[str, list]:
    """SQL boolean for ``start <= column <= end`` (either bound optional), values as parameters."""
    parts, params = ["TRUE"], []
    col = f"CAST({quote_ident(column)} AS DATE)"
    if start is not None:
        parts.append(f"{col} >= ?")
        params.append(start)
    if end is not None:
        parts.append(f"{col} <= ?")
        params.append(end)
    return " AND ".join(parts), params
