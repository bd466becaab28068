"""The Dagster Definitions load with every asset, check, schedule, sensor and partition set."""

from __future__ import annotations

import dagster as dg

from checks.catalog import CATALOG


def test_definitions_load():
    from pipelines.definitions import defs

    repo = defs.get_repository_def()
    keys = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert {"signals_day", "analysis_store", "question_estimate", "question_refutations", "question_balance",
            "question_diagnostics", "question_report"} <= keys
    check_keys = {c.name for c in repo.asset_graph.asset_check_keys}
    assert set(CATALOG) <= check_keys
    assert {s.name for s in repo.schedule_defs} == {"nightly_extraction"}
    assert {s.name for s in repo.sensor_defs} == {"question_registry_sensor", "reestimate_after_store"}
    signals = repo.asset_graph.get(dg.AssetKey("signals_day"))
    assert isinstance(signals.partitions_def, dg.DailyPartitionsDefinition)
    estimate = repo.asset_graph.get(dg.AssetKey("question_estimate"))
    assert isinstance(estimate.partitions_def, dg.DynamicPartitionsDefinition)
    assert estimate.partitions_def.name == "questions"
    assert repo.get_job("question_job") and repo.get_job("extraction_job") and repo.get_job("register_questions")


def test_nightly_schedule_targets_newest_day():
    from pipelines.definitions import defs

    schedule = defs.get_repository_def().get_schedule_def("nightly_extraction")
    assert schedule.cron_schedule == "0 2 * * *"
    ctx = dg.build_schedule_context(scheduled_execution_time=__import__("datetime").datetime(2026, 6, 2, 2, 0))
    (request,) = list(schedule.evaluate_tick(ctx).run_requests)
    assert request.partition_key == "2026-06-01"


def test_backfill_of_days_is_one_run_unless_split_by_setting():
    import pytest

    from pipelines.partitions import days_backfill_policy

    assert days_backfill_policy({}).max_partitions_per_run is None  # single run
    policy = days_backfill_policy({"CONVOCAUSAL_BACKFILL_DAYS_PER_RUN": "7"})
    assert policy.max_partitions_per_run == 7
    with pytest.raises(ValueError, match="whole number"):
        days_backfill_policy({"CONVOCAUSAL_BACKFILL_DAYS_PER_RUN": "-1"})
    from pipelines.definitions import defs

    signals = defs.get_repository_def().asset_graph.get(dg.AssetKey("signals_day"))
    assert signals.backfill_policy.max_partitions_per_run is None


def test_loading_the_definitions_prints_no_beta_or_preview_warning():
    """`dagster dev` imports the definitions in every process of a launch (issue 18: 16 copies of
    the `backfill_policy` beta warning); the two deliberate uses are filtered, nothing else."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-W", "default", "-c", "import pipelines.definitions"], cwd=root,
                          capture_output=True, text=True, timeout=300, check=True)
    assert not any(w in proc.stderr for w in ("BetaWarning", "PreviewWarning", "pipelines/jobs.py")), proc.stderr


def test_register_questions_job_adds_every_question_partition():
    """The command-line path to `dagster asset materialize --partition <question>` (no daemon, no sensor)."""
    from configs.questions import load_questions
    from pipelines.definitions import defs

    job = defs.resolve_job_def("register_questions")
    ids = [q.id for q in load_questions().questions]
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("questions", ids[:1])
        result = job.execute_in_process(instance=instance)
        assert result.success and result.output_for_node("register_question_partitions") == ids[1:]
        assert sorted(instance.get_dynamic_partitions("questions")) == sorted(ids)
        again = job.execute_in_process(instance=instance)
        assert again.output_for_node("register_question_partitions") == []
