"""Transcript days from raw files to signals rows: validate, quarantine, extract.

Pure functions (no Dagster): the ``signals_day`` asset and the tests call them. Days are
validated one by one (each keeps its own quarantine and counts) but extracted in chunks of
consecutive days, because extraction has a fixed cost per call (regex compilation, schema
validation, joins) that dominates when a day is small; a chunk still has to fit in memory,
so its size is bounded by ``max_messages``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import polars as pl

from extract.history import load_history
from extract.raw import (
    QUARANTINE_SCHEMA,
    REASON_UNREADABLE_FILE,
    OnUnreadable,
    RawBatch,
    load_transcripts_day,
)
from extract.redact import redact_text
from extract.signals import extract_signals

DEFAULT_CHUNK_MESSAGES = 2_000_000


@dataclass
class DayResult:
    day: date
    signals: pl.DataFrame
    quarantine: pl.DataFrame
    counts: dict = field(default_factory=dict)


def extract_day(raw_dir: str | Path, day: date, config, outcomes: RawBatch, customers: RawBatch,
                intent_extractor=None) -> DayResult:
    """One day on its own (the nightly case)."""
    return next(extract_days(raw_dir, [day], config, outcomes, customers, intent_extractor))


def extract_days(raw_dir: str | Path, days: list[date], config, outcomes: RawBatch, customers: RawBatch,
                 intent_extractor=None, max_messages: int = DEFAULT_CHUNK_MESSAGES,
                 on_unreadable: OnUnreadable = "stop") -> Iterator[DayResult]:
    """Yield one DayResult per day, extracting consecutive days together up to ``max_messages``.

    ``on_unreadable="quarantine"`` skips a corrupt file and puts one file-level row in the day's
    quarantine (``raw_row`` null: its rows cannot be counted) instead of stopping the run.
    """
    pending: list[tuple[date, RawBatch]] = []
    size = 0
    for day in sorted(days):
        batch = load_transcripts_day(raw_dir, day, on_unreadable=on_unreadable)
        pending.append((day, batch))
        size += batch.accepted.height
        if size >= max_messages:
            yield from _extract_chunk(raw_dir, pending, config, outcomes, customers, intent_extractor)
            pending, size = [], 0
    if pending:
        yield from _extract_chunk(raw_dir, pending, config, outcomes, customers, intent_extractor)


def redact_signals(signals: pl.DataFrame) -> pl.DataFrame:
    """Redact PII from every label column of the signals (tool names, skills, versions…).

    Message text never reaches the signals, but labels are free text in the raw export too (a
    tool name logged with its argument, a queue named after a person's email). Done per
    conversation, not per message, so the cost is one regex pass over a few short columns.
    The conversation id is the join key and is kept as it is.
    """
    strings = [c for c, t in signals.schema.items() if t == pl.String and c not in ("conversation_id", "customer_key")]
    lists = [c for c, t in signals.schema.items() if t == pl.List(pl.String)]
    return signals.with_columns(
        *[redact_text(pl.col(c)).alias(c) for c in strings],
        *[pl.col(c).list.eval(redact_text(pl.element())).alias(c) for c in lists],
    )


def _extract_chunk(raw_dir, pending, config, outcomes, customers, intent_extractor) -> Iterator[DayResult]:
    first = pending[0][0]
    history = load_history(raw_dir, first, config.memory.window_days)
    messages = pl.concat([b.accepted for _, b in pending], how="vertical_relaxed")
    signals = extract_signals(messages, outcomes=outcomes.accepted, customers=customers.accepted,
                              history=history, config=config, intent_extractor=intent_extractor)
    signals = redact_signals(signals)
    by_day = signals.partition_by("date", as_dict=True, include_key=True) if signals.height else {}
    for day, batch in pending:
        rows = by_day.get((day,), signals.clear())
        counts = dict(batch.counts)
        counts["conversations"] = rows.height
        yield DayResult(day, rows, _with_unreadable_files(batch, day), counts)


def _with_unreadable_files(batch: RawBatch, day: date) -> pl.DataFrame:
    """The day's row quarantine plus one row per file that could not be read at all."""
    files = batch.counts.get("unreadable_files") or []
    if not files:
        return batch.quarantine
    rows = pl.DataFrame(
        {
            "source_file": [f["file"] for f in files],
            "conversation_id": [None] * len(files),
            "reason": [f"{REASON_UNREADABLE_FILE}: {f['error']}"[:500] for f in files],
            "raw_row": [None] * len(files),
            "table": ["transcripts"] * len(files),
            "date": [day] * len(files),
        },
        schema=QUARANTINE_SCHEMA,
    )
    return pl.concat([batch.quarantine, rows], how="vertical_relaxed")


@dataclass
class ExtractionTotals:
    """What a run of days found, summed for the asset's metadata and its warning lines.

    Rows that are kept but imperfect (turn gaps, timestamps out of order, repaired UTF-8, absent
    optional columns) are not quarantined, so this is where a user learns about them.
    """

    conversations: int = 0
    messages_accepted: int = 0
    messages_quarantined: int = 0
    conversations_with_turn_gaps: int = 0
    conversations_ts_not_monotonic: int = 0
    texts_repaired: int = 0
    quarantined_by_reason: dict = field(default_factory=dict)
    unreadable_files: list = field(default_factory=list)
    missing_optional_columns: dict = field(default_factory=dict)

    def add(self, result: DayResult) -> None:
        c = result.counts
        self.conversations += result.signals.height
        self.messages_accepted += int(c.get("accepted", 0))
        self.messages_quarantined += int(c.get("quarantined", 0))
        self.conversations_with_turn_gaps += int(c.get("conversations_with_turn_gaps", 0))
        self.conversations_ts_not_monotonic += int(c.get("conversations_ts_not_monotonic", 0))
        self.texts_repaired += sum(int(v) for v in (c.get("repaired") or {}).values())
        for reason, n in (c.get("quarantined_by_reason") or {}).items():
            self.quarantined_by_reason[reason] = self.quarantined_by_reason.get(reason, 0) + int(n)
        self.unreadable_files += [f["file"] for f in c.get("unreadable_files") or []]
        for file, cols in (c.get("missing_optional_columns") or {}).items():
            self.missing_optional_columns[file] = cols

    def warnings(self) -> list[str]:
        """One plain sentence per finding, for the run log."""
        out = []
        if self.unreadable_files:
            out.append(f"{len(self.unreadable_files)} unreadable transcript file(s) quarantined, their rows are "
                       f"missing from the estimates: {', '.join(self.unreadable_files[:10])}")
        if self.messages_quarantined:
            top = "; ".join(f"{r}: {n}" for r, n in sorted(self.quarantined_by_reason.items(), key=lambda x: -x[1])[:5])
            out.append(f"{self.messages_quarantined} message(s) quarantined ({top}); see the quarantine table")
        if self.conversations_with_turn_gaps:
            out.append(f"{self.conversations_with_turn_gaps} conversation(s) have gaps or out-of-order turns; "
                       "kept, sorted by turn")
        if self.conversations_ts_not_monotonic:
            out.append(f"{self.conversations_ts_not_monotonic} conversation(s) have timestamps that go back in time "
                       "along the turns; kept")
        if self.texts_repaired:
            out.append(f"{self.texts_repaired} message text(s) had invalid UTF-8, replaced with U+FFFD; kept")
        if self.missing_optional_columns:
            first = next(iter(self.missing_optional_columns.items()))
            out.append(f"{len(self.missing_optional_columns)} file(s) lack optional columns, read as null "
                       f"(e.g. {first[0]}: {', '.join(first[1])})")
        return out
