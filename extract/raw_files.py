"""Raw reader, stage 1: find the parquet files of the landing directory and read one file as stored.

Kept apart from casting and rules because it is the only stage that touches the file system: the
layout decisions (Hive ``date=`` directories or flat files, optional side tables as a file, a
folder, or a Spark folder named ``<table>.parquet``), the "what counts as unreadable" decision,
the allowed-roots check on every file opened, and the list of inputs that are *not* read
(:func:`landing_warnings`: every such entry is named with what to do) live here and nowhere else.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import TypeVar

import polars as pl
import pyarrow as pa_arrow
import pyarrow.parquet as pq

from extract.allowed_roots import ALLOWED_ROOTS_ENV, describe_roots, outside_roots, resolved_roots
from extract.raw_contract import RawInputError

_HIVE_DIR = re.compile(r"^date=(.*)$")
T = TypeVar("T")
# Threads that read transcript files at once (:func:`each_file`): a file is small and its read partly serial,
# so one more thread than cores keeps them busy (182 files on 2 cores: 1 thread 1.1–1.4 s, 2 threads 0.8 s,
# 3 threads 0.66 s).
READER_THREADS = min(8, (os.cpu_count() or 1) + 1)
# Names the layout recognises at the top of RAW/ (docs/CONTRACT.md §1); anything else is named.
_KNOWN_TOP = {"transcripts", "outcomes.parquet", "outcomes", "customers.parquet", "customers", "truth.json"}


@dataclass
class Landing:
    """What ``RAW/transcripts`` holds: the files that are read, and every entry that is not
    (with what to do about it), so nothing under it is skipped without a word."""

    hive: dict[date, list[Path]] = field(default_factory=dict)
    flat: list[Path] = field(default_factory=list)
    unread: list[str] = field(default_factory=list)


def _quiet(name: str) -> bool:
    """Marker and hidden files written beside data (``_SUCCESS``, ``.part-0.crc``, ``.DS_Store``)."""
    return name.startswith((".", "_")) or name.endswith(".crc")


def _walk(top: Path, unread: list[str]) -> list[Path]:
    """Every ``*.parquet`` below ``top`` (sorted), following symlinked folders once each (so a
    folder linked into the landing directory is read, and then checked against the allowed
    roots file by file). Other files and hidden or temporary folders are named in ``unread``."""
    found: list[Path] = []
    seen: set[Path] = set()
    stack = [top]
    while stack:
        cur = stack.pop()
        try:
            real = cur.resolve()
            entries = sorted(cur.iterdir())
        except (OSError, RuntimeError):
            unread.append(f"{cur}: cannot be listed — check its permissions")
            continue
        if real in seen:
            continue
        seen.add(real)
        for p in entries:
            if p.is_dir():
                if p.name.startswith((".", "_")):
                    n = sum(1 for f in p.rglob("*") if not f.is_dir())
                    if n:
                        unread.append(f"{p}: {n} file(s) not read — folders named '_…' or '.…' are temporary or "
                                      "hidden (e.g. an unfinished Spark write); move finished files out of it")
                else:
                    stack.append(p)
            elif p.name.endswith(".parquet"):
                found.append(p)  # also a FIFO or a broken link: read_file names it as unreadable
            elif not _quiet(p.name):
                unread.append(f"{p}: not read — only *.parquet files are read; export it as parquet")
    return sorted(found)


def _transcripts_dir(raw_dir: str | os.PathLike) -> Path:
    d = Path(raw_dir) / "transcripts"
    if not d.is_dir():
        raise RawInputError(
            f"{d}: required input missing (column: all) — expected Hive dirs "
            f"transcripts/date=YYYY-MM-DD/*.parquet or flat transcripts/*.parquet"
        )
    return d


def scan_transcripts(raw_dir: str | os.PathLike) -> Landing:
    """Hive partitions (date → files), flat files, and the entries of ``RAW/transcripts`` not read."""
    d = _transcripts_dir(raw_dir)
    out = Landing()
    for p in sorted(d.iterdir()):
        if p.is_dir():
            m = _HIVE_DIR.match(p.name)
            if not m:
                n = sum(1 for f in p.rglob("*") if not f.is_dir())
                if n and not p.name.startswith("."):
                    out.unread.append(
                        f"{p}: {n} file(s) not read — a folder under transcripts/ is read only when named "
                        "date=YYYY-MM-DD; move its parquet files into transcripts/date=YYYY-MM-DD/ (or directly "
                        "into transcripts/, where a conversation's day comes from its first timestamp)")
                continue
            try:
                day = date.fromisoformat(m.group(1))
            except ValueError as exc:
                raise RawInputError(
                    f"{p}: partition directory name is not date=YYYY-MM-DD (column: date) — {exc}"
                ) from None
            files = _walk(p, out.unread)
            if files:
                out.hive.setdefault(day, []).extend(files)
        elif p.name.endswith(".parquet"):
            out.flat.append(p)
        elif not _quiet(p.name):
            out.unread.append(f"{p}: not read — only *.parquet files are read; export it as parquet")
    if not out.hive and not out.flat:
        raise RawInputError(
            f"{d}: required input missing (column: all) — no parquet files under transcripts/"
        )
    return out


def discover_transcripts(raw_dir: str | os.PathLike) -> tuple[dict[date, list[Path]], list[Path]]:
    """Hive partitions (date → files) and flat files of ``RAW/transcripts``."""
    landing = scan_transcripts(raw_dir)
    return landing.hive, landing.flat


def optional_table_files(raw_dir: str | os.PathLike, name: str, unread: list[str] | None = None) -> list[Path]:
    """``RAW/<name>.parquet`` — a file, or a folder of parts as Spark writes it
    (``outcomes.parquet/part-*.parquet``) — and every parquet under ``RAW/<name>/``; [] when absent."""
    base = Path(raw_dir)
    sink = [] if unread is None else unread
    files: list[Path] = []
    single = base / f"{name}.parquet"
    if single.is_dir():
        files.extend(_walk(single, sink))
    elif single.exists() or single.is_symlink():
        files.append(single)  # not a regular file: read_file names it as unreadable
    folder = base / name
    if folder.is_dir():
        files.extend(_walk(folder, sink))
    return files


def landing_warnings(raw_dir: str | os.PathLike, today: date | None = None,
                     first_day: date | None = None) -> list[str]:
    """One line per input of the landing directory that a run does not read, naming it and what
    to do: folders under ``transcripts/`` not named ``date=…``, non-parquet files, temporary
    folders, ``date=`` folders for today or later (``today``: UTC today by default) or before
    ``first_day`` (the first partition), unknown entries at the top of ``RAW/``, and absent
    outcomes. An empty list when everything is read."""
    base = Path(raw_dir)
    today = today or datetime.now(timezone.utc).date()
    landing = scan_transcripts(base)
    out = list(landing.unread)
    for day in sorted(landing.hive):
        folder = base / "transcripts" / f"date={day.isoformat()}"
        if day >= today:
            out.append(f"{folder}: date {day} is today or later (UTC today is {today}) — conversations starting "
                       "on it are extracted once that day is over; if the date is wrong, move the files into the "
                       "folder of their day")
        elif first_day is not None and day < first_day:
            out.append(f"{folder}: date {day} is before the first partition {first_day} — not extracted; set "
                       f"CONVOCAUSAL_START_DATE to {day} or earlier")
    for table in ("outcomes", "customers"):
        optional_table_files(base, table, out)
    if not optional_table_files(base, "outcomes"):
        out.append(f"{base / 'outcomes.parquet'}: not found (nor outcomes/) — downstream outcomes such as "
                   "`resolved` are null for every conversation")
    for p in sorted(base.iterdir()):
        if p.name not in _KNOWN_TOP and not _quiet(p.name):
            out.append(f"{p}: not read — the landing directory holds transcripts/, outcomes.parquet (or "
                       "outcomes/) and customers.parquet (or customers/), see docs/CONTRACT.md §1; move or rename it")
    return out


# ============================================================================ reading one file
class Unreadable(Exception):
    """The bytes of a file are not parquet; the caller decides to stop or to quarantine it."""


def unreadable_error(path: Path, exc: Unreadable) -> RawInputError:
    """The error that stops a run (``on_unreadable="stop"``) at an unreadable file."""
    return RawInputError(f"{path}: file cannot be read as parquet (column: all) — {exc}")


def check_allowed(path: Path) -> None:
    """RawInputError when the final path of ``path`` (symlinks followed) leaves
    ``CONVOCAUSAL_ALLOWED_ROOTS``; checked before a file is opened, and before a result cached
    for it (:mod:`extract.raw_cache`) is used."""
    roots = resolved_roots()
    final = outside_roots(path, roots)
    if final is not None:  # a symlink below the raw directory that leaves the allowed roots
        raise RawInputError(
            f"{path}: resolves to {final}, outside {ALLOWED_ROOTS_ENV} ({describe_roots(roots)}) (column: all) — "
            f"copy the file into the landing directory or add its folder to {ALLOWED_ROOTS_ENV}"
        )


def read_file(
    path: Path, dtypes: dict[str, pl.DataType], required: Iterable[str]
) -> tuple[pl.DataFrame, list[str]]:
    """Read the contract columns of one parquet file as stored (no casting).

    Raises RawInputError for missing required columns, Unreadable for bytes that are not
    parquet, RawInputError for a path whose final target (symlinks followed) lies outside
    ``CONVOCAUSAL_ALLOWED_ROOTS``. String columns holding invalid UTF-8 make polars refuse the file; pyarrow reads
    them, and they come back as Binary so the UTF-8 rule can see them row by row. A path that is
    not a regular file (a FIFO named ``stream.parquet``, a device, a socket) is Unreadable before
    it is opened: opening a FIFO blocks until a writer appears, which hung the nightly run forever.
    """
    check_allowed(path)
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise Unreadable(f"cannot stat the file ({exc.strerror or exc})") from None
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else \
            "a device" if (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)) else "not a regular file"
        raise Unreadable(f"{kind}, not a parquet file: it is never opened (remove it from the landing directory)")
    try:
        file_schema = pq.read_schema(path)
    except Exception as exc:  # noqa: BLE001 - any failure here means unreadable bytes
        raise Unreadable(f"{type(exc).__name__}: {exc}") from None
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
            raise Unreadable(f"{type(exc).__name__}: {exc}") from None
    return df, optional_missing


def each_file(read: Callable[[Path], T], files: list[Path], name: str = "read") -> list[T]:
    """``read(path)`` of every file, on ``READER_THREADS`` threads, in the order of ``files``.

    Why threads: polars reads and hashes without the GIL, and one file's result needs no other (the
    conversation index's summaries, a chunk's files). ``map`` keeps the order, and raises the error of
    the first file in that order that fails, whichever thread failed first: the error a loop over the
    files raised."""
    with ThreadPoolExecutor(READER_THREADS, thread_name_prefix=name) as pool:
        return list(pool.map(read, files))
