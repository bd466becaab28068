"""`convocausal questions`: the registered questions with their newest estimate, run date and state."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import duckdb
import pytest

from convocausal.cli import main

QUESTIONS = """questions:
  - id: q_ok
    design: coexisting_variants
    outcome: resolved
    treatment: asked_email_first
    covariates: [intent]
  - id: q_blocked
    design: partial_rollout
    outcome: resolved
    treated: {skill: [a]}
    launch: 2026-03-30
  - id: q_refused
    design: shipped_change
    outcome: resolved
    treated: {channel: [chat]}
    launch: 2026-05-25
    unit_by: [channel]
  - id: q_new
    design: coexisting_variants
    outcome: resolved
    treatment: asked_email_first
    covariates: [intent]
"""


@pytest.fixture()
def store(tmp_path):
    """A store with two runs: the newer one decides each question's state."""
    from convocausal.store import ensure_result_tables

    db = tmp_path / "s.duckdb"
    con = duckdb.connect(str(db))
    ensure_result_tables(con)
    t0 = datetime(2026, 6, 1, 2, tzinfo=timezone.utc)
    rows = [  # run, question, estimate, status, computed_at
        ("r1", "q_ok", 0.50, "ok", t0), ("r2", "q_ok", 0.04, "ok", t0 + timedelta(days=1)),
        ("r2", "q_blocked", 0.03, "ok", t0 + timedelta(days=1)),
        ("r2", "q_refused", None, "refused", t0 + timedelta(days=1)),
        ("r1", "q_gone", 0.1, "ok", t0),  # no longer registered: not listed
    ]
    for run, qid, est, status, at in rows:
        con.execute("INSERT INTO estimates (run_id, question_id, method, estimand, estimate, ci_low, ci_high, status, "
                    "computed_at) VALUES (?, ?, 'm', 'ATT', ?, ?, ?, ?, ?)",
                    [run, qid, est, None if est is None else est - 0.01, None if est is None else est + 0.01, status, at])
    checks = [("r2", "q_ok", "placebo_rank", "failed", False), ("r2", "q_blocked", "pre_trend", "failed", True),
              ("r1", "q_ok", "balance", "failed", True), ("r2", "q_refused", "sample_size", "failed", False)]
    for run, qid, name, state, blocking in checks:
        con.execute("INSERT INTO checks (run_id, question_id, check_name, state, blocking) VALUES (?, ?, ?, ?, ?)",
                    [run, qid, name, state, blocking])
    con.close()
    qfile = tmp_path / "questions.yaml"
    qfile.write_text(QUESTIONS)
    return db, qfile


def test_lists_questions_with_their_last_result(store, capsys):
    db, qfile = store
    assert main(["questions", "--store", str(db), "--questions", str(qfile)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["question", "method", "last"]
    by_id = {line.split()[0]: line for line in lines[2:]}
    assert list(by_id) == ["q_ok", "q_blocked", "q_refused", "q_new"]
    assert "+0.0400" in by_id["q_ok"] and "2026-06-02 02:00" in by_id["q_ok"] and " ok " in by_id["q_ok"]
    assert by_id["q_ok"].endswith("placebo_rank")  # the newest run's checks, not the older run's balance
    assert " blocked " in by_id["q_blocked"] and by_id["q_blocked"].endswith("pre_trend")
    assert " refused " in by_id["q_refused"]
    assert "not run" in by_id["q_new"]
    assert "q_gone" not in by_id


def test_json_has_the_same_keys_for_every_question(store, capsys):
    db, qfile = store
    assert main(["questions", "--store", str(db), "--questions", str(qfile), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["state"] for r in rows] == ["ok", "blocked", "refused", "not run"]
    assert len({frozenset(r) for r in rows}) == 1
    ok = rows[0]
    assert ok["run_id"] == "r2" and ok["estimate"] == 0.04 and ok["method"] == "propensity_matching"
    assert ok["computed_at"].startswith("2026-06-02T02:00")
    assert rows[1]["blocking_failed"] == ["pre_trend"] and rows[3]["estimate"] is None


def test_without_a_store_every_question_is_not_run(tmp_path, capsys):
    assert main(["questions", "--store", str(tmp_path / "none.duckdb")]) == 0
    captured = capsys.readouterr()
    rows = captured.out.splitlines()[2:]
    assert rows and all("not run" in r for r in rows)  # the packaged questions
    assert "no store at" in captured.err
    assert not (tmp_path / "none.duckdb").exists()  # read-only: never created


@pytest.mark.parametrize("make, expected", [
    (lambda p: p.write_text("not a database"), "cannot open it as a DuckDB store"),
])
def test_a_store_that_is_not_duckdb_is_one_line(tmp_path, capsys, make, expected):
    bad = tmp_path / "s.duckdb"
    make(bad)
    assert main(["questions", "--store", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err and str(bad) in err


def test_a_bad_questions_config_is_one_line(tmp_path, capsys):
    q = tmp_path / "q.yaml"
    q.write_text("questions:\n  - id: [x\n")
    assert main(["questions", "--questions", str(q), "--store", str(tmp_path / "s.duckdb")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "line 3, column 1" in err
