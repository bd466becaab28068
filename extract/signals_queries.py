"""Signal extraction, sub-queries: per-conversation facts, opening texts, pattern and tool turns.

Why a module of its own: these are the steps that scan messages, so they carry the performance
design (docs/DESIGN.md "Signals"): rows are indexed once by a dense integer conversation id in
(conversation, turn) order, every group-by runs on that sorted key, and each regex only reads the
rows of the roles it applies to. Each function returns a ``LazyFrame`` (or a small frame) so the
caller can collect independent queries together with ``pl.collect_all``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from configs.signals import SignalsConfig
from extract.signals_inputs import CID, ROLE, TEXT, TOOL, TURN, Frame, typed_messages

# --------------------------------------------------------------------------- sub-queries
GID = pl.col("__gid")


def index_conversations(msgs: pl.DataFrame) -> pl.DataFrame:
    """Rows ordered by (conversation, turn) plus a dense integer conversation index ``__gid``.

    Why: grouping 8M rows by a string id is the most expensive step of naive extraction.
    Exports are almost always already grouped by conversation and ordered by turn; then one
    vectorised pass finds the run boundaries (``__start``), every later group-by runs on a
    *sorted* integer key (polars' fast path) and "first turn" is simply the first row of a
    run. Only when the rows are not grouped that way is the frame sorted first.
    """
    if msgs.height == 0:
        return msgs.with_columns(pl.lit(None, pl.UInt32).alias("__gid"), pl.lit(True).alias("__start"))
    start = msgs.select((CID != CID.shift()).fill_null(True)).to_series()
    grouped = msgs.select((pl.lit(start) | (TURN > TURN.shift())).all()).item()
    # Runs must not repeat an id: guaranteed when ids are sorted, else check the run heads.
    if grouped and not msgs["conversation_id"].is_sorted():
        grouped = msgs.filter(start).select(CID.is_unique().all()).item()
    if not grouped:
        msgs = msgs.sort("conversation_id", "turn")
        start = msgs.select((CID != CID.shift()).fill_null(True)).to_series()
    gid = (start.cum_sum().cast(pl.UInt32) - 1).set_sorted()
    return msgs.with_columns(start.alias("__start"), gid.alias("__gid"))


def base_facts(msgs: pl.DataFrame) -> pl.DataFrame:
    """Per-conversation facts that need no text: times, counts, routing fields at the first turn.

    Rows are in (conversation, turn) order, so these come from the first and last row of each
    run and from running sums (no hashing); a group-by is used only for columns whose values
    are not in turn order (timestamps going backwards, memory_items set on a later row).
    """
    is_user = (ROLE == "user").cast(pl.Int32)
    x = msgs.lazy().select(
        GID, CID, pl.col("__start"), pl.col("__start").shift(-1).fill_null(True).alias("__end"),
        pl.col("ts"), pl.col("channel", "agent_version", "customer_id", "skill", "memory_items"),
        is_user.alias("__u"), is_user.cum_sum().alias("__cu"), pl.int_range(pl.len(), dtype=pl.Int64).alias("__i"),
    )
    heads = x.filter(pl.col("__start")).select(
        GID, CID, pl.col("ts").alias("started_at"), pl.col("channel", "agent_version", "customer_id", "skill"),
        pl.col("memory_items"), (pl.col("__cu") - pl.col("__u")).alias("__cu0"), pl.col("__i").alias("__i0"),
    )
    tails = x.filter(pl.col("__end")).select(
        pl.col("ts").alias("ended_at"), pl.col("__cu").alias("__cu1"), pl.col("__i").alias("__i1")
    )
    monotone, mem_const = msgs.select(
        (pl.col("__start") | (pl.col("ts") >= pl.col("ts").shift())).all().alias("monotone"),
        (pl.col("__start") | pl.col("memory_items").eq_missing(pl.col("memory_items").shift())).all().alias("const"),
    ).row(0)
    out = pl.concat([heads.collect(), tails.collect()], how="horizontal").select(
        GID, CID, "started_at", "ended_at",
        (pl.col("__i1") - pl.col("__i0") + 1).cast(pl.Int32).alias("n_turns"),
        (pl.col("__cu1") - pl.col("__cu0")).cast(pl.Int32).alias("n_user_turns"),
        pl.col("channel", "agent_version", "customer_id", "skill", "memory_items"),
    )
    fixes = []
    if not monotone:
        fixes += [pl.col("ts").min().alias("started_at"), pl.col("ts").max().alias("ended_at")]
    if not mem_const:  # injected at start; exports may set it on one row only
        fixes.append(pl.col("memory_items").max())
    if fixes:
        agg = msgs.lazy().group_by("__gid").agg(fixes).collect()
        out = out.drop(agg.columns[1:]).join(agg, on="__gid", how="left")
    return out


def openings_query(lf: pl.LazyFrame, n_user_turns: int) -> pl.LazyFrame:
    """The first ``n_user_turns`` customer messages of each conversation, joined by a space."""
    users = lf.filter(ROLE == "user").select(GID, CID, TEXT)
    if n_user_turns == 1:  # rows are in turn order: the first user row of each run
        return users.filter((GID != GID.shift()).fill_null(True)).select(GID, CID, TEXT.alias("opening_text"))
    text = TEXT.head(n_user_turns).str.join(" ", ignore_nulls=True)
    return users.group_by("__gid", maintain_order=True).agg(CID.first(), text.alias("opening_text"))


def opening_texts(messages: Frame, n_user_turns: int = 1) -> pl.DataFrame:
    """conversation_id + opening_text, the input of an ``IntentExtractor`` (and ``rule_match_counts``)."""
    msgs = index_conversations(typed_messages(messages))
    return openings_query(msgs.lazy(), n_user_turns).collect().drop("__gid")


@dataclass(frozen=True)
class Probe:
    """What makes a row count for one behaviour, transcript outcome or tool text pattern.

    ``regex``: the text must match (``None``: text is not read). ``tool_names``: the row's
    ``tool_name`` must be one of them (empty: any). ``message_index``: also report how many
    assistant text messages were sent up to the first matching row (``early_if:
    assistant_message_at_most``), as the column ``<probe>__am``.
    """

    regex: str | None = None
    tool_names: tuple[str, ...] = ()
    message_index: bool = False

    def condition(self) -> pl.Expr:
        cond = pl.lit(True)
        if self.regex is not None:
            cond = cond & TEXT.str.contains(self.regex)
        if self.tool_names:
            cond = cond & TOOL.is_in(list(self.tool_names))
        return cond.fill_null(False)


AM = "__am"  # assistant text messages so far in the conversation (including this row)


def probes(config: SignalsConfig) -> dict[tuple[str, ...], dict[str, Probe]]:
    """Row conditions grouped by the roles they read: roles → {probe column: Probe}."""
    out: dict[tuple[str, ...], dict[str, Probe]] = {}
    for b in config.behaviours:
        out.setdefault((b.role,), {})[f"__b_{b.name}"] = Probe(
            b.regex, tuple(b.tool_name), b.early_if.assistant_message_at_most is not None)
    for o in config.outcomes.transcript:
        out.setdefault((o.role,), {})[f"__o_{o.name}"] = Probe(o.regex)
    for t in config.tools.known:
        if t.regex is not None:
            out.setdefault(("assistant", "tool"), {})[f"__t_{t.name}"] = Probe(t.regex)
    return out


def needs_message_index(config: SignalsConfig) -> bool:
    """Only a behaviour positioned by assistant message needs ``__am`` (a running sum over every row)."""
    return any(b.early_if.assistant_message_at_most is not None for b in config.behaviours)


def with_message_index(lf: pl.LazyFrame) -> pl.LazyFrame:
    """Add ``__am``: assistant text messages (assistant rows with non-empty text) up to each row.

    Rows are in (conversation, turn) order with ``__start`` on each conversation's first row, so
    this is a running sum minus its value before the run (no group-by): a tool call without
    text does not advance it.
    """
    is_text = ((ROLE == "assistant") & TEXT.is_not_null() & (TEXT.str.len_bytes() > 0)).cast(pl.Int32)
    total = is_text.cum_sum()
    before_run = pl.when(pl.col("__start")).then(total - is_text).forward_fill()
    return lf.with_columns((total - before_run).alias(AM))


def probe_query(lf: pl.LazyFrame, roles: tuple[str, ...], probes_: dict[str, Probe]) -> pl.LazyFrame:
    """First turn at which each probe's condition holds, reading only rows of ``roles``.

    For probes with ``message_index`` also the assistant-message count at that row (the count
    only grows along the turns, so its minimum over matching rows is its value at the first).
    ``lf`` must carry ``__am`` when any probe asks for it (``with_message_index``).
    """
    names = list(probes_)
    rows = lf.filter(ROLE == roles[0] if len(roles) == 1 else ROLE.is_in(list(roles)))
    cols = []
    for name, probe in probes_.items():
        cond = probe.condition()
        cols.append(pl.when(cond).then(TURN).alias(name))
        if probe.message_index:
            cols.append(pl.when(cond).then(pl.col(AM)).alias(f"{name}{AM}"))
    hits = rows.select(GID, *cols).filter(pl.any_horizontal(pl.col(names).is_not_null()))
    return hits.group_by("__gid").agg(pl.all().exclude("__gid").min())


def tools_query(lf: pl.LazyFrame, tools: Sequence[str]) -> pl.LazyFrame:
    """Rows that carry a tool_name: the distinct tools seen (sorted) and each known tool's first turn."""
    rows = lf.filter(TOOL.is_not_null()).select(GID, TURN, TOOL)
    turns = rows.group_by("__gid").agg(*[TURN.filter(TOOL == t).min().alias(f"__tn_{t}") for t in tools])
    # Distinct names per conversation: sort, drop adjacent repeats, collect (cheaper than list.unique).
    seen = (
        rows.select(GID, TOOL).sort("__gid", "tool_name")
        .filter((GID != GID.shift()).fill_null(True) | (TOOL != TOOL.shift()).fill_null(True))
        .group_by("__gid").agg(TOOL.alias("tools_used"))
    )
    return seen.join(turns, on="__gid", how="left")
