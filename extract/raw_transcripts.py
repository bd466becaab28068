"""Raw reader, transcripts: the day of each flat-file row, and the message and conversation rules.

Why a module of its own: transcripts are the one table with rules beyond a single row (exact
copies, conflicting turns, a channel that changes, conversations with nobody talking) and with
a day assignment for flat exports; :mod:`extract.raw` composes these into its public loaders and
documents the decisions they implement.
"""

from __future__ import annotations

import functools
from datetime import date
from pathlib import Path

import polars as pl

from extract.raw_batch import empty_batch, finish, read_many
from extract.raw_cast import add_reason, normalize
from extract.raw_contract import (
    DAY_COL,
    REASON_CHANNEL,
    REASON_COL,
    REASON_CONFLICTING_TURN,
    REASON_DUPLICATE_COPY,
    REASON_EMPTY,
    REASON_NEGATIVE_TURN,
    REASON_ROLE,
    OnUnreadable,
    RawBatch,
    check_on_unreadable,
)
from extract.raw_files import Unreadable, read_file, unreadable_error
from extract.schemas import ROLES, TRANSCRIPT_DTYPES, TRANSCRIPT_REQUIRED, TranscriptSchema


# ============================================================================ day of flat-file rows
def _files_key(files: list[Path]) -> tuple:
    out = []
    for p in files:
        st = p.stat()
        out.append((str(p), st.st_mtime_ns, st.st_size))
    return tuple(out)


@functools.lru_cache(maxsize=8)
def _flat_index_cached(key: tuple, on_unreadable: OnUnreadable) -> pl.DataFrame:
    """conversation_id → start day for flat files (read once per set of file versions)."""
    parts = []
    dtypes = {"conversation_id": TRANSCRIPT_DTYPES["conversation_id"], "ts": TRANSCRIPT_DTYPES["ts"]}
    for path_str, _, _ in key:
        path = Path(path_str)
        try:
            stored, _ = read_file(path, dtypes, ("conversation_id", "ts"))
        except Unreadable as exc:
            if on_unreadable == "stop":
                raise unreadable_error(path, exc) from None
            continue
        norm, _ = normalize(stored, dtypes, (), path_str)
        parts.append(norm.select("conversation_id", "ts"))
    if not parts:
        return pl.DataFrame(schema={"conversation_id": pl.String, DAY_COL: pl.Date})
    return (
        pl.concat(parts)
        .filter(pl.col("conversation_id").is_not_null())
        .group_by("conversation_id")
        .agg(pl.col("ts").min().dt.date().alias(DAY_COL))
    )


def flat_index(flat: list[Path], on_unreadable: OnUnreadable) -> pl.DataFrame:
    """conversation_id → ``DAY_COL`` (UTC date of its first message) over all flat files."""
    check_on_unreadable(on_unreadable)
    return _flat_index_cached(_files_key(flat), on_unreadable)


def flat_row_day(stored: pl.DataFrame, index: pl.DataFrame, fallback: date | None) -> pl.Series:
    """Day of each stored flat row: conversation start day, else own ts date, else fallback."""
    dtypes = {"conversation_id": TRANSCRIPT_DTYPES["conversation_id"], "ts": TRANSCRIPT_DTYPES["ts"]}
    keys, _ = normalize(stored.select("conversation_id", "ts"), dtypes, (), "")
    joined = keys.select("conversation_id", "ts").join(
        index, on="conversation_id", how="left", maintain_order="left"
    )
    return joined.select(
        pl.coalesce(pl.col(DAY_COL), pl.col("ts").dt.date(), pl.lit(fallback, dtype=pl.Date)).alias(DAY_COL)
    )[DAY_COL]


# ============================================================================ rules
def transcript_rules(df: pl.DataFrame) -> pl.DataFrame:
    """Row rules, then duplicate and conversation-level rules, as reasons in ``__reason``."""
    r = pl.col(REASON_COL)
    df = df.with_columns(
        add_reason(
            add_reason(r, pl.col("role").is_not_null() & ~pl.col("role").is_in(list(ROLES)), REASON_ROLE),
            pl.col("turn") < 0,
            REASON_NEGATIVE_TURN,
        ).alias(REASON_COL)
    )
    cid = "conversation_id"
    content = list(TRANSCRIPT_DTYPES)
    ok = pl.col(REASON_COL).is_null()
    first = pl.struct(content).is_first_distinct().over(ok)
    df = df.with_columns(add_reason(pl.col(REASON_COL), ok & ~first, REASON_DUPLICATE_COPY).alias(REASON_COL))
    # conversation-level rules over the rows still ok after row rules and exact copies
    ok = pl.col(REASON_COL).is_null()
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
    keep_ok = pl.col(REASON_COL).is_null()
    return df.with_columns(
        add_reason(
            add_reason(
                add_reason(pl.col(REASON_COL), keep_ok & pl.col("c1"), REASON_CONFLICTING_TURN),
                keep_ok & pl.col("c2"),
                REASON_CHANNEL,
            ),
            keep_ok & pl.col("c3"),
            REASON_EMPTY,
        ).alias(REASON_COL)
    ).drop("c0", "c1", "c2", "c3")


def conversation_warnings(accepted: pl.DataFrame) -> dict:
    """Kept-but-imperfect conversations of the accepted rows: turn gaps, timestamps going back."""
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


def load_transcript_files(files: list[Path], day: date, row_filter, on_unreadable: OnUnreadable) -> RawBatch:
    """One day's files (Hive partition, or flat files narrowed to the day by ``row_filter``)."""
    df, originals, info = read_many(files, TRANSCRIPT_DTYPES, TRANSCRIPT_REQUIRED, on_unreadable, row_filter)
    if df is None:
        batch = empty_batch(
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
    df = transcript_rules(df.with_columns(pl.lit(day, dtype=pl.Date).alias(DAY_COL)))
    key = ["conversation_id", "turn"]
    batch = finish(df, originals, info, TRANSCRIPT_DTYPES, TranscriptSchema, "transcripts", key)
    batch.counts.update(conversation_warnings(batch.accepted))
    accepted_ids = batch.accepted["conversation_id"].unique().implode()
    batch.counts["quarantined_conversations"] = (
        batch.quarantine.filter(
            pl.col("conversation_id").is_not_null() & ~pl.col("conversation_id").is_in(accepted_ids)
        )["conversation_id"].n_unique()
    )
    batch.counts["days"] = [day.isoformat()]
    return batch
