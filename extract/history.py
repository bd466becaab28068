"""Customer history for the memory signal, across day partitions.

``memory_has_prior_session`` needs to know whether the customer had a conversation in the
previous N days, which lives in other day partitions. Reading only three columns of the raw
files of those days (parquet column pruning) keeps this cheap and independent of the order in
which days are extracted, so day steps can run in parallel.
"""

from __future__ import annotations

import math
from datetime import date, timedelta
from pathlib import Path

import polars as pl

HISTORY_SCHEMA = {"customer_id": pl.String, "started_at": pl.Datetime("us", "UTC")}


def load_history(raw_dir: str | Path, day: date, window_days: float) -> pl.DataFrame:
    """Start time of every conversation with a customer in the ``window_days`` before ``day``.

    Whole days are read (the window rounded up); the extraction applies the exact window.
    """
    root = Path(raw_dir) / "transcripts"
    n_days = math.ceil(window_days)
    start = day - timedelta(days=n_days)
    hive = [root / f"date={(start + timedelta(days=i)).isoformat()}" for i in range(n_days)]
    files = [str(f) for d in hive if d.is_dir() for f in sorted(d.glob("*.parquet"))]
    if not any(root.glob("date=*")):
        files = [str(f) for f in sorted(root.glob("*.parquet"))]  # flat layout: filter by time below
    if not files:
        return pl.DataFrame(schema=HISTORY_SCHEMA)
    frames = []
    for f in files:
        try:
            frames.append(pl.scan_parquet(f).select("conversation_id", "customer_id", "ts"))
        except Exception:  # noqa: BLE001, S112 - an unreadable file is reported by validation, not here
            continue
    if not frames:
        return pl.DataFrame(schema=HISTORY_SCHEMA)
    lo = pl.datetime(start.year, start.month, start.day, time_zone="UTC")
    hi = pl.datetime(day.year, day.month, day.day, time_zone="UTC")
    try:
        out = (
            pl.concat(frames, how="diagonal_relaxed")
            .with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC"), strict=False))
            .filter(pl.col("customer_id").is_not_null())
            .group_by("conversation_id")
            .agg(pl.col("customer_id").first().cast(pl.String), pl.col("ts").min().alias("started_at"))
            .filter((pl.col("started_at") >= lo) & (pl.col("started_at") < hi))
            .select("customer_id", "started_at")
            .collect()
        )
    except (pl.exceptions.PolarsError, OSError):
        return pl.DataFrame(schema=HISTORY_SCHEMA)
    return out
