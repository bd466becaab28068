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


# ---------------------------------------------------------------- incremental publish (issue 20)
DAY2, DAY3 = date(2026, 3, 3), date(2026, 3, 4)


def _day_signals(day: date, n: int, offset: int = 0, **extra) -> pl.DataFrame:
    return pl.DataFrame({"conversation_id": [f"{day.isoformat()}-c{i + offset}" for i in range(n)],
                         "resolved": [i % 2 == 0 for i in range(n)], **{k: [v] * n for k, v in extra.items()}})


def _rows(db, table: str = "signals") -> list[tuple]:
    with connect(db, read_only=True) as con:
        return con.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall()


def _three_days(paths) -> None:
    for k, day in enumerate((DAY, DAY2, DAY3)):
        write_day(paths, day, _day_signals(day, 3 + k), _quarantine(k))


def test_publish_replaces_only_the_changed_day(tmp_path):
    paths = store_paths(tmp_path / "s.duckdb")
    _three_days(paths)
    how: dict = {}
    publish(paths, report=how)
    assert how["signals"]["mode"] == how["quarantine"]["mode"] == "rebuild"  # no table yet
    write_day(paths, DAY2, _day_signals(DAY2, 7, offset=50), _quarantine(2))
    how = {}
    catalog = pl.DataFrame({"name": ["resolved"], "kind": ["outcome"]})
    counts = publish(paths, catalog=catalog, report=how)
    assert how["signals"] == {"mode": "incremental", "reason": "", "days": [DAY2]}
    assert how["quarantine"]["days"] == [DAY2]
    assert counts == {"signals": 3 + 7 + 5, "quarantine": 0 + 2 + 2}
    incremental = _rows(paths.db)
    other = store_paths(tmp_path / "full.duckdb")  # the same parts published from scratch
    _three_days(other)
    write_day(other, DAY2, _day_signals(DAY2, 7, offset=50), _quarantine(2))
    publish(other)
    assert incremental == _rows(other.db)
    assert _rows(paths.db, "quarantine") == _rows(other.db, "quarantine")
    how = {}
    assert publish(paths, catalog=catalog, report=how) == counts  # nothing to replace; the catalog still is
    assert how["signals"]["mode"] == how["quarantine"]["mode"] == "unchanged"


def test_a_new_day_is_appended_and_a_rerun_day_is_not_duplicated(tmp_path):
    paths = store_paths(tmp_path / "s.duckdb")
    write_day(paths, DAY, _day_signals(DAY, 4), _quarantine(1))
    publish(paths)
    for _ in range(3):  # the nightly day, re-run twice
        write_day(paths, DAY2, _day_signals(DAY2, 6), _quarantine(1))
        how: dict = {}
        assert publish(paths, report=how) == {"signals": 10, "quarantine": 2}
        assert how["signals"]["mode"] == "incremental"
    with connect(paths.db, read_only=True) as con:
        assert con.execute("SELECT date, count(*) FROM signals GROUP BY ALL ORDER BY 1").fetchall() == [
            (DAY, 4), (DAY2, 6)]


