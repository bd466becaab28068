"""Extraction of many days in one pass gives the rows of a day-by-day pass (issue 20).

The run shares one conversation index, checks the accepted rows' schema once per chunk and builds
each row's quarantine reasons in one flat expression; none of that may change a signals row, a
quarantine row or a count. The landing directory here has bad rows of every kind the transcript
rules know, and a conversation whose later turns are filed in the next day's folder.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest

from configs.signals import load_signals_config
from data_fixtures.generator import generate
from extract.day import extract_days
from extract.raw import load_customers, load_outcomes, load_transcripts_day
from extract.raw_cast import add_reason, add_reasons
from extract.raw_index import transcript_index


@pytest.fixture(scope="module")
def dirty_landing(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("batched")
    generate(out, n_conversations=1500, seed=3)
    folders = sorted((out / "transcripts").iterdir())
    first, second = folders[0] / "part-0.parquet", folders[1] / "part-0.parquet"
    df = pl.read_parquet(first)
    cids = df["conversation_id"].unique(maintain_order=True).to_list()
    one = df.filter(pl.col("conversation_id") == cids[0])
    two = df.filter(pl.col("conversation_id") == cids[1])
    three = df.filter(pl.col("conversation_id") == cids[2])
    bad = pl.concat([
        one.head(1),                                                              # exact copy
        two.head(1).with_columns(pl.lit("CONFLICT").alias("text")),               # conflicting turn
        three.head(1).with_columns(pl.lit("robot").alias("role"), pl.lit(99).alias("turn")),  # bad role
        three.head(1).with_columns(pl.lit(-1).alias("turn")),                     # negative turn
    ], how="vertical_relaxed")
    pl.concat([df, bad], how="vertical_relaxed").write_parquet(first)
    # the last turn of a conversation of day 0 filed in day 1's folder (a conversation over midnight)
    late = df.filter(pl.col("conversation_id") == cids[3]).tail(1).with_columns(
        (pl.col("turn") + 1).alias("turn"), (pl.col("ts") + timedelta(hours=1)).alias("ts"))
    nxt = pl.read_parquet(second)
    pl.concat([nxt, late.select(nxt.columns)], how="vertical_relaxed").write_parquet(second)
    return out


def _run(raw: Path, max_messages: int) -> list:
    cfg = load_signals_config()
    days = list(transcript_index(raw).days)[:6]
    return list(extract_days(raw, days, cfg, load_outcomes(raw, None, config=cfg), load_customers(raw),
                             max_messages=max_messages, first_day=days[0]))


def test_one_pass_equals_day_by_day(dirty_landing):
    together = _run(dirty_landing, max_messages=10_000_000)  # all days in one chunk
    alone = _run(dirty_landing, max_messages=1)  # every day its own chunk, as a nightly run of one day
    assert [r.day for r in together] == [r.day for r in alone]
    assert sum(r.quarantine.height for r in together) >= 4
    for a, b in zip(together, alone, strict=True):
        assert a.signals.equals(b.signals), a.day
        assert a.quarantine.equals(b.quarantine), a.day
        assert a.counts == b.counts, a.day
        assert a.requested == b.requested and a.warnings == b.warnings


def test_shared_index_and_deferred_check_give_the_same_batch(dirty_landing):
    index = transcript_index(dirty_landing)
    for day in index.days[:3]:
        plain = load_transcripts_day(dirty_landing, day)
        batched = load_transcripts_day(dirty_landing, day, index=index, validate=False)
        assert plain.accepted.equals(batched.accepted)
        assert plain.quarantine.equals(batched.quarantine)
        assert plain.counts == batched.counts


def test_flat_reasons_equal_nested_add_reason():
    n = 400
    df = pl.DataFrame({
        "r": pl.Series([None if i % 3 else f"old {i % 5}" for i in range(n)], dtype=pl.String),
        "a": [i % 2 == 0 for i in range(n)],
        "b": pl.Series([None if i % 7 == 0 else i % 5 == 0 for i in range(n)], dtype=pl.Boolean),
        "c": [i % 11 == 0 for i in range(n)],
        "t": [f"text {i % 4}" for i in range(n)],
    })
    rules = [(pl.col("a"), "A"), (pl.col("b"), "B"), (pl.col("c"), pl.lit("C: ") + pl.col("t"))]
    nested = pl.col("r")
    for cond, reason in rules:
        nested = add_reason(nested, cond, reason)
    out = df.select(nested.alias("nested"), add_reasons(pl.col("r"), rules).alias("flat"))
    assert out["nested"].equals(out["flat"])
    assert out["flat"].null_count() > 0 and out["flat"].str.count_matches("; ").max() >= 2


def test_empty_day_stays_an_empty_batch(dirty_landing):
    index = transcript_index(dirty_landing)
    batch = load_transcripts_day(dirty_landing, date(1999, 1, 1), index=index, validate=False)
    assert batch.accepted.height == 0 and batch.counts["files"] == 0
