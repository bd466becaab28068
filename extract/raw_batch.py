"""Raw reader, stage 4: from files to one :class:`RawBatch` — read many, finish, merge.

Why a module of its own: every table (transcripts, outcomes, customers) goes through the same
frame: read and cast each file (stopping at, or listing, an unreadable one), apply the table's
rules as reasons, then split into ``accepted`` and ``quarantine`` and check that
``raw = accepted + quarantined`` holds. Only the rules differ per table; this is the rest.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterable
from pathlib import Path

import duckdb
import pandera.polars as pa
import polars as pl

from extract.quarantine import quarantine_frame
from extract.raw_cast import add_reason, normalize
from extract.raw_contract import (
    QUARANTINE_SCHEMA,
    REASON_COL,
    REASON_CONFLICTING_KEY,
    REASON_DUPLICATE_KEY_COPY,
    REPAIR_TEXT_UTF8,
    ROW_COL,
    OnUnreadable,
    RawBatch,
    check_on_unreadable,
)
from extract.raw_files import Unreadable, read_file, unreadable_error


# ============================================================================ shared helpers
def empty_batch(dtypes: dict[str, pl.DataType], table: str, **extra) -> RawBatch:
    accepted = pl.DataFrame(schema={**dtypes, "source_file": pl.String()})
    counts = {
        "table": table,
        "files": 0,
        "raw_rows": 0,
        "accepted": 0,
        "quarantined": 0,
        "quarantined_by_reason": {},
        "unreadable_files": [],
        "missing_optional_columns": {},
        "repaired": {},
        **extra,
    }
    return RawBatch(accepted, pl.DataFrame(schema=QUARANTINE_SCHEMA), counts)


def read_or_skip(path: Path, dtypes: dict[str, pl.DataType], required: Iterable[str], on_unreadable: OnUnreadable):
    """``read_file``'s frame and missing optional columns, and None; or, for an unreadable file the
    caller skips (``on_unreadable="quarantine"``), None, None and the error (``"stop"`` raises it,
    naming the file)."""
    try:
        stored, optional_missing = read_file(path, dtypes, required)
    except Unreadable as exc:
        if on_unreadable == "stop":
            raise unreadable_error(path, exc) from None
        return None, None, str(exc)
    return stored, optional_missing, None


def read_many(
    files: list[Path],
    dtypes: dict[str, pl.DataType],
    required: Iterable[str],
    on_unreadable: OnUnreadable,
    row_filter=None,
) -> tuple[pl.DataFrame | None, dict[str, pl.DataFrame], dict]:
    """Read + normalize files; ``row_filter(path, stored_df) -> bool mask`` narrows rows before casting."""
    check_on_unreadable(on_unreadable)
    frames, originals = [], {}
    info = {"files": 0, "unreadable_files": [], "missing_optional_columns": {}, "repaired": 0}
    for path in files:
        stored, optional_missing, error = read_or_skip(path, dtypes, required, on_unreadable)
        if error is not None:
            info["unreadable_files"].append({"file": str(path), "error": error})
            continue
        if row_filter is not None:
            stored = stored.filter(row_filter(path, stored))
        src = str(path)
        norm, n_rep = normalize(stored, dtypes, required, src)
        info["files"] += 1
        info["repaired"] += n_rep
        if optional_missing:
            info["missing_optional_columns"][src] = optional_missing
        originals[src] = stored
        frames.append(norm)
    if not frames:
        return None, originals, info
    return pl.concat(frames, how="vertical"), originals, info


def validate_accepted(schema: type[pa.DataFrameModel], accepted: pl.DataFrame, table: str,
                      keys_proven: bool = False) -> None:
    """Public name of the accepted-rows check, for callers that batch it over several days.

    ``keys_proven``: the caller has shown, exactly, that the rows meet the schema's uniqueness and its
    dataframe-level checks (for transcripts: :func:`extract.raw_transcripts.conversation_runs_hold_keys`),
    so only the column checks (types, nulls, ranges, allowed values) run."""
    _validate_accepted(schema, accepted, table, keys_proven)


def _validate_accepted(schema: type[pa.DataFrameModel], accepted: pl.DataFrame, table: str,
                       keys_proven: bool = False) -> None:
    """Schema failure after the row rules ran is a bug in the rules, not bad input.

    The schema's uniqueness (of a column, or of a set of columns: the transcripts' conversation
    and turn) is checked here instead of by pandera: its check of a string column took 3.7 s of
    3.7 s for 10M outcome rows and 0.35 of 0.73 s for a 2M-message chunk (polars' string
    hashing), where :func:`is_unique` takes 0.25 s and 0.09 s with the same answer."""
    checked, unique = _schema_columns_only(schema) if keys_proven else _schema_without_unique(schema)
    try:
        checked.validate(accepted, lazy=True)
    except (pa.errors.SchemaErrors, pa.errors.SchemaError) as exc:
        raise RuntimeError(
            f"internal error: accepted {table} rows fail {schema.__name__} after quarantine rules: {exc}"
        ) from exc
    for columns in unique:
        if set(columns) <= set(accepted.columns) and not is_unique(accepted.select(columns)):
            raise RuntimeError(f"internal error: accepted {table} rows fail {schema.__name__} after quarantine "
                               f"rules: {_named(columns)} duplicate values")


def _named(columns: tuple[str, ...]) -> str:
    if len(columns) == 1:
        return f"column {columns[0]!r} holds"
    return f"columns {' and '.join(map(repr, columns))} together hold"


@functools.cache
def _schema_columns_only(schema: type[pa.DataFrameModel]):
    """The model's column checks alone: no uniqueness, no dataframe-level check (both proven by the caller)."""
    checked = copy.deepcopy(_schema_without_unique(schema)[0])
    checked.checks = []
    return checked, ()


