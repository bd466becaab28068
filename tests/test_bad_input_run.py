"""A nightly run on a landing directory with bad rows: every bad row is quarantined with its
reason, raw = accepted + quarantined reconciles, and the run still answers every question."""

from __future__ import annotations

import shutil
from datetime import datetime, timezone

import polars as pl
import pytest

from convocausal.cli import main
from convocausal.store import connect
from pipelines.runner import run_pipeline

DAY = "2026-03-02"


@pytest.fixture(scope="module")
def bad_landing(tmp_path_factory):
    from data_fixtures.generator import generate

    raw = tmp_path_factory.mktemp("bad_raw")
    generate(raw, n_conversations=8000, seed=21)
    day_file = raw / "transcripts" / f"date={DAY}" / "part-0.parquet"
    good = pl.read_parquet(day_file)
    first = good.filter(pl.col("conversation_id") == good["conversation_id"][0])
    ts = datetime(2026, 3, 2, 12, tzinfo=timezone.utc)
    base = first.row(0, named=True)
    extra = pl.DataFrame([
        {**base, "conversation_id": "bad-role", "turn": 0, "role": "robot", "ts": ts},
        {**base, "conversation_id": "bad-role", "turn": 1, "role": "user", "ts": ts, "text": "hello 👋 ünïcode"},
        {**base, "conversation_id": "empty-conv", "turn": 0, "role": "system", "ts": ts},
        {**base, "conversation_id": "mixed-channel", "turn": 0, "role": "user", "channel": "chat", "ts": ts},
        {**base, "conversation_id": "mixed-channel", "turn": 1, "role": "assistant", "channel": "voice", "ts": ts},
    ], schema=good.schema)
    dup = first.head(1)  # an exact copy of an existing message
    pl.concat([good, extra, dup]).write_parquet(day_file)
    outcomes = pl.read_parquet(raw / "outcomes.parquet")
    bad_outcomes = pl.DataFrame([
        {**outcomes.row(0, named=True), "conversation_id": "no-such-conversation"},
        {**outcomes.row(1, named=True), "conversation_id": "no-such-conversation-2", "csat": 9},
    ], schema=outcomes.schema)
    pl.concat([outcomes, bad_outcomes]).write_parquet(raw / "outcomes.parquet")
    return raw


def test_bad_rows_quarantined_and_run_still_answers(bad_landing, tmp_path):
    store = tmp_path / "store.duckdb"
    rows = run_pipeline(bad_landing, store)
    assert {r["question_id"] for r in rows} == {"email_early_vs_late", "prompt_v2_launch", "lookup_order_rollout"}
    status = {r["question_id"]: r["status"] for r in rows}
    assert status["email_early_vs_late"] == status["lookup_order_rollout"] == "ok", rows
    assert status["prompt_v2_launch"] in ("ok", "refused")  # 8,000 conversations may be too thin for SC
    reports = store.with_name(store.name + ".parts") / "reports"
    for r in rows:  # a memo even where a blocking check failed: it is what explains the failure
        assert (reports / f"{r['question_id']}.md").is_file(), (r["question_id"], r["checks"])
    with connect(store, read_only=True) as con:
        reasons = dict(con.execute(
            "SELECT conversation_id, string_agg(DISTINCT reason, ' | ') FROM quarantine GROUP BY 1").fetchall())
        ids = {r[0] for r in con.execute("SELECT conversation_id FROM signals").fetchall()}
        n_quarantined_messages = con.execute(
            "SELECT count(*) FROM quarantine WHERE coalesce(\"table\", 'transcripts') = 'transcripts'").fetchone()[0]
    assert "role not in" in reasons["bad-role"]
    assert "empty conversation" in reasons["empty-conv"]
    assert "channel not constant" in reasons["mixed-channel"]
    assert "unknown conversation" in reasons["no-such-conversation"]
    assert "csat" in reasons["no-such-conversation-2"] or "unknown" in reasons["no-such-conversation-2"]
    assert any("duplicate message" in r for r in reasons.values())
    assert not ids & {"empty-conv", "mixed-channel"}  # whole-conversation rules; a bad row alone drops only itself
    # reconciliation over the whole landing dir: raw messages = accepted + quarantined
    raw_rows = pl.scan_parquet(str(bad_landing / "transcripts" / "*" / "*.parquet")).select(pl.len()).collect().item()
    accepted = pl.scan_parquet(str(bad_landing / "transcripts" / "*" / "*.parquet")).filter(
        pl.col("conversation_id").is_in(list(ids))).select(pl.len()).collect().item()
    # two quarantined rows sit in accepted conversations (the duplicate copy and the robot row of
    # "bad-role"), so the id-based scan counts them in `accepted` too
    assert raw_rows == (accepted - 2) + n_quarantined_messages


def test_corrupt_file_stops_with_file_named(bad_landing, tmp_path, capsys):
    raw = tmp_path / "raw"
    shutil.copytree(bad_landing, raw)
    (raw / "transcripts" / f"date={DAY}" / "part-1.parquet").write_bytes(b"PAR1 this is not parquet")
    code = main(["run", "--raw", str(raw), "--store", str(tmp_path / "s.duckdb")])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("convocausal: error:") and "part-1.parquet" in last


def test_corrupt_file_quarantined_on_request_and_the_run_still_answers(bad_landing, tmp_path, capsys):
    """`--on-unreadable quarantine`: the unreadable file gets one file-level quarantine row and a
    warning naming it; the readable files of the same day and every other day are estimated."""
    raw = tmp_path / "raw"
    shutil.copytree(bad_landing, raw)
    corrupt = raw / "transcripts" / f"date={DAY}" / "part-1.parquet"
    corrupt.write_bytes(b"PAR1 this is not parquet")
    store = tmp_path / "s.duckdb"
    code = main(["run", "--raw", str(raw), "--store", str(store), "--on-unreadable", "quarantine", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-2000:]
    assert any("warning" in line and "part-1.parquet" in line for line in captured.err.splitlines())
    with connect(store, read_only=True) as con:
        file_rows = con.execute(
            "SELECT source_file, conversation_id, raw_row, reason FROM quarantine WHERE source_file = ?",
            [str(corrupt)]).fetchall()
        day_signals = con.execute("SELECT count(*) FROM signals WHERE date = ?", [DAY]).fetchone()[0]
    assert len(file_rows) == 1 and file_rows[0][1] is None and file_rows[0][2] is None
    assert file_rows[0][3].startswith("unreadable file, rows not counted")
    assert day_signals > 0  # part-0.parquet of the same day was read
    import json

    rows = json.loads(captured.out)
    assert {r["question_id"] for r in rows if r["estimate"] is not None} >= {"email_early_vs_late", "lookup_order_rollout"}
