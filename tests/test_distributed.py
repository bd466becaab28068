"""Issue 20 item 4: the graph on a PostgreSQL-backed Dagster instance through the Celery executor
(Redis broker, two worker processes); the store equals a single-process run's."""

from __future__ import annotations

import pytest

from pipelines import distributed


@pytest.mark.slow
@pytest.mark.distributed
def test_celery_run_equals_single_process(tmp_path):
    try:
        distributed.check_services()
    except distributed.ServiceUnavailable as exc:
        pytest.skip(f"distributed services unavailable: {exc}")
    from data_fixtures.generator import generate
    from pipelines.runner import run_pipeline

    raw = tmp_path / "raw"
    generate(raw, n_conversations=3000, seed=7)
    summary = distributed.distributed_run(raw, tmp_path / "dist.duckdb", log=lambda *_: None)
    assert all(r["success"] for r in summary["runs"])
    step_pids = {p for r in summary["runs"] for p in r["pids"]}
    assert len(step_pids) >= 2 and not step_pids & {r["driver_pid"] for r in summary["runs"]}
    run_pipeline(raw, tmp_path / "single.duckdb")
    assert distributed.compare_stores(tmp_path / "dist.duckdb", tmp_path / "single.duckdb") == []
