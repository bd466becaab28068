"""Read and validate the raw landing directory (CONTRACT §1), with quarantine.

Every raw row ends up in exactly one of two frames — ``accepted`` (canonical dtypes, passes the
pandera schema) or ``quarantine`` (with a reason) — so ``raw = accepted + quarantined`` holds
by construction and is reported in ``counts``. All rules are polars expressions over whole
frames; the only Python loops are over files.

Decisions (documented here because callers depend on them):

* **Required columns** are the contract's non-null columns (transcripts: conversation_id, turn,
  ts, role, channel, agent_version; outcomes: conversation_id; customers: customer_id). A file
  lacking one raises :class:`RawInputError` naming file and column(s). Nullable contract columns
  that are absent are filled with nulls and listed in ``counts["missing_optional_columns"]``.
  Columns outside the contract are never read.
* **Unreadable files** (corrupt parquet): by default (``on_unreadable="raise"``) the run stops
  with a :class:`RawInputError` naming the file — its rows cannot be counted, so continuing
  would silently break ``raw = accepted + quarantined``. ``on_unreadable="report"`` skips the
  file and lists it in ``counts["unreadable_files"]`` (file + error) for callers that prefer a
  partial day to no day (``extract.day`` then writes one file-level quarantine row per file).
  A missing required table (no ``transcripts/`` parquet at all) always raises.
* **Invalid UTF-8**: in ``text`` it is *repaired* (invalid bytes → U+FFFD, counted in
  ``counts["repaired"]``) because dropping one message would cut a hole in the conversation;
  in any other string column (ids, role, channel, …) the row is quarantined, since an id that
  is not text cannot be trusted to join.
* **Duplicates** of (conversation_id, turn): exact copies keep the first and quarantine the
  copies; same key with different content quarantines the whole conversation (which message is
  true is unknowable, and the order of the conversation is broken).
* **Gaps / out-of-order turns** are *not* quarantined: the accepted frame is sorted by
  (conversation_id, turn) and ``counts["conversations_with_turn_gaps"]`` reports conversations
  whose turns are not exactly 0..n-1 (after row quarantine), plus
  ``counts["conversations_ts_not_monotonic"]`` for timestamps that go backwards. A missing turn
  still leaves a usable conversation for signal extraction; quarantining it would bias the data
  toward clean exports.
* **Day assignment**: Hive layout — the partition date; flat layout — the UTC date of the
  conversation's first message (min ts). Rows with no usable timestamp anywhere in their
  conversation fall back to the row's own ts date, else to the earliest day, so that a day-by-day
  pass over ``list_transcript_days`` still sees every row.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import pandera.polars as pa
import polars as pl
import pyarrow as pa_arrow
import pyarrow.parquet as pq

from extract.redact import redact_text
from extract.schemas import (
    CUSTOMER_DTYPES,
    CUSTOMER_REQUIRED,
    OUTCOME_DTYPES,
    OUTCOME_REQUIRED,
    ROLES,
    TRANSCRIPT_DTYPES,
    TRANSCRIPT_REQUIRED,
    CustomerSchema,
    OutcomeSchema,
    TranscriptSchema,
)

# ---------------------------------------------------------------------------- reason strings
REASON_NULL = "null in required column: {col}"
REASON_CAST = "wrong type: {col} cannot be cast to {dtype}"
REASON_TS = "unparseable timestamp: {col}"
REASON_UTF8 = "invalid UTF-8 in {col}"
REASON_ROLE = "role not in {user, assistant, tool, system}"
REASON_NEGATIVE_TURN = "negative turn"
REASON_DUPLICATE_COPY = "duplicate message: exact copy of (conversation_id, turn)"
REASON_CONFLICTING_TURN = "conflicting duplicate turn in conversation"
REASON_CHANNEL = "channel not constant within conversation"
REASON_EMPTY = "empty conversation: no user or assistant message"
REASON_UNREADABLE_FILE = "unreadable file, rows not counted"
REASON_DUPLICATE_KEY_COPY = "duplicate row: exact copy of {key}"
REASON_CONFLICTING_KEY = "conflicting duplicate {key}"
REASON_CSAT = "csat out of range 1..5"
REASON_UNKNOWN_CONVERSATION = "unknown conversation"
REPAIR_TEXT_UTF8 = "text: invalid UTF-8 bytes replaced with U+FFFD"

QUARANTINE_SCHEMA: dict[str, pl.DataType] = {
    "source_file": pl.String(),
    "conversation_id": pl.String(),
    "reason": pl.String(),
    "raw_row": pl.String(),
    "table": pl.String(),
    "date": pl.Date(),
}

_ROW = "__row"
_REASON = "__reason"
_DAY = "__day"
_HIVE_DIR = re.compile(r"^date=(.*)$")

# UTF-8 validity as a regex over the lowercase hex encoding of the bytes (W3C byte pattern):
# one alternative per well-formed code point; anchoring keeps byte pairs aligned.
_C = "[89ab][0-9a-f]"
_UTF8_CHAR_HEX = (
    f"[0-7][0-9a-f]|c[2-9a-f]{_C}|d[0-9a-f]{_C}|e0[ab][0-9a-f]{_C}|e[1-9a-cef]{_C}{_C}"
    f"|ed[89][0-9a-f]{_C}|f0[9ab][0-9a-f]{_C}{_C}|f[1-3]{_C}{_C}{_C}|f48[0-9a-f]{_C}{_C}"
)

_TS_FORMATS = (
    "%Y-%m-%dT%H:%M:%S%.fZ",
    "%Y-%m-%dT%H:%M:%S%.f%z",
    "%Y-%m-%d %H:%M:%S%.f%z",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%d",
)
_TRUE = ["true", "t", "yes", "y", "1"]
_FALSE = ["false", "f", "no", "n", "0"]


class RawInputError(ValueError):
    """A raw input that cannot be processed at all: message names file, column and reason."""


@dataclass
class RawBatch:
    """Result of reading one raw table (or one day of transcripts).

    ``accepted``: canonical dtypes + ``source_file``; ``quarantine``: QUARANTINE_SCHEMA;
    ``counts``: raw_rows, accepted, quarantined, quarantined_by_reason, files, … (see module doc).
    """

    accepted: pl.DataFrame
    quarantine: pl.DataFrame
    counts: dict = field(default_factory=dict)


# ============================================================================ file discovery
def _transcripts_dir(raw_dir: str | os.PathLike) -> Path:
    d = Path(raw_dir) / "transcripts"
    if not d.is_dir():
        raise RawInputError(
            f"{d}: required input missing (column: all) — expected Hive dirs "
            f"transcripts/date=YYYY-MM-DD/*.parquet or flat transcripts/*.parquet"
        )
    return d


def _discover_transcripts(raw_dir: str | os.PathLike) -> tuple[dict[date, list[Path]], list[Path]]:
    """Hive partitions (date → files) and flat files of ``RAW/transcripts``."""
    d = _transcripts_dir(raw_dir)
    hive: dict[date, list[Path]] = {}
    for sub in sorted(p for p in d.iterdir() if p.is_dir()):
        m = _HIVE_DIR.match(sub.name)
        if not m:
            continue
        try:
            day = date.fromisoformat(m.group(1))
        except ValueError as exc:
            raise RawInputError(
                f"{sub}: partition directory name is not date=YYYY-MM-DD (column: date) — {exc}"
            ) from None
        files = sorted(sub.rglob("*.parquet"))
        if files:
            hive[day] = files
    flat = sorted(p for p in d.glob("*.parquet") if p.is_file())
    if not hive and not flat:
        raise RawInputError(
            f"{d}: required input missing (column: all) — no parquet files under transcripts/"
        )
    return hive, flat


def _optional_table_files(raw_dir: str | os.PathLike, name: str) -> list[Path]:
    """``RAW/<name>.parquet`` and/or every parquet under ``RAW/<name>/``; [] when absent."""
    base = Path(raw_dir)
    files: list[Path] = []
    single = base / f"{name}.parquet"
    if single.is_file():
        files.append(single)
    folder = base / name
    if folder.is_dir():
        files.extend(sorted(folder.rglob("*.parquet")))
    return files


# ============================================================================ reading one file
class _Unreadable(Exception):
    pass


def _read_file(
    path: Path, dtypes: dict[str, pl.DataType], required: Iterable[str]
) -> tuple[pl.DataFrame, list[str]]:
    """Read the contract columns of one parquet file as stored (no casting).

    Raises RawInputError for missing required columns, _Unreadable for bytes that are not
    parquet. String columns holding invalid UTF-8 make polars refuse the file; pyarrow reads
    them, and they come back as Binary so the UTF-8 rule can see them row by row.
    """
    try:
        file_schema = pq.read_schema(path)
    except Exception as exc:  # noqa: BLE001 - any failure here means unreadable bytes
        raise _Unreadable(f"{type(exc).__name__}: {exc}") from None
    names = list(file_schema.names)
    missing = [c for c in required if c not in names]
    if missing:
        raise RawInputError(
            f"{path}: required column(s) {', '.join(missing)} missing "
            f"(column: {missing[0]}; columns present: {', '.join(names) or 'none'})"
        )
    present = [c for c in names if c in dtypes]
    optional_missing = [c for c in dtypes if c not in names]
    try:
        df = pl.read_parquet(path, columns=present, hive_partitioning=False)
    except Exception:  # noqa: BLE001 - retry with pyarrow below
        try:
            table = pq.read_table(path, columns=present)
            fields = [
                pa_arrow.field(f.name, pa_arrow.binary())
                if pa_arrow.types.is_string(f.type) or pa_arrow.types.is_large_string(f.type)
                else f
                for f in table.schema
            ]
            df = pl.from_arrow(table.cast(pa_arrow.schema(fields)))
        except Exception as exc:  # noqa: BLE001
            raise _Unreadable(f"{type(exc).__name__}: {exc}") from None
    return df, optional_missing


# ============================================================================ casting
def _utf8_valid(expr: pl.Expr) -> pl.Expr:
    return expr.bin.encode("hex").str.contains(f"^(?:{_UTF8_CHAR_HEX})*$")


def _utf8_lossy(expr: pl.Expr) -> pl.Expr:
    """Decode Binary to String, replacing each invalid byte by U+FFFD (vectorized via hex)."""
    marked = expr.bin.encode("hex").str.replace_all(f"({_UTF8_CHAR_HEX})|([0-9a-f]{{2}})", "${1}<${2}>")
    fixed = marked.str.replace_all("<>", "", literal=True).str.replace_all("<[0-9a-f]{2}>", "efbfbd")
    return fixed.str.decode("hex").cast(pl.String)


def _cast_expr(col: str, src: pl.DataType, target: pl.DataType) -> tuple[pl.Expr, pl.Expr | None]:
    """(value, failure_reason) for casting stored column ``col`` to ``target``.

    Binary columns bound for String were already decoded by :func:`_decode_binary`.

    ``failure_reason`` is a String expression, null where the value is fine or the source null.
    """
    c = pl.col(col)
    cast_reason = REASON_CAST.format(col=col, dtype=target)
    if src == pl.Null:
        return pl.lit(None, dtype=target).alias(col), None
    if target == pl.String:
        if src == pl.String:
            value = c
        else:
            value = c.cast(pl.String, strict=False)
    elif target == pl.Int64:
        if src.is_integer():
            value = c.cast(pl.Int64, strict=False)
        elif src.is_float():
            value = pl.when(c.is_finite() & (c == c.floor())).then(c.cast(pl.Int64, strict=False))
        elif src == pl.String:
            value = c.str.strip_chars().str.to_integer(strict=False).cast(pl.Int64, strict=False)
        else:
            value = pl.lit(None, dtype=pl.Int64)
    elif isinstance(target, pl.Datetime):
        cast_reason = REASON_TS.format(col=col)
        if isinstance(src, pl.Datetime):
            value = (c.dt.convert_time_zone("UTC") if src.time_zone else c.dt.replace_time_zone("UTC")).cast(
                target
            )
        elif src == pl.Date:
            value = c.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
        elif src == pl.String:
            s = c.str.strip_chars()
            value = pl.coalesce(
                [s.str.to_datetime(f, strict=False, time_unit="us", time_zone="UTC") for f in _TS_FORMATS]
            )
        else:
            value = pl.lit(None, dtype=target)
    elif target == pl.Boolean:
        if src == pl.Boolean:
            value = c
        elif src.is_numeric():
            value = pl.when(c == 1).then(True).when(c == 0).then(False).otherwise(None)
        elif src == pl.String:
            s = c.str.strip_chars().str.to_lowercase()
            value = pl.when(s.is_in(_TRUE)).then(True).when(s.is_in(_FALSE)).then(False).otherwise(None)
        else:
            value = pl.lit(None, dtype=pl.Boolean)
    else:  # pragma: no cover - contract has no other target types
        value = c.cast(target, strict=False)
    value = value.cast(target, strict=False)
    reason = pl.when(c.is_not_null() & value.is_null()).then(pl.lit(cast_reason))
    return value.alias(col), reason


def _decode_binary(s: pl.Series, lossy: bool) -> tuple[pl.Series, pl.Series]:
    """Binary → String for one stored column; returns (strings, invalid_mask).

    Valid values are cast directly (fast); only the invalid ones go through the slower lossy
    hex path (or become null when ``lossy`` is false). Eager on purpose: a lazy
    ``when(valid).then(col).cast(String)`` gets the cast pushed into the branch and raises on
    the first invalid byte of the whole column.
    """
    valid = pl.select(_utf8_valid(pl.lit(s)) | pl.lit(s).is_null()).to_series()
    out = pl.Series(s.name, [None] * s.len(), dtype=pl.String)
    if valid.any():
        out = out.scatter(valid.arg_true(), s.filter(valid).cast(pl.String))
    invalid = ~valid
    if lossy and invalid.any():
        fixed = pl.select(_utf8_lossy(pl.lit(s.filter(invalid)))).to_series()
        out = out.scatter(invalid.arg_true(), fixed)
    return out, invalid


def _normalize(
    df: pl.DataFrame, dtypes: dict[str, pl.DataType], required: Iterable[str], source_file: str
) -> tuple[pl.DataFrame, int]:
    """Cast the stored columns to contract dtypes; attach per-row cast/null reasons.

    Returns the frame (contract columns, source_file, __row, __reason) and the number of
    repaired rows (invalid UTF-8 in text).
    """
    values, reasons, repairs = [], [], []
    decoded = {}
    for col, target in dtypes.items():
        if col in df.columns and target == pl.String and df.schema[col] == pl.Binary:
            strings, invalid = _decode_binary(df[col], lossy=(col == "text"))
            decoded[col] = strings
            flag = f"__utf8_invalid_{col}"
            decoded[flag] = invalid.alias(flag)
            if col == "text":
                repairs.append(pl.col(flag))
            else:
                reasons.append(pl.when(pl.col(flag)).then(pl.lit(REASON_UTF8.format(col=col))))
    if decoded:
        df = df.with_columns(list(decoded.values()))
    for col, target in dtypes.items():
        if col not in df.columns:
            values.append(pl.lit(None, dtype=target).alias(col))
            if col in required:  # cannot happen: _read_file raises first
                reasons.append(pl.lit(REASON_NULL.format(col=col)))
            continue
        value, reason = _cast_expr(col, df.schema[col], target)
        values.append(value)
        if col in required:
            is_null = pl.col(col).is_null()
            if f"__utf8_invalid_{col}" in df.columns:  # null because undecodable, not missing
                is_null = is_null & ~pl.col(f"__utf8_invalid_{col}")
            reasons.append(pl.when(is_null).then(pl.lit(REASON_NULL.format(col=col))))
        if reason is not None:
            reasons.append(reason)
    reason_expr = pl.concat_str(reasons, separator="; ", ignore_nulls=True) if reasons else pl.lit("")
    out = df.select(
        *values,
        pl.lit(source_file).alias("source_file"),
        pl.int_range(pl.len(), dtype=pl.Int64).alias(_ROW),
        pl.when(reason_expr != "").then(reason_expr).alias(_REASON),
        (pl.any_horizontal(repairs) if repairs else pl.lit(False)).alias("__repaired"),
    )
    n_repaired = int(out["__repaired"].sum())
    return out.drop("__repaired"), n_repaired


def _add_reason(current: pl.Expr, cond: pl.Expr, reason: str) -> pl.Expr:
    """Append ``reason`` to the row's reason where ``cond`` holds."""
    new = pl.when(cond.fill_null(False)).then(pl.lit(reason))
    return pl.when(current.is_null()).then(new).otherwise(
        pl.when(new.is_null()).then(current).otherwise(current + pl.lit("; ") + new)
    )


