"""Raw reader, the conversation index: which transcript day owns each conversation.

The rule (docs/CONTRACT.md §1, "Which day a conversation belongs to"): a conversation belongs to
the UTC date of its first message — the smallest parseable ``ts`` among all its rows, wherever
they were filed (any ``date=`` folder, any flat file). All its rows are read, validated and
extracted with that day, so a conversation exported by message date (two folders), filed under
a local-time folder, or running for 30 hours is one conversation with all its turns, whichever
days a run asks for. Rows without a usable timestamp anywhere in their conversation (and rows
without an id) stay with their folder's date; in a flat file, their own timestamp's date, else
the earliest day of the landing directory.

Why an index of its own: deciding that needs every file's ids and timestamps, and a run of one
day (the nightly case) must still find the rows of its conversations in later folders and know
which earlier days own conversations that continue into it (those days are extracted again; see
:func:`extract.day.extract_days`). Only two columns of each file are read, ids are kept as
64-bit hashes (a hash collision merges the day of two conversations — each is still read whole
from its own rows, so nothing is lost), and the index is cached per set of file versions (path,
size, mtime), so a backfill builds it once. With ``cache_dir`` (:mod:`extract.raw_cache`) each
file's summary is also kept on disk per file version, so a later process (the next night) reads
only the new or changed files.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import polars as pl

from extract.raw_batch import is_unique
from extract.raw_cache import IndexCache
from extract.raw_cast import normalize
from extract.raw_files import Unreadable, check_allowed, each_file, read_file, scan_transcripts
from extract.schemas import TRANSCRIPT_DTYPES

H = "__h"  # 64-bit hash of the conversation id as stored
FILE = "__file"
FILED = "__filed"  # the day a row is filed under: its folder's date, or a flat row's own ts date
MIN_TS = "__min_ts"
OWNER = "__owner"
_SEED = 19
_KEYS = {"conversation_id": TRANSCRIPT_DTYPES["conversation_id"], "ts": TRANSCRIPT_DTYPES["ts"]}


def id_hash(stored: pl.DataFrame) -> pl.Series:
    """Hash of each stored conversation id, the same whatever the file stored it as (String,
    Binary from the invalid-UTF-8 fallback, integers); null where there is no usable id."""
    if "conversation_id" not in stored.columns:
        return pl.Series(H, [None] * stored.height, dtype=pl.UInt64)
    dtype = stored.schema["conversation_id"]
    c = pl.col("conversation_id")
    if dtype.is_nested() or dtype in (pl.Null, pl.Object):
        return pl.Series(H, [None] * stored.height, dtype=pl.UInt64)
    if dtype == pl.String:
        c = c.cast(pl.Binary)
    elif dtype != pl.Binary:
        c = c.cast(pl.String, strict=False).cast(pl.Binary)
    return stored.select(pl.when(c.is_not_null()).then(c.hash(_SEED)).alias(H)).to_series()


def stored_ts(stored: pl.DataFrame) -> pl.Series:
    """The stored ``ts`` as UTC, with the reader's own casting rules (null where unparseable)."""
    if "ts" not in stored.columns:
        return pl.Series("ts", [None] * stored.height, dtype=_KEYS["ts"])
    norm, _ = normalize(stored.select("ts"), {"ts": _KEYS["ts"]}, (), "")
    return norm["ts"]


