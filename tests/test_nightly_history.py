"""Two nightly runs on a growing landing directory: a history of two runs, a sequence that never
widens, q-values over the run's questions, and monitoring windows that follow each other."""

from __future__ import annotations

import shutil

import duckdb
import pytest

from convocausal.cli import main
from data_fixtures.generator import generate
from pipelines.runner import run_pipeline


@pytest.fixture(scope="module")
def grown(tmp_path_factory):
    base = tmp_path_factory.mktemp("nightly")
    full = base / "full"
    generate(full, n_conversations=6000, seed=3)
    days = sorted(p.name for p in (full / "transcripts").iterdir())
    raw = base / "raw"
    (raw / "transcripts").mkdir(parents=True)
    for name in ("outcomes.parquet", "customers.parquet", "truth.json"):
        shutil.copy(full / name, raw / name)
    store = base / "store.duckdb"
    cut = len(days) - 14  # the first night sees all but the last two weeks
    for d in days[:cut]:
        shutil.copytree(full / "transcripts" / d, raw / "transcripts" / d)
    first = run_pipeline(raw, store)
    for d in days[cut:]:
        shutil.copytree(full / "transcripts" / d, raw / "transcripts" / d)
    second = run_pipeline(raw, store)
    return store, first, second, days[cut - 1]


def test_history_holds_both_runs_and_the_sequence_never_widens(grown, capsys):
    store, first, second, _ = grown
    assert main(["history", "lookup_order_rollout", "--store", str(store), "--json"]) == 0
    import json

    runs = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in runs] == [first[2]["run_id"], second[2]["run_id"]]
    a, b = runs
    assert b["n_treated"] + b["n_control"] > a["n_treated"] + a["n_control"]
    assert b["cs_low"] >= a["cs_low"] - 1e-12 and b["cs_high"] <= a["cs_high"] + 1e-12
    assert a["cs_high"] - a["cs_low"] > a["ci_high"] - a["ci_low"]  # wider than the one-look interval


def test_q_values_cover_the_run_and_synthetic_control_has_no_sequence(grown):
    _, _, second, _ = grown
    by_id = {r["question_id"]: r for r in second}
    tested = [r for r in second if r["p_value"] is not None]
    assert tested, [(r["question_id"], r["status"], r["message"]) for r in second]
    assert all(r["q_value"] is not None and r["q_value"] >= r["p_value"] - 1e-12 for r in tested), \
        [(r["question_id"], r["p_value"], r["q_value"]) for r in second]
    assert by_id["prompt_v2_launch"]["cs_low"] is None


def test_the_second_monitoring_window_starts_where_the_first_ended(grown):
    store, _, _, first_last_day = grown
    with duckdb.connect(str(store), read_only=True) as con:
        w = con.execute("SELECT DISTINCT run_id, since, until, n_new FROM monitor_windows ORDER BY until").fetchall()
    assert len(w) == 2
    assert str(w[0][2]) == first_last_day[len("date="):]
    assert w[1][1] == w[0][2] and w[1][3] > 0


def test_the_memo_shows_the_history_table_and_figure(grown):
    store, *_ = grown
    memo = (store.parent / "store.duckdb.parts" / "reports" / "lookup_order_rollout.md").read_text()
    assert "## History" in memo and "2 runs of this question" in memo
    assert "lookup_order_rollout/run_history.png" in memo
    assert "## Population drift" in memo
