"""Raw reader, stage 1: find the parquet files of the landing directory and read one file as stored.

Kept apart from casting and rules because it is the only stage that touches the file system: the
layout decisions (Hive ``date=`` directories or flat files, optional side tables as a file or a
folder) and the "what counts as unreadable" decision live here and nowhere else.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable
from datetime import date
from pathlib import Path

import polars as pl
import pyarrow as pa_arrow
import pyarrow.parquet as pq

from extract.raw_contract import RawInputError

_HIVE_DIR = re.compile(r"^date=(.*)$")


# ============================================================================ file discovery
def _transcripts_dir(raw_dir: str | os.PathLike) -> Path:
    d = Path(raw_dir) / "transcripts"
    if not d.is_dir():
        raise RawInputError(
            f"{d}: required input missing (column: all) — expected Hive dirs "
            f"transcripts/date=YYYY-MM-DD/*.parquet or flat transcripts/*.parquet"
        )
    return d


def discover_transcripts(raw_dir: str | os.PathLike) -> tuple[dict[date, list[Path]], list[Path]]:
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


def optional_table_files(raw_dir: str | os.PathLike, name: str) -> list[Path]:
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
class Unreadable(Exception):
    """The bytes of a file are not parquet; the caller decides to stop or to quarantine it."""


def unreadable_error(path: Path, exc: Unreadable) -> RawInputError:
    """The error that stops a run (``on_unreadable="stop"``) at an unreadable file."""
    return RawInputError(f"{path}: file cannot be read as parquet (column: all) — {exc}")


def read_file(
    path: Path, dtypes: dict[str, pl.DataType], required: Iterable[str]
) -> tuple[pl.DataFrame, list[str]]:
    """Read the contract columns of one parquet file as stored (no casting).

    Raises RawInputError for missing required columns, Unreadable for bytes that are not
    parquet. String columns holding invalid UTF-8 make polars refuse the file; pyarrow reads
    them, and they come back as Binary so the UTF-8 rule can see them row by row. A path that is
    not a regular file (a FIFO named ``stream.parquet``, a device, a socket) is Unreadable before
    it is opened: opening a FIFO blocks until a writer appears, which hung the nightly run forever.
    """
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