@dataclass
class TranscriptIndex:
    """Owner day of every conversation of ``RAW/transcripts`` and where its rows are."""

    files: list[Path]  # every transcript file, in reading order (Hive by day and name, then flat)
    folder_day: dict[Path, date | None]  # the date= folder of a Hive file, None for a flat file
    days: list[date]  # every day that owns rows (plus every date= folder), sorted
    fallback: date | None  # the earliest day: owner of flat rows with neither id day nor ts
    _file_owners: dict[Path, pl.DataFrame]  # file → (hash, owner day) of the conversations it holds
    _files_by_day: dict[date, set[Path]]  # owner day → files holding rows it owns
    _filed_owner: pl.DataFrame  # distinct (filed day, owner day) pairs
    _unreadable_flat: list[Path]

    def files_for(self, days: Iterable[date]) -> list[Path]:
        """Files holding rows owned by ``days`` (plus their date= folders' files and unreadable
        flat files, which the loader must report), in reading order."""
        wanted: set[Path] = set(self._unreadable_flat)
        for d in days:
            wanted |= self._files_by_day.get(d, set())
            wanted |= {f for f, fd in self.folder_day.items() if fd == d}
        return [f for f in self.files if f in wanted]

    def owner_days(self, path: Path, stored: pl.DataFrame) -> pl.Series:
        """The day that owns each stored row of ``path`` (its conversation's day).

        A row whose id the index does not know for this file (none, or the file changed since
        the index was built) belongs to its own filed day, so it is read exactly once too.
        """
        rows = pl.DataFrame({H: id_hash(stored)})
        table = self._file_owners.get(path)
        if table is not None:
            owner = rows.join(table, on=H, how="left", maintain_order="left")[OWNER]
        else:
            owner = pl.Series(OWNER, [None] * stored.height, dtype=pl.Date)
        if owner.null_count():
            if self.folder_day.get(path) is not None:
                own_day = pl.Series(OWNER, [self.folder_day[path]] * stored.height, dtype=pl.Date)
            else:
                own_day = stored_ts(stored).dt.date().fill_null(self.fallback).alias(OWNER)
            owner = owner.fill_null(own_day)
        return owner

    def file_owners(self, path: Path, hashes: pl.Series) -> pl.Series | None:
        """The owner day of each conversation hash of ``path`` (null where the index does not know
        it in this file); None when the index holds no ids for the file."""
        table = self._file_owners.get(path)
        if table is None:
            return None
        return pl.DataFrame({H: hashes}).join(table, on=H, how="left", maintain_order="left")[OWNER]

    def continued(self, days: Iterable[date]) -> dict[date, list[date]]:
        """Days outside ``days`` that own conversations with rows filed on one of ``days``:
        owner day → the days of ``days`` its conversations continue into."""
        asked = sorted(set(days))
        pairs = self._filed_owner.filter(pl.col(FILED).is_in(asked) & ~pl.col(OWNER).is_in(asked))
        out: dict[date, list[date]] = {}
        for filed, owner in pairs.sort(OWNER, FILED).iter_rows():
            out.setdefault(owner, []).append(filed)
        return out


