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
* **Unreadable files** (corrupt parquet): by default (``on_unreadable="stop"``) the run stops
  with a :class:`RawInputError` naming the file — its rows cannot be counted, so continuing
  would silently break ``raw = accepted + quarantined``. ``on_unreadable="quarantine"`` skips the
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

The reader is split by stage, each module small and single-purpose: :mod:`extract.raw_contract`
(reason strings, quarantine schema, :class:`RawBatch`, :class:`RawInputError`, the
``on_unreadable`` vocabulary), :mod:`extract.raw_files` (discovery, reading one file),
:mod:`extract.raw_cast` (casting, per-row reasons), :mod:`extract.quarantine` (redacted
``raw_row``), :mod:`extract.raw_batch` (read many files, accept/quarantine split, merge) and
:mod:`extract.raw_transcripts` (transcript rules, day of flat rows). This module keeps the
public loaders and re-exports the public names, which stay importable from ``extract.raw``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import date

import polars as pl

from extract.raw_batch import empty_batch, finish, key_duplicates, merge_batches, read_many
from extract.raw_cast import add_reason
from extract.raw_contract import (  # the public names are re-exported, see __all__
    DAY_COL,
    ON_UNREADABLE,
    QUARANTINE_SCHEMA,
    REASON_CAST,
    REASON_CHANNEL,
    REASON_COL,
    REASON_CONFLICTING_KEY,
    REASON_CONFLICTING_TURN,
    REASON_CSAT,
    REASON_DUPLICATE_COPY,
    REASON_DUPLICATE_KEY_COPY,
    REASON_EMPTY,
    REASON_NEGATIVE_TURN,
    REASON_NULL,
    REASON_ROLE,
    REASON_TS,
    REASON_UNKNOWN_CONVERSATION,
    REASON_UNREADABLE_FILE,
    REASON_UTF8,
    REPAIR_TEXT_UTF8,
    OnUnreadable,
    RawBatch,
    RawInputError,
)
from extract.raw_files import discover_transcripts, optional_table_files
from extract.raw_transcripts import flat_index, flat_row_day, load_transcript_files
from extract.schemas import (
    CUSTOMER_DTYPES,
    CUSTOMER_REQUIRED,
    OUTCOME_DTYPES,
    OUTCOME_REQUIRED,
    TRANSCRIPT_DTYPES,
    CustomerSchema,
    OutcomeSchema,
)


# ============================================================================ transcripts
def list_transcript_days(raw_dir: str | os.PathLike, on_unreadable: OnUnreadable = "stop") -> list[date]:
    """Days present in ``RAW/transcripts``: Hive partition dates, plus, for flat files, the UTC
    start date (min ts) of every conversation. Sorted ascending."""
    hive, flat = discover_transcripts(raw_dir)
    days = set(hive)
    if flat:
        idx = flat_index(flat, on_unreadable)
        days.update(d for d in idx[DAY_COL].unique().to_list() if d is not None)
    return sorted(days)


def load_transcripts_day(raw_dir: str | os.PathLike, day: date, on_unreadable: OnUnreadable = "stop") -> RawBatch:
    """Read, cast and validate one day of messages (see module doc for the day rule).

    A day without any files gives an empty batch (``counts["files"] == 0``), not an error: a
    nightly schedule may ask for a day the platform did not export. Flat files are read whole
    and narrowed to the conversations that start on ``day`` before casting (the conversation →
    day index is computed once per set of file versions and cached).
    """
    hive, flat = discover_transcripts(raw_dir)
    hive_files = list(hive.get(day, []))
    batches = []
    if hive_files or not flat:
        batches.append(load_transcript_files(hive_files, day, None, on_unreadable))
    if flat:
        index = flat_index(flat, on_unreadable)
        known_days = sorted(set(hive) | {d for d in index[DAY_COL].unique().to_list() if d is not None})
        fallback = known_days[0] if known_days else day

        def on_day(stored: pl.DataFrame) -> pl.Series:
            return flat_row_day(stored, index, fallback) == day

        batches.append(load_transcript_files(flat, day, on_day, on_unreadable))
    return batches[0] if len(batches) == 1 else merge_batches(batches)


