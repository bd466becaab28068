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

What a history holds past the reader: the starts are *keyed* (:class:`HistoryKey`, :func:`keyed`) —
conversation and customer ids become 64-bit hashes seeded from the ``customer_key`` salt — so that
a nightly run can keep each transcript file's starts on disk (:class:`extract.raw_cache.StartsCache`,
beside the index entries) and read its 30-day window from there instead of from ≈ 10M rows of
transcripts (3.0 s at 10M conversations). No raw id is written; the memory signal matches
customers on the same hash (:func:`extract.signals_steps.prior_session`). Two customers whose
hashes collide would share a history, and two conversations whose hashes collide in one window would
count as one: with 10⁷ ids the chance that any pair collides is ≈ 3·10⁻⁶.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import polars as pl

from extract.raw_batch import is_unique
from extract.raw_cast import normalize
from extract.raw_contract import DAY_COL
from extract.raw_files import Unreadable, read_file
from extract.raw_index import H, id_hash, transcript_index
from extract.schemas import TRANSCRIPT_DTYPES

STARTS_SCHEMA = {"conversation_id": pl.String, DAY_COL: pl.Date, "first_turn": pl.Int64, "customer_id": pl.String,
                 "started_at": pl.Datetime("us", "UTC")}
HISTORY_COLUMNS = ("conversation_id", "turn", "ts", "customer_id")
CUSTOMER_HASH = "customer_hash"  # the history's customer: a keyed 64-bit hash of customer_id
KEYED_SCHEMA = {"conversation_hash": pl.UInt64, DAY_COL: pl.Date, "first_turn": pl.Int64, CUSTOMER_HASH: pl.UInt64,
                "started_at": pl.Datetime("us", "UTC")}
FILE_STARTS_SCHEMA = {H: pl.UInt64, **{k: v for k, v in KEYED_SCHEMA.items() if k != DAY_COL}}


@dataclass(frozen=True)
class HistoryKey:
    """The seed of the history's id hashes, derived from the ``customer_key`` salt (so a cached
    history of one salt is never read under another: :attr:`digest` is part of the cache key, and
    holds a hash of the salt, never the salt)."""

    seed: int
    digest: str

    @classmethod
    def from_salt(cls, salt: str) -> HistoryKey:
        h = hashlib.sha256(("convocausal-history\0" + salt).encode()).digest()
        return cls(int.from_bytes(h[:8], "little"), h[8:24].hex())

    def hash(self, expr: pl.Expr) -> pl.Expr:
        """The keyed hash of a String expression; null stays null."""
        return pl.when(expr.is_not_null()).then(expr.hash(self.seed))


def keyed(starts: pl.DataFrame, key: HistoryKey) -> pl.DataFrame:
    """:func:`conversation_starts` rows (``STARTS_SCHEMA``) with both ids hashed (``KEYED_SCHEMA``)."""
    return starts.select(
        key.hash(pl.col("conversation_id")).alias("conversation_hash"), pl.col(DAY_COL), pl.col("first_turn"),
        key.hash(pl.col("customer_id")).alias(CUSTOMER_HASH), pl.col("started_at"))


def _start_of() -> list[pl.Expr]:
    """What a history needs of a conversation's rows (one group): its first turn, the customer on
    that turn and its first timestamp."""
    return [pl.col("turn").min().alias("first_turn"), pl.col("customer_id").sort_by("turn").first(),
            pl.col("ts").min().alias("started_at")]


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
        .agg(cid.first(), day.first(), *_start_of())
        .select(list(STARTS_SCHEMA))
    )


def history_window(starts: pl.DataFrame, day: date, window_days: float) -> pl.DataFrame:
    """The history of ``day`` from conversation starts holding (at least) its window's days.

    ``starts``: ``STARTS_SCHEMA`` (raw ids: returns ``customer_id, started_at``) or ``KEYED_SCHEMA``
    (returns ``customer_hash, started_at``)."""
    conv, who = ("conversation_id", "customer_id") if "conversation_id" in starts.columns else \
        ("conversation_hash", CUSTOMER_HASH)
    days = window(day, window_days)
    start = min(days)
    lo = datetime(start.year, start.month, start.day, tzinfo=timezone.utc)
    hi = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
    starts = starts.filter(pl.col(DAY_COL).is_in(sorted(days)))
    if not is_unique(starts.select(conv)):  # a conversation in several runs: merge its entries
        starts = starts.group_by(conv).agg(pl.col(who).sort_by("first_turn").first(), pl.col("started_at").min())
    return (
        starts.filter(pl.col(who).is_not_null() & (pl.col("started_at") >= lo) & (pl.col("started_at") < hi))
        .select(who, "started_at")
        .sort("started_at", who)
    )


def window(day: date, window_days: float) -> set[date]:
    """The whole days before ``day`` that the history reads (the window rounded up; the
    extraction applies the exact window)."""
    return {day - timedelta(days=k) for k in range(1, math.ceil(window_days) + 1)}


