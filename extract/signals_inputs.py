"""Signal extraction, inputs: the transcript, side tables and history as typed polars frames.

Why a module of its own: extraction accepts whatever the caller has (an eager frame from the raw
reader, a ``LazyFrame`` over parquet, side tables missing optional columns, history keyed by
``customer_id`` or ``customer_key``) and every later step assumes one shape. Normalising at the
door — only the transcript columns, timestamps as UTC microseconds, null keys dropped — keeps the
sub-queries free of defensive casts and lets a lazy scan read only the columns it needs.
"""

from __future__ import annotations

import polars as pl

from extract.catalog import UTC_TS

MESSAGE_COLUMNS: tuple[str, ...] = (
    "conversation_id", "turn", "ts", "role", "text", "tool_name",
    "channel", "agent_version", "customer_id", "skill", "memory_items",
)
Frame = pl.DataFrame | pl.LazyFrame

CID = pl.col("conversation_id")
TURN = pl.col("turn")
ROLE = pl.col("role")
TEXT = pl.col("text")
TOOL = pl.col("tool_name")


# --------------------------------------------------------------------------- inputs
def utc(expr: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """Timestamps as Datetime(us, UTC): naive values are taken as UTC (CONTRACT §1)."""
    if isinstance(dtype, pl.Datetime):
        expr = expr.dt.replace_time_zone("UTC") if dtype.time_zone is None else expr.dt.convert_time_zone("UTC")
        return expr.dt.cast_time_unit("us")
    if dtype == pl.Date:
        return expr.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    return expr.str.to_datetime(time_zone="UTC", time_unit="us") if dtype == pl.String else expr.cast(UTC_TS)


def typed_messages(messages: Frame) -> pl.DataFrame:
    """The transcript columns only, typed; a LazyFrame is collected with projection pushdown."""
    lf = messages.lazy()
    schema = lf.collect_schema()
    missing = [c for c in MESSAGE_COLUMNS if c not in schema]
    if missing:
        raise ValueError(f"messages frame lacks transcript column(s) {missing} (CONTRACT §1)")
    lf = lf.select(
        CID.cast(pl.String),
        TURN.cast(pl.Int32),
        utc(pl.col("ts"), schema["ts"]).alias("ts"),
        ROLE.cast(pl.String),
        TEXT.cast(pl.String),
        TOOL.cast(pl.String),
        pl.col("channel", "agent_version", "customer_id", "skill").cast(pl.String),
        pl.col("memory_items").cast(pl.Int32),
    )
    if isinstance(messages, pl.LazyFrame):
        return lf.collect(engine="streaming")
    return lf.collect()


def side_table(frame: Frame | None, key: str, columns: dict[str, pl.DataType]) -> pl.DataFrame | None:
    """An optional side table: key + wanted columns (missing ones as nulls), null keys dropped."""
    if frame is None:
        return None
    lf = frame.lazy()
    schema = lf.collect_schema()
    if key not in schema:
        raise ValueError(f"side table lacks key column `{key}`")
    exprs = [pl.col(key).cast(pl.String)]
    for name, dtype in columns.items():
        exprs.append(pl.col(name).cast(dtype) if name in schema else pl.lit(None, dtype=dtype).alias(name))
    return lf.select(exprs).filter(pl.col(key).is_not_null()).collect()


def rows_for_keys(side: pl.DataFrame, key: str, keys: pl.Series, side_hashes: pl.Series) -> pl.DataFrame:
    """The rows of ``side`` whose ``key`` is among ``keys``, plus the rare row whose 64-bit hash
    merely collides with one (the join that follows compares the values): what a left join of
    rows holding ``keys`` can take from ``side``, in ``side``'s order. ``side_hashes`` is
    ``side[key].hash()``, computed once by a caller that narrows the same table for many chunks.

    Why: a backfill's chunk of 2M messages holds ≈ 280k conversations, while ``outcomes`` holds
    every conversation of the history (10M); joining (and checking the uniqueness of) the whole
    table for every chunk built a 10M-string hash table each time, ≈ 1 s per chunk and 2 s of
    a 10M store's nightly day. An integer ``is_in`` over the hashes takes a few dozen ms."""
    wanted = keys.drop_nulls().cast(pl.String).hash().unique()
    return side.filter(side_hashes.is_in(wanted))


def join_side(out: pl.DataFrame, side: pl.DataFrame, key: str) -> pl.DataFrame:
    """Left-join a side table that should have one row per key; duplicates keep the first row."""
    try:
        return out.join(side, on=key, how="left", validate="m:1")
    except pl.exceptions.ComputeError:  # duplicated keys: never multiply conversations
        return out.join(side.unique(subset=key, keep="first", maintain_order=True), on=key, how="left")


def history_rows(history: Frame | None) -> pl.DataFrame | None:
    """Earlier conversation starts: (customer_id, customer_key or customer_hash; started_at as UTC),
    nulls dropped."""
    if history is None:
        return None
    lf = history.lazy()
    schema = lf.collect_schema()
    who = next((c for c in ("customer_id", "customer_hash", "customer_key") if c in schema), None)
    if who is None or "started_at" not in schema:
        raise ValueError("history frame needs started_at and customer_id (or customer_key, customer_hash)")
    return lf.select(
        pl.col(who).cast(pl.UInt64 if who == "customer_hash" else pl.String),
        utc(pl.col("started_at"), schema["started_at"]).alias("started_at"),
    ).drop_nulls().collect()
