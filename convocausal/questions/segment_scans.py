"""One scan per segment column instead of one per segment level (issue 16's segments at 10M rows).

Why: a segment re-answers the question on a view ``SELECT * FROM relation WHERE CAST(col AS VARCHAR) =
'level'`` (``outcomes._segments``), and every read of that view — the pre-flight, the method's cells, the
extraction-sensitivity count — scans the whole relation again: at 10M conversations 0.1–0.5 s a read,
for every level. Within a :func:`shared_segment_scans` block a reader asks :func:`per_level` instead:
the first level's read runs the same query on the base relation grouped by ``CAST(col AS VARCHAR)``
too, and every level takes its own group. The groups are exactly the view's rows (the view's filter
is that same expression compared with ``str(level)``, or ``col IS NULL`` for the null level, whose cast
is null too), so each level gets the aggregates its own query returns: the same rows, counted and
summed by DuckDB as before (only the order of a level's output rows may differ, as between any two
runs of a GROUP BY).

The question's own read can serve its segments too (:func:`prefill`): it runs with ``GROUP BY
GROUPING SETS`` — the grand total (or the question's own keys) and the same with each segment column —
in one scan; the grand-total set aggregates the same rows as the plain query, so the question's own
numbers are those it had. Diff-in-diff cells are prefilled only when the pre-flight's read saw at most
``MAX_SEGMENT_LEVELS`` levels (more is refused anyway, and each level multiplies the cells).

A view is known here only while :func:`segment_view` has it open; anything else (the extraction-
sensitivity temp tables, the net-value view, a guardrail's answer) reads as before.
"""

from __future__ import annotations

import contextvars
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import pandas as pd

from methods.sql import quote_ident as q

SEGMENT = "_segment_level"  # the level column a grouped read adds (no signal name starts with an underscore)


@dataclass(frozen=True)
class SegmentView:
    base: str  # the relation the view filters
    column: str  # the segment column
    level: str | None  # the level as the view's filter compares it: str(value), None for the null level


_VIEWS: contextvars.ContextVar[dict | None] = contextvars.ContextVar("convocausal_segment_views", default=None)
_KEPT: contextvars.ContextVar[dict | None] = contextvars.ContextVar("convocausal_segment_scans", default=None)


@contextmanager
def shared_segment_scans() -> Iterator[None]:
    """Within this block a segment level's reads come from one grouped read per column. Nested blocks
    share the outermost one; leaving it drops everything kept."""
    if _KEPT.get() is not None:
        yield
        return
    views, kept = _VIEWS.set({}), _KEPT.set({})
    try:
        yield
    finally:
        _KEPT.reset(kept)
        _VIEWS.reset(views)


def level_filter(col: str, value) -> str:
    """SQL: the rows of ``col`` = ``value`` (values compared as text; None is the null level)."""
    if value is None:
        return f"{q(col)} IS NULL"
    return f"CAST({q(col)} AS VARCHAR) = '" + str(value).replace("'", "''") + "'"


def level_sql(col: str) -> str:
    """The grouping expression whose groups are :func:`level_filter`'s rows, one per level."""
    return f"CAST({q(col)} AS VARCHAR)"


@contextmanager
def segment_view(con, relation: str, col: str, value) -> Iterator[str]:
    """A temp view of ``relation`` restricted to ``col`` = ``value``, known to :func:`per_level` while open."""
    view = f"_segment_{uuid.uuid4().hex[:12]}"
    con.execute(f"CREATE OR REPLACE TEMP VIEW {view} AS SELECT * FROM {relation} WHERE {level_filter(col, value)}")
    views = _VIEWS.get()
    if views is not None:
        views[view] = SegmentView(relation, col, None if value is None else str(value))
    try:
        yield view
    finally:
        if views is not None:
            views.pop(view, None)
        con.execute(f"DROP VIEW IF EXISTS {view}")


def segment_of(relation: str) -> SegmentView | None:
    """The open segment view ``relation`` is, inside a :func:`shared_segment_scans` block; else None."""
    views = _VIEWS.get()
    return None if views is None else views.get(relation)


