"""Kill the run at several points, re-run, and the store ends as an uninterrupted run leaves it.

Each fault is a real process death (``os._exit``, no cleanup, no exception handlers) in a
child process, injected by wrapping one function of the pipeline: during extraction of a
day, in the middle of the store publish, and in the middle of an estimate write.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from convocausal.store import connect

ROOT = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {root!r})
    from convocausal import store
    target, after = {target!r}, {after}
    calls = {{"n": 0}}

    def killer(original):
        def wrapped(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] > after:
                if target == "write_parquet_atomic":
                    # die after the temp file exists but before the rename
                    import polars as pl
                    df, path = args[0], args[1]
                    path.parent.mkdir(parents=True, exist_ok=True)
                    df.write_parquet(str(path) + ".partial")
                os._exit(137)
            return original(*args, **kwargs)
        return wrapped

    if target == "write_parquet_atomic":
        store.write_parquet_atomic = killer(store.write_parquet_atomic)
    elif target == "publish":
        import duckdb
        original = store.publish
        def publish_then_die(paths, *a, **k):
            # die while the publish transaction is open: the old tables must survive
            con = duckdb.connect(str(paths.db))
            con.execute("BEGIN TRANSACTION")
            con.execute("CREATE OR REPLACE TABLE signals AS SELECT 1 AS broken")
            os._exit(137)
        store.publish = publish_then_die
        import assets.signals as a
        a.publish = publish_then_die
    elif target == "_replace_question_rows":
        store._replace_question_rows = killer(store._replace_question_rows)
    from pipelines.runner import run_pipeline
    run_pipeline({raw!r}, {db!r})
""")


def _snapshot(db: Path) -> dict:
    with connect(db, read_only=True) as con:
        signals = con.execute("SELECT * FROM signals ORDER BY conversation_id").df()
        quarantine = con.execute("SELECT count(*) FROM quarantine").fetchone()[0]
        latest = con.execute(
            "SELECT question_id, method, estimate, ci_low, ci_high, p_value, n_treated, n_control FROM estimates "
            "QUALIFY row_number() OVER (PARTITION BY question_id ORDER BY computed_at DESC) = 1 "
            "ORDER BY question_id"
        ).df()
        dup = con.execute("SELECT count(*) - count(DISTINCT conversation_id) FROM signals").fetchone()[0]
    return {"signals": signals, "quarantine": quarantine, "latest": latest, "dup": dup}


@pytest.fixture(scope="module")
def small_raw(tmp_path_factory):
    from data_fixtures.generator import generate

    raw = tmp_path_factory.mktemp("fault_raw")
    generate(raw, n_conversations=6000, seed=3)
    return raw


@pytest.fixture(scope="module")
def clean_snapshot(small_raw, tmp_path_factory):
    from pipelines.runner import run_pipeline

    db = tmp_path_factory.mktemp("clean") / "store.duckdb"
    run_pipeline(small_raw, db)
    return _snapshot(db)


@pytest.mark.parametrize("target, after", [
    ("write_parquet_atomic", 40),      # during extraction, after 20 days were written
    ("publish", 0),                    # during the store publish transaction
    ("_replace_question_rows", 1),     # during the second question's estimate write
])
def test_kill_and_rerun_matches_uninterrupted(small_raw, clean_snapshot, tmp_path, target, after):
    from pipelines.runner import run_pipeline

    db = tmp_path / "store.duckdb"
    script = CHILD.format(root=str(ROOT), target=target, after=after, raw=str(small_raw), db=str(db))
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, timeout=600, check=False)
    assert proc.returncode == 137, proc.stderr.decode()[-2000:]
    run_pipeline(small_raw, db)
    got = _snapshot(db)
    assert got["dup"] == 0
    assert got["quarantine"] == clean_snapshot["quarantine"]
    assert got["signals"].equals(clean_snapshot["signals"])
    assert got["latest"].equals(clean_snapshot["latest"])


def test_concurrent_runs_leave_the_store_as_one_run(small_raw, clean_snapshot, tmp_path):
    """Three `convocausal run` processes started at once on one store (a nightly run, a
    backfill and a manual re-run overlapping): each finishes, DuckDB's single-writer lock is
    waited out by `store.connect`, day parts are replaced not duplicated, and each run keeps
    its own estimate rows."""
    db = tmp_path / "store.duckdb"
    cmd = [sys.executable, "-m", "convocausal.cli", "run", "--raw", str(small_raw), "--store", str(db), "--json"]
    procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err.decode()[-2000:]
    got = _snapshot(db)
    assert got["dup"] == 0
    assert got["quarantine"] == clean_snapshot["quarantine"]
    assert got["signals"].equals(clean_snapshot["signals"])
    assert got["latest"].equals(clean_snapshot["latest"])
    with connect(db, read_only=True) as con:
        per_question = con.execute(
            "SELECT question_id, count(DISTINCT run_id), count(*), count(DISTINCT coalesce(CAST(estimate AS VARCHAR), status)) FROM estimates GROUP BY 1"
        ).fetchall()
        refutations = con.execute(
            "SELECT count(*) FROM (SELECT run_id, question_id, refuter, count(*) AS k FROM refutations "
            "GROUP BY ALL HAVING k > 1)").fetchone()[0]
    assert sorted(r[1:] for r in per_question) == [(3, 3, 1)] * len(clean_snapshot["latest"])
    assert refutations == 0
