"""Store safety (issue 19): another program's DuckDB file is never written, one writer identity
per store at a time (a real second process is refused at once, a dead holder is taken over with a
warning), deleted raw days leave the store, and a locked or corrupt file is one line naming it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from datetime import date
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest

from convocausal import store
from convocausal.store import (
    FORMAT_VERSION,
    META_TABLE,
    StoreError,
    connect,
    inspect_store,
    publish,
    remove_days,
    stale_days,
    store_paths,
    write_day,
    write_result,
)
from convocausal.store_lease import StoreInUseError, acquire_lease, lock_path_for, read_holder, store_lease
from methods.result import EstimateResult
from pipelines.resources import ConvocausalSettings

ROOT = Path(__file__).resolve().parents[1]


def _result() -> EstimateResult:
    return EstimateResult(method="propensity_matching", estimand="ATT", outcome="resolved", estimate=0.03,
                          std_error=0.01, ci_low=0.01, ci_high=0.05, p_value=0.01, n_treated=10, n_control=20,
                          naive_estimate=0.1)


def _meta(db) -> dict:
    with connect(db, read_only=True) as con:
        return dict(con.execute(f"SELECT key, value FROM {META_TABLE}").fetchall())


def _one_line(exc: BaseException, *needles: str) -> None:
    text = str(exc)
    assert "\n" not in text, text
    for needle in needles:
        assert needle in text, (needle, text)


# ------------------------------------------------------------------------------------- marker

def test_a_new_store_carries_the_marker(tmp_path):
    db = tmp_path / "s.duckdb"
    assert inspect_store(db) == "new"
    write_result(db, "r", "q", _result())
    meta = _meta(db)
    assert meta["format_version"] == str(FORMAT_VERSION) and meta["origin"] == "created"
    assert meta["created_by"].startswith("convocausal")
    assert inspect_store(db) == "ours"


def test_another_programs_duckdb_file_is_refused_before_anything_is_written(tmp_path):
    """The issue's case: a DuckDB file with its own `signals` and `estimates` tables."""
    db = tmp_path / "theirs.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("CREATE TABLE signals AS SELECT 'tx-1' AS trade_id, 42.0 AS price")
        con.execute("CREATE TABLE estimates AS SELECT 'q3' AS quarter, 1.5e6 AS revenue")
    before = db.read_bytes()
    with pytest.raises(StoreError) as err:
        inspect_store(db)
    _one_line(err.value, str(db), "did not create", "new file name")
    paths = store_paths(db)
    write_day(paths, date(2026, 3, 2), pl.DataFrame({"conversation_id": ["c1"]}), pl.DataFrame())
    for attempt in (lambda: publish(paths), lambda: write_result(db, "r", "q", _result())):
        with pytest.raises(StoreError, match="did not create"):
            attempt()
    assert db.read_bytes() == before, "the foreign file was modified"
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT * FROM signals").fetchall() == [("tx-1", 42.0)]
        assert {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()} == {
            "signals", "estimates"}


def test_a_store_from_before_the_marker_is_adopted(tmp_path):
    """No marker but only our tables with our columns (as 0.4.0 left a store): kept and marked."""
    db = tmp_path / "old.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("CREATE TABLE signals AS SELECT 'c1' AS conversation_id, DATE '2026-03-02' AS date, true AS resolved")
        con.execute("CREATE TABLE quarantine (source_file VARCHAR, conversation_id VARCHAR, reason VARCHAR)")
        con.execute("CREATE TABLE signal_catalog (name VARCHAR, kind VARCHAR, measured_at VARCHAR, source VARCHAR)")
        for ddl in store.RESULT_TABLES_DDL.values():
            con.execute(ddl)
        con.execute("ALTER TABLE diagnostics DROP COLUMN check_name")  # 0.2.0 had no check_name yet
        con.execute("INSERT INTO estimates (run_id, question_id, estimate) VALUES ('old', 'q', 0.5)")
    assert inspect_store(db) == "legacy"
    write_result(db, "new", "q", _result())
    assert _meta(db)["origin"].startswith("adopted")
    with connect(db, read_only=True) as con:
        assert sorted(con.execute("SELECT run_id FROM estimates").fetchall()) == [("new",), ("old",)]
        assert con.execute("SELECT count(*) FROM signals").fetchone()[0] == 1


