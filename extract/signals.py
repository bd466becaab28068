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
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Sequence

import duckdb
import pandera.polars as pa
import polars as pl

from extract.catalog import UTC_TS, signal_columns, signals_dtypes
from extract.config import SignalsConfig, load_signals_config
from extract.intent import IntentExtractor, RuleIntentExtractor

MESSAGE_COLUMNS: tuple[str, ...] = (
    "conversation_id", "turn", "ts", "role", "text", "tool_name",
    "channel", "agent_version", "customer_id", "skill", "memory_items",
)
Frame = pl.DataFrame | pl.LazyFrame

CID = pl.col("conversation_id")
TURN = pl.col("turn")
ROLE = pl.col("role")
TEXT = pl.col("text")
TOOL = pl.col("tool_name")


# --------------------------------------------------------------------------- inputs
def _utc(expr: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """Timestamps as Datetime(us, UTC): naive values are taken as UTC (CONTRACT §1)."""
    if isinstance(dtype, pl.Datetime):
        expr = expr.dt.replace_time_zone("UTC") if dtype.time_zone is None else expr.dt.convert_time_zone("UTC")
        return expr.dt.cast_time_unit("us")
    if dtype == pl.Date:
        return expr.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    return expr.str.to_datetime(time_zone="UTC", time_unit="us") if dtype == pl.String else expr.cast(UTC_TS)


def _messages(messages: Frame) -> pl.DataFrame:
    """The transcript columns only, typed; a LazyFrame is collected with projection pushdown."""
    lf = messages.lazy()
    schema = lf.collect_schema()
    missing = [c for c in MESSAGE_COLUMNS if c not in schema]
    if missing:
        raise ValueError(f"messages frame lacks transcript column(s) {missing} (CONTRACT §1)")
    lf = lf.select(
        CID.cast(pl.String),
        TURN.cast(pl.Int32),
        _utc(pl.col("ts"), schema["ts"]).alias("ts"),
        ROLE.cast(pl.String),
        TEXT.cast(pl.String),
        TOOL.cast(pl.String),
        pl.col("channel", "agent_version", "customer_id", "skill").cast(pl.String),
        pl.col("memory_items").cast(pl.Int32),
    )
    if isinstance(messages, pl.LazyFrame):
        return lf.collect(engine="streaming")
    return lf.collect()


def _optional(frame: Frame | None, key: str, columns: dict[str, pl.DataType]) -> pl.DataFrame | None:
    """An optional side table: key + wanted columns (missing ones as nulls), null keys dropped."""
    if frame is None:
        return None
    lf = frame.lazy()
    schema = lf.collect_schema()
    if key not in schema:
        raise ValueError(f"side table lacks key column `{key}`")
    exprs = [pl.col(key).cast(pl.String)]
    for name, dtype in columns.items():
        exprs.append(pl.col(name).cast(dtype) if name in schema else pl.lit(None, dtype=dtype).alias(name))
    return lf.select(exprs).filter(pl.col(key).is_not_null()).collect()


def _join_side(out: pl.DataFrame, side: pl.DataFrame, key: str) -> pl.DataFrame:
    """Left-join a side table that should have one row per key; duplicates keep the first row."""
    try:
        return out.join(side, on=key, how="left", validate="m:1")
    except pl.exceptions.ComputeError:  # duplicated keys: never multiply conversations
        return out.join(side.unique(subset=key, keep="first", maintain_order=True), on=key, how="left")


# --------------------------------------------------------------------------- sub-queries
GID = pl.col("__gid")


def _index_conversations(msgs: pl.DataFrame) -> pl.DataFrame:
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


def _base(msgs: pl.DataFrame) -> pl.DataFrame:
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


def _openings_query(lf: pl.LazyFrame, n_user_turns: int) -> pl.LazyFrame:
    """The first ``n_user_turns`` customer messages of each conversation, joined by a space."""
    users = lf.filter(ROLE == "user").select(GID, CID, TEXT)
    if n_user_turns == 1:  # rows are in turn order: the first user row of each run
        return users.filter((GID != GID.shift()).fill_null(True)).select(GID, CID, TEXT.alias("opening_text"))
    text = TEXT.head(n_user_turns).str.join(" ", ignore_nulls=True)
    return users.group_by("__gid", maintain_order=True).agg(CID.first(), text.alias("opening_text"))


def opening_texts(messages: Frame, n_user_turns: int = 1) -> pl.DataFrame:
    """conversation_id + opening_text, the input of an ``IntentExtractor`` (and ``rule_match_counts``)."""
    msgs = _index_conversations(_messages(messages))
    return _openings_query(msgs.lazy(), n_user_turns).collect().drop("__gid")


def _probes(config: SignalsConfig) -> dict[tuple[str, ...], dict[str, str]]:
    """Text patterns grouped by the roles they read: roles → {probe column: regex}."""
    out: dict[tuple[str, ...], dict[str, str]] = {}
    for b in config.behaviours:
        out.setdefault((b.role,), {})[f"__b_{b.name}"] = b.regex
    for o in config.outcomes.transcript:
        out.setdefault((o.role,), {})[f"__o_{o.name}"] = o.regex
    for t in config.tools.known:
        if t.regex is not None:
            out.setdefault(("assistant", "tool"), {})[f"__t_{t.name}"] = t.regex
    return out


def _probe_query(lf: pl.LazyFrame, roles: tuple[str, ...], patterns: dict[str, str]) -> pl.LazyFrame:
    """First turn at which each pattern matches, reading only rows of ``roles``."""
    names = list(patterns)
    rows = lf.filter(ROLE == roles[0] if len(roles) == 1 else ROLE.is_in(list(roles)))
    hits = rows.select(
        GID, *[pl.when(TEXT.str.contains(rx)).then(TURN).alias(name) for name, rx in patterns.items()]
    ).filter(pl.any_horizontal(pl.col(names).is_not_null()))
    return hits.group_by("__gid").agg(pl.col(names).min())


def _tools_query(lf: pl.LazyFrame, tools: Sequence[str]) -> pl.LazyFrame:
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


# --------------------------------------------------------------------------- conversation-level steps
def _prior_session(base: pl.DataFrame, history: pl.DataFrame | None, window_days: float) -> pl.Series:
    """True where the customer started another conversation strictly earlier, within the window.

    Earlier starts come from ``history`` (earlier day partitions) and from this batch itself.
    An as-of join finds each conversation's nearest strictly earlier start of the same customer.
    ``history`` identifies customers by ``customer_id`` or, when it comes from the signals
    store, by ``customer_key``; the batch is matched on the same column. Returns one value per
    row of ``base`` (in order).
    """
    by = "customer_id" if history is None or "customer_id" in history.columns else "customer_key"
    known = base.select(GID, pl.col(by), pl.col("started_at")).filter(pl.col(by).is_not_null())
    events = [known.select(pl.col(by), pl.col("started_at").alias("prev_start"))]
    if history is not None and history.height:
        events.append(history.select(pl.col(by), pl.col("started_at").alias("prev_start")))
    ev = pl.concat(events).drop_nulls().sort("prev_start")
    window = dt.timedelta(days=window_days)
    hit = (
        known.sort("started_at")
        .join_asof(ev, left_on="started_at", right_on="prev_start", by=by,
                   strategy="backward", allow_exact_matches=False, check_sortedness=False)
        .select(GID, ((pl.col("started_at") - pl.col("prev_start")) <= window).fill_null(False).alias("prior"))
    )
    return base.select(GID).join(hit, on="__gid", how="left", maintain_order="left")["prior"].fill_null(False)


_DUCK: duckdb.DuckDBPyConnection | None = None
_DUCK_LOCK = threading.Lock()


def _duck() -> duckdb.DuckDBPyConnection:
    """A private in-memory DuckDB (opening one costs ~30 ms; each call takes a cheap cursor)."""
    global _DUCK
    with _DUCK_LOCK:
        if _DUCK is None:
            _DUCK = duckdb.connect(":memory:")
        return _DUCK.cursor()


def customer_keys(customer_ids: pl.Series, salt: str) -> pl.DataFrame:
    """customer_id → hex sha256(salt + customer_id), computed once per distinct id in DuckDB."""
    ids = pl.DataFrame({"customer_id": customer_ids.drop_nulls().unique()}, schema={"customer_id": pl.String})
    con = _duck()
    try:
        con.register("ids", ids)
        rel = con.sql("SELECT customer_id, sha256($salt || customer_id) AS customer_key FROM ids", params={"salt": salt})
        return pl.DataFrame(rel.to_arrow_table())
    finally:
        con.unregister("ids")
        con.close()


def _classify(extractor: IntentExtractor, openings: pl.DataFrame, default: str) -> pl.DataFrame:
    out = extractor.classify(openings)
    if not {"conversation_id", "intent"} <= set(out.columns):
        raise ValueError(f"{type(extractor).__name__}.classify must return conversation_id and intent")
    return out.select(CID.cast(pl.String), pl.col("intent").cast(pl.String).fill_null(default))


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
    ``customer_key`` instead of ``customer_id`` (e.g. read back from the signals store).
    ``intent_extractor``: any ``IntentExtractor``; default the config's rules. ``timings``: a dict
    that receives seconds per stage.
    """
    config = config or load_signals_config()
    extractor = intent_extractor or RuleIntentExtractor(config)
    lap = _Stopwatch(timings)
    msgs = _messages(messages)
    lap("read")
    msgs = _index_conversations(msgs)
    lap("index")
    base = _base(msgs)
    lap("base")
    lf = msgs.lazy()
    queries = [_openings_query(lf, config.intent.opening_user_turns), _tools_query(lf, config.tool_names)]
    queries += [_probe_query(lf, roles, pats) for roles, pats in _probes(config).items()]
    openings, tool_rows, *probe_rows = pl.collect_all(queries)
    del msgs, lf
    lap("openings_tools_behaviours")

    openings_in = openings.select(CID, "opening_text")
    intents = _classify(extractor, openings_in, config.intent.default)
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
    prior = _prior_session(out, _history_rows(history), config.memory.window_days)
    out = out.with_columns(prior.alias("__prior"))
    lap("memory")

    persona = _optional(customers, "customer_id", {"persona_segment": pl.String})
    if persona is not None:
        out = _join_side(out, persona, "customer_id")
    downstream = {o.name: signals_dtypes(config)[o.name] for o in config.outcomes.downstream}
    outc = _optional(outcomes, "conversation_id", downstream)
    if outc is not None:
        out = _join_side(out, outc, "conversation_id")
    lap("outcomes_customers")

    out = out.select(_final_exprs(config, out.columns))
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


def _history_rows(history: Frame | None) -> pl.DataFrame | None:
    """Earlier conversation starts: (customer_id or customer_key, started_at as UTC), nulls dropped."""
    if history is None:
        return None
    lf = history.lazy()
    schema = lf.collect_schema()
    who = "customer_id" if "customer_id" in schema else "customer_key"
    if who not in schema or "started_at" not in schema:
        raise ValueError("history frame needs started_at and customer_id (or customer_key)")
    return lf.select(
        pl.col(who).cast(pl.String), _utc(pl.col("started_at"), schema["started_at"]).alias("started_at")
    ).drop_nulls().collect()


def _final_exprs(config: SignalsConfig, present: Sequence[str]) -> list[pl.Expr]:
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
        else:
            early = turn.cast(pl.Float64) / pl.max_horizontal(n_turns - 1, pl.lit(1)) <= rule.fraction_at_most
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
