"""The signal catalog: what every column of table ``signals`` is, where it comes from, and when it is known.

Why it exists: a causal question may only adjust for covariates measured *before* the treatment,
and should distrust outcomes the agent writes itself. ``configs/questions.py`` reads this catalog
(table ``signal_catalog``) to reject post-treatment covariates (``measured_at`` ≠ ``start``) and to
flag agent-controlled outcomes. The same column list drives the output schema of
``extract.signals`` (dtype, nullability, column order), so catalog and table cannot drift apart.

``measured_at``: ``start`` = known when the conversation starts (routing, customer, memory,
agent build, the opening message's intent); ``turn`` = happens at some turn, named by
``turn_column``; ``end`` = only known once the conversation is over (length, duration, outcomes).
``agent_controlled``: the value is decided or written by the agent inside the conversation
(its behaviours, its tool calls, its own claim that the ticket is resolved).

``kind = extraction`` marks a column that describes how well another signal was *measured*
(``intent_confidence``), not something that happened in the conversation: it is known at the
start like the intent it qualifies, but it is no cause of treatment or outcome, so the causal
graph (``convocausal/questions/graph.py``, which takes start signals of kinds ``covariate`` and
``time``) and the drift monitor leave it out; it is there to drop or re-weight uncertain
conversations (issue 14: sensitivity to extraction error).
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from configs.signals import SignalsConfig

UTC_TS = pl.Datetime("us", "UTC")
_OUTCOME_DTYPES: dict[str, pl.DataType] = {
    "bool": pl.Boolean(), "int": pl.Int32(), "float": pl.Float64(), "str": pl.String(),
}

CATALOG_SCHEMA: dict[str, pl.DataType] = {
    "name": pl.String(),
    "kind": pl.String(),
    "measured_at": pl.String(),
    "source": pl.String(),
    "agent_controlled": pl.Boolean(),
    "dtype": pl.String(),
    "turn_column": pl.String(),
    "description": pl.String(),
}


@dataclass(frozen=True)
class SignalColumn:
    """One output column of ``signals``."""

    name: str
    kind: str  # id | time | covariate | extraction | behaviour | tool | outcome
    measured_at: str  # start | turn | end
    source: str  # transcript | outcomes | customers | transcript+history | config
    agent_controlled: bool
    dtype: pl.DataType
    nullable: bool
    turn_column: str | None = None
    description: str = ""


def signal_columns(config: SignalsConfig) -> list[SignalColumn]:
    """All columns of ``signals`` in output order, for a given config."""
    c = SignalColumn
    cols = [
        c("conversation_id", "id", "start", "transcript", False, pl.String(), False,
          description="conversation id from the transcripts"),
        c("customer_key", "id", "start", "transcript", False, pl.String(), True,
          description="sha256(salt + customer_id); never the raw id"),
        c("started_at", "time", "start", "transcript", False, UTC_TS, False, description="first message (UTC)"),
        c("ended_at", "time", "end", "transcript", False, UTC_TS, False, description="last message (UTC)"),
        c("duration_s", "time", "end", "transcript", False, pl.Float64(), False,
          description="ended_at - started_at in seconds"),
        c("date", "time", "start", "transcript", False, pl.Date(), False, description="UTC date of started_at"),
        c("week", "time", "start", "transcript", False, pl.Date(), False, description="Monday of started_at's week"),
        c("hour_of_day", "time", "start", "transcript", False, pl.Int32(), False, description="0-23, UTC"),
        c("day_of_week", "time", "start", "transcript", False, pl.Int32(), False, description="0=Monday … 6=Sunday"),
        c("channel", "covariate", "start", "transcript", False, pl.String(), False),
        c("agent_version", "covariate", "start", "transcript", False, pl.String(), False,
          description="agent build (model + prompt) at the first message"),
        c("skill", "covariate", "start", "transcript", False, pl.String(), True, description="routing queue"),
        c("persona_segment", "covariate", "start", "customers", False, pl.String(), False,
          description="CRM segment; 'unknown' when missing"),
        c("intent", "covariate", "start", "transcript", False, pl.String(), False,
          description=f"from the first {config.intent.opening_user_turns} customer message(s); "
          f"'{config.intent.default}' when {_default_when(config)}"),
        c("intent_confidence", "extraction", "start", "transcript", False, pl.Float64(), True,
          description=_confidence_description(config)),
        c("n_turns", "covariate", "end", "transcript", False, pl.Int32(), False, description="messages in the conversation"),
        c("n_user_turns", "covariate", "end", "transcript", False, pl.Int32(), False, description="customer messages"),
        c("tools_used", "tool", "end", "transcript", True, pl.List(pl.String()), False,
          description="distinct tool_name values seen, sorted"),
    ]
    for t in config.tools.known:
        col, turn = f"tool_{t.name}", f"tool_{t.name}_turn"
        cols.append(c(col, "tool", "turn", "transcript", True, pl.Boolean(), False, turn,
                      f"tool {t.name} called at least once"))
        cols.append(c(turn, "tool", "turn", "transcript", True, pl.Int32(), True, turn,
                      f"first turn calling {t.name}; null if never"))
    cols += [
        c("memory_items", "covariate", "start", "transcript", False, pl.Int32(), True,
          description="memory items injected at conversation start"),
        c("memory_has_prior_session", "covariate", "start", "transcript+history", False, pl.Boolean(), False,
          description=f"memory_items > 0 or a prior conversation of the customer within "
          f"{config.memory.window_days:g} days"),
    ]
    for b in config.behaviours:
        turn = f"{b.name}_turn"
        when = b.early_if.describe()
        what = _behaviour_match(b)
        cols.append(c(b.name, "behaviour", "turn", "transcript", True, pl.Int8(), True, turn,
                      f"1 if the first {what} is at {when}, 0 if later, null if never"))
        cols.append(c(turn, "behaviour", "turn", "transcript", True, pl.Int32(), True, turn,
                      f"turn of the first {what}; null if never"))
    for o in config.outcomes.downstream:
        cols.append(c(o.name, "outcome", "end", "outcomes", False, _OUTCOME_DTYPES[o.dtype], True,
                      description="from the outcomes export (downstream system)"))
    for o in config.outcomes.transcript:
        cols.append(c(o.name, "outcome", "end", "transcript", True, pl.Boolean(), False,
                      description=f"{o.role} text says so (agent-controlled: prefer a downstream outcome)"))
    return cols


def _default_when(config: SignalsConfig) -> str:
    if config.intent.extractor == "rules":
        return "no rule matches"
    if config.intent.extractor == "classifier":
        low = config.intent.classifier.min_confidence
        return "there is no customer message" + (f" or the model's confidence is below {low:g}" if low > 0 else "")
    return f"extractor `{config.intent.extractor}` gives none"


def _confidence_description(config: SignalsConfig) -> str:
    """What ``intent_confidence`` means for the configured extractor (it differs by extractor)."""
    if config.intent.extractor == "rules":
        return "1.0 when a rule matched the opening text, 0.0 when the default intent was used"
    if config.intent.extractor == "classifier":
        return ("the classifier's probability of its most likely intent (0-1); 0.0 when there is no "
                "customer message")
    return (f"confidence reported by extractor `{config.intent.extractor}` (0-1); null when it reports none, "
            "0.0 when there is no customer message")


def _behaviour_match(b) -> str:
    """A behaviour's matching rule in words: role, text patterns and/or tool names."""
    parts = []
    if b.all_patterns:
        parts.append(f"matching {b.name}")
    if b.tool_name:
        parts.append("calling " + ", ".join(b.tool_name[:5]) + (" …" if len(b.tool_name) > 5 else ""))
    return f"{b.role} row " + " and ".join(parts)


def signals_dtypes(config: SignalsConfig) -> dict[str, pl.DataType]:
    """Output column → polars dtype, in output order."""
    return {col.name: col.dtype for col in signal_columns(config)}


def build_catalog(config: SignalsConfig) -> pl.DataFrame:
    """Table ``signal_catalog``: name, kind, measured_at, source, agent_controlled, dtype, turn_column."""
    cols = signal_columns(config)
    return pl.DataFrame(
        {
            "name": [x.name for x in cols],
            "kind": [x.kind for x in cols],
            "measured_at": [x.measured_at for x in cols],
            "source": [x.source for x in cols],
            "agent_controlled": [x.agent_controlled for x in cols],
            "dtype": [str(x.dtype) for x in cols],
            "turn_column": [x.turn_column for x in cols],
            "description": [x.description for x in cols],
        },
        schema=CATALOG_SCHEMA,
    )
