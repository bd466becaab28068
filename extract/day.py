"""One transcript day from raw files to signals rows: validate, quarantine, extract.

Pure function of its inputs (no Dagster): the ``signals_day`` asset and the tests call it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import polars as pl

from extract.history import load_history
from extract.raw import RawBatch, load_transcripts_day
from extract.signals import extract_signals


@dataclass
class DayResult:
    day: date
    signals: pl.DataFrame
    quarantine: pl.DataFrame
    counts: dict = field(default_factory=dict)


def extract_day(raw_dir: str | Path, day: date, config, outcomes: RawBatch, customers: RawBatch,
                intent_extractor=None) -> DayResult:
    """Validate the day's messages, quarantine bad rows, and extract one row per conversation."""
    batch = load_transcripts_day(raw_dir, day)
    history = load_history(raw_dir, day, config.memory.window_days)
    signals = extract_signals(batch.accepted, outcomes=outcomes.accepted, customers=customers.accepted,
                              history=history, config=config, intent_extractor=intent_extractor)
    counts = dict(batch.counts)
    counts["conversations"] = signals.height
    return DayResult(day, signals, batch.quarantine, counts)
