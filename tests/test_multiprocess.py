"""The question job runs under Dagster's multiprocess executor (each step in a child process)
against the shared store, while another process holds the DuckDB file open for writing."""

from __future__ import annotations

import os
import subprocess
import sys

import dagster as dg
import pytest

from convocausal.store import connect
from pipelines.definitions import question_job_for_subprocesses


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from data_fixtures.generator import generate
    from pipelines.runner import run_pipeline

    root = tmp_path_factory.mktemp("mp")
    raw, store = root / "raw", root / "store.duckdb"
    generate(raw, n_conversations=8000, seed=9)
    run_pipeline(raw, store)
    old = {k: os.environ.get(k) for k in ("CONVOCAUSAL_RAW", "CONVOCAUSAL_STORE")}
    os.environ.update(CONVOCAUSAL_RAW=str(raw), CONVOCAUSAL_STORE=str(store))
    yield raw, store
    for k, v in old.items():
        os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def test_multiprocess_run_waits_for_the_writer_lock(prepared):
    _, store = prepared
    # another process takes DuckDB's write lock for 4 seconds, as a concurrent publish would
    holder = subprocess.Popen([sys.executable, "-c", (
        "import duckdb, time, sys; c = duckdb.connect(sys.argv[1]); "
        "c.execute('CREATE OR REPLACE TABLE _lock_probe AS SELECT 1'); print('locked', flush=True); time.sleep(4)"
    ), str(store)], stdout=subprocess.PIPE)
    assert holder.stdout.readline().strip() == b"locked"
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("questions", ["lookup_order_rollout"])
        with dg.execute_job(dg.reconstructable(question_job_for_subprocesses), instance=instance,
                            tags={"dagster/partition": "lookup_order_rollout"}) as result:
            assert result.success
            run_id = result.run_id
            pids = {e.dagster_event.pid for e in instance.all_logs(run_id)
                    if e.dagster_event and e.dagster_event.event_type_value == "STEP_START"}
    holder.wait(timeout=30)
    assert pids and os.getpid() not in pids, "steps did not run in child processes"
    with connect(store, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM estimates WHERE run_id = ?", [run_id]).fetchone()[0] == 1


EXTRACT_RANGE = """
import sys
import dagster as dg
from assets.signals import signals_day
from pipelines.resources import ConvocausalSettings
raw, store, first, last = sys.argv[1:5]
result = dg.materialize([signals_day], resources={"settings": ConvocausalSettings(raw_dir=raw, store=store)},
                        tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last})
sys.exit(0 if result.success else 1)
"""


def test_day_partitions_extract_in_parallel_processes(prepared, tmp_path):
    """Day partitions are independent: two processes extract disjoint day ranges into one
    store at the same time (as a multi-run backfill on several workers would), and every
    day part equals the one a single sequential run wrote."""
    import polars as pl

    from convocausal.store import store_paths
    from extract.raw import list_transcript_days

    raw, reference_store = prepared
    days = list_transcript_days(raw)
    half = len(days) // 2
    store = tmp_path / "parallel.duckdb"
    ranges = [(days[0], days[half - 1]), (days[half], days[-1])]
    procs = [subprocess.Popen([sys.executable, "-c", EXTRACT_RANGE, str(raw), str(store), a.isoformat(), b.isoformat()],
                              stderr=subprocess.PIPE) for a, b in ranges]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err.decode()[-2000:]
    ours, reference = store_paths(store), store_paths(reference_store)
    for table in ("signals", "quarantine"):
        got = sorted(p.relative_to(ours.parts) for p in (ours.parts / table).glob("*/*.parquet"))
        want = sorted(p.relative_to(reference.parts) for p in (reference.parts / table).glob("*/*.parquet"))
        assert got == want and (table == "quarantine" or len(got) == len(days))
        for rel in got:
            assert pl.read_parquet(ours.parts / rel).equals(pl.read_parquet(reference.parts / rel)), rel
