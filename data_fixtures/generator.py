"""Synthetic landing directory with known causal effects (CONTRACT §1 layout + truth).

``generate`` writes what a support platform would export — Hive-partitioned transcripts,
ticketing outcomes, a CRM table — with confounding built in so naive comparisons are wrong,
plus ``truth.json`` (the true effect of each registered question on *this* sample) and
per-conversation labels under ``_truth/`` (outside the landing layout) for scoring the
extraction step. See docs/DESIGN.md "Fixture generator" for the causal story.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from data_fixtures import design as D
from data_fixtures.messages import Messages, build_messages, conversation_fields
from data_fixtures.simulate import OTHER_TOOL_NAMES, PERSONA_NAMES, Simulation, simulate
from data_fixtures.text import pick

START_DATE = D.START_DATE
N_WEEKS = D.N_WEEKS
PROMPT_V2_LAUNCH = D.PROMPT_V2_LAUNCH
LOOKUP_ORDER_LAUNCH = D.LOOKUP_ORDER_LAUNCH
SKILLS = D.SKILLS
TREATED_SKILLS = D.TREATED_SKILLS
CHANNELS = D.CHANNELS
VARIANTS = D.VARIANTS
QUESTION_IDS = D.QUESTION_IDS

__all__ = [
    "CHANNELS",
    "LOOKUP_ORDER_LAUNCH",
    "N_WEEKS",
    "PROMPT_V2_LAUNCH",
    "QUESTION_IDS",
    "SKILLS",
    "START_DATE",
    "TREATED_SKILLS",
    "VARIANTS",
    "generate",
]

TS_TYPE = pl.Datetime("us", "UTC")
CHUNK_CONVERSATIONS = 1_000_000  # messages of this many conversations are in memory at once
TRANSCRIPT_COLUMNS = (
    "conversation_id",
    "turn",
    "ts",
    "role",
    "text",
    "tool_name",
    "channel",
    "agent_version",
    "customer_id",
    "skill",
    "memory_items",
)


def _conversation_frame(sim: Simulation, fields: dict[str, pl.Series], first_id: int = 1) -> pl.DataFrame:
    """Per-conversation columns repeated on every message of the conversation."""
    c = sim.conv
    n = len(c["day"])
    conv_id = pl.DataFrame({"k": np.arange(first_id, first_id + n)}).select(
        pl.concat_str([pl.lit("conv-"), pl.col("k").cast(pl.String).str.zfill(8)])
    )[:, 0]
    customer_id = sim.customer_ids.gather(pl.Series(c["cust"].astype(np.uint32))).alias("customer_id")
    customer_id = customer_id.scatter(np.flatnonzero(c["anonymous"]), None)
    memory = pl.Series("memory_items", c["memory_items"], dtype=pl.Int32).scatter(
        np.flatnonzero(c["memory_null"]), None
    )
    return pl.DataFrame(
        {
            "conversation_id": conv_id,
            "channel": fields["channel"],
            "agent_version": fields["agent_version"],
            "customer_id": customer_id,
            "skill": fields["skill"],
            "memory_items": memory,
        }
    )


def _transcripts(conv: pl.DataFrame, msgs: Messages) -> pl.DataFrame:
    rows = msgs.rows
    per_msg = conv.select(pl.all().gather(rows["conv"]))
    out = pl.concat(
        [
            rows.select(
                pl.col("turn").cast(pl.Int32),
                pl.col("ts_us").cast(TS_TYPE).alias("ts"),
                "role",
                "text",
                "tool_name",
            ),
            per_msg,
        ],
        how="horizontal",
    )
    return out.select(TRANSCRIPT_COLUMNS)


def _outcomes(conv_id: pl.Series, c: dict[str, np.ndarray]) -> pl.DataFrame:
    csat = pl.Series("csat", c["csat"], dtype=pl.Int32)
    return pl.DataFrame(
        {
            "conversation_id": conv_id,
            "resolved": c["resolved"],
            "reopened_7d": c["reopened_7d"],
            "escalated": c["escalated"],
            "csat": csat.scatter(np.flatnonzero(c["csat"] == 0), None),
        }
    )


def _labels(conv: pl.DataFrame, sim: Simulation, msgs: Messages) -> pl.DataFrame:
    c = sim.conv
    asked_first = pl.Series("asked_email_first", c["early"].astype(np.int8), dtype=pl.Int8).scatter(
        np.flatnonzero(~c["asked"]), None
    )
    email_turn = pl.Series("email_turn", msgs.email_turn, dtype=pl.Int32).scatter(
        np.flatnonzero(~c["asked"]), None
    )
    lookup = pl.select(pl.when(pl.Series(c["lookup_used"])).then(pl.lit("lookup_order"))).to_series()
    other = pl.Series("o", OTHER_TOOL_NAMES, dtype=pl.String).gather(
        pl.Series(c["other_tool"].astype(np.uint32))
    )
    tools = pl.select(
        pl.concat_list([lookup, other.replace("", None)]).list.drop_nulls().alias("tools")
    ).to_series()
    started = pl.Series("started_at", c["ts_start_us"]).cast(TS_TYPE)
    ended = pl.Series("ended_at", msgs.ended_us).cast(TS_TYPE)
    y_email = {
        k: pl.Series(k, c[k]).scatter(np.flatnonzero(~c["asked"]), None)
        for k in ("y_email_early", "y_email_late")
    }
    return pl.DataFrame(
        {
            "conversation_id": conv["conversation_id"],
            "started_at": started,
            "ended_at": ended,
            "date": started.dt.date(),
            "channel": conv["channel"],
            "skill": conv["skill"],
            "agent_version": conv["agent_version"],
            "persona_segment": pick(PERSONA_NAMES, c["persona"]),
            "intent": pick(D.INTENTS, c["intent"]),
            "transactional": D.IS_TRANSACTIONAL[c["intent"]],
            "asked_email_first": asked_first,
            "email_turn": email_turn,
            "tools": tools,
            "n_turns": pl.Series(msgs.n_turns, dtype=pl.Int32),
            "prior_session_30d": c["prior30"],
            "memory_has_prior_session": c["memory_has_prior_session"],
            "treated_prompt_v2": c["v2"],
            "treated_lookup_order": c["lookup_available"],
            "agent_marked_resolved": c["agent_marked_resolved"],
            "resolved": c["resolved"],
            "u": c["u"],
            **{
                k: c[k]
                for k in (
                    "p_resolved",
                    "p_email_early",
                    "p_email_late",
                    "p_prompt_v1",
                    "p_prompt_v2",
                    "p_lookup_off",
                    "p_lookup_on",
                )
            },
            **y_email,
            **{k: c[k] for k in ("y_prompt_v1", "y_prompt_v2", "y_lookup_off", "y_lookup_on")},
        }
    )


def _write_parquet(df: pl.DataFrame, path: Path) -> None:
    """Write to a temp name then rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    df.write_parquet(tmp, compression="zstd", statistics=True)
    os.replace(tmp, path)


