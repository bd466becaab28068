"""Customer history for the memory signal, across day partitions.

``memory_has_prior_session`` needs to know whether the customer had a conversation in the
previous N days, which lives in other day partitions. The conversations of those days are the
ones the conversation index (:mod:`extract.raw_index`) says they own — wherever their rows are
filed, the same rule that puts a conversation in a day's batch — so a day extracted on its own
sees the same earlier conversations as a run over the whole range. Only four columns of those
files are read (parquet column pruning), which keeps this cheap and independent of the order in
which days are extracted, so day steps can run in parallel.

A backfill extracts its days in chunks, and each chunk's window (30 days by default) is mostly
days the chunk before has just read: :class:`HistoryCarry` keeps the conversation starts of the
days a run has read (:func:`conversation_starts`, computed from the same rows) and reads from
the files only the window's days it does not hold. At 10M conversations a window is ≈ 12M rows,
re-read for each of ≈ 36 chunks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import polars as pl

from extract.raw_batch import is_unique
from extract.raw_cast import normalize
from extract.raw_contract import DAY_COL
from extract.raw_files import Unreadable, read_file
from extract.raw_index import transcript_index
from extract.schemas import TRANSCRIPT_DTYPES

STARTS_SCHEMA = {"conversation_id": pl.String, DAY_COL: pl.Date, "first_turn": pl.Int64, "customer_id": pl.String,
                 "started_at": pl.Datetime("us", "UTC")}
HISTORY_COLUMNS = ("conversation_id", "turn", "ts", "customer_id")


def conversation_starts(rows: pl.DataFrame) -> pl.DataFrame:
    """The conversation starts of ``rows`` (every row read, quarantined ones too, each with its
    owner day in ``DAY_COL``): per run of consecutive rows of one conversation and owner day, its
    first turn, the customer on it and its first timestamp (``STARTS_SCHEMA``) — what the history
    of a later day needs of it.

    A conversation can come in several runs (its later turns filed in the next day's folder, or
    a file changed after the index was built, whose unknown rows belong to their filed day):
    :func:`history_window` merges its entries, which gives what one group-by of all its rows
    gives. Runs, not a group-by of the ids: a group-by over a sorted run number took 1.2 s where
    one over the string ids took 2.0 s, for a 10M store's 30-day window (14M rows)."""
    if rows.height == 0:
        return pl.DataFrame(schema=STARTS_SCHEMA)
    cid, day = pl.col("conversation_id"), pl.col(DAY_COL)
    run = ((cid != cid.shift(1)) | (day != day.shift(1))).fill_null(True).cum_sum()
    return (
        rows.filter(cid.is_not_null())
        .with_columns(run.alias("__run").set_sorted())
        .group_by("__run")
        .agg(cid.first(), day.first(), pl.col("turn").min().alias("first_turn"),
             pl.col("customer_id").sort_by("turn").first(), pl.col("ts").min().alias("started_at"))
        .select(list(STARTS_SCHEMA))
    )


def history_window(starts: pl.DataFrame, day: date, window_days: float) -> pl.DataFrame:
    """The history of ``day`` from conversation starts holding (at least) its window's days."""
    days = window(day, window_days)
    start = min(days)
    lo = datetime(start.year, start.month, start.day, tzinfo=timezone.utc)
    hi = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
    starts = starts.filter(pl.col(DAY_COL).is_in(sorted(days)))
    if not is_unique(starts.select("conversation_id")):  # a conversation in several runs: merge its entries
        starts = starts.group_by("conversation_id").agg(
            pl.col("customer_id").sort_by("first_turn").first(), pl.col("started_at").min())
    return (
        starts.filter(pl.col("customer_id").is_not_null() & (pl.col("started_at") >= lo) & (pl.col("started_at") < hi))
        .select("customer_id", "started_at")
        .sort("started_at", "customer_id")
    )


def window(day: date, window_days: float) -> set[date]:
    """The whole days before ``day`` that the history reads (the window rounded up; the
    extraction applies the exact window)."""
    return {day - timedelta(days=k) for k in range(1, math.ceil(window_days) + 1)}


def read_starts(days: Iterable[date], index) -> pl.DataFrame:
    """:func:`conversation_starts` of the conversations ``days`` own, read from their files. A file
    that cannot be read is skipped here: the day that owns it reports it (stop or quarantine)."""
    days = set(days)
    dtypes = {c: TRANSCRIPT_DTYPES[c] for c in HISTORY_COLUMNS}
    frames = []
    for path in index.files_for(days):
        try:
            stored, _ = read_file(path, dtypes, ())
        except Unreadable:
            continue
        owner = index.owner_days(path, stored)
        keep = owner.is_in(sorted(days)).fill_null(False)
        stored, owner = stored.filter(keep), owner.filter(keep)
        if stored.height:
            norm, _ = normalize(stored, dtypes, (), str(path))
            frames.append(norm.select(HISTORY_COLUMNS).with_columns(owner.alias(DAY_COL)))
    return conversation_starts(pl.concat(frames, how="vertical")) if frames else pl.DataFrame(schema=STARTS_SCHEMA)


def load_history(raw_dir: str | Path, day: date, window_days: float, index=None) -> pl.DataFrame:
    """Start time of every conversation with a customer that starts in the ``window_days``
    before ``day`` (whole days: the window rounded up; the extraction applies the exact window).

    A conversation's customer is the one on its first turn, as in the signals. A file that
    cannot be read is skipped here: the day that owns it reports it (stop or quarantine).
    ``index``: the run's conversation index, when the caller already has it.
    """
    index = index if index is not None else transcript_index(raw_dir)
    return history_window(read_starts(window(day, window_days), index), day, window_days)


class HistoryCarry:
    """The conversation starts of the days a run has read, so the history of a later chunk reads
    from the files only the days of its window the run has not.

    ``add(day, starts)`` with the starts of every row read for that day (None when a file of the
    day could not be read: those rows are unknown, and the day is read again from its files
    like any day not held); ``history(day)`` equals :func:`load_history` of that day
    (``tests/test_extract_batched.py``); days before the earliest window still ahead are dropped.
    """

    def __init__(self, window_days: float, index) -> None:
        self.window_days = window_days
        self.index = index
        self._held: dict[date, pl.DataFrame] = {}

    def add(self, day: date, starts: pl.DataFrame | None) -> None:
        if starts is not None:
            self._held[day] = starts

    def history(self, day: date) -> pl.DataFrame:
        days = window(day, self.window_days)
        for d in [d for d in self._held if d < min(days)]:  # chunks run forward: never needed again
            del self._held[d]
        held = [self._held[d] for d in sorted(days) if d in self._held]
        missing = sorted(d for d in days if d not in self._held)
        if missing:
            held.append(read_starts(missing, self.index))
        starts = pl.concat(held, how="vertical") if held else pl.DataFrame(schema=STARTS_SCHEMA)
        return history_window(starts, day, self.window_days)
