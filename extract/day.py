"""Transcript days from raw files to signals rows: validate, quarantine, extract.

Pure functions (no Dagster): the ``signals_day`` asset and the tests call them. Days are
validated one by one (each keeps its own quarantine and counts) but extracted in chunks of
consecutive days, because extraction has a fixed cost per call (regex compilation, schema
validation, joins) that dominates when a day is small; a chunk still has to fit in memory,
so its size is bounded by ``max_messages``.

A conversation belongs to the UTC date of its first message wherever its rows are filed
(CONTRACT §1, :mod:`extract.raw_index`), so a run of some days also extracts again every
earlier (or later) day that owns conversations with rows filed in them: such a result has
``requested=False`` and replaces that day's part, so a conversation over midnight is one row
with all its turns whether the days run one at a time (the nightly case) or as one range.
"""

from __future__ import annotations

import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from extract.history import FILE_STARTS_SCHEMA, HistoryCarry, HistoryKey
from extract.overlap import prefetched
from extract.raw import (
    QUARANTINE_SCHEMA,
    REASON_UNREADABLE_FILE,
    OnUnreadable,
    RawBatch,
    continued_days,
    landing_warnings,
    load_transcripts_days,
)
from extract.raw_batch import validate_accepted
from extract.raw_cache import StartsCache
from extract.raw_index import transcript_index
from extract.raw_transcripts import conversation_runs_hold_keys
from extract.redact import SHIPPED_SALT, pseudonymize_ids, redact_labels
from extract.schemas import TranscriptSchema
from extract.signals import extract_signals
from extract.signals_inputs import rows_for_keys

DEFAULT_CHUNK_MESSAGES = 2_000_000
_OWNER = "__owner_day"


@dataclass
class DayResult:
    """One day's signals and quarantine, ready to replace that day's parts.

    ``requested`` is False for a day the caller did not ask for, extracted again because
    conversations it owns continue into a requested day (write its parts like the others; in
    Dagster it is outside the run's partitions, so its metadata cannot be attached to it).
    ``warnings``: one line each, for the run log: why an unrequested day was extracted, and, on
    the first result of a run, every input of the landing directory that is not read
    (:func:`extract.raw.landing_warnings`).
    """

    day: date
    signals: pl.DataFrame
    quarantine: pl.DataFrame
    counts: dict = field(default_factory=dict)
    requested: bool = True
    warnings: list[str] = field(default_factory=list)


def extract_day(raw_dir: str | Path, day: date, config, outcomes: RawBatch, customers: RawBatch,
                intent_extractor=None) -> DayResult:
    """One day on its own, for a caller that keeps only that day's result. A caller that writes
    parts uses :func:`extract_days`, which also yields the days whose conversations continue
    into ``day`` (``requested=False``); this result's ``warnings`` name them."""
    results = list(extract_days(raw_dir, [day], config, outcomes, customers, intent_extractor))
    return next(r for r in results if r.day == day)


