"""What every module of the raw reader agrees on: reason strings, the quarantine table, the
result and error types, the ``on_unreadable`` vocabulary and the internal column names.

Why a module of its own: the reader is split by stage (``raw_files`` finds and reads files,
``raw_cast`` casts, ``quarantine`` builds quarantine rows, ``raw_batch`` assembles batches,
``raw_transcripts`` holds the transcript rules) and every stage needs these names. Defining them
here, below all stages, avoids import cycles; :mod:`extract.raw` re-exports the public ones, which
stay importable from there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

import polars as pl

from extract.schemas import INT32_MAX

# ---------------------------------------------------------------------------- reason strings
REASON_NULL = "null in required column: {col}"
REASON_CAST = "wrong type: {col} cannot be cast to {dtype}"
REASON_TS = "unparseable timestamp: {col}"
REASON_UTF8 = "invalid UTF-8 in {col}"
REASON_ROLE = "role not in {user, assistant, tool, system}"
REASON_NEGATIVE_TURN = "negative turn"
REASON_TURN_RANGE = f"turn above {INT32_MAX}"
REASON_MEMORY_ITEMS = f"memory_items out of range 0..{INT32_MAX}"
REASON_DUPLICATE_COPY = "duplicate message: exact copy of (conversation_id, turn)"
REASON_CONFLICTING_TURN = "conflicting duplicate turn in conversation"
# appended when the conflicting rows sit in more than one file (a file re-exported with edits)
REASON_CONFLICT_FILES = " (same turn with different content in {files})"
REASON_CHANNEL = "channel not constant within conversation"
REASON_EMPTY = "empty conversation: no user or assistant message"
REASON_UNREADABLE_FILE = "unreadable file, rows not counted"
REASON_DUPLICATE_KEY_COPY = "duplicate row: exact copy of {key}"
REASON_CONFLICTING_KEY = "conflicting duplicate {key}"
REASON_CSAT = "csat out of range 1..5"
REASON_UNKNOWN_CONVERSATION = "unknown conversation"
REPAIR_TEXT_UTF8 = "text: invalid UTF-8 bytes replaced with U+FFFD"

QUARANTINE_SCHEMA: dict[str, pl.DataType] = {
    "source_file": pl.String(),
    "conversation_id": pl.String(),
    "reason": pl.String(),
    "raw_row": pl.String(),
    "table": pl.String(),
    "date": pl.Date(),
}

# ---------------------------------------------------------------------------- on_unreadable
# One vocabulary from the CLI and the Dagster resource down to the reader: a transcript file that
# is not readable parquet either stops the run, or is quarantined (listed, its rows not counted).
OnUnreadable = Literal["stop", "quarantine"]
ON_UNREADABLE: tuple[str, ...] = get_args(OnUnreadable)


def check_on_unreadable(on_unreadable: str) -> None:
    """Refuse any other value at the reader's entry, before a file is opened."""
    if on_unreadable not in ON_UNREADABLE:
        raise ValueError(f"on_unreadable must be one of {', '.join(ON_UNREADABLE)}, got {on_unreadable!r}")


# ---------------------------------------------------------------------------- internal columns
ROW_COL = "__row"  # row number within its stored file: links a quarantined row to its original
REASON_COL = "__reason"  # "; "-joined reasons, null while the row is still acceptable
DAY_COL = "__day"  # the transcript day a row belongs to


class RawInputError(ValueError):
    """A raw input that cannot be processed at all: message names file, column and reason."""


@dataclass
class RawBatch:
    """Result of reading one raw table (or one day of transcripts).

    ``accepted``: canonical dtypes + ``source_file``; ``quarantine``: QUARANTINE_SCHEMA;
    ``counts``: raw_rows, accepted, quarantined, quarantined_by_reason, files, … (see
    :mod:`extract.raw`). ``starts``: for a transcript day read with ``starts=True``, the
    conversation starts of every row read for it (:func:`extract.history.conversation_starts`),
    which the memory history of later days reuses; None when not asked for, or when a file of
    the day could not be read (its rows are unknown).
    """

    accepted: pl.DataFrame
    quarantine: pl.DataFrame
    counts: dict = field(default_factory=dict)
    starts: pl.DataFrame | None = None