@functools.cache
def _schema_without_unique(schema: type[pa.DataFrameModel]):
    """The model's schema with ``unique`` switched off, and the column sets it was on for: each
    ``unique`` column alone, and the model's ``Config.unique`` columns together."""
    full = schema.to_schema()
    unique = [(name,) for name, column in full.columns.items() if column.unique]
    checked = full.update_columns({name: {"unique": False} for (name,) in unique}) if unique else full
    if full.unique:
        unique.append(tuple([full.unique] if isinstance(full.unique, str) else full.unique))
        checked = copy.deepcopy(checked)
        checked.unique = None
    return checked, tuple(unique)


def is_member(values: pl.Series, pool: pl.Series) -> pl.Series:
    """``values.is_in(pool)`` (null where a value is null), exactly: a DuckDB semi-join on the strings.

    Why: ``is_in`` over 10M string ids against 10M known ids took 4–5 s (polars hashes the strings
    into its own table), a polars join on their 64-bit hashes (then the strings of equal hashes
    compared) 2.2 s, DuckDB's semi-join of the strings themselves 1.2 s on 2 cores. Equality of
    the strings decides, so no hash collision can make an unknown value look known."""
    values = values.cast(pl.String)
    views = pl.CompatLevel.newest()  # string views, as polars holds them: no copy of 10M strings on the way in
    with duckdb.connect() as con:
        con.register("_values", pl.DataFrame({"v": values}).with_row_index("row").to_arrow(compat_level=views))
        con.register("_pool", pl.DataFrame({"p": pool.cast(pl.String)}).to_arrow(compat_level=views))
        hit = pl.from_arrow(con.sql("SELECT row FROM _values SEMI JOIN _pool ON _values.v = _pool.p")
                            .to_arrow_table().column("row"))
    found = pl.Series("found", [False] * len(values), dtype=pl.Boolean).scatter(hit, True)
    return pl.select(pl.when(values.is_not_null()).then(found)).to_series().alias(values.name)


def _sorted_without_nulls(s: pl.Series) -> bool:
    """No null and every value at least the one before (one pass; a sort of such a column returns it as it is)."""
    return s.null_count() == 0 and s.is_sorted()


def in_order(df: pl.DataFrame, by: list[str]) -> bool:
    """Whether a stable sort of ``df`` by the one column ``by`` would return ``df`` as it is (more columns: False)."""
    return len(by) == 1 and _sorted_without_nulls(df[by[0]])


def is_unique(frame: pl.DataFrame) -> bool:
    """No two rows of ``frame`` are equal (nulls equal to each other), exactly.

    First the rows' 64-bit hashes: all distinct means all rows distinct. Equal hashes are a real
    duplicate or, once in about 10¹² pairs, a collision; only then are the values themselves compared."""
    if frame.height < 2:
        return True
    if frame.width == 1 and _sorted_without_nulls(frame.to_series()):
        # a key column in order (an export by id, the usual one): equal values are neighbours, so one
        # comparison with the row before decides, where the hashes' distinct count took 0.3 s at 10M rows
        s = frame.to_series()
        return not bool((s.slice(1) == s.slice(0, s.len() - 1)).any())
    hashes = frame.select(pl.struct(pl.all()).hash().alias("h")).to_series()
    return hashes.n_unique() == frame.height or frame.select(pl.struct(pl.all()).n_unique()).item() == frame.height


