"""Raw reader, transcripts: the message and conversation rules, and one day's files as a batch.

Why a module of its own: transcripts are the one table with rules beyond a single row (exact
copies, conflicting turns, a channel that changes, conversations with nobody talking), and a
day's batch gathers its conversations' rows from every file that holds them
(:mod:`extract.raw_index` decides which day owns a conversation), so copies and conflicts are
found across files and folders too; :mod:`extract.raw` composes these into its public loaders
and documents the decisions they implement.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import polars as pl

from extract.raw_batch import empty_batch, finish, read_many
from extract.raw_cast import add_reason, add_reasons
from extract.raw_contract import (
    DAY_COL,
    INT32_MAX,
    REASON_CHANNEL,
    REASON_COL,
    REASON_CONFLICT_FILES,
    REASON_CONFLICTING_TURN,
    REASON_DUPLICATE_COPY,
    REASON_EMPTY,
    REASON_MEMORY_ITEMS,
    REASON_NEGATIVE_TURN,
    REASON_ROLE,
    REASON_TURN_RANGE,
    OnUnreadable,
    RawBatch,
)
from extract.schemas import ROLES, TRANSCRIPT_DTYPES, TRANSCRIPT_REQUIRED, TranscriptSchema

CID = "conversation_id"
CONTENT = list(TRANSCRIPT_DTYPES)  # what makes two rows the same message (source_file is not content)


# ============================================================================ rules
def _row_rules(df: pl.DataFrame) -> pl.DataFrame:
    mem = pl.col("memory_items")
    r = add_reasons(pl.col(REASON_COL), [
        (pl.col("role").is_not_null() & ~pl.col("role").is_in(list(ROLES)), REASON_ROLE),
        (pl.col("turn") < 0, REASON_NEGATIVE_TURN),
        (pl.col("turn") > INT32_MAX, REASON_TURN_RANGE),
        ((mem < 0) | (mem > INT32_MAX), REASON_MEMORY_ITEMS),
    ])
    return df.with_columns(r.alias(REASON_COL))


def _conflict_files(df: pl.DataFrame) -> pl.DataFrame | None:
    """Per conversation whose conflicting rows (``c0``) sit in more than one file — a file
    re-exported with other content — the conflict reason naming those files; None if none."""
    if not df["c0"].any():
        return None
    files = pl.col("__f")
    n = files.list.len()
    shown = files.list.head(3).list.join(" and ") + pl.when(n > 3).then(
        pl.lit(" and ") + (n - 3).cast(pl.String) + pl.lit(" more file(s)")).otherwise(pl.lit(""))
    before, after = REASON_CONFLICT_FILES.split("{files}")
    return (
        df.filter(pl.col("c0"))
        .group_by(CID)
        .agg(pl.col("source_file").unique().sort().alias("__f"))
        .filter(n > 1)
        .select(CID, (pl.lit(REASON_CONFLICTING_TURN + before) + shown + pl.lit(after)).alias("__conflict_reason"))
    )


def _copy_report(df: pl.DataFrame) -> tuple[int, list[dict]]:
    """How many rows were dropped as exact copies, and, for copies of a row in another file,
    which file repeats which (``{"file", "copy_of", "rows"}``): a file exported twice."""
    n = int(df["__copy"].sum())
    if not n:
        return 0, []
    keys = df.filter(pl.col("__copy")).select(CID, "turn").unique()
    sub = df.join(keys, on=[CID, "turn"], how="semi")
    kept = pl.col("source_file").filter(pl.col("__ok0")).first().over(pl.struct(CONTENT))
    pairs = (
        sub.with_columns(kept.alias("__kept"))
        .filter(pl.col("__copy"))
        .group_by("source_file", "__kept")
        .len()
        .sort("source_file", "__kept")
    )
    return n, [{"file": f, "copy_of": k, "rows": int(c)} for f, k, c in pairs.iter_rows() if f != k]


def transcript_rules(df: pl.DataFrame) -> tuple[pl.DataFrame, dict]:
    """Row rules, then duplicate and conversation-level rules, as reasons in ``__reason``.

    Returns the frame and the exact-copy counts (``duplicate_copies``, ``duplicate_files``).
    """
    df = _row_rules(df)
    ok = pl.col(REASON_COL).is_null()
    first = pl.struct(CONTENT).is_first_distinct().over(ok)
    df = df.with_columns(ok.alias("__ok0"), (ok & ~first).alias("__copy"))
    df = df.with_columns(add_reason(pl.col(REASON_COL), pl.col("__copy"), REASON_DUPLICATE_COPY).alias(REASON_COL))
    n_copies, copy_files = _copy_report(df)
    # conversation-level rules over the rows still ok after row rules and exact copies
    ok = pl.col(REASON_COL).is_null()
    in_conv = pl.col(CID).is_not_null()
    # Two windows in two steps: polars evaluates a window nested in another window ~20x slower.
    df = df.with_columns((ok & (ok.cast(pl.UInt32).sum().over([CID, "turn"]) > 1)).alias("c0"))
    conflict_reason: str | pl.Expr = REASON_CONFLICTING_TURN
    per_conv = _conflict_files(df)
    if per_conv is not None and per_conv.height:
        df = df.join(per_conv, on=CID, how="left", maintain_order="left")
        conflict_reason = pl.coalesce(pl.col("__conflict_reason"), pl.lit(REASON_CONFLICTING_TURN))
    conflict = pl.col("c0").any().over(CID)
    ch = pl.when(ok).then(pl.col("channel"))
    channel_varies = (ch.min().over(CID) != ch.max().over(CID)).fill_null(False)
    talk = ok & pl.col("role").is_in(["user", "assistant"])
    empty = ~talk.any().over(CID)
    conv_flags = df.select(
        (in_conv & conflict).alias("c1"), (in_conv & channel_varies).alias("c2"), (in_conv & empty).alias("c3")
    )
    df = df.with_columns(conv_flags)
    keep_ok = pl.col(REASON_COL).is_null()
    out = df.with_columns(
        add_reasons(pl.col(REASON_COL), [
            (keep_ok & pl.col("c1"), conflict_reason),
            (keep_ok & pl.col("c2"), REASON_CHANNEL),
            (keep_ok & pl.col("c3"), REASON_EMPTY),
        ]).alias(REASON_COL)
    ).drop("c0", "c1", "c2", "c3", "__ok0", "__copy", "__conflict_reason", strict=False)
    return out, {"duplicate_copies": n_copies, "duplicate_files": copy_files}


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


def load_transcript_files(files: list[Path], day: date, row_filter, on_unreadable: OnUnreadable,
                          validate: bool = True) -> RawBatch:
    """One day's batch: the rows of ``files`` that ``row_filter(path, stored)`` keeps (the rows
    of the conversations the day owns), validated together. ``validate=False``: the caller runs
    the accepted rows' schema check itself, once over several days (see :func:`extract.raw_batch.finish`)."""
    df, originals, info = read_many(files, TRANSCRIPT_DTYPES, TRANSCRIPT_REQUIRED, on_unreadable, row_filter)
    if df is None:
        batch = empty_batch(
            TRANSCRIPT_DTYPES,
            "transcripts",
            conversations=0,
            conversations_with_turn_gaps=0,
            conversations_ts_not_monotonic=0,
            quarantined_conversations=0,
            duplicate_copies=0,
            duplicate_files=[],
        )
        batch.counts.update(files=info["files"], unreadable_files=info["unreadable_files"])
        batch.counts["days"] = [day.isoformat()]
        return batch
    df, copies = transcript_rules(df.with_columns(pl.lit(day, dtype=pl.Date).alias(DAY_COL)))
    key = ["conversation_id", "turn"]
    batch = finish(df, originals, info, TRANSCRIPT_DTYPES, TranscriptSchema, "transcripts", key, copies,
                   validate=validate)
    batch.counts.update(conversation_warnings(batch.accepted))
    accepted_ids = batch.accepted["conversation_id"].unique().implode()
    batch.counts["quarantined_conversations"] = (
        batch.quarantine.filter(
            pl.col("conversation_id").is_not_null() & ~pl.col("conversation_id").is_in(accepted_ids)
        )["conversation_id"].n_unique()
    )
    batch.counts["days"] = [day.isoformat()]
    return batch