def extract_days(raw_dir: str | Path, days: list[date], config, outcomes: RawBatch, customers: RawBatch,
                 intent_extractor=None, max_messages: int = DEFAULT_CHUNK_MESSAGES,
                 on_unreadable: OnUnreadable = "stop", today: date | None = None,
                 first_day: date | None = None, timings: dict | None = None,
                 cache_dir: str | Path | None = None) -> Iterator[DayResult]:
    """Yield one DayResult per day, extracting consecutive days together up to ``max_messages``.

    Besides ``days``, every day that owns conversations with rows filed on one of ``days`` is
    extracted again and yielded with ``requested=False`` (see the module doc). ``today`` and
    ``first_day`` (the first partition) only shape the landing warnings of the first result
    (folders for days not over yet, or before the first partition).

    ``on_unreadable="quarantine"`` skips a corrupt file and puts one file-level row in the day's
    quarantine (``raw_row`` null: its rows cannot be counted) instead of stopping the run.

    ``cache_dir``: the raw cache (:mod:`extract.raw_cache`) for the conversation index and the
    files' conversation starts, so a nightly run reads only the new or changed transcript files to
    build the index and its memory window.
    """
    requested = sorted(set(days))
    if not requested:
        return
    continued = continued_days(raw_dir, requested, cache_dir)
    notes = {d: [_extracted_again(d, into)] for d, into in continued.items()}
    first_notes = landing_warnings(raw_dir, today=today, first_day=first_day)
    if config.customer_key.salt == SHIPPED_SALT:
        first_notes.append("customer_key.salt is the shipped default of configs/signals.yaml: anyone can rebuild a "
                           "customer_key by hashing a guessed customer id; set a secret salt of your own in the "
                           "signals config (`customer_key: {salt: …}`) before sharing the store")
    wanted = sorted(set(requested) | set(continued))
    index = transcript_index(raw_dir, cache_dir)  # once per run: each look-up walks the landing directory
    key = HistoryKey.from_salt(config.customer_key.salt)
    starts_cache = StartsCache(cache_dir, FILE_STARTS_SCHEMA) if cache_dir is not None else None
    carry = HistoryCarry(config.memory.window_days, index, key, starts_cache)
    sides = _SideTables(outcomes.accepted, customers.accepted)
    # the next chunk is read and validated on a second thread while this one is extracted (extract.overlap)
    for chunk in prefetched(_chunks(raw_dir, wanted, max_messages, on_unreadable, index, timings), name="read-chunk"):
        for result in _extract_chunk(chunk, config, sides, intent_extractor, carry, timings):
            result.requested = result.day not in continued
            result.warnings = notes.get(result.day, []) + first_notes
            first_notes = []
            yield result
    if starts_cache is not None:  # the starts of files removed or changed since are of no further use
        starts_cache.prune(index.files, key)


def _extracted_again(day: date, into: list[date]) -> str:
    shown = ", ".join(f"date={x.isoformat()}" for x in into[:5])
    return (f"date={day.isoformat()} extracted again (not requested): conversations that start on it continue in "
            f"{shown}; its signals and quarantine parts are replaced")


def _chunks(raw_dir, days: list[date], max_messages: int, on_unreadable: OnUnreadable, index=None,
            timings: dict | None = None):
    """Validated days in runs of consecutive days (the memory history is loaded once per run,
    for the days before its first, from the runs before where they hold them), each run cut
    once it holds ``max_messages`` stored rows.

    A run's days are read and validated together (:func:`extract.raw.load_transcripts_days`:
    each file once, each rule once), yet each day keeps its own rows, quarantine and counts; the
    accepted rows' schema check (a check of the rules, with a fixed cost per call) runs once per
    run in :func:`_extract_chunk`. The rows of a day are known only once read, so the cut uses
    the row counts of the files' parquet footers."""
    index = index if index is not None else transcript_index(raw_dir)
    sizes = _stored_rows(index, days)
    for run in _runs(days, sizes, max_messages):
        t = time.perf_counter()
        batches = load_transcripts_days(raw_dir, run, on_unreadable=on_unreadable, index=index, validate=False,
                                        starts=True)
        _add(timings, "read_validate", t)
        yield [(d, batches[d]) for d in run]


def _runs(days: list[date], sizes: dict[date, int], max_messages: int) -> Iterator[list[date]]:
    """Consecutive days, cut at a gap and once a run reaches ``max_messages`` rows."""
    run: list[date] = []
    size = 0
    for day in days:
        if run and (day - run[-1]).days != 1:
            yield run
            run, size = [], 0
        run.append(day)
        size += sizes.get(day, 0)
        if size >= max_messages:
            yield run
            run, size = [], 0
    if run:
        yield run


def _stored_rows(index, days: list[date]) -> dict[date, int]:
    """Rows stored for each day, from the parquet footers (no data read): a ``date=`` file counts
    for its own day, a file shared by other days (a flat file) is split evenly among them. Only
    regular files are opened (a FIFO would block); an unreadable one counts 0 (its day reports it)."""
    days_of: dict[Path, list[date]] = {}
    for d in days:
        for path in index.files_for([d]):
            days_of.setdefault(path, []).append(d)
    sizes = dict.fromkeys(days, 0)
    for path, owners in days_of.items():
        try:
            n = pq.read_metadata(path).num_rows if stat.S_ISREG(path.stat().st_mode) else 0
        except Exception:  # noqa: BLE001 - unreadable: the loader reports it (stop or quarantine)
            n = 0
        home = index.folder_day.get(path)
        if home in sizes:
            sizes[home] += n
        else:
            for d in owners:
                sizes[d] += n // len(owners)
    return sizes