@pytest.mark.parametrize("make, why", [
    ("CREATE TABLE estimates (run_id VARCHAR, question_id VARCHAR, invoice_total DOUBLE)", "other columns"),
    ("CREATE TABLE signals (conversation_id VARCHAR, date DATE); CREATE VIEW v AS SELECT 1", "v"),
    ("CREATE SCHEMA crm; CREATE TABLE crm.signals (conversation_id VARCHAR, date DATE)", "crm.signals"),
    ("CREATE TABLE signals (id INTEGER)", "signals (other columns)"),
])
def test_lookalike_stores_are_refused(tmp_path, make, why):
    db = tmp_path / "x.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute(make)
    with pytest.raises(StoreError) as err:
        write_result(db, "r", "q", _result())
    _one_line(err.value, str(db), why)


def test_a_newer_store_format_is_refused(tmp_path):
    db = tmp_path / "s.duckdb"
    write_result(db, "r", "q", _result())
    with duckdb.connect(str(db)) as con:
        con.execute(f"UPDATE {META_TABLE} SET value = '{FORMAT_VERSION + 1}' WHERE key = 'format_version'")
    with pytest.raises(StoreError) as err:
        write_result(db, "r2", "q", _result())
    _one_line(err.value, str(db), "newer convocausal")


# ------------------------------------------------------------------------- locked / corrupt

def test_a_corrupt_store_is_one_line_naming_it(tmp_path):
    db = tmp_path / "s.duckdb"
    db.write_bytes(b"\0" * 8 + b"DUCK" + os.urandom(8000))
    for attempt in (lambda: inspect_store(db), lambda: write_result(db, "r", "q", _result()),
                    lambda: store.unreadable_files(db)):
        with pytest.raises(StoreError) as err:
            attempt()
        _one_line(err.value, str(db), "DuckDB cannot open it", "backup")


