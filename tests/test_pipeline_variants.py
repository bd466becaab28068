"""The pipeline does not invent effects (null variant) and flags broken assumptions (diverging)."""

from __future__ import annotations

import json

import dagster as dg
import pytest

from data_fixtures.generator import generate
from pipelines.runner import run_pipeline

_INSTANCES: dict = {}


def _run(tmp_path_factory, variant: str, seed: int) -> tuple[dict, dict]:
    root = tmp_path_factory.mktemp(variant)
    generate(root / "raw", n_conversations=30_000, seed=seed, variant=variant)
    instance = dg.DagsterInstance.ephemeral()
    rows = run_pipeline(root / "raw", root / "store.duckdb", instance=instance)
    _INSTANCES[variant] = (instance, root)
    return {r["question_id"]: r for r in rows}, json.loads((root / "raw" / "truth.json").read_text())


@pytest.fixture(scope="module")
def null_run(tmp_path_factory):
    return _run(tmp_path_factory, "null", seed=13)


@pytest.fixture(scope="module")
def diverging_run(tmp_path_factory):
    return _run(tmp_path_factory, "diverging", seed=17)


def test_null_truths_are_zero(null_run):
    _, truth = null_run
    assert set(truth.values()) == {0.0}


@pytest.mark.parametrize("qid", ["email_early_vs_late", "lookup_order_rollout", "prompt_v2_launch"])
def test_null_intervals_cover_zero(null_run, qid):
    rows, _ = null_run
    r = rows[qid]
    assert r["status"] == "ok", r.get("message")
    assert r["ci_low"] <= 0.0 <= r["ci_high"], r


def test_null_synthetic_control_permutation_p_not_small(null_run):
    rows, _ = null_run
    assert rows["prompt_v2_launch"]["p_value"] > 0.05


def test_diverging_pre_trends_fail_the_check(diverging_run):
    rows, _ = diverging_run
    did = rows["lookup_order_rollout"]
    assert did["checks"]["pre_trend"] == "failed"
    assert rows["email_early_vs_late"]["checks"]["balance"] == "passed"  # the other questions are unaffected


def _check_records(instance, check: str, partition: str):
    from dagster._core.event_api import PartitionKeyFilter

    key = dg.AssetCheckKey(dg.AssetKey("question_estimate"), check)
    return instance.event_log_storage.get_asset_check_execution_history(
        key, limit=10, partition_filter=PartitionKeyFilter(key=partition))


def test_check_results_belong_to_their_question_partition(diverging_run):
    """Two question partitions whose checks differ: each partition's results read back on their own."""
    instance, _ = _INSTANCES["diverging"]
    states = {}
    for qid in ("lookup_order_rollout", "email_early_vs_late"):
        for check in ("pre_trend", "balance"):
            records = _check_records(instance, check, qid)
            assert len(records) == 1 and records[0].partition == qid, (qid, check, records)
            evaluation = records[0].event.dagster_event.event_specific_data
            states[qid, check] = evaluation.metadata["state"].value
    assert states["lookup_order_rollout", "pre_trend"] == "failed"  # the diverging world breaks parallel trends
    assert states["lookup_order_rollout", "balance"] == "not_applicable"
    assert states["email_early_vs_late", "pre_trend"] == "not_applicable"
    assert states["email_early_vs_late", "balance"] == "passed"


def test_memo_written_after_a_blocking_failure_in_a_plain_materialize(diverging_run):
    """`materialize` of the question job alone (what a schedule or sensor run does) still writes the memo."""
    from assets.questions import question_results
    from pipelines.resources import ConvocausalSettings

    instance, root = _INSTANCES["diverging"]
    memo = root / "store.duckdb.parts" / "reports" / "lookup_order_rollout.md"
    memo.unlink()
    result = dg.materialize([question_results], instance=instance, partition_key="lookup_order_rollout",
                            resources={"settings": ConvocausalSettings(raw_dir=str(root / "raw"),
                                                                       store=str(root / "store.duckdb"))},
                            raise_on_error=False)
    assert not result.success  # the blocking pre-trend check failed the step ...
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert all(e.event_specific_data.error.cls_name == "DagsterAssetCheckFailedError" for e in failures)
    reports = [e for e in result.get_asset_materialization_events()
               if e.asset_key == dg.AssetKey("question_report")]
    assert len(reports) == 1  # ... and the memo was materialized in that same run
    text = memo.read_text()
    assert "Do not act on this number yet" in text and "pre_trend" in text


def test_a_true_null_does_not_fail_the_refuters(null_run):
    """The E-value refuter used to fail whenever the interval included 0, so every null result
    failed `refuters_passed` by construction (issue 13)."""
    rows, _ = null_run
    r = rows["email_early_vs_late"]
    assert r["ci_low"] <= 0.0 <= r["ci_high"]
    assert r["checks"]["refuters_passed"] == "passed", r["checks"]