def load_transcripts(
    raw_dir: str | os.PathLike, days: Iterable[date] | None = None, on_unreadable: OnUnreadable = "stop"
) -> RawBatch:
    """Many days (or all, ``days=None``) as one batch, processed day by day so memory holds one
    day of originals at a time; conversation-level rules apply within a day."""
    wanted = list(days) if days is not None else list_transcript_days(raw_dir, on_unreadable)
    if not wanted:
        discover_transcripts(raw_dir)
        return empty_batch(TRANSCRIPT_DTYPES, "transcripts", days=[])
    return merge_batches([load_transcripts_day(raw_dir, d, on_unreadable) for d in wanted])


# ============================================================================ outcomes, customers
def load_outcomes(
    raw_dir: str | os.PathLike,
    known_conversation_ids: pl.Series | None = None,
    on_unreadable: OnUnreadable = "stop",
) -> RawBatch:
    """Optional ``outcomes.parquet`` / ``outcomes/``: conversation_id non-null and unique,
    csat in 1..5, booleans castable, and (when ids are given) a known conversation."""
    files = optional_table_files(raw_dir, "outcomes")
    if not files:
        return empty_batch(OUTCOME_DTYPES, "outcomes")
    df, originals, info = read_many(files, OUTCOME_DTYPES, OUTCOME_REQUIRED, on_unreadable)
    if df is None:
        batch = empty_batch(OUTCOME_DTYPES, "outcomes")
        batch.counts.update(files=info["files"], unreadable_files=info["unreadable_files"])
        return batch
    bad_csat = ~pl.col("csat").is_between(1, 5)
    df = df.with_columns(add_reason(pl.col(REASON_COL), bad_csat, REASON_CSAT).alias(REASON_COL))
    df = key_duplicates(df, ["conversation_id"], list(OUTCOME_DTYPES), "conversation_id")
    if known_conversation_ids is not None:
        known = known_conversation_ids.cast(pl.String).implode()
        df = df.with_columns(
            add_reason(
                pl.col(REASON_COL),
                pl.col(REASON_COL).is_null() & ~pl.col("conversation_id").is_in(known),
                REASON_UNKNOWN_CONVERSATION,
            ).alias(REASON_COL)
        )
    return finish(df, originals, info, OUTCOME_DTYPES, OutcomeSchema, "outcomes", ["conversation_id"])


def load_customers(raw_dir: str | os.PathLike, on_unreadable: OnUnreadable = "stop") -> RawBatch:
    """Optional ``customers.parquet`` / ``customers/``: customer_id non-null and unique."""
    files = optional_table_files(raw_dir, "customers")
    if not files:
        return empty_batch(CUSTOMER_DTYPES, "customers")
    df, originals, info = read_many(files, CUSTOMER_DTYPES, CUSTOMER_REQUIRED, on_unreadable)
    if df is None:
        batch = empty_batch(CUSTOMER_DTYPES, "customers")
        batch.counts.update(files=info["files"], unreadable_files=info["unreadable_files"])
        return batch
    df = key_duplicates(df, ["customer_id"], list(CUSTOMER_DTYPES), "customer_id")
    return finish(df, originals, info, CUSTOMER_DTYPES, CustomerSchema, "customers", ["customer_id"])


__all__ = [
    "ON_UNREADABLE",
    "QUARANTINE_SCHEMA",
    "REASON_CAST",
    "REASON_CHANNEL",
    "REASON_CONFLICTING_KEY",
    "REASON_CONFLICTING_TURN",
    "REASON_CSAT",
    "REASON_DUPLICATE_COPY",
    "REASON_DUPLICATE_KEY_COPY",
    "REASON_EMPTY",
    "REASON_NEGATIVE_TURN",
    "REASON_NULL",
    "REASON_ROLE",
    "REASON_TS",
    "REASON_UNKNOWN_CONVERSATION",
    "REASON_UNREADABLE_FILE",
    "REASON_UTF8",
    "REPAIR_TEXT_UTF8",
    "OnUnreadable",
    "RawBatch",
    "RawInputError",
    "list_transcript_days",
    "load_customers",
    "load_outcomes",
    "load_transcripts",
    "load_transcripts_day",
]