def redact_signals(signals: pl.DataFrame, salt: str | None = None) -> pl.DataFrame:
    """Redact PII from every label column of the signals (tool names, skills, versions…).

    Message text never reaches the signals, but labels are free text in the raw export too (a
    tool name logged with its argument, a queue named after a person's email). Labels take few
    distinct values, so each column's distinct values are redacted and only those that change are
    replaced (:func:`extract.redact.redact_labels`). The conversation id is the join key and is
    kept as it is, unless it looks like PII (an email used as an id): with ``salt`` such ids are
    hashed like customer ids (:func:`extract.redact.pseudonymize_ids`).
    """
    redacted = [redact_labels(signals[c]) for c, t in signals.schema.items()
                if t in (pl.String, pl.List(pl.String)) and c not in ("conversation_id", "customer_key")]
    out = signals.with_columns(redacted) if redacted else signals
    if salt is not None and "conversation_id" in out.columns:
        out = out.with_columns(pseudonymize_ids(out["conversation_id"], salt))
    return out


def _validate_chunk(pending, messages: pl.DataFrame) -> None:
    """The accepted rows' schema check once for the chunk; should it fail (which only a bug in
    the rules can cause), each day is checked on its own so the error names that day's rows as
    a per-day check would."""
    try:
        validate_accepted(TranscriptSchema, messages, "transcripts", keys_proven=conversation_runs_hold_keys(messages))
    except RuntimeError:
        for _, batch in pending:
            validate_accepted(TranscriptSchema, batch.accepted, "transcripts")
        raise


def _add(timings: dict | None, key: str, since: float) -> None:
    if timings is not None:
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - since