def per_level(con, relation: str, key: tuple, read: Callable[[str, str], object]) -> tuple[str | None, object] | None:
    """``(level, grouped)`` when ``relation`` is an open segment view: ``grouped`` is the reader's query on
    the view's base relation with the level as a further grouping, and ``level`` the group that is this
    view's rows (None: the null level). Else None (the reader queries ``relation`` itself).

    ``read(base, level_expr)`` runs the reader's query on ``base`` with ``level_expr`` (the level's text,
    NULL for the null level) as a further grouping; it runs once per (connection, base, column, ``key``)
    in the block, so ``key`` must name everything else the query depends on (its SQL and parameters)."""
    seg = segment_of(relation)
    kept = _KEPT.get()
    if seg is None or kept is None:
        return None
    full = (id(con), seg.base, seg.column, key)
    if full not in kept:
        kept[full] = (con, read(seg.base, level_sql(seg.column)))  # con kept: its id stays unique
    return seg.level, kept[full][1]


def prefill(con, relation: str, columns: Sequence[str], key: tuple,
            read: Callable[[str, list[str]], tuple[object, list[object]] | None]) -> tuple[bool, object]:
    """``(True, own)``: the reader's query on ``relation`` itself, run once with every segment column's
    levels grouped in the same scan (``GROUP BY GROUPING SETS``), whose per-level parts are kept for the
    segment views :func:`per_level` reads later (same ``key``). ``(False, None)`` outside a block, for a
    segment view, without columns, or when ``read`` gives None; the reader then queries as before.

    ``read(relation, level_exprs)`` returns ``(own, [grouped per column])``: ``own`` what the plain query
    returns (the grand-total grouping set: the same rows aggregated the same way), each grouped value as
    ``per_level``'s ``read`` would give it for that column."""
    kept = _KEPT.get()
    if kept is None or not columns or segment_of(relation) is not None:
        return False, None
    got = read(relation, [level_sql(c) for c in columns])
    if got is None:
        return False, None
    own, grouped = got
    for col, value in zip(columns, grouped):
        kept.setdefault((id(con), relation, col, key), (con, value))
    return True, own


def scan_with_levels(con, select: str, relation: str, where: str, params: Sequence,
                     level_exprs: list[str]) -> tuple[tuple, list[dict]] | None:
    """``SELECT {select} FROM relation WHERE where`` once for the relation (the grand total) and once per
    level of every ``level_exprs`` column (GROUPING SETS, one scan): ``(own row, [{level: row}])`` as a
    :func:`prefill` ``read`` gives them; None when the grand-total row is missing."""
    m = len(level_exprs)
    out = con.execute(
        f"SELECT {', '.join(f'GROUPING({e})' for e in level_exprs)}, {', '.join(level_exprs)}, {select} "
        f"FROM {relation} WHERE {where} GROUP BY GROUPING SETS ((), {', '.join(f'({e})' for e in level_exprs)})",
        list(params)).fetchall()
    own = [row[2 * m:] for row in out if all(row[:m])]
    grouped = [{row[m + i]: row[2 * m:] for row in out if not row[i]} for i in range(m)]
    return (own[0], grouped) if len(own) == 1 else None


def known_levels(con, relation: str, col: str) -> int | None:
    """How many levels of ``col`` a kept grouped read of ``relation`` saw (the most over reads), or None."""
    kept = _KEPT.get() or {}
    seen = [len(v[1]) for k, v in kept.items() if k[:3] == (id(con), relation, col) and isinstance(v[1], dict)]
    return max(seen) if seen else None


def level_rows(grouped: pd.DataFrame, level: str | None) -> pd.DataFrame:
    """The rows of a grouped read (its level column ``SEGMENT``) that are one level's, without that column,
    numbered from 0 like a query's own result."""
    values = grouped[SEGMENT]
    mask = values.isna() if level is None else (values == level).fillna(False).astype(bool)
    return grouped.loc[mask.to_numpy()].drop(columns=SEGMENT).reset_index(drop=True)