def _write_transcripts(transcripts: pl.DataFrame, day_of_msg: np.ndarray, root: Path) -> int:
    """One file per conversation start date; rows are already sorted by conversation."""
    bounds = np.searchsorted(day_of_msg, np.arange(D.N_DAYS + 1))
    written = 0
    for d in range(D.N_DAYS):
        lo, hi = int(bounds[d]), int(bounds[d + 1])
        if hi == lo:
            continue
        date = D.START_DATE + dt.timedelta(days=d)
        _write_parquet(transcripts.slice(lo, hi - lo), root / f"date={date.isoformat()}" / "part-0.parquet")
        written += 1
    return written


def _day_chunks(day: np.ndarray, max_conversations: int) -> list[tuple[int, int]]:
    """Split conversations (sorted by start day) into runs of whole days of at most
    ``max_conversations`` each (a single larger day is a chunk of its own)."""
    day_bounds = np.searchsorted(day, np.arange(D.N_DAYS + 1))
    chunks: list[tuple[int, int]] = []
    lo = 0
    for d in range(1, D.N_DAYS + 1):
        hi = int(day_bounds[d])
        if hi - lo > max_conversations and int(day_bounds[d - 1]) > lo:
            chunks.append((lo, int(day_bounds[d - 1])))
            lo = int(day_bounds[d - 1])
    if lo < len(day) or not chunks:
        chunks.append((lo, len(day)))
    return chunks