def test_a_removed_day_rebuilds_and_leaves_the_tables(tmp_path):
    paths = store_paths(tmp_path / "s.duckdb")
    _three_days(paths)
    publish(paths)
    store.remove_days(paths, [DAY3])
    how: dict = {}
    assert publish(paths, report=how) == {"signals": 3 + 4, "quarantine": 0 + 1}
    assert how["signals"]["mode"] == "rebuild" and "removed" in how["signals"]["reason"]
    with connect(paths.db, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM signals WHERE date = ?", [DAY3]).fetchone()[0] == 0
        assert con.execute(f"SELECT count(*) FROM {store.PARTS_MANIFEST} WHERE day = ?", [DAY3]).fetchone()[0] == 0


def test_a_changed_column_set_rebuilds(tmp_path):
    """A new signals config adds a column: the day written with it rebuilds the table (older days null)."""
    paths = store_paths(tmp_path / "s.duckdb")
    _three_days(paths)
    publish(paths)
    write_day(paths, DAY3, _day_signals(DAY3, 2, channel="chat"), _quarantine(0))
    how: dict = {}
    publish(paths, report=how)
    assert how["signals"]["mode"] == "rebuild" and "columns" in how["signals"]["reason"]
    with connect(paths.db, read_only=True) as con:
        assert con.execute("SELECT date, count(channel) FROM signals GROUP BY ALL ORDER BY 1").fetchall() == [
            (DAY, 0), (DAY2, 0), (DAY3, 2)]


def test_a_store_without_the_record_of_its_parts_rebuilds(tmp_path):
    """A store published before issue 20 has tables but no ``convocausal_parts``: rebuilt once, then incremental."""
    paths = store_paths(tmp_path / "s.duckdb")
    _three_days(paths)
    publish(paths)
    with connect(paths.db) as con:
        con.execute(f"DROP TABLE {store.PARTS_MANIFEST}")
        con.execute("INSERT INTO signals (conversation_id, date) VALUES ('stray', DATE '2026-03-02')")
    how: dict = {}
    publish(paths, report=how)
    assert how["signals"]["mode"] == "rebuild"
    assert ("stray",) not in [r[:1] for r in _rows(paths.db)]
    write_day(paths, DAY, _day_signals(DAY, 1), _quarantine(0))
    how = {}
    publish(paths, report=how)
    assert how["signals"]["mode"] == "incremental"


def test_rows_that_do_not_add_up_fall_back_to_a_rebuild(tmp_path):
    """A row the parts do not account for (written into the table by hand) is caught by the count check."""
    paths = store_paths(tmp_path / "s.duckdb")
    _three_days(paths)
    publish(paths)
    with connect(paths.db) as con:
        con.execute("INSERT INTO signals (conversation_id, date) VALUES ('stray', DATE '2026-03-02')")
    write_day(paths, DAY3, _day_signals(DAY3, 5), _quarantine(0))
    how: dict = {}
    assert publish(paths, report=how)["signals"] == 3 + 4 + 5
    assert how["signals"]["mode"] == "rebuild" and "counts" in how["signals"]["reason"]


def test_outcome_quarantine_rows_are_replaced_not_added_by_an_incremental_publish(tmp_path):
    paths = store_paths(tmp_path / "s.duckdb")
    _three_days(paths)
    extra = pl.DataFrame({"source_file": ["outcomes.parquet"] * 2, "conversation_id": ["o1", "o2"],
                          "reason": ["matches no conversation"] * 2, "raw_row": ["{}"] * 2})
    publish(paths, extra_quarantine=extra)
    write_day(paths, DAY2, _day_signals(DAY2, 4), _quarantine(3))
    how: dict = {}
    assert publish(paths, extra_quarantine=extra.head(1), report=how)["quarantine"] == 0 + 3 + 2 + 1
    assert how["quarantine"]["mode"] == "incremental"
    with connect(paths.db, read_only=True) as con:
        assert con.execute("SELECT conversation_id FROM quarantine WHERE date IS NULL").fetchall() == [("o1",)]


def test_a_failed_incremental_publish_keeps_the_old_tables_and_is_redone(tmp_path, monkeypatch):
    """Readers never see half a publish: a failure after the delete and insert rolls both back, and the
    record of the loaded parts with them, so the next publish replaces the day again."""
    paths = store_paths(tmp_path / "s.duckdb")
    _three_days(paths)
    publish(paths)
    before = _rows(paths.db)
    write_day(paths, DAY2, _day_signals(DAY2, 9, offset=70), _quarantine(0))

    def broken(con):
        raise duckdb.IOException("disk full")

    monkeypatch.setattr(store, "ensure_result_tables", broken)
    with pytest.raises(duckdb.IOException, match="disk full"):
        publish(paths)
    monkeypatch.undo()
    assert _rows(paths.db) == before
    how: dict = {}
    assert publish(paths, report=how)["signals"] == 3 + 9 + 5
    assert how["signals"] == {"mode": "incremental", "reason": "", "days": [DAY2]}