# ============================================================================ raw_row JSON
def _json_safe(df: pl.DataFrame, keep_plain: Iterable[str] = ("conversation_id",)) -> pl.DataFrame:
    """Make stored columns JSON-encodable and redact PII in every text-like column."""
    keep = set(keep_plain)
    exprs = []
    for col, dt in df.schema.items():
        c = pl.col(col)
        if dt == pl.Binary:
            e = _utf8_lossy(c)
            e = e if col in keep else redact_text(e)
        elif dt == pl.String:
            e = c if col in keep else redact_text(c)
        elif dt.is_numeric() or dt.is_nested() or dt in (pl.Boolean, pl.Null):
            e = c
        else:
            e = c.cast(pl.String, strict=False)
            e = e if col in keep else redact_text(e)
        exprs.append(e.alias(col))
    return df.select(exprs)


def _raw_rows(originals: dict[str, pl.DataFrame], bad: pl.DataFrame) -> pl.DataFrame:
    """Attach ``raw_row`` (redacted JSON of the stored row) to quarantined rows, file by file."""
    parts = []
    for src in bad["source_file"].unique(maintain_order=True).to_list():
        sub = bad.filter(pl.col("source_file") == src)
        orig = originals[src]
        rows = orig.select(pl.int_range(pl.len(), dtype=pl.Int64).alias(_ROW), pl.all())
        rows = sub.select(_ROW).join(rows, on=_ROW, how="left", maintain_order="left")
        payload = _json_safe(rows.drop(_ROW))
        if payload.width:
            raw = payload.select(pl.struct(pl.all()).struct.json_encode().alias("raw_row"))["raw_row"]
        else:
            raw = pl.Series("raw_row", ["{}"] * sub.height, dtype=pl.String)
        parts.append(sub.with_columns(raw.alias("raw_row")))
    if not parts:
        return bad.with_columns(pl.lit(None, dtype=pl.String).alias("raw_row"))
    return pl.concat(parts, how="vertical")