def _slice(sim: Simulation, lo: int, hi: int) -> Simulation:
    return Simulation(conv={k: v[lo:hi] for k, v in sim.conv.items()}, customers=sim.customers,
                      customer_email=sim.customer_email, customer_ids=sim.customer_ids, truth=sim.truth)


def _text_rng(seed: int, chunk: int) -> np.random.Generator:
    """Chunk 0 keeps the original stream, so samples of one chunk are unchanged by chunking."""
    key = [int(seed), 7919] if chunk == 0 else [int(seed), 7919, chunk]
    return np.random.default_rng(np.random.SeedSequence(key))


def generate(
    out_dir: str | os.PathLike[str],
    n_conversations: int = 50_000,
    seed: int = 0,
    variant: str = "standard",
) -> dict[str, Any]:
    """Write a synthetic landing directory and return the truth and the paths written.

    Returns ``{"truth": {question_id: effect}, "paths": {...}, "n_conversations",
    "n_messages", "seed", "variant"}``. The same (n_conversations, seed, variant) always
    produces identical files. A truth is ``None`` only when the sample is too small to
    contain any treated conversation of that question.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sim = simulate(int(n_conversations), int(seed), variant)
    root = out / "transcripts"
    if root.exists():
        shutil.rmtree(root)  # stale partitions of an earlier run would mix samples
    # Messages are built and written a chunk of whole days at a time, so memory follows the
    # chunk size (about 2.5 GB per million conversations), not the sample size.
    conv_parts: list[pl.DataFrame] = []
    n_turns, email_turn, ended_us = [], [], []
    n_days = n_messages = 0
    for k, (lo, hi) in enumerate(_day_chunks(sim.conv["day"], CHUNK_CONVERSATIONS)):
        part = _slice(sim, lo, hi)
        text_rng = _text_rng(seed, k)
        fields = conversation_fields(part, text_rng)
        msgs = build_messages(part, fields, text_rng)
        conv = _conversation_frame(part, fields, first_id=lo + 1)
        transcripts = _transcripts(conv, msgs)
        day_of_msg = part.conv["day"][msgs.rows["conv"].to_numpy()]
        n_days += _write_transcripts(transcripts, day_of_msg, root)
        n_messages += transcripts.height
        conv_parts.append(conv)
        n_turns.append(msgs.n_turns)
        email_turn.append(msgs.email_turn)
        ended_us.append(msgs.ended_us)
        del transcripts, msgs, fields
    conv = pl.concat(conv_parts)
    msgs = Messages(rows=pl.DataFrame(), n_turns=np.concatenate(n_turns), email_turn=np.concatenate(email_turn),
                    ended_us=np.concatenate(ended_us))

    paths = {
        "out_dir": str(out),
        "transcripts": str(out / "transcripts"),
        "outcomes": str(out / "outcomes.parquet"),
        "customers": str(out / "customers.parquet"),
        "truth": str(out / "truth.json"),
        "labels": str(out / "_truth" / "labels.parquet"),
    }
    _write_parquet(_outcomes(conv["conversation_id"], sim.conv), Path(paths["outcomes"]))
    _write_parquet(sim.customers, Path(paths["customers"]))
    _write_parquet(_labels(conv, sim, msgs), Path(paths["labels"]))
    truth = {q: sim.truth[q] for q in D.QUESTION_IDS}
    Path(paths["truth"]).write_text(json.dumps(truth, indent=2) + "\n")
    return {
        "truth": truth,
        "paths": paths,
        "n_conversations": int(n_conversations),
        "n_messages": int(n_messages),
        "n_days": n_days,
        "seed": int(seed),
        "variant": variant,
    }