def read_starts(days: Iterable[date], index, key: HistoryKey, cache=None) -> pl.DataFrame:
    """Keyed :func:`conversation_starts` (``KEYED_SCHEMA``) of the conversations ``days`` own, read
    from their files — or, with ``cache`` (:class:`extract.raw_cache.StartsCache`), from each file
    version's kept starts, which are kept for the next run. A file that cannot be read is skipped
    here: the day that owns it reports it (stop or quarantine)."""
    days = sorted(set(days))
    wanted = pl.Series(days, dtype=pl.Date)
    frames = []
    for path in index.files_for(days):
        started = time.time_ns()
        name, version, starts = cache.lookup(path, key.digest) if cache is not None else (None, None, None)
        owner = _owners(index, path, starts)
        if owner is None or owner.null_count():  # not kept, or ids the index does not know: read the file
            starts = _read_file_starts(path, index, key)
            if starts is None:
                continue
            if cache is not None:
                cache.store(name, version, path, started, starts.drop(DAY_COL))
        else:
            starts = starts.with_columns(owner.alias(DAY_COL))
        frames.append(starts.filter(pl.col(DAY_COL).is_in(wanted)).select(list(KEYED_SCHEMA)))
    return pl.concat(frames, how="vertical") if frames else pl.DataFrame(schema=KEYED_SCHEMA)


def _owners(index, path: Path, kept: pl.DataFrame | None) -> pl.Series | None:
    """The owner day of each kept start of ``path`` (None: nothing kept, or the index holds no ids of it)."""
    if kept is None:
        return None
    return pl.Series(DAY_COL, [], pl.Date) if kept.height == 0 else index.file_owners(path, kept[H])


def _read_file_starts(path: Path, index, key: HistoryKey) -> pl.DataFrame | None:
    """A file's starts (``FILE_STARTS_SCHEMA`` plus each conversation's owner day in ``DAY_COL``),
    from its rows; None when it cannot be read. ``__h`` is the index's hash of the id as stored (to
    look the owner day up later), taken before an invalid UTF-8 id is repaired. Rows the index does
    not know belong to their filed day (:meth:`TranscriptIndex.owner_days`), so their starts carry
    that day."""
    dtypes = {c: TRANSCRIPT_DTYPES[c] for c in HISTORY_COLUMNS}
    try:
        stored, _ = read_file(path, dtypes, ())
    except Unreadable:
        return None
    owner = index.owner_days(path, stored)
    hashes = id_hash(stored)
    norm, _ = normalize(stored, dtypes, (), str(path))
    cid = pl.col("conversation_id")
    return (
        norm.select(HISTORY_COLUMNS).with_columns(hashes.alias(H), owner.alias(DAY_COL))
        .filter(cid.is_not_null() & pl.col(DAY_COL).is_not_null())
        .group_by(DAY_COL, H, "conversation_id", maintain_order=True)
        .agg(*_start_of())
        .select(pl.col(H), key.hash(cid).alias("conversation_hash"), pl.col("first_turn"),
                key.hash(pl.col("customer_id")).alias(CUSTOMER_HASH), pl.col("started_at"), pl.col(DAY_COL))
    )


def read_raw_starts(days: Iterable[date], index) -> pl.DataFrame:
    """:func:`conversation_starts` with the raw ids (``STARTS_SCHEMA``) of the conversations ``days``
    own, from every row of their files: the definition the keyed, cached :func:`read_starts` is
    tested against (``tests/test_extract_batched.py``)."""
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
    before ``day`` (whole days: the window rounded up; the extraction applies the exact window),
    as ``customer_id, started_at`` read from the files.

    A conversation's customer is the one on its first turn, as in the signals. A file that
    cannot be read is skipped here: the day that owns it reports it (stop or quarantine).
    ``index``: the run's conversation index, when the caller already has it.
    """
    index = index if index is not None else transcript_index(raw_dir)
    return history_window(read_raw_starts(window(day, window_days), index), day, window_days)


class HistoryCarry:
    """The conversation starts of the days a run has read, so the history of a later chunk reads
    from the files (or the starts cache) only the days of its window the run has not.

    ``add(day, starts)`` with the starts of every row read for that day (None when a file of the
    day could not be read: those rows are unknown, and the day is read again from its files
    like any day not held); ``history(day)`` is keyed (``customer_hash, started_at``) and equals
    :func:`load_history` of that day with its customers hashed (``tests/test_extract_batched.py``);
    days before the earliest window still ahead are dropped. ``cache``: a
    :class:`extract.raw_cache.StartsCache` for the days read from files.
    """

    def __init__(self, window_days: float, index, key: HistoryKey, cache=None) -> None:
        self.window_days = window_days
        self.index = index
        self.key = key
        self.cache = cache
        self._held: dict[date, pl.DataFrame] = {}

    def add(self, day: date, starts: pl.DataFrame | None) -> None:
        if starts is not None:
            self._held[day] = keyed(starts, self.key)

    def history(self, day: date) -> pl.DataFrame:
        days = window(day, self.window_days)
        for d in [d for d in self._held if d < min(days)]:  # chunks run forward: never needed again
            del self._held[d]
        held = [self._held[d] for d in sorted(days) if d in self._held]
        missing = sorted(d for d in days if d not in self._held)
        if missing:
            held.append(read_starts(missing, self.index, self.key, self.cache))
        starts = pl.concat(held, how="vertical") if held else pl.DataFrame(schema=KEYED_SCHEMA)
        return history_window(starts, day, self.window_days)
