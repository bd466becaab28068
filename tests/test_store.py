"""The analysis store: day parts replace rather than duplicate, crashes leave the old state, results are idempotent."""

from __future__ import annotations

from datetime import date

import duckdb
import polars as pl
import pytest

from convocausal import store
from convocausal.store import connect, publish, store_paths, write_day, write_refusal, write_result
from methods.result import BalanceRow, Diagnostic, EstimateResult, Refutation

DAY = date(2026, 3, 2)


def _signals(n: int, offset: int = 0) -> pl.DataFrame:
    return pl.DataFrame({"conversation_id": [f"c{i + offset}" for i in range(n)], "resolved": [True] * n,
                         "date": [DAY] * n})


def _quarantine(n: int) -> pl.DataFrame:
    return pl.DataFrame({"source_file": ["f.parquet"] * n, "conversation_id": ["x"] * n,
                         "reason": ["role not allowed"] * n, "raw_row": ["{}"] * n})


def test_rerunning_a_day_replaces_it(tmp_path):
    paths = store_paths(tmp_path / "s.duckdb")
    write_day(paths, DAY, _signals(5), _quarantine(1))
    first = publish(paths)
    with connect(paths.db, read_only=True) as con:
        before = pl.from_arrow(con.sql("SELECT * FROM signals ORDER BY conversation_id").to_arrow_table())
    write_day(paths, DAY, _signals(5), _quarantine(1))
    second = publish(paths)
    with connect(paths.db, read_only=True) as con:
        after = pl.from_arrow(con.sql("SELECT * FROM signals ORDER BY conversation_id").to_arrow_table())
    assert first == second == {"signals": 5, "quarantine": 1}
    assert before.equals(after)
    assert after["date"].to_list() == [DAY] * 5


def test_crash_mid_write_keeps_previous_day(tmp_path, monkeypatch):
    paths = store_paths(tmp_path / "s.duckdb")
    write_day(paths, DAY, _signals(3), _quarantine(0))

    def broken_write(self, file, *a, **k):
        with open(file, "wb") as fh:
            fh.write(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", broken_write)
    with pytest.raises(OSError, match="disk full"):
        write_day(paths, DAY, _signals(7, offset=100), _quarantine(0))
    monkeypatch.undo()
    assert pl.read_parquet(paths.day_part("signals", DAY))["conversation_id"].to_list() == ["c0", "c1", "c2"]
    assert not list(paths.day_part("signals", DAY).parent.glob(".tmp-*")), "temp file left behind"


def test_publish_is_one_transaction(tmp_path, monkeypatch):
    paths = store_paths(tmp_path / "s.duckdb")
    write_day(paths, DAY, _signals(4), _quarantine(0))
    publish(paths)
    write_day(paths, DAY, _signals(9), _quarantine(0))
    bad_catalog = pl.DataFrame({"name": ["x"]})
    monkeypatch.setattr(store, "RESULT_TABLES_DDL", {"estimates": "CREATE TABLE broken ("})
    with pytest.raises(duckdb.Error):
        publish(paths, catalog=bad_catalog)
    monkeypatch.undo()
    with connect(paths.db, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM signals").fetchone()[0] == 4


def _result(estimate: float) -> EstimateResult:
    return EstimateResult(
        method="propensity_matching", estimand="ATT", outcome="resolved", estimate=estimate, std_error=0.01,
        ci_low=estimate - 0.02, ci_high=estimate + 0.02, p_value=0.01, n_treated=10, n_control=20,
        naive_estimate=0.1, refutations=[Refutation("placebo_treatment", estimate, 0.0, 0.9, True, "ok")],
        balance=[BalanceRow("intent=a", 0.3, 0.01, True)],
        diagnostics=[Diagnostic("overlap", 0.0, 0.1, True, "fine")],
    )


def test_results_idempotent_per_run_and_question(tmp_path):
    db = tmp_path / "s.duckdb"
    write_result(db, "run1", "q", _result(0.03))
    write_result(db, "run1", "q", _result(0.04))
    write_result(db, "run2", "q", _result(0.05))
    with connect(db, read_only=True) as con:
        est = con.execute("SELECT run_id, estimate FROM estimates ORDER BY run_id").fetchall()
        counts = [con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in
                  ("refutations", "balance", "diagnostics")]
    assert est == [("run1", 0.04), ("run2", 0.05)]
    assert counts == [2, 2, 2]


def test_refusal_is_recorded_with_reason(tmp_path):
    db = tmp_path / "s.duckdb"
    write_refusal(db, "r", "q", "synthetic_control", "resolved", "ATT", "launched two weeks ago: wait",
                  [Diagnostic("sample_size", 2, 4, False, "too short", "error")])
    with connect(db, read_only=True) as con:
        status, message, estimate = con.execute("SELECT status, message, estimate FROM estimates").fetchone()
    assert (status, estimate) == ("refused", None) and "wait" in message
