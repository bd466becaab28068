"""The nightly increment (issue 20): one new day on a built store gives the store and the estimates
a full rebuild gives.

A small landing directory is built into store A with its last day held back; the day then lands
and only that day is extracted and published (``benchmarks.bench_increment.run_increment``, the
schedule's path: one ``signals_day`` partition, then the publish, monitoring and every question).
Store B is a from-scratch run over every day. The publish must have taken its incremental path,
and A's ``signals``/``quarantine`` tables and every question's estimate must equal B's.
"""

from __future__ import annotations

import math
from datetime import date

import polars as pl
import pytest

from benchmarks.bench_increment import hold_back, land, last_day, run_increment
from convocausal.store import PARTS_MANIFEST, connect, publish, store_paths

N_CONVERSATIONS = 6_000
ESTIMATE_FIELDS = ("status", "method", "estimate", "std_error", "ci_low", "ci_high", "p_value", "n_treated",
                   "n_control", "naive_estimate", "data_through")


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    from data_fixtures.generator import generate
    from pipelines.runner import run_pipeline

    work = tmp_path_factory.mktemp("increment")
    raw = work / "raw"
    generate(raw, n_conversations=N_CONVERSATIONS, seed=5)
    day = last_day(raw)
    incremental, full = work / "a.duckdb", work / "b.duckdb"
    hold_back(raw, day, work)
    run_pipeline(raw, incremental)
    with connect(incremental, read_only=True) as con:
        built_days = con.execute("SELECT count(DISTINCT date) FROM signals").fetchone()[0]
    land(raw, day, work)
    publish_mode: dict = {}
    rows_incremental = run_increment(raw, incremental, day, publish_report=publish_mode)
    rows_full = run_pipeline(raw, full)
    return {"day": day, "built_days": built_days, "publish": publish_mode, "a": incremental, "b": full,
            "rows_a": rows_incremental, "rows_b": rows_full}


def _table(db, table: str) -> pl.DataFrame:
    with connect(db, read_only=True) as con:
        df = pl.from_arrow(con.sql(f"SELECT * FROM {table}").to_arrow_table())
    return df.sort(df.columns, nulls_last=True)


def test_the_increment_published_only_the_new_day(stores):
    assert stores["built_days"] >= 150
    for table in ("signals", "quarantine"):
        assert stores["publish"][table] == {"mode": "incremental", "reason": "", "days": 1}, stores["publish"]
    with connect(stores["a"], read_only=True) as con:
        assert con.execute("SELECT max(date) FROM signals").fetchone()[0] == stores["day"]


@pytest.mark.parametrize("table", ["signals", "quarantine"])
def test_tables_equal_a_full_rebuild(stores, table):
    a, b = _table(stores["a"], table), _table(stores["b"], table)
    assert a.height > 0 or table == "quarantine"
    assert a.schema == b.schema
    assert a.equals(b), f"{table}: the increment's table differs from a from-scratch run's"


def assert_same_estimates(rows_a: list[dict], rows_b: list[dict]) -> dict:
    """The two runs' rows (``run_pipeline``'s) hold the same questions with the same estimates, to 1e-9;
    returns the first run's rows by question."""
    a = {r["question_id"]: r for r in rows_a}
    b = {r["question_id"]: r for r in rows_b}
    assert a.keys() == b.keys() and a
    for qid, row in a.items():
        for field in ESTIMATE_FIELDS:
            x, y = row.get(field), b[qid].get(field)
            if isinstance(x, float) and isinstance(y, float):
                assert math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12), (qid, field, x, y)
            else:
                assert x == y, (qid, field, x, y)
    return a


def test_estimates_equal_a_full_rebuild(stores):
    a = assert_same_estimates(stores["rows_a"], stores["rows_b"])
    b = {r["question_id"]: r for r in stores["rows_b"]}
    for qid, row in a.items():
        assert row["checks"] == b[qid]["checks"], qid
    assert any(r["status"] == "ok" for r in a.values())


def test_a_forced_rebuild_of_the_incremental_store_changes_nothing(stores, tmp_path):
    """The same store rebuilt from every part (its record of the loaded parts cleared) holds the same rows."""
    import shutil

    db = tmp_path / "a.duckdb"
    shutil.copy(stores["a"], db)
    shutil.copytree(store_paths(stores["a"]).parts, store_paths(db).parts)
    with connect(db) as con:
        con.execute(f"DELETE FROM {PARTS_MANIFEST}")
    how: dict = {}
    publish(store_paths(db), report=how)
    assert how["signals"]["mode"] == "rebuild"
    for table in ("signals",):
        assert _table(db, table).equals(_table(stores["a"], table))
    with connect(db, read_only=True) as con:
        days = con.execute(f"SELECT count(*) FROM {PARTS_MANIFEST} WHERE part_table = 'signals'").fetchone()[0]
    assert days == stores["built_days"] + 1
    assert isinstance(stores["day"], date)