def finish(
    df: pl.DataFrame,
    originals: dict[str, pl.DataFrame],
    info: dict,
    dtypes: dict[str, pl.DataType],
    schema: type[pa.DataFrameModel],
    table: str,
    sort_by: list[str],
    extra_counts: dict | None = None,
    validate: bool = True,
    keep_row: bool = False,
) -> RawBatch:
    """Split into accepted and quarantine and count them. ``validate=False`` leaves the pandera
    check of the accepted rows (a check of the rules, not of the input) to the caller, which runs
    it once over many days' batches (:func:`validate_accepted`). ``keep_row``: both frames keep
    each row's number in its stored file (``ROW_COL``, last), for a check applied afterwards
    (:func:`extract.raw.apply_known_conversations`)."""
    good = df.filter(pl.col(REASON_COL).is_null())
    bad = df.filter(pl.col(REASON_COL).is_not_null())
    kept = [ROW_COL] if keep_row else []
    accepted = good.select(*dtypes.keys(), "source_file", *kept)
    if not in_order(accepted, sort_by):  # an export in key order (the usual one) skips a 1 s sort at 10M rows
        # lazily: polars 2.1's eager sort of 3.3M string ids took 2.1 s, the same sort on the lazy engine 0.8 s
        accepted = accepted.lazy().sort(sort_by, maintain_order=True).collect()
    if validate:
        _validate_accepted(schema, accepted.drop(kept), table)
    quarantine = quarantine_frame(bad, originals, table, keep=kept)
    by_reason = dict(
        bad.group_by(REASON_COL).len().sort(["len", REASON_COL], descending=[True, False]).iter_rows()
    )
    counts = {
        "table": table,
        "files": info["files"],
        "raw_rows": df.height,
        "accepted": accepted.height,
        "quarantined": quarantine.height,
        "quarantined_by_reason": by_reason,
        "unreadable_files": info["unreadable_files"],
        "missing_optional_columns": info["missing_optional_columns"],
        "repaired": {REPAIR_TEXT_UTF8: info["repaired"]} if info["repaired"] else {},
        **(extra_counts or {}),
    }
    if counts["raw_rows"] != counts["accepted"] + counts["quarantined"]:  # invariant of CONTRACT §1
        raise RuntimeError(f"internal error: {table} rows do not reconcile: {counts}")
    return RawBatch(accepted, quarantine, counts)


def key_duplicates(df: pl.DataFrame, key: list[str], compare: list[str], label: str) -> pl.DataFrame:
    """Among rows without a reason: exact copies → quarantine the copies; same key with
    different content → quarantine every row of that key."""
    ok = pl.col(REASON_COL).is_null()
    if is_unique(df.filter(ok).select(key)):  # no key twice among the ok rows: neither rule can fire
        return df
    # exact copy: not the first occurrence of the full content among currently-ok rows
    first = pl.struct(compare).is_first_distinct().over(ok)
    copy_reason = REASON_DUPLICATE_KEY_COPY.format(key=label)
    df = df.with_columns(add_reason(pl.col(REASON_COL), ok & ~first, copy_reason).alias(REASON_COL))
    ok = pl.col(REASON_COL).is_null()
    conflict = ok & (ok.sum().over(key) > 1)
    conflict_reason = REASON_CONFLICTING_KEY.format(key=label)
    return df.with_columns(add_reason(pl.col(REASON_COL), conflict, conflict_reason).alias(REASON_COL))


def merge_batches(batches: list[RawBatch]) -> RawBatch:
    """Concatenate batches (e.g. several days) and sum their counts."""
    accepted = pl.concat([b.accepted for b in batches], how="vertical")
    quarantine = pl.concat([b.quarantine for b in batches], how="vertical")
    counts: dict = {"table": batches[0].counts.get("table")}
    for b in batches:
        for k, v in b.counts.items():
            if k == "table":
                continue
            if isinstance(v, bool) or not isinstance(v, (int, dict, list)):
                counts[k] = v
            elif isinstance(v, int):
                counts[k] = counts.get(k, 0) + v
            elif isinstance(v, list):
                counts[k] = counts.get(k, []) + [x for x in v if x not in counts.get(k, [])]
            else:
                acc = dict(counts.get(k, {}))
                for kk, vv in v.items():
                    acc[kk] = acc.get(kk, 0) + vv if isinstance(vv, int) else vv
                counts[k] = acc
    counts["days"] = sorted(set(counts.get("days", [])))
    return RawBatch(accepted, quarantine, counts)
