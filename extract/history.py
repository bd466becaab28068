"""Customer history for the memory signal, across day partitions.

``memory_has_prior_session`` needs to know whether the customer had a conversation in the
previous N days, which lives in other day partitions. The conversations of those days are the
ones the conversation index (:mod:`extract.raw_index`) says they own — wherever their rows are
filed, the same rule that puts a conversation in a day's batch — so a day extracted on its own
sees the same earlier conversations as a run over the whole range. Only four columns of those
files are read (parquet column pruning), which keeps this cheap and independent of the order in
which days are extracted, so day steps can run in parallel.
"""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import polars as pl

from extract.raw_cast import normalize
from extract.raw_files import Unreadable, read_file
from extract.raw_index import transcript_index
from extract.schemas import TRANSCRIPT_DTYPES

HISTORY_SCHEMA = {"customer_id": pl.String, "started_at": pl.Datetime("us", "UTC")}
_COLUMNS = ("conversation_id", "turn", "ts", "customer_id")


def load_history(raw_dir: str | Path, day: date, window_days: float, index=None) -> pl.DataFrame:
    """Start time of every conversation with a customer that starts in the ``window_days``
    before ``day`` (whole days: the window rounded up; the extraction applies the exact window).

    A conversation's customer is the one on its first turn, as in the signals. A file that
    cannot be read is skipped here: the day that owns it reports it (stop or quarantine).
    ``index``: the run's conversation index, when the caller already has it.
    """
    n_days = math.ceil(window_days)
    days = {day - timedelta(days=k) for k in range(1, n_days + 1)}
    index = index if index is not None else transcript_index(raw_dir)
    dtypes = {c: TRANSCRIPT_DTYPES[c] for c in _COLUMNS}
    frames = []
    for path in index.files_for(days):
        try:
            stored, _ = read_file(path, dtypes, ())
        except Unreadable:
            continue
        stored = stored.filter(index.owned_mask(path, stored, days))
        if stored.height:
            norm, _ = normalize(stored, dtypes, (), str(path))
            frames.append(norm.select(_COLUMNS))
    if not frames:
        return pl.DataFrame(schema=HISTORY_SCHEMA)
    start = min(days)
    lo = datetime(start.year, start.month, start.day, tzinfo=timezone.utc)
    hi = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
    return (
        pl.concat(frames, how="vertical")
        .filter(pl.col("conversation_id").is_not_null())
        .group_by("conversation_id")
        .agg(pl.col("customer_id").sort_by("turn").first(), pl.col("ts").min().alias("started_at"))
        .filter(pl.col("customer_id").is_not_null() & (pl.col("started_at") >= lo) & (pl.col("started_at") < hi))
        .select("customer_id", "started_at")
        .sort("started_at", "customer_id")
    )
