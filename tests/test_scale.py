"""The nightly graph at production size (slow: `make test-all`). Correctness only — the
seconds and peak memory of the same run are benchmark figures (`benchmarks/bench_pipeline.py`),
not test thresholds."""

from __future__ import annotations

import json

import polars as pl
import pytest

from convocausal.store import connect

N_CONVERSATIONS = 1_000_000


@pytest.mark.slow
def test_one_million_conversations_end_to_end(tmp_path):
    from data_fixtures.generator import generate
    from pipelines.runner import run_pipeline

    raw, store = tmp_path / "raw", tmp_path / "store.duckdb"
    info = generate(raw, n_conversations=N_CONVERSATIONS, seed=2)
    rows = {r["question_id"]: r for r in run_pipeline(raw, store)}
    truth = json.loads((raw / "truth.json").read_text())
    for qid, effect in truth.items():
        r = rows[qid]
        assert r["status"] == "ok", (qid, r.get("message"))
        assert r["ci_low"] <= effect <= r["ci_high"], (qid, r["ci_low"], effect, r["ci_high"])
        assert not r["ci_low"] <= r["naive_estimate"] <= r["ci_high"], (qid, r["naive_estimate"])
    with connect(store, read_only=True) as con:
        n_signals, n_distinct, n_turns = con.execute(
            "SELECT count(*), count(DISTINCT conversation_id), sum(n_turns) FROM signals").fetchone()
        n_quarantined = con.execute("SELECT count(*) FROM quarantine").fetchone()[0]
    raw_messages = pl.scan_parquet(str(raw / "transcripts" / "*" / "*.parquet")).select(pl.len()).collect().item()
    assert n_signals == n_distinct == N_CONVERSATIONS
    assert raw_messages == info["n_messages"] == n_turns + n_quarantined
