"""Read and validate the raw landing directory (CONTRACT §1), with quarantine.

Every raw row ends up in exactly one of two frames — ``accepted`` (canonical dtypes, passes the
pandera schema) or ``quarantine`` (with a reason) — so ``raw = accepted + quarantined`` holds
by construction and is reported in ``counts``. All rules are polars expressions over whole
frames; the only Python loops are over files.

Decisions (documented here because callers depend on them):

* **Required columns** are the contract's non-null columns (transcripts: conversation_id, turn,
  ts, role, channel, agent_version; outcomes: conversation_id; customers: customer_id). A file
  lacking one raises :class:`RawInputError` naming file and column(s). Nullable contract columns
  that are absent are filled with nulls and listed in ``counts["missing_optional_columns"]``.
  Columns outside the contract are never read.
* **Unreadable files** (corrupt parquet): by default (``on_unreadable="stop"``) the run stops
  with a :class:`RawInputError` naming the file — its rows cannot be counted, so continuing
  would silently break ``raw = accepted + quarantined``. ``on_unreadable="quarantine"`` skips the
  file and lists it in ``counts["unreadable_files"]`` (file + error) for callers that prefer a
  partial day to no day (``extract.day`` then writes one file-level quarantine row per file).
  A missing required table (no ``transcripts/`` parquet at all) always raises.
* **Invalid UTF-8**: in ``text`` it is *repaired* (invalid bytes → U+FFFD, counted in
  ``counts["repaired"]``) because dropping one message would cut a hole in the conversation;
  in any other string column (ids, role, channel, …) the row is quarantined, since an id that
  is not text cannot be trusted to join.
* **Duplicates** of (conversation_id, turn): exact copies keep the first and quarantine the
  copies; same key with different content quarantines the whole conversation (which message is
  true is unknowable, and the order of the conversation is broken).
* **Gaps / out-of-order turns** are *not* quarantined: the accepted frame is sorted by
  (conversation_id, turn) and ``counts["conversations_with_turn_gaps"]`` reports conversations
  whose turns are not exactly 0..n-1 (after row quarantine), plus
  ``counts["conversations_ts_not_monotonic"]`` for timestamps that go backwards. A missing turn
  still leaves a usable conversation for signal extraction; quarantining it would bias the data
  toward clean exports.
* **Day assignment** (CONTRACT §1, "Which day a conversation belongs to"): a conversation
  belongs to the UTC date of its first message (smallest ``ts`` over all its rows, in every
  ``date=`` folder and flat file); all its rows are read and validated with that day, so a
  conversation filed under two folders is one conversation, and copies or conflicting turns
  across folders are found like those within a file (an exact copy is quarantined as a copy
  and counted in ``counts["duplicate_copies"]``, with the file pairs in
  ``counts["duplicate_files"]``; a conflict names both files in its reason). Rows with no
  usable timestamp anywhere in their conversation stay with their folder's date (a flat file:
  their own ts date, else the earliest day), so a day-by-day pass over ``list_transcript_days``
  still sees every row exactly once. :func:`continued_days` names the days that own
  conversations continuing into given days (a run of those days extracts them again).
* **Ranges**: ``turn`` above 2^31-1 and ``memory_items`` outside 0..2^31-1 are quarantined
  (the signals are 32-bit; such values stopped the run before); a column of a nested type
  (``text`` as a list) is a cast failure of every non-null row, not a crash.
* **Inputs not read** are named by :func:`landing_warnings` (folders not named ``date=…``,
  non-parquet files, temporary folders, days not over yet, unknown entries of ``RAW/``); a
  file whose final path leaves ``CONVOCAUSAL_ALLOWED_ROOTS`` stops the run (RawInputError).

The reader is split by stage, each module small and single-purpose: :mod:`extract.raw_contract`
(reason strings, quarantine schema, :class:`RawBatch`, :class:`RawInputError`, the
``on_unreadable`` vocabulary), :mod:`extract.raw_files` (discovery, reading one file, inputs not
read), :mod:`extract.raw_index` (which day owns each conversation),
:mod:`extract.raw_cast` (casting, per-row reasons), :mod:`extract.quarantine` (redacted
``raw_row``), :mod:`extract.raw_batch` (read many files, accept/quarantine split, merge) and
:mod:`extract.raw_transcripts` (transcript rules, one day's batch). This module keeps the
public loaders and re-exports the public names, which stay importable from ``extract.raw``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from datetime import date
from pathlib import Path

import polars as pl

from extract.quarantine import quarantine_frame
from extract.raw_batch import empty_batch, finish, is_member, key_duplicates, merge_batches, read_many
from extract.raw_cache import HeldTable, TableCache, raw_cache_dir
from extract.raw_cast import add_reason
from extract.raw_contract import (  # the public names are re-exported, see __all__
    ON_UNREADABLE,
    QUARANTINE_SCHEMA,
    REASON_CAST,
    REASON_CHANNEL,
    REASON_COL,
    REASON_CONFLICTING_KEY,
    REASON_CONFLICTING_TURN,
    REASON_CSAT,
    REASON_DUPLICATE_COPY,
    REASON_DUPLICATE_KEY_COPY,
    REASON_EMPTY,
    REASON_MEMORY_ITEMS,
    REASON_NEGATIVE_TURN,
    REASON_NULL,
    REASON_ROLE,
    REASON_TS,
    REASON_TURN_RANGE,
    REASON_UNKNOWN_CONVERSATION,
    REASON_UNREADABLE_FILE,
    REASON_UTF8,
    REPAIR_TEXT_UTF8,
    ROW_COL,
    OnUnreadable,
    RawBatch,
    RawInputError,
    check_on_unreadable,
)
from extract.raw_files import (
    check_allowed,
    discover_transcripts,
    landing_warnings,
    optional_table_files,
    read_file,
)
from extract.raw_index import TranscriptIndex, transcript_index
from extract.raw_transcripts import load_transcript_days
from extract.redact import pseudonymize_ids
from extract.schemas import (
    CUSTOMER_DTYPES,
    CUSTOMER_REQUIRED,
    OUTCOME_DTYPES,
    OUTCOME_REQUIRED,
    TRANSCRIPT_DTYPES,
    CustomerSchema,
    OutcomeSchema,
)


# ============================================================================ transcripts
def list_transcript_days(raw_dir: str | os.PathLike, on_unreadable: OnUnreadable = "stop",
                         cache_dir: str | os.PathLike | None = None) -> list[date]:
    """Days present in ``RAW/transcripts``: every ``date=`` folder, plus every day that owns a
    conversation (the UTC date of its first message, see the module doc). Sorted ascending.
    ``cache_dir``: the raw cache (:mod:`extract.raw_cache`) for the conversation index."""
    check_on_unreadable(on_unreadable)
    return list(transcript_index(raw_dir, cache_dir).days)


def continued_days(raw_dir: str | os.PathLike, days: Iterable[date],
                   cache_dir: str | os.PathLike | None = None) -> dict[date, list[date]]:
    """Days not in ``days`` that own conversations with rows filed on one of ``days`` (in its
    ``date=`` folder, or, in a flat file, with a timestamp on it): owner day → those days.

    A run of ``days`` extracts these days again, because their conversations gained rows
    (the nightly case: a conversation that started before midnight, its later turns exported
    in the next day's folder)."""
    return transcript_index(raw_dir, cache_dir).continued(days)


def load_transcripts_day(raw_dir: str | os.PathLike, day: date, on_unreadable: OnUnreadable = "stop",
                         index: TranscriptIndex | None = None, validate: bool = True) -> RawBatch:
    """Read, cast and validate the conversations ``day`` owns, wherever their rows are filed.

    A day without any files gives an empty batch (``counts["files"] == 0``), not an error: a
    nightly schedule may ask for a day the platform did not export. The files read are the
    day's ``date=`` folder plus every file holding rows of its conversations (from the cached
    conversation index); each is narrowed to those rows before casting.

    ``index``: the run's :func:`transcript_index`, for a caller that loads many days (building or
    even looking up the cached index walks the landing directory, a fixed cost per call);
    ``validate=False`` leaves the accepted rows' schema check to the caller
    (:func:`extract.raw_batch.validate_accepted`, run once over many days).
    """
    return load_transcripts_days(raw_dir, [day], on_unreadable, index, validate)[day]


def load_transcripts_days(raw_dir: str | os.PathLike, days: Iterable[date], on_unreadable: OnUnreadable = "stop",
                          index: TranscriptIndex | None = None, validate: bool = True,
                          starts: bool = False) -> dict[date, RawBatch]:
    """:func:`load_transcripts_day` for many days at once: day → its batch, the same batch.

    Each file is read once for all the days (a flat file, or a folder holding the later turns of
    an earlier day's conversations, serves several) and the rules run once over all the rows,
    so a backfill pays the fixed cost of each step per call, not per day (182 calls of a few
    dozen frame operations each were most of the extraction stage at 1M conversations).
    Memory holds every day's rows at once: the caller bounds the days per call.
    """
    check_on_unreadable(on_unreadable)
    index = index if index is not None else transcript_index(raw_dir)
    wanted = sorted(set(days))
    files_by_day = {d: index.files_for([d]) for d in wanted}
    return load_transcript_days(index.files_for(wanted), files_by_day, index.owner_days, on_unreadable,
                                validate=validate, starts=starts)


def load_transcripts(
    raw_dir: str | os.PathLike, days: Iterable[date] | None = None, on_unreadable: OnUnreadable = "stop"
) -> RawBatch:
    """Many days (or all, ``days=None``) as one batch, processed day by day so memory holds one
    day of originals at a time; conversation-level rules apply within a day."""
    wanted = list(days) if days is not None else list_transcript_days(raw_dir, on_unreadable)
    if not wanted:
        discover_transcripts(raw_dir)
        return empty_batch(TRANSCRIPT_DTYPES, "transcripts", days=[])
    return merge_batches([load_transcripts_day(raw_dir, d, on_unreadable) for d in wanted])


# ============================================================================ outcomes, customers
_CONFIGURED_DTYPES = {"bool": pl.Boolean(), "int": pl.Int64(), "float": pl.Float64(), "str": pl.String()}


def outcome_dtypes(config=None) -> dict[str, pl.DataType]:
    """The outcome columns read: the contract's, then the config's other downstream outcomes."""
    extra = {o.name: _CONFIGURED_DTYPES[o.dtype] for o in (config.outcomes.downstream if config else [])
             if o.name not in OUTCOME_DTYPES}
    return {**OUTCOME_DTYPES, **extra}


def load_outcomes(
    raw_dir: str | os.PathLike,
    known_conversation_ids: pl.Series | None = None,
    on_unreadable: OnUnreadable = "stop",
    salt: str | None = None,
    config=None,
    cache_dir: str | os.PathLike | None = None,
) -> RawBatch:
    """Optional ``outcomes.parquet`` / ``outcomes/`` (or a Spark folder ``outcomes.parquet/``):
    conversation_id non-null and unique, csat in 1..5, booleans castable, and (when ids are given)
    a known conversation.

    ``config`` (the signals config): its downstream outcomes beyond the contract's four columns
    (e.g. a judge score, a logged action and its propensities) are read too, cast to their
    configured type like the contract columns; columns the config does not name stay unread.

    ``salt`` (the signals config's ``customer_key.salt``): the known ids come from the signals,
    where an id that looks like PII is hashed (:func:`extract.redact.pseudonymize_ids`); with the
    salt the outcome ids are compared, and quarantined, the same way.

    ``cache_dir``: the raw cache (:mod:`extract.raw_cache`): the validated rows (before the
    known-conversation check, which :func:`apply_known_conversations` applies on top) are kept
    per set of file versions and dtypes, so an unchanged table is not validated again."""
    dtypes = outcome_dtypes(config)
    validated, files, original = _validated_table(raw_dir, "outcomes", dtypes, OUTCOME_REQUIRED, on_unreadable,
                                                  _outcome_rules, OutcomeSchema, cache_dir)
    try:
        return apply_known_conversations(validated, files, original, known_conversation_ids, salt)
    except _Changed:  # a cached table's file changed before its rows could be quarantined: read it again
        validated, files, original = _validated_table(raw_dir, "outcomes", dtypes, OUTCOME_REQUIRED, on_unreadable,
                                                      _outcome_rules, OutcomeSchema, None)
        return apply_known_conversations(validated, files, original, known_conversation_ids, salt)


def load_customers(raw_dir: str | os.PathLike, on_unreadable: OnUnreadable = "stop",
                   cache_dir: str | os.PathLike | None = None) -> RawBatch:
    """Optional ``customers.parquet`` / ``customers/``: customer_id non-null and unique.
    ``cache_dir``: as for :func:`load_outcomes`."""
    validated, _, _ = _validated_table(raw_dir, "customers", CUSTOMER_DTYPES, CUSTOMER_REQUIRED, on_unreadable,
                                       _customer_rules, CustomerSchema, cache_dir)
    return _public(validated)


def _outcome_rules(df: pl.DataFrame, dtypes: dict[str, pl.DataType]) -> pl.DataFrame:
    bad_csat = ~pl.col("csat").is_between(1, 5)
    df = df.with_columns(add_reason(pl.col(REASON_COL), bad_csat, REASON_CSAT).alias(REASON_COL))
    return key_duplicates(df, ["conversation_id"], list(dtypes), "conversation_id")


def _customer_rules(df: pl.DataFrame, dtypes: dict[str, pl.DataType]) -> pl.DataFrame:
    return key_duplicates(df, ["customer_id"], list(dtypes), "customer_id")


_KEY = {"outcomes": "conversation_id", "customers": "customer_id"}


class _Changed(Exception):
    """A file of a cached table no longer has the version the cache entry was keyed by."""


def _validated_table(raw_dir, table: str, dtypes: dict[str, pl.DataType], required, on_unreadable: OnUnreadable,
                     rules, schema, cache_dir) -> tuple[RawBatch, list[str], Callable[[str], pl.DataFrame]]:
    """The table read and put through its rules, accepted and quarantine rows still carrying
    their row number in the stored file (``ROW_COL``); also the files in reading order and a
    getter of a file's stored rows (for the ``raw_row`` of rows quarantined afterwards).

    With ``cache_dir``, a batch validated earlier from the same file versions is read back;
    without, one validated earlier in this process and not yet taken (:class:`HeldTable`). A
    batch is kept only when every file was read (an unreadable file is reported each time)."""
    check_on_unreadable(on_unreadable)
    files = optional_table_files(raw_dir, table)
    names = [str(f) for f in files]
    if not files:
        return empty_batch(dtypes, table), names, {}.__getitem__
    cache = (TableCache(cache_dir, table, files, dtypes, required) if cache_dir is not None
             else HeldTable(table, files, dtypes, required))
    for f in files:
        check_allowed(f)  # as read_file would, before the cached rows stand in for the files
    hit = cache.get()
    if hit is not None:
        return hit, names, _reader(cache, dtypes, required)
    started = time.time_ns()
    df, originals, info = read_many(files, dtypes, required, on_unreadable)
    if df is None:
        batch = empty_batch(dtypes, table)
        batch.counts.update(files=info["files"], unreadable_files=info["unreadable_files"])
        return batch, names, originals.__getitem__
    df = rules(df, dtypes)
    batch = finish(df, originals, info, dtypes, schema, table, [_KEY[table]], keep_row=True)
    if not info["unreadable_files"]:
        cache.store(batch, started)
    return batch, names, originals.__getitem__


def _reader(cache: TableCache | HeldTable, dtypes, required) -> Callable[[str], pl.DataFrame]:
    def original(src: str) -> pl.DataFrame:
        stored, _ = read_file(Path(src), dtypes, required)
        if not cache.unchanged():
            raise _Changed(src)
        return stored
    return original


def apply_known_conversations(validated: RawBatch, files: list[str], original: Callable[[str], pl.DataFrame],
                              known_conversation_ids: pl.Series | None, salt: str | None) -> RawBatch:
    """The known-conversation check on validated outcomes (:func:`_validated_table`): an accepted
    row whose conversation_id (pseudonymized with ``salt``) is not among the known ids is
    quarantined as an unknown conversation, in the place (file, row) a single pass would give it;
    then the quarantine's PII-looking ids are pseudonymized with ``salt``."""
    accepted, quarantine, counts = validated.accepted, validated.quarantine, dict(validated.counts)
    if known_conversation_ids is not None and accepted.height:
        ids = accepted["conversation_id"] if salt is None else pseudonymize_ids(accepted["conversation_id"], salt)
        unknown = (~is_member(ids, known_conversation_ids)).fill_null(False)
        if unknown.any():
            bad = accepted.filter(unknown).with_columns(pl.lit(REASON_UNKNOWN_CONVERSATION).alias(REASON_COL))
            sources = {src: original(src) for src in bad["source_file"].unique(maintain_order=True).to_list()}
            new = quarantine_frame(bad, sources, "outcomes", keep=[ROW_COL])
            position = pl.col("source_file").replace_strict(files, list(range(len(files))), return_dtype=pl.Int64)
            quarantine = (pl.concat([quarantine, new], how="vertical")
                          .sort(position, pl.col(ROW_COL), maintain_order=True))
            accepted = accepted.filter(~unknown)
            by_reason = quarantine.group_by("reason").len().sort(["len", "reason"], descending=[True, False])
            counts.update(accepted=accepted.height, quarantined=quarantine.height,
                          quarantined_by_reason=dict(by_reason.iter_rows()))
    batch = _public(RawBatch(accepted, quarantine, counts))
    if salt is not None and batch.quarantine.height:
        batch.quarantine = batch.quarantine.with_columns(pseudonymize_ids(batch.quarantine["conversation_id"], salt))
    return batch


def _public(batch: RawBatch) -> RawBatch:
    """Without the internal row numbers."""
    drop = [ROW_COL]
    return RawBatch(batch.accepted.drop(drop, strict=False), batch.quarantine.drop(drop, strict=False), batch.counts)


__all__ = [
    "ON_UNREADABLE",
    "QUARANTINE_SCHEMA",
    "REASON_CAST",
    "REASON_CHANNEL",
    "REASON_CONFLICTING_KEY",
    "REASON_CONFLICTING_TURN",
    "REASON_CSAT",
    "REASON_DUPLICATE_COPY",
    "REASON_DUPLICATE_KEY_COPY",
    "REASON_EMPTY",
    "REASON_MEMORY_ITEMS",
    "REASON_NEGATIVE_TURN",
    "REASON_NULL",
    "REASON_ROLE",
    "REASON_TS",
    "REASON_TURN_RANGE",
    "REASON_UNKNOWN_CONVERSATION",
    "REASON_UNREADABLE_FILE",
    "REASON_UTF8",
    "REPAIR_TEXT_UTF8",
    "OnUnreadable",
    "RawBatch",
    "RawInputError",
    "apply_known_conversations",
    "continued_days",
    "landing_warnings",
    "list_transcript_days",
    "load_customers",
    "load_outcomes",
    "load_transcripts",
    "load_transcripts_day",
    "load_transcripts_days",
    "raw_cache_dir",
]
