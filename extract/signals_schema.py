"""Signal extraction, output shape: the final column expressions and the pandera schema of ``signals``.

Why together: both are derived from the same catalog (``extract.catalog``) — the expressions
build each column in catalog order with its final dtype, the schema checks exactly those columns,
dtypes and value ranges — so a column added to the catalog without an extraction rule fails here
loudly instead of drifting.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandera.polars as pa
import polars as pl

from configs.signals import SignalsConfig, load_signals_config
from extract.catalog import signal_columns, signals_dtypes
from extract.signals_inputs import CID


# --------------------------------------------------------------------------- schema
def signals_schema(config: SignalsConfig | None = None) -> pa.DataFrameSchema:
    """pandera schema of table ``signals``: exact columns and order, dtypes, nulls, value ranges.

    One row per conversation holds by construction (one row per run of a conversation's
    messages), so the schema does not re-hash every id to check uniqueness.
    """
    config = config or load_signals_config()
    checks: dict[str, list[pa.Check]] = {
        "hour_of_day": [pa.Check.in_range(0, 23)],
        "day_of_week": [pa.Check.in_range(0, 6)],
        "n_turns": [pa.Check.ge(1)],
        "n_user_turns": [pa.Check.ge(0)],
        "duration_s": [pa.Check.ge(0)],
        "memory_items": [pa.Check.ge(0)],
        "intent_confidence": [pa.Check.in_range(0.0, 1.0)],
    }
    for b in config.behaviours:
        checks[b.name] = [pa.Check.isin([0, 1])]
    for col in signal_columns(config):
        if col.name.endswith("_turn") and col.turn_column == col.name:
            checks[col.name] = [pa.Check.ge(0)]
    columns = {
        c.name: pa.Column(c.dtype, nullable=c.nullable, checks=checks.get(c.name, []))
        for c in signal_columns(config)
    }
    return pa.DataFrameSchema(columns, strict=True, ordered=True, name="signals")


def final_exprs(config: SignalsConfig, present: Sequence[str]) -> list[pl.Expr]:
    """Output columns in catalog order, with their final dtypes."""
    dtypes = signals_dtypes(config)
    started = pl.col("started_at")
    n_turns = pl.col("n_turns")
    exprs: dict[str, pl.Expr] = {
        "conversation_id": CID,
        "customer_key": pl.col("customer_key"),
        "started_at": started,
        "ended_at": pl.col("ended_at"),
        "duration_s": (pl.col("ended_at") - started).dt.total_microseconds().cast(pl.Float64) / 1e6,
        "date": started.dt.date(),
        "week": started.dt.date().dt.truncate("1w"),
        "hour_of_day": started.dt.hour(),
        "day_of_week": started.dt.weekday() - 1,
        "channel": pl.col("channel"),
        "agent_version": pl.col("agent_version"),
        "skill": pl.col("skill"),
        "persona_segment": (pl.col("persona_segment") if "persona_segment" in present else pl.lit(None, pl.String))
        .fill_null("unknown"),
        "intent": pl.col("intent").fill_null(config.intent.default),
        # no customer message → no opening → the default intent, which nothing vouches for
        "intent_confidence": pl.when(pl.col("intent").is_null()).then(pl.lit(0.0))
        .otherwise(pl.col("intent_confidence")),
        "n_turns": n_turns,
        "n_user_turns": pl.col("n_user_turns"),
        "tools_used": pl.col("tools_used").fill_null(pl.lit([], dtype=pl.List(pl.String))),
        "memory_items": pl.col("memory_items"),
        "memory_has_prior_session": (pl.col("memory_items").fill_null(0) > 0) | pl.col("__prior"),
    }
    for t in config.tools.known:
        turn = pl.col(f"__tn_{t.name}")
        if t.regex is not None:
            turn = pl.min_horizontal(turn, pl.col(f"__t_{t.name}"))
        exprs[f"tool_{t.name}_turn"] = turn
        exprs[f"tool_{t.name}"] = turn.is_not_null()
    for b in config.behaviours:
        turn = pl.col(f"__b_{b.name}")
        rule = b.early_if
        if rule.turn_at_most is not None:
            early = turn <= rule.turn_at_most
        elif rule.fraction_at_most is not None:
            early = turn.cast(pl.Float64) / pl.max_horizontal(n_turns - 1, pl.lit(1)) <= rule.fraction_at_most
        else:  # assistant text messages sent up to the first match (probe column __b_<name>__am)
            early = pl.col(f"__b_{b.name}__am") <= rule.assistant_message_at_most
        exprs[f"{b.name}_turn"] = turn
        exprs[b.name] = pl.when(turn.is_null()).then(None).when(early).then(1).otherwise(0)
    for o in config.outcomes.downstream:
        exprs[o.name] = pl.col(o.name) if o.name in present else pl.lit(None)
    for o in config.outcomes.transcript:
        exprs[o.name] = pl.col(f"__o_{o.name}").is_not_null()
    missing = [name for name in dtypes if name not in exprs]
    if missing:  # guards catalog/extraction drift
        raise RuntimeError(f"no extraction rule for catalog columns {missing}")
    return [exprs[name].cast(dtype).alias(name) for name, dtype in dtypes.items()]