def _quarantine_frame(bad: pl.DataFrame, originals: dict[str, pl.DataFrame], table: str) -> pl.DataFrame:
    if bad.height == 0:
        return pl.DataFrame(schema=QUARANTINE_SCHEMA)
    with_raw = _raw_rows(originals, bad)
    cid = pl.col("conversation_id") if "conversation_id" in with_raw.columns else pl.lit(None, pl.String)
    day = pl.col(_DAY) if _DAY in with_raw.columns else pl.lit(None, pl.Date)
    return with_raw.select(
        pl.col("source_file"),
        cid.cast(pl.String).alias("conversation_id"),
        pl.col(_REASON).alias("reason"),
        pl.col("raw_row"),
        pl.lit(table).alias("table"),
        day.cast(pl.Date).alias("date"),
    )


# ============================================================================ shared helpers
def _empty_batch(dtypes: dict[str, pl.DataType], table: str, **extra) -> RawBatch:
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


def _read_many(
    files: list[Path],
    dtypes: dict[str, pl.DataType],
    required: Iterable[str],
    on_unreadable: str,
    row_filter=None,
) -> tuple[pl.DataFrame | None, dict[str, pl.DataFrame], dict]:
    """Read + normalize files; ``row_filter(stored_df) -> bool mask`` narrows rows before casting."""
    if on_unreadable not in ("raise", "report"):
        raise ValueError("on_unreadable must be 'raise' or 'report'")
    frames, originals = [], {}
    info = {"files": 0, "unreadable_files": [], "missing_optional_columns": {}, "repaired": 0}
    for path in files:
        try:
            stored, optional_missing = _read_file(path, dtypes, required)
        except _Unreadable as exc:
            if on_unreadable == "raise":
                raise RawInputError(f"{path}: file cannot be read as parquet (column: all) — {exc}") from None
            info["unreadable_files"].append({"file": str(path), "error": str(exc)})
            continue
        if row_filter is not None:
            stored = stored.filter(row_filter(stored))
        src = str(path)
        norm, n_rep = _normalize(stored, dtypes, required, src)
        info["files"] += 1
        info["repaired"] += n_rep
        if optional_missing:
            info["missing_optional_columns"][src] = optional_missing
        originals[src] = stored
        frames.append(norm)
    if not frames:
        return None, originals, info
    return pl.concat(frames, how="vertical"), originals, info