def _version(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError:
        return (-1, -1)
    return (st.st_mtime_ns, st.st_size)


def transcript_index(raw_dir: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> TranscriptIndex:
    """The (cached) index of ``RAW/transcripts``; rebuilt when any file is added, removed or changed.

    ``cache_dir``: the raw cache folder (:func:`extract.raw_cache.raw_cache_dir`), where each
    file's summary is kept across processes; None reads every file (the in-process cache aside)."""
    hive, flat = _discover(raw_dir)
    key = tuple((str(p), d, *_version(p)) for d in sorted(hive) for p in hive[d]) + tuple(
        (str(p), None, *_version(p)) for p in flat
    )
    cache = str(Path(cache_dir).resolve()) if cache_dir is not None else None
    return _build(key, os.environ.get("CONVOCAUSAL_ALLOWED_ROOTS", ""), cache)


def _discover(raw_dir: str | os.PathLike) -> tuple[dict[date, list[Path]], list[Path]]:
    landing = scan_transcripts(raw_dir)
    return landing.hive, landing.flat


_SUMMARY_SCHEMA = {H: pl.UInt64(), FILED: pl.Date(), MIN_TS: _KEYS["ts"]}


def file_summary(stored: pl.DataFrame, folder_day: date | None) -> pl.DataFrame:
    """One transcript file's part of the index: each (id hash, filed day) with its first ts,
    sorted (so a summary read back from the disk cache is the one computed)."""
    frame = pl.DataFrame({H: id_hash(stored), MIN_TS: stored_ts(stored)})
    filed = pl.lit(folder_day, dtype=pl.Date) if folder_day is not None else pl.col(MIN_TS).dt.date()
    return (
        frame.with_columns(filed.alias(FILED))
        .group_by(H, FILED)
        .agg(pl.col(MIN_TS).min())
        .select(H, FILED, MIN_TS)
        .sort(H, FILED, nulls_last=False)
    )


@functools.lru_cache(maxsize=2)
def _build(key: tuple, _roots: str, cache_dir: str | None = None) -> TranscriptIndex:
    files = [Path(p) for p, *_ in key]
    folder_day = {Path(p): d for p, d, *_ in key}
    cache = IndexCache(cache_dir, _SUMMARY_SCHEMA) if cache_dir is not None else None

    def summarize(path: Path) -> pl.DataFrame | None:
        """The file's summary (kept or computed); None for a file that cannot be read."""
        summary = None
        if cache is not None:
            check_allowed(path)  # as read_file would, before a cached summary stands in for the file
            name, version, summary = cache.lookup(path, folder_day[path])
        if summary is None:
            started = time.time_ns()
            try:  # a file outside the allowed roots raises RawInputError here, before any day is read
                stored, _ = read_file(path, _KEYS, ())
            except Unreadable:  # reported by the day that reads it (stop or quarantine); never cached
                return None
            summary = file_summary(stored, folder_day[path])
            if cache is not None:
                cache.store(name, version, path, started, summary)
        return summary

    summaries = each_file(summarize, files, "index")  # 182 files of 42k rows on 2 cores: 1.1–1.4 s → 0.7–0.9 s
    parts, unreadable_flat = [], []
    for i, (path, summary) in enumerate(zip(files, summaries)):
        if summary is None:
            if folder_day[path] is None:
                unreadable_flat.append(path)
            continue
        parts.append(summary.with_columns(pl.lit(i, dtype=pl.UInt32).alias(FILE)))
    if cache is not None:
        cache.prune()
    schema = {H: pl.UInt64, FILED: pl.Date, MIN_TS: _KEYS["ts"], FILE: pl.UInt32}
    entries = pl.concat(parts, how="vertical_relaxed") if parts else pl.DataFrame(schema=schema)
    hive_days = {d for d in folder_day.values() if d is not None}
    ts_days = entries.select(pl.col(MIN_TS).min().dt.date()).item() if entries.height else None
    candidates = [d for d in (*hive_days, ts_days) if d is not None]
    fallback = min(candidates) if candidates else None
    no_day = pl.lit(fallback, dtype=pl.Date)
    if is_unique(entries.filter(pl.col(H).is_not_null()).select(H)):
        # every conversation in one file under one day (the usual export): its own entry is its group,
        # so the owner comes from the entry itself, without a group-by and a join over the history
        # (3 of 4 s at 10M conversations)
        placed = entries.with_columns(
            pl.when(pl.col(H).is_not_null()).then(pl.coalesce(pl.col(MIN_TS).dt.date(), pl.col(FILED), no_day))
            .otherwise(pl.coalesce(pl.col(FILED), no_day)).alias(OWNER))
    else:
        owners = (
            entries.filter(pl.col(H).is_not_null())
            .group_by(H)
            .agg(pl.col(MIN_TS).min(), pl.col(FILED).min())
            .select(H, pl.coalesce(pl.col(MIN_TS).dt.date(), pl.col(FILED), no_day).alias(OWNER))
        )
        placed = entries.join(owners, on=H, how="left").with_columns(
            pl.coalesce(pl.col(OWNER), pl.col(FILED), no_day).alias(OWNER)
        )
    known = placed.filter(pl.col(H).is_not_null()).select(FILE, H, OWNER)
    # (file, hash) repeats only in a flat file (one entry per filed day); a Hive file's entries are
    # unique already, and skipping their unique() saves a hash pass over the whole history
    flat_files = [i for i, f in enumerate(files) if folder_day[f] is None]
    if flat_files:
        is_flat = pl.col(FILE).is_in(flat_files)
        known = pl.concat([known.filter(~is_flat), known.filter(is_flat).unique([FILE, H])])
    file_owners = (
        {files[k[0]]: g for k, g in known.partition_by(FILE, as_dict=True, include_key=False).items()}
        if known.height else {}
    )
    files_by_day: dict[date, set[Path]] = {}
    for owner, idx in placed.group_by(OWNER).agg(pl.col(FILE).unique()).iter_rows():
        if owner is not None:
            files_by_day.setdefault(owner, set()).update(files[i] for i in idx)
    days = sorted(hive_days | {d for d in placed[OWNER].unique().to_list() if d is not None})
    filed_owner = placed.select(FILED, OWNER).drop_nulls().unique()
    return TranscriptIndex(files, folder_day, days, fallback, file_owners, files_by_day, filed_owner,
                           unreadable_flat)