class _SideTables:
    """``outcomes`` and ``customers`` (accepted rows) for one chunk: only the rows whose key the
    chunk's messages hold (:func:`extract.signals_inputs.rows_for_keys`), the keys hashed once per
    run. The signals are those of the whole tables: a left join takes nothing else from them."""

    def __init__(self, outcomes: pl.DataFrame, customers: pl.DataFrame) -> None:
        self.outcomes, self.customers = outcomes, customers
        self._hashes = {name: frame[key].hash() for name, frame, key in
                        (("outcomes", outcomes, "conversation_id"), ("customers", customers, "customer_id"))}

    def for_messages(self, messages: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
        outcomes = rows_for_keys(self.outcomes, "conversation_id", messages["conversation_id"], self._hashes["outcomes"])
        customers = rows_for_keys(self.customers, "customer_id", messages["customer_id"], self._hashes["customers"])
        return outcomes, customers


def _extract_chunk(pending, config, sides: _SideTables, intent_extractor, carry: HistoryCarry,
                   timings: dict | None = None) -> Iterator[DayResult]:
    first = pending[0][0]
    t = time.perf_counter()
    history = carry.history(first)
    for day, batch in pending:  # after the history: a chunk's own days are never in its window
        carry.add(day, batch.starts)
        batch.starts = None
    _add(timings, "history", t)
    t = time.perf_counter()
    messages = pl.concat([b.accepted for _, b in pending], how="vertical_relaxed")
    _validate_chunk(pending, messages)
    outcomes, customers = sides.for_messages(messages)
    signals = extract_signals(messages, outcomes=outcomes, customers=customers,
                              history=history, config=config, intent_extractor=intent_extractor)
    signals = redact_signals(signals)
    # Each conversation goes to the day whose batch holds it (the day of its first message as
    # exported), never to a day outside the chunk: its ``date`` is computed from accepted rows
    # only, which differs when the first message itself was quarantined.
    owners = pl.concat(
        [b.accepted.select(pl.col("conversation_id").unique()).with_columns(pl.lit(d, dtype=pl.Date).alias(_OWNER))
         for d, b in pending]
    ).unique("conversation_id", keep="first", maintain_order=True)
    signals = signals.join(owners, on="conversation_id", how="left", maintain_order="left")
    signals = signals.with_columns(pl.coalesce(pl.col(_OWNER), pl.col("date")).alias(_OWNER))
    salt = config.customer_key.salt
    signals = signals.with_columns(pseudonymize_ids(signals["conversation_id"], salt))  # an email as id
    by_day = signals.partition_by(_OWNER, as_dict=True, include_key=False) if signals.height else {}
    empty = signals.drop(_OWNER).clear()
    _add(timings, "signals", t)
    for day, batch in pending:
        rows = by_day.get((day,), empty)
        quarantine = _with_unreadable_files(batch, day)
        quarantine = quarantine.with_columns(pseudonymize_ids(quarantine["conversation_id"], salt))
        counts = dict(batch.counts)
        counts["conversations"] = rows.height
        yield DayResult(day, rows, quarantine, counts)


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
    optional columns) are not quarantined, so this is where a user learns about them; so are
    exact copies dropped across files, days extracted again because their conversations
    continue into the run, and inputs of the landing directory that are not read.
    """

    conversations: int = 0
    messages_accepted: int = 0
    messages_quarantined: int = 0
    conversations_with_turn_gaps: int = 0
    conversations_ts_not_monotonic: int = 0
    texts_repaired: int = 0
    duplicate_copies: int = 0
    quarantined_by_reason: dict = field(default_factory=dict)
    unreadable_files: list = field(default_factory=list)
    missing_optional_columns: dict = field(default_factory=dict)
    duplicate_files: list = field(default_factory=list)
    days_extracted_again: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    def add(self, result: DayResult) -> None:
        c = result.counts
        self.conversations += result.signals.height
        self.messages_accepted += int(c.get("accepted", 0))
        self.messages_quarantined += int(c.get("quarantined", 0))
        self.conversations_with_turn_gaps += int(c.get("conversations_with_turn_gaps", 0))
        self.conversations_ts_not_monotonic += int(c.get("conversations_ts_not_monotonic", 0))
        self.texts_repaired += sum(int(v) for v in (c.get("repaired") or {}).values())
        self.duplicate_copies += int(c.get("duplicate_copies", 0))
        for reason, n in (c.get("quarantined_by_reason") or {}).items():
            self.quarantined_by_reason[reason] = self.quarantined_by_reason.get(reason, 0) + int(n)
        self.unreadable_files += [f["file"] for f in c.get("unreadable_files") or []]
        for file, cols in (c.get("missing_optional_columns") or {}).items():
            self.missing_optional_columns[file] = cols
        self.duplicate_files += [d for d in c.get("duplicate_files") or [] if d not in self.duplicate_files]
        if not result.requested:
            self.days_extracted_again.append(result.day.isoformat())
        self.notes += [w for w in result.warnings if w not in self.notes]

    def warnings(self) -> list[str]:
        """One plain sentence per finding, for the run log."""
        out = []
        if self.unreadable_files:
            out.append(f"{len(self.unreadable_files)} unreadable transcript file(s) quarantined, their rows are "
                       f"missing from the estimates: {', '.join(self.unreadable_files[:10])}")
        if self.messages_quarantined:
            top = "; ".join(f"{r}: {n}" for r, n in sorted(self.quarantined_by_reason.items(), key=lambda x: -x[1])[:5])
            out.append(f"{self.messages_quarantined} message(s) quarantined ({top}); see the quarantine table")
        if self.duplicate_copies:
            pairs = "; ".join(f"{d['file']} repeats {d['rows']} message(s) of {d['copy_of']}"
                              for d in self.duplicate_files[:5])
            out.append(f"{self.duplicate_copies} exact duplicate message(s) dropped, one copy of each kept (copies are "
                       f"in the quarantine table)" + (f": {pairs}" if pairs else ""))
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
        return out + self.notes