def _validate_accepted(schema: type[pa.DataFrameModel], accepted: pl.DataFrame, table: str) -> None:
    """Schema failure after the row rules ran is a bug in the rules, not bad input."""
    try:
        schema.validate(accepted, lazy=True)
    except (pa.errors.SchemaErrors, pa.errors.SchemaError) as exc:
        raise RuntimeError(
            f"internal error: accepted {table} rows fail {schema.__name__} after quarantine rules: {exc}"
        ) from exc


def _finish(
    df: pl.DataFrame,
    originals: dict[str, pl.DataFrame],
    info: dict,
    dtypes: dict[str, pl.DataType],
    schema: type[pa.DataFrameModel],
    table: str,
    sort_by: list[str],
    extra_counts: dict | None = None,
) -> RawBatch:
    good = df.filter(pl.col(_REASON).is_null())
    bad = df.filter(pl.col(_REASON).is_not_null())
    accepted = good.select(*dtypes.keys(), "source_file").sort(sort_by, maintain_order=True)
    _validate_accepted(schema, accepted, table)
    quarantine = _quarantine_frame(bad, originals, table)
    by_reason = dict(
        bad.group_by(_REASON).len().sort(["len", _REASON], descending=[True, False]).iter_rows()
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


def _key_duplicates(df: pl.DataFrame, key: list[str], compare: list[str], label: str) -> pl.DataFrame:
    """Among rows without a reason: exact copies → quarantine the copies; same key with
    different content → quarantine every row of that key."""
    ok = pl.col(_REASON).is_null()
    # exact copy: not the first occurrence of the full content among currently-ok rows
    first = pl.struct(compare).is_first_distinct().over(ok)
    df = df.with_columns(_add_reason(pl.col(_REASON), ok & ~first, REASON_DUPLICATE_KEY_COPY.format(key=label)).alias(_REASON))
    ok = pl.col(_REASON).is_null()
    conflict = ok & (ok.sum().over(key) > 1)
    return df.with_columns(_add_reason(pl.col(_REASON), conflict, REASON_CONFLICTING_KEY.format(key=label)).alias(_REASON))


# ============================================================================ transcripts
def _files_key(files: list[Path]) -> tuple:
    out = []
    for p in files:
        st = p.stat()
        out.append((str(p), st.st_mtime_ns, st.st_size))
    return tuple(out)


@functools.lru_cache(maxsize=8)
def _flat_index_cached(key: tuple, on_unreadable: str) -> pl.DataFrame:
    """conversation_id → start day for flat files (read once per set of file versions)."""
    parts = []
    dtypes = {"conversation_id": TRANSCRIPT_DTYPES["conversation_id"], "ts": TRANSCRIPT_DTYPES["ts"]}
    for path_str, _, _ in key:
        path = Path(path_str)
        try:
            stored, _ = _read_file(path, dtypes, ("conversation_id", "ts"))
        except _Unreadable as exc:
            if on_unreadable == "raise":
                raise RawInputError(f"{path}: file cannot be read as parquet (column: all) — {exc}") from None
            continue
        norm, _ = _normalize(stored, dtypes, (), path_str)
        parts.append(norm.select("conversation_id", "ts"))
    if not parts:
        return pl.DataFrame(schema={"conversation_id": pl.String, _DAY: pl.Date})
    return (
        pl.concat(parts)
        .filter(pl.col("conversation_id").is_not_null())
        .group_by("conversation_id")
        .agg(pl.col("ts").min().dt.date().alias(_DAY))
    )


def _flat_index(flat: list[Path], on_unreadable: str) -> pl.DataFrame:
    return _flat_index_cached(_files_key(flat), on_unreadable)


def list_transcript_days(raw_dir: str | os.PathLike, on_unreadable: str = "raise") -> list[date]:
    """Days present in ``RAW/transcripts``: Hive partition dates, plus, for flat files, the UTC
    start date (min ts) of every conversation. Sorted ascending."""
    hive, flat = _discover_transcripts(raw_dir)
    days = set(hive)
    if flat:
        idx = _flat_index(flat, on_unreadable)
        days.update(d for d in idx[_DAY].unique().to_list() if d is not None)
    return sorted(days)


def _flat_row_day(stored: pl.DataFrame, index: pl.DataFrame, fallback: date | None) -> pl.Series:
    """Day of each stored flat row: conversation start day, else own ts date, else fallback."""
    dtypes = {"conversation_id": TRANSCRIPT_DTYPES["conversation_id"], "ts": TRANSCRIPT_DTYPES["ts"]}
    keys, _ = _normalize(stored.select("conversation_id", "ts"), dtypes, (), "")
    joined = keys.select("conversation_id", "ts").join(index, on="conversation_id", how="left", maintain_order="left")
    return joined.select(
        pl.coalesce(pl.col(_DAY), pl.col("ts").dt.date(), pl.lit(fallback, dtype=pl.Date)).alias(_DAY)
    )[_DAY]


def _transcript_rules(df: pl.DataFrame) -> pl.DataFrame:
    """Row rules, then duplicate and conversation-level rules, as reasons in ``__reason``."""
    r = pl.col(_REASON)
    df = df.with_columns(
        _add_reason(
            _add_reason(r, pl.col("role").is_not_null() & ~pl.col("role").is_in(list(ROLES)), REASON_ROLE),
            pl.col("turn") < 0,
            REASON_NEGATIVE_TURN,
        ).alias(_REASON)
    )
    cid = "conversation_id"
    content = list(TRANSCRIPT_DTYPES)
    ok = pl.col(_REASON).is_null()
    first = pl.struct(content).is_first_distinct().over(ok)
    df = df.with_columns(_add_reason(pl.col(_REASON), ok & ~first, REASON_DUPLICATE_COPY).alias(_REASON))
    # conversation-level rules over the rows still ok after row rules and exact copies
    ok = pl.col(_REASON).is_null()
    in_conv = pl.col(cid).is_not_null()
    # Two windows in two steps: polars evaluates a window nested in another window ~20x slower.
    df = df.with_columns((ok & (ok.cast(pl.UInt32).sum().over([cid, "turn"]) > 1)).alias("c0"))
    conflict = pl.col("c0").any().over(cid)
    ch = pl.when(ok).then(pl.col("channel"))
    channel_varies = (ch.min().over(cid) != ch.max().over(cid)).fill_null(False)
    talk = ok & pl.col("role").is_in(["user", "assistant"])
    empty = ~talk.any().over(cid)
    conv_flags = df.select(
        (in_conv & conflict).alias("c1"), (in_conv & channel_varies).alias("c2"), (in_conv & empty).alias("c3")
    )
    df = df.with_columns(conv_flags)
    keep_ok = pl.col(_REASON).is_null()
    return df.with_columns(
        _add_reason(
            _add_reason(
                _add_reason(pl.col(_REASON), keep_ok & pl.col("c1"), REASON_CONFLICTING_TURN),
                keep_ok & pl.col("c2"),
                REASON_CHANNEL,
            ),
            keep_ok & pl.col("c3"),
            REASON_EMPTY,
        ).alias(_REASON)
    ).drop("c0", "c1", "c2", "c3")


def _conversation_warnings(accepted: pl.DataFrame) -> dict:
    if accepted.height == 0:
        return {"conversations": 0, "conversations_with_turn_gaps": 0, "conversations_ts_not_monotonic": 0}
    per = accepted.group_by("conversation_id").agg(
        pl.len().alias("n"),
        pl.col("turn").min().alias("lo"),
        pl.col("turn").max().alias("hi"),
        (pl.col("ts").sort_by("turn").diff().dt.total_microseconds() < 0).any().alias("back"),
    )
    return {
        "conversations": per.height,
        "conversations_with_turn_gaps": per.filter((pl.col("lo") != 0) | (pl.col("hi") != pl.col("n") - 1)).height,
        "conversations_ts_not_monotonic": per.filter(pl.col("back")).height,
    }


def _load_transcript_files(
    files: list[Path], day: date, row_filter, on_unreadable: str
) -> RawBatch:
    """One day's files (Hive partition, or flat files narrowed to the day by ``row_filter``)."""
    df, originals, info = _read_many(files, TRANSCRIPT_DTYPES, TRANSCRIPT_REQUIRED, on_unreadable, row_filter)
    if df is None:
        batch = _empty_batch(
            TRANSCRIPT_DTYPES,
            "transcripts",
            conversations=0,
            conversations_with_turn_gaps=0,
            conversations_ts_not_monotonic=0,
            quarantined_conversations=0,
        )
        batch.counts.update(files=info["files"], unreadable_files=info["unreadable_files"])
        batch.counts["days"] = [day.isoformat()]
        return batch
    df = _transcript_rules(df.with_columns(pl.lit(day, dtype=pl.Date).alias(_DAY)))
    batch = _finish(df, originals, info, TRANSCRIPT_DTYPES, TranscriptSchema, "transcripts", ["conversation_id", "turn"])
    batch.counts.update(_conversation_warnings(batch.accepted))
    accepted_ids = batch.accepted["conversation_id"].unique().implode()
    batch.counts["quarantined_conversations"] = (
        batch.quarantine.filter(
            pl.col("conversation_id").is_not_null() & ~pl.col("conversation_id").is_in(accepted_ids)
        )["conversation_id"].n_unique()
    )
    batch.counts["days"] = [day.isoformat()]
    return batch


def load_transcripts_day(raw_dir: str | os.PathLike, day: date, on_unreadable: str = "raise") -> RawBatch:
    """Read, cast and validate one day of messages (see module doc for the day rule).

    A day without any files gives an empty batch (``counts["files"] == 0``), not an error: a
    nightly schedule may ask for a day the platform did not export. Flat files are read whole
    and narrowed to the conversations that start on ``day`` before casting (the conversation →
    day index is computed once per set of file versions and cached).
    """
    hive, flat = _discover_transcripts(raw_dir)
    hive_files = list(hive.get(day, []))
    batches = []
    if hive_files or not flat:
        batches.append(_load_transcript_files(hive_files, day, None, on_unreadable))
    if flat:
        index = _flat_index(flat, on_unreadable)
        known_days = sorted(set(hive) | {d for d in index[_DAY].unique().to_list() if d is not None})
        fallback = known_days[0] if known_days else day

        def on_day(stored: pl.DataFrame) -> pl.Series:
            return _flat_row_day(stored, index, fallback) == day

        batches.append(_load_transcript_files(flat, day, on_day, on_unreadable))
    return batches[0] if len(batches) == 1 else _merge_batches(batches)


def _merge_batches(batches: list[RawBatch]) -> RawBatch:
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


def load_transcripts(
    raw_dir: str | os.PathLike, days: Iterable[date] | None = None, on_unreadable: str = "raise"
) -> RawBatch:
    """Many days (or all, ``days=None``) as one batch, processed day by day so memory holds one
    day of originals at a time; conversation-level rules apply within a day."""
    wanted = list(days) if days is not None else list_transcript_days(raw_dir, on_unreadable)
    if not wanted:
        _discover_transcripts(raw_dir)
        return _empty_batch(TRANSCRIPT_DTYPES, "transcripts", days=[])
    return _merge_batches([load_transcripts_day(raw_dir, d, on_unreadable) for d in wanted])


# ============================================================================ outcomes, customers
def load_outcomes(
    raw_dir: str | os.PathLike, known_conversation_ids: pl.Series | None = None, on_unreadable: str = "raise"
) -> RawBatch:
    """Optional ``outcomes.parquet`` / ``outcomes/``: conversation_id non-null and unique,
    csat in 1..5, booleans castable, and (when ids are given) a known conversation."""
    files = _optional_table_files(raw_dir, "outcomes")
    if not files:
        return _empty_batch(OUTCOME_DTYPES, "outcomes")
    df, originals, info = _read_many(files, OUTCOME_DTYPES, OUTCOME_REQUIRED, on_unreadable)
    if df is None:
        batch = _empty_batch(OUTCOME_DTYPES, "outcomes")
        batch.counts.update(files=info["files"], unreadable_files=info["unreadable_files"])
        return batch
    df = df.with_columns(_add_reason(pl.col(_REASON), ~pl.col("csat").is_between(1, 5), REASON_CSAT).alias(_REASON))
    df = _key_duplicates(df, ["conversation_id"], list(OUTCOME_DTYPES), "conversation_id")
    if known_conversation_ids is not None:
        known = known_conversation_ids.cast(pl.String).implode()
        df = df.with_columns(
            _add_reason(
                pl.col(_REASON),
                pl.col(_REASON).is_null() & ~pl.col("conversation_id").is_in(known),
                REASON_UNKNOWN_CONVERSATION,
            ).alias(_REASON)
        )
    return _finish(df, originals, info, OUTCOME_DTYPES, OutcomeSchema, "outcomes", ["conversation_id"])


def load_customers(raw_dir: str | os.PathLike, on_unreadable: str = "raise") -> RawBatch:
    """Optional ``customers.parquet`` / ``customers/``: customer_id non-null and unique."""
    files = _optional_table_files(raw_dir, "customers")
    if not files:
        return _empty_batch(CUSTOMER_DTYPES, "customers")
    df, originals, info = _read_many(files, CUSTOMER_DTYPES, CUSTOMER_REQUIRED, on_unreadable)
    if df is None:
        batch = _empty_batch(CUSTOMER_DTYPES, "customers")
        batch.counts.update(files=info["files"], unreadable_files=info["unreadable_files"])
        return batch
    df = _key_duplicates(df, ["customer_id"], list(CUSTOMER_DTYPES), "customer_id")
    return _finish(df, originals, info, CUSTOMER_DTYPES, CustomerSchema, "customers", ["customer_id"])


__all__ = [
    "QUARANTINE_SCHEMA",
    "RawBatch",
    "RawInputError",
    "list_transcript_days",
    "load_customers",
    "load_outcomes",
    "load_transcripts",
    "load_transcripts_day",
]
