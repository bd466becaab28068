"""pandera (polars backend) schemas for the three raw tables of CONTRACT §1, after casting.

These describe the *accepted* frames returned by :mod:`extract.raw`: canonical dtypes, no nulls
where the contract forbids them, allowed values, key uniqueness. The row rules in
:mod:`extract.raw` move every offending row to quarantine first, so a schema failure here
means the row rules and the schema disagree — a bug, raised as such by ``validate_accepted``.
Keeping the contract in one declarative place also documents it for the rest of the team.
"""

from __future__ import annotations

import pandera.polars as pa
import polars as pl
from pandera.engines import polars_engine as pe

ROLES: tuple[str, ...] = ("user", "assistant", "tool", "system")
INT32_MAX = 2**31 - 1  # the signals hold turn numbers and memory_items as Int32

# Canonical polars dtypes of the accepted frames (also used by extract.raw to build empty frames).
TRANSCRIPT_DTYPES: dict[str, pl.DataType] = {
    "conversation_id": pl.String(),
    "turn": pl.Int64(),
    "ts": pl.Datetime("us", "UTC"),
    "role": pl.String(),
    "text": pl.String(),
    "tool_name": pl.String(),
    "channel": pl.String(),
    "agent_version": pl.String(),
    "customer_id": pl.String(),
    "skill": pl.String(),
    "memory_items": pl.Int64(),
}
TRANSCRIPT_REQUIRED: tuple[str, ...] = ("conversation_id", "turn", "ts", "role", "channel", "agent_version")

OUTCOME_DTYPES: dict[str, pl.DataType] = {
    "conversation_id": pl.String(),
    "resolved": pl.Boolean(),
    "reopened_7d": pl.Boolean(),
    "escalated": pl.Boolean(),
    "csat": pl.Int64(),
}
OUTCOME_REQUIRED: tuple[str, ...] = ("conversation_id",)

CUSTOMER_DTYPES: dict[str, pl.DataType] = {
    "customer_id": pl.String(),
    "persona_segment": pl.String(),
}
CUSTOMER_REQUIRED: tuple[str, ...] = ("customer_id",)


class TranscriptSchema(pa.DataFrameModel):
    """One row per message; (conversation_id, turn) unique; channel constant per conversation."""

    conversation_id: str = pa.Field(nullable=False)
    turn: pl.Int64 = pa.Field(nullable=False, ge=0, le=INT32_MAX)  # 32-bit in the signals
    ts: pe.DateTime(time_zone="UTC", time_unit="us") = pa.Field(nullable=False)  # type: ignore[valid-type]
    role: str = pa.Field(nullable=False, isin=list(ROLES))
    text: str = pa.Field(nullable=True)
    tool_name: str = pa.Field(nullable=True)
    channel: str = pa.Field(nullable=False)
    agent_version: str = pa.Field(nullable=False)
    customer_id: str = pa.Field(nullable=True)
    skill: str = pa.Field(nullable=True)
    memory_items: pl.Int64 = pa.Field(nullable=True, ge=0, le=INT32_MAX)
    source_file: str = pa.Field(nullable=False, required=False)

    class Config:
        unique = ["conversation_id", "turn"]  # noqa: RUF012 - pandera reads a list

    @pa.dataframe_check
    def channel_constant_within_conversation(cls, data: pa.PolarsData) -> pl.LazyFrame:
        """Channel is a conversation-level attribute (CONTRACT §1)."""
        return data.lazyframe.select(
            (pl.col("channel").n_unique().over("conversation_id") == 1).alias("channel_constant")
        )


class OutcomeSchema(pa.DataFrameModel):
    """One row per conversation from downstream systems."""

    conversation_id: str = pa.Field(nullable=False, unique=True)
    resolved: pl.Boolean = pa.Field(nullable=True)
    reopened_7d: pl.Boolean = pa.Field(nullable=True)
    escalated: pl.Boolean = pa.Field(nullable=True)
    csat: pl.Int64 = pa.Field(nullable=True, in_range={"min_value": 1, "max_value": 5})
    source_file: str = pa.Field(nullable=False, required=False)


class CustomerSchema(pa.DataFrameModel):
    """One row per customer from the CRM."""

    customer_id: str = pa.Field(nullable=False, unique=True)
    persona_segment: str = pa.Field(nullable=True)
    source_file: str = pa.Field(nullable=False, required=False)