def test_a_store_locked_past_the_wait_is_one_line_naming_it(tmp_path):
    db = tmp_path / "s.duckdb"
    write_result(db, "r", "q", _result())
    holder = subprocess.Popen([sys.executable, "-c", (
        "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('locked', flush=True); sys.stdin.read()"
    ), str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"locked"
        with pytest.raises(StoreError) as err, connect(db, retries=2):
            pass
        _one_line(err.value, str(db), "still locked")
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


# ------------------------------------------------------------------------------------- lease

HOLD = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    from convocausal.store_lease import acquire_lease
    acquire_lease({db!r}, raw_dir={raw!r}, purpose="test holder")
    print("held", flush=True)
    if sys.argv[1] == "die":
        import os
        os.kill(os.getpid(), 9)   # no cleanup of any kind: the kernel drops the lock
    sys.stdin.read()              # hold until the test closes stdin
""")


def _holder(tmp_path, db, raw, mode="hold") -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD.format(root=str(ROOT), db=str(db), raw=str(raw)), mode],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"held", proc.stderr.read().decode()[-2000:]
    return proc


def test_a_second_writer_identity_is_refused_at_once_and_the_same_one_shares(tmp_path):
    db, raw_a, raw_b = tmp_path / "s.duckdb", tmp_path / "raw_a", tmp_path / "raw_b"
    raw_a.mkdir(), raw_b.mkdir()
    holder = _holder(tmp_path, db, raw_a)
    try:
        started = time.monotonic()
        with pytest.raises(StoreInUseError) as err:
            acquire_lease(db, raw_dir=raw_b)
        assert time.monotonic() - started < 3, "a busy store must fail fast, not wait"
        _one_line(err.value, str(db), f"pid {holder.pid}", str(raw_a.resolve()), "test holder", "another --store")
        # the same landing directory (and signals config) writes the same parts: it shares the lease
        with store_lease(db, raw_dir=raw_a) as lease:
            assert lease.took_over is None
            with store_lease(db, raw_dir=raw_a):  # re-entrant within a process
                pass
        with pytest.raises(StoreInUseError):  # still refused: the holder is still there
            acquire_lease(db, raw_dir=raw_b)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert read_holder(db) is None, "the last holder leaves an empty lock file"
    with store_lease(db, raw_dir=raw_b) as lease:  # free now
        assert lease.took_over is None
        assert read_holder(db)["writer"]["raw_dir"] == str(raw_b.resolve())
        assert read_holder(db)["holder"]["pid"] == os.getpid()


def test_a_dead_holders_lease_is_taken_over_with_a_warning(tmp_path, caplog):
    db, raw_a, raw_b = tmp_path / "s.duckdb", tmp_path / "raw_a", tmp_path / "raw_b"
    raw_a.mkdir(), raw_b.mkdir()
    holder = _holder(tmp_path, db, raw_a, mode="die")
    holder.wait(timeout=30)
    assert holder.returncode == -signal.SIGKILL
    assert read_holder(db)["holder"]["pid"] == holder.pid  # its record outlives it
    with caplog.at_level("WARNING", logger="convocausal.store"), store_lease(db, raw_dir=raw_b) as lease:
        pass
    assert lease.took_over and f"pid {holder.pid}" in lease.took_over and "no longer running" in lease.took_over
    assert any(f"pid {holder.pid}" in r.getMessage() for r in caplog.records)


def test_a_symlinked_lock_file_is_not_followed(tmp_path):
    db, raw = tmp_path / "s.duckdb", tmp_path / "raw"
    raw.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    lock_path_for(db).symlink_to(victim)
    with pytest.raises(StoreError) as err:
        acquire_lease(db, raw_dir=raw)
    _one_line(err.value, str(lock_path_for(db)), "symlink")
    assert victim.read_text() == "keep me"


def test_dagster_steps_take_the_lease(tmp_path):
    """The settings resource takes the lease in setup: a step of another landing directory fails
    before its body runs, naming the holder; the same identity runs."""
    db, raw_a, raw_b = tmp_path / "s.duckdb", tmp_path / "raw_a", tmp_path / "raw_b"
    raw_a.mkdir(), raw_b.mkdir()
    ran = []

    @dg.asset
    def probe(settings: ConvocausalSettings) -> None:
        ran.append(read_holder(settings.store))

    holder = _holder(tmp_path, db, raw_a)
    try:
        refused = dg.materialize([probe], resources={"settings": ConvocausalSettings(raw_dir=str(raw_b), store=str(db))},
                                 raise_on_error=False)
        assert not refused.success and not ran
        errors = [e.event_specific_data.error.to_string() for e in refused.all_events
                  if getattr(e.event_specific_data, "error", None) is not None]
        assert any("StoreInUseError" in t and f"pid {holder.pid}" in t for t in errors), errors
        ok = dg.materialize([probe], resources={"settings": ConvocausalSettings(raw_dir=str(raw_a), store=str(db))})
        assert ok.success and ran[0]["holder"]["pid"] == holder.pid
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert read_holder(db) is None, "teardown released the step's share"


# ---------------------------------------------------------------------------- deleted raw days

D1, D2, D3 = date(2026, 3, 2), date(2026, 3, 3), date(2026, 3, 4)


def _day(day: date, n: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    signals = pl.DataFrame({"conversation_id": [f"{day}-{i}" for i in range(n)], "resolved": [True] * n})
    quarantine = pl.DataFrame({"source_file": [f"{day}.parquet"], "conversation_id": ["x"], "reason": ["bad"],
                               "raw_row": ["{}"]})
    return signals, quarantine


def test_removed_days_leave_the_parts_and_the_tables(tmp_path):
    paths = store_paths(tmp_path / "s.duckdb")
    for d in (D1, D2, D3):
        write_day(paths, d, *_day(d, 3))
    assert publish(paths) == {"signals": 9, "quarantine": 3}
    assert stale_days(paths, [D1, D3]) == [D2]
    assert remove_days(paths, [D2]) == [D2]
    assert remove_days(paths, [D2]) == []  # nothing left to remove
    assert not (paths.parts / "signals" / f"date={D2}").exists()
    assert not list((paths.parts / "signals").glob(".removed-*")), "renamed folder left behind"
    assert publish(paths) == {"signals": 6, "quarantine": 2}
    with connect(paths.db, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM signals WHERE date = ?", [D2]).fetchone()[0] == 0
    remove_days(paths, [D1, D3])  # the last days too: the tables empty, they do not keep old rows
    assert publish(paths) == {"signals": 0, "quarantine": 0}


@pytest.fixture(scope="module")
def small_raw(tmp_path_factory):
    from data_fixtures.generator import generate

    raw = tmp_path_factory.mktemp("safety_raw")
    generate(raw, n_conversations=2000, seed=5)
    return raw


def test_a_deleted_raw_day_leaves_the_store_on_the_next_run(small_raw, tmp_path):
    """The issue's case, through the whole run: a middle day and the last day are deleted from
    the landing directory; the re-run removes both from the parts and the tables and warns."""
    from assets.signals import analysis_store, signals_day
    from pipelines.runner import run_pipeline

    raw = tmp_path / "raw"
    shutil.copytree(small_raw, raw)
    db = tmp_path / "s.duckdb"
    days = sorted(p.name.removeprefix("date=") for p in (raw / "transcripts").iterdir())
    # the first run's extraction and publish (its questions are not what this test is about)
    resources = {"settings": ConvocausalSettings(raw_dir=str(raw), store=str(db))}
    dg.materialize([signals_day], resources=resources, tags={"dagster/asset_partition_range_start": days[0],
                                                              "dagster/asset_partition_range_end": days[-1]})
    dg.materialize([signals_day.to_source_asset(), analysis_store], resources=resources)
    assert {p.name.removeprefix("date=") for p in (store_paths(db).parts / "signals").iterdir()} == set(days)
    gone = [days[len(days) // 2], days[-1]]
    for d in gone:
        shutil.rmtree(raw / "transcripts" / f"date={d}")
    instance = dg.DagsterInstance.ephemeral()
    run_pipeline(raw, db, instance=instance)
    parts = store_paths(db).parts
    for d in gone:
        assert not (parts / "signals" / f"date={d}").exists() and not (parts / "quarantine" / f"date={d}").exists()
    with connect(db, read_only=True) as con:
        stored = {str(r[0]) for r in con.execute("SELECT DISTINCT date FROM signals").fetchall()}
    assert stored == set(days) - set(gone)
    warnings = [e.user_message for r in instance.get_runs() for e in instance.all_logs(r.run_id)
                if not e.is_dagster_event and "removed" in (e.user_message or "")]
    # the middle day is an empty partition of the run (removed by `signals_day`), the last one is
    # outside the run's days (removed by `analysis_store` before it publishes): each is named
    assert all(any(d in w for w in warnings) for d in gone), warnings


def test_a_second_run_from_another_landing_directory_exits_2_naming_the_holder(small_raw, tmp_path):
    """Two `convocausal run`s on one store: the second, from another landing directory, stops at
    once with one line naming the first, and writes nothing (no parts, no store file)."""
    db, other = tmp_path / "s.duckdb", tmp_path / "other_raw"
    shutil.copytree(small_raw, other)
    holder = _holder(tmp_path, db, small_raw)  # stands in for a long first run
    try:
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "convocausal.cli", "run", "--raw", str(other), "--store", str(db)],
                              cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
        elapsed = time.monotonic() - started
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert last.startswith("convocausal: error: store") and f"pid {holder.pid}" in last, last
    assert elapsed < 60, elapsed
    assert not db.exists() and not store_paths(db).parts.exists()


def test_lock_record_is_json_naming_the_holder(tmp_path):
    db, raw = tmp_path / "s.duckdb", tmp_path / "raw"
    raw.mkdir()
    with store_lease(db, raw_dir=raw, purpose="unit test"):
        record = json.loads(lock_path_for(db).read_text())
    assert record["holder"]["purpose"] == "unit test" and record["holder"]["host"]
    assert set(record["writer"]) == {"raw_dir", "signals_config"}


@pytest.mark.parametrize("kind", ["foreign", "corrupt"])
def test_the_cli_refuses_a_bad_store_in_one_line_before_extracting(small_raw, tmp_path, capsys, kind):
    from convocausal.cli import main

    db = tmp_path / "s.duckdb"
    if kind == "foreign":
        with duckdb.connect(str(db)) as con:
            con.execute("CREATE TABLE signals AS SELECT 1 AS sensor_id, 20.5 AS celsius")
    else:
        db.write_bytes(b"\0" * 8 + b"DUCK" + os.urandom(8000))
    before = db.read_bytes()
    code = main(["run", "--raw", str(small_raw), "--store", str(db)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith(f"convocausal: error: store {db}:"), err[-5:]
    assert db.read_bytes() == before
    assert not store_paths(db).parts.exists() and not lock_path_for(db).exists()
