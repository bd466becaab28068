"""Signal extraction, conversation-level steps: prior sessions, customer keys, intents.

Why a module of its own: these steps work on one row per conversation (not on messages) and
each has a correctness or privacy rule of its own — a prior session is strictly earlier and
within the window, across day partitions; ``customer_key`` is a salted hash computed once per
distinct id so the raw id never leaves extraction; a pluggable intent extractor must return one
intent per conversation, and a confidence in 0..1 when it gives one.
"""

from __future__ import annotations

import datetime as dt
import threading

import duckdb
import polars as pl

from extract.intent import IntentExtractor
from extract.signals_inputs import CID
from extract.signals_queries import GID


# --------------------------------------------------------------------------- conversation-level steps
def prior_session(base: pl.DataFrame, history: pl.DataFrame | None, window_days: float,
                  salt: str | None = None) -> pl.Series:
    """True where the customer started another conversation strictly earlier, within the window.

    Earlier starts come from ``history`` (earlier day partitions) and from this batch itself.
    An as-of join finds each conversation's nearest strictly earlier start of the same customer.
    ``history`` identifies customers by ``customer_id``, by ``customer_key`` (read back from the
    signals store) or by ``customer_hash`` (the extraction's own history, :mod:`extract.history`,
    keyed with ``salt``); the batch is matched on the same column. Returns one value per row of
    ``base`` (in order).
    """
    from extract.history import CUSTOMER_HASH, HistoryKey

    by = "customer_id" if history is None or "customer_id" in history.columns else \
        CUSTOMER_HASH if CUSTOMER_HASH in history.columns else "customer_key"
    if by == CUSTOMER_HASH:
        if salt is None:
            raise ValueError("a history keyed by customer_hash needs the salt it was keyed with")
        base = base.with_columns(HistoryKey.from_salt(salt).hash(pl.col("customer_id")).alias(CUSTOMER_HASH))
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


def classify_intents(extractor: IntentExtractor, openings: pl.DataFrame, default: str) -> pl.DataFrame:
    """One intent (and its confidence) per opening from ``extractor``; a missing intent becomes ``default``.

    ``intent_confidence`` is whatever the extractor reports (null when it reports nothing), and
    must lie in 0..1 so that every extractor's numbers mean the same to a threshold downstream.
    """
    out = extractor.classify(openings)
    if not {"conversation_id", "intent"} <= set(out.columns):
        raise ValueError(f"{type(extractor).__name__}.classify must return conversation_id and intent")
    confidence = (pl.col("intent_confidence").cast(pl.Float64) if "intent_confidence" in out.columns
                  else pl.lit(None, pl.Float64))
    out = out.select(CID.cast(pl.String), pl.col("intent").cast(pl.String).fill_null(default),
                     confidence.alias("intent_confidence"))
    bad = out.select((~pl.col("intent_confidence").is_between(0.0, 1.0)).sum()).item()
    if bad:
        raise ValueError(f"{type(extractor).__name__}.classify gave {bad} intent_confidence value(s) outside 0..1")
    return out
