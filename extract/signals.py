"""Signal extraction: accepted transcript messages → one row of signals per conversation.

Why it is shaped this way: the causal methods need a flat, typed table of pre-treatment
covariates, behaviours with their timing, tools and outcomes (docs/DESIGN.md "Signals"), and
building it has to keep up with millions of messages a day. So every step is a polars
group-by, filter or join, and each regex runs only on the rows it applies to: intent rules on
the opening customer turns, behaviour patterns on the rows of their role, tools on the rows
that carry a ``tool_name``. Independent sub-queries are collected together (``pl.collect_all``)
so polars runs them in parallel, and when a ``LazyFrame`` (e.g. ``pl.scan_parquet``) comes in,
only the transcript columns are read.

Privacy: the output never carries text or the raw ``customer_id``; ``customer_key`` is
``sha256(salt + customer_id)`` with the salt from the config.

Intent comes with ``intent_confidence`` (what the extractor vouches for it: the rules 1.0 / 0.0,
a learned model its probability), so later steps can drop or re-weight uncertain conversations.

The steps live in small modules, one per section: :mod:`extract.signals_inputs` (typed inputs),
:mod:`extract.signals_queries` (message-level sub-queries), :mod:`extract.signals_steps`
(conversation-level steps) and :mod:`extract.signals_schema` (output columns and schema). This
module is the entry point and re-exports the public names (``opening_texts``, ``signals_schema``,
``customer_keys``, ``MESSAGE_COLUMNS``), which stay importable from ``extract.signals``.
"""

from __future__ import annotations

import time

import polars as pl

from configs.signals import SignalsConfig, load_signals_config
from extract.catalog import signals_dtypes
from extract.intent import IntentExtractor, extractor_from_config
from extract.signals_inputs import (
    CID,
    MESSAGE_COLUMNS,
    Frame,
    history_rows,
    join_side,
    side_table,
    typed_messages,
)
from extract.signals_queries import (
    base_facts,
    index_conversations,
    needs_message_index,
    opening_texts,
    openings_query,
    probe_query,
    probes,
    tools_query,
    with_message_index,
)
from extract.signals_schema import final_exprs, signals_schema
from extract.signals_steps import classify_intents, customer_keys, prior_session


# --------------------------------------------------------------------------- main entry point
def extract_signals(
    messages: Frame,
    outcomes: Frame | None = None,
    customers: Frame | None = None,
    history: Frame | None = None,
    config: SignalsConfig | None = None,
    intent_extractor: IntentExtractor | None = None,
    validate: bool = True,
    timings: dict[str, float] | None = None,
) -> pl.DataFrame:
    """One row of signals per conversation (docs/DESIGN.md "Signals"), validated by ``signals_schema``.

    ``messages``: accepted transcript rows (CONTRACT §1 columns; a LazyFrame is read lazily, only
    those columns). ``outcomes``: conversation_id + downstream outcome columns. ``customers``:
    customer_id + persona_segment. ``history``: customer_id + started_at of conversations from
    earlier days, so ``memory_has_prior_session`` is right across day partitions; it may carry
    ``customer_key`` instead of ``customer_id`` (e.g. read back from the signals store), or
    ``customer_hash`` keyed with the config's salt (:mod:`extract.history`).
    ``intent_extractor``: any ``IntentExtractor``; default the one the config names
    (``extract.intent.extractor_from_config``), never silently the rules for a config that asks for
    a learned model — that one needs its model folder, so build it with
    ``extractor_from_config(config, model_dir)`` once and pass it. ``timings``: a dict that
    receives seconds per stage.
    """
    config = config or load_signals_config()
    extractor = intent_extractor or extractor_from_config(config)
    lap = _Stopwatch(timings)
    msgs = typed_messages(messages)
    lap("read")
    msgs = index_conversations(msgs)
    lap("index")
    base = base_facts(msgs)
    lap("base")
    lf = msgs.lazy()
    queries = [openings_query(lf, config.intent.opening_user_turns), tools_query(lf, config.tool_names)]
    probe_lf = with_message_index(lf) if needs_message_index(config) else lf
    queries += [probe_query(probe_lf, roles, pats) for roles, pats in probes(config).items()]
    openings, tool_rows, *probe_rows = pl.collect_all(queries)
    del msgs, lf, probe_lf
    lap("openings_tools_behaviours")

    openings_in = openings.select(CID, "opening_text")
    intents = classify_intents(extractor, openings_in, config.intent.default)
    lap("intent")
    same_order = intents.height == openings.height and intents["conversation_id"].equals(openings["conversation_id"])
    out = base.join(tool_rows, on="__gid", how="left")
    for p in probe_rows:
        out = out.join(p, on="__gid", how="left")
    if same_order:  # the usual case: skip a string-keyed join
        out = out.join(intents.with_columns(openings["__gid"]).drop("conversation_id"), on="__gid", how="left")
    else:
        out = out.join(intents.unique(subset="conversation_id", keep="first"), on="conversation_id", how="left")
    lap("join_parts")

    keys = customer_keys(out["customer_id"], config.customer_key.salt)
    out = out.join(keys, on="customer_id", how="left")
    lap("customer_key")
    prior = prior_session(out, history_rows(history), config.memory.window_days, config.customer_key.salt)
    out = out.with_columns(prior.alias("__prior"))
    lap("memory")

    persona = side_table(customers, "customer_id", {"persona_segment": pl.String})
    if persona is not None:
        out = join_side(out, persona, "customer_id")
    downstream = {o.name: signals_dtypes(config)[o.name] for o in config.outcomes.downstream}
    outc = side_table(outcomes, "conversation_id", downstream)
    if outc is not None:
        out = join_side(out, outc, "conversation_id")
    lap("outcomes_customers")

    out = out.select(final_exprs(config, out.columns))
    lap("final")
    if validate:
        out = signals_schema(config).validate(out)
        lap("validate")
    return out


class _Stopwatch:
    """Records seconds per stage into ``timings`` (when given), for benchmarks and run logs."""

    def __init__(self, timings: dict[str, float] | None) -> None:
        self.timings = timings
        self.t = time.perf_counter()

    def __call__(self, stage: str) -> None:
        if self.timings is not None:
            now = time.perf_counter()
            self.timings[stage] = self.timings.get(stage, 0.0) + now - self.t
            self.t = now


__all__ = ["MESSAGE_COLUMNS", "customer_keys", "extract_signals", "opening_texts", "signals_schema"]
