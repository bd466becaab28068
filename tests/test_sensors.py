"""Registering a question adds exactly one partition and one run; an unchanged config requests nothing;
both sensors stagger their runs (at most N question runs queued or running; the rest wait in the cursor)."""

from __future__ import annotations

import json

import dagster as dg
import pytest
import yaml
from dagster._core.test_utils import create_run_for_test

from configs.questions import ConfigError, load_questions
from pipelines.partitions import questions
from pipelines.sensors import (
    QUESTION_RUN_TAG,
    make_registry_sensor,
    make_store_sensor,
    registry_changes,
    runs_at_once,
    store_changes,
)

EXTRA = {"id": "csat_after_email", "design": "coexisting_variants", "outcome": "csat",
         "treatment": "asked_email_first", "covariates": ["intent", "channel"]}


def _tick(sensor, instance, cursor):
    ctx = dg.build_sensor_context(instance=instance, cursor=cursor)
    result = sensor(ctx)
    return result, ctx


def test_registry_sensor_adds_new_question_alone(tmp_path):
    path = tmp_path / "questions.yaml"
    base = load_questions().model_dump(mode="json")
    path.write_text(yaml.safe_dump(base))
    sensor = make_registry_sensor(str(path), max_runs_at_once=100)
    with dg.instance_for_test() as instance:
        first, _ = _tick(sensor, instance, None)
        assert {r.partition_key for r in first.run_requests} == {q["id"] for q in base["questions"]}
        instance.add_dynamic_partitions(questions.name, list(first.dynamic_partitions_requests[0].partition_keys))
        cursor = first.cursor

        unchanged, _ = _tick(sensor, instance, cursor)
        assert isinstance(unchanged, dg.SkipReason)

        path.write_text(yaml.safe_dump({"questions": base["questions"] + [EXTRA]}))
        added, _ = _tick(sensor, instance, cursor)
        assert [r.partition_key for r in added.run_requests] == ["csat_after_email"]
        assert [list(r.partition_keys) for r in added.dynamic_partitions_requests] == [["csat_after_email"]]
        instance.add_dynamic_partitions(questions.name, ["csat_after_email"])

        edited = base.copy()
        edited["questions"] = [dict(q) for q in base["questions"]]
        edited["questions"][0]["covariates"] = ["intent", "channel"]
        path.write_text(yaml.safe_dump({"questions": edited["questions"] + [EXTRA]}))
        changed, _ = _tick(sensor, instance, added.cursor)
        assert [r.partition_key for r in changed.run_requests] == [base["questions"][0]["id"]]
        assert changed.dynamic_partitions_requests == []


def test_registry_sensor_skips_invalid_config(tmp_path):
    path = tmp_path / "questions.yaml"
    path.write_text("questions: !!python/object/apply:os.system ['echo x']\n")
    with dg.instance_for_test() as instance:
        result, _ = _tick(make_registry_sensor(str(path)), instance, None)
    assert isinstance(result, dg.SkipReason) and "invalid" in result.skip_message


def _questions_file(tmp_path, n_extra: int) -> tuple[str, list[str]]:
    base = load_questions().model_dump(mode="json")["questions"]
    extra = [{**EXTRA, "id": f"csat_after_email_{i}"} for i in range(n_extra)]
    path = tmp_path / "questions.yaml"
    path.write_text(yaml.safe_dump({"questions": base + extra}))
    return str(path), [q["id"] for q in base + extra]


def _busy(instance, n: int, status=dg.DagsterRunStatus.STARTED) -> list[str]:
    return [create_run_for_test(instance, job_name="question_job", status=status).run_id for _ in range(n)]


def _finish(instance, run_ids) -> None:
    for run_id in run_ids:
        instance.report_run_failed(instance.get_run_by_id(run_id))


def test_first_start_staggers_question_runs(tmp_path):
    """First start with 5 questions and a cap of 2: 2 runs, every partition added at once; no run
    while 2 are in flight; the waiting ones follow as runs finish, each exactly once."""
    path, ids = _questions_file(tmp_path, 2)
    sensor = make_registry_sensor(path, max_runs_at_once=2)
    with dg.instance_for_test() as instance:
        first, _ = _tick(sensor, instance, None)
        assert [r.partition_key for r in first.run_requests] == ids[:2]
        assert all(r.tags == QUESTION_RUN_TAG for r in first.run_requests)
        assert set(first.dynamic_partitions_requests[0].partition_keys) == set(ids)
        instance.add_dynamic_partitions(questions.name, ids)
        running = _busy(instance, 2)  # the two requested runs, now running

        full, _ = _tick(sensor, instance, first.cursor)
        assert full.run_requests == [] and "3 question(s) waiting" in full.skip_reason.skip_message
        assert full.cursor == first.cursor

        _finish(instance, running[:1])
        one, _ = _tick(sensor, instance, full.cursor)
        assert [r.partition_key for r in one.run_requests] == [ids[2]]
        running = running[1:] + _busy(instance, 1)

        _finish(instance, running)
        rest, _ = _tick(sensor, instance, one.cursor)
        assert [r.partition_key for r in rest.run_requests] == ids[3:5]
        assert not rest.dynamic_partitions_requests
        _busy(instance, 2, status=dg.DagsterRunStatus.SUCCESS)  # finished runs do not count

        done, _ = _tick(sensor, instance, rest.cursor)
        assert isinstance(done, dg.SkipReason)
        requested = [r.partition_key for t in (first, one, rest) for r in t.run_requests]
        assert sorted(requested) == sorted(ids)


def test_registry_changes_keeps_waiting_questions_changed():
    from configs.questions import QuestionSet

    qs = QuestionSet.model_validate(load_questions().model_dump())
    ids = [q.id for q in qs.questions]
    _, now, cursor, waiting = registry_changes(qs, None, set(), slots=1)
    assert now == ids[:1] and waiting == ids[1:]
    assert set(json.loads(cursor)) == {ids[0]}  # the waiting ones have no fingerprint yet
    _, now, cursor, waiting = registry_changes(qs, cursor, set(ids), slots=0)
    assert now == [] and waiting == ids[1:]
    _, now, cursor, waiting = registry_changes(qs, cursor, set(ids), slots=None)
    assert now == ids[1:] and waiting == [] and set(json.loads(cursor)) == set(ids)


def test_store_sensor_staggers_reestimation(tmp_path):
    """After a publish every question waits; at most the cap runs at once; a newer publish restarts
    the queue; the first evaluation only records the newest publish (the registry sensor runs
    every question on a first start already)."""
    sensor = make_store_sensor(max_runs_at_once=2)
    ids = ["q1", "q2", "q3"]
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(questions.name, ids)
        instance.report_runless_asset_event(dg.AssetMaterialization("analysis_store"))
        first, _ = _tick(sensor, instance, None)
        assert first.run_requests == []
        again, _ = _tick(sensor, instance, first.cursor)
        assert again.run_requests == [] and "no new store publish" in again.skip_reason.skip_message

        instance.report_runless_asset_event(dg.AssetMaterialization("analysis_store"))
        published, _ = _tick(sensor, instance, again.cursor)
        assert [r.partition_key for r in published.run_requests] == ["q1", "q2"]
        storage_id = json.loads(published.cursor)["storage_id"]
        assert {r.run_key for r in published.run_requests} == {f"q1:store:{storage_id}", f"q2:store:{storage_id}"}
        running = _busy(instance, 2)
        full, _ = _tick(sensor, instance, published.cursor)
        assert full.run_requests == [] and "1 question(s) waiting" in full.skip_reason.skip_message
        _finish(instance, running)
        last, _ = _tick(sensor, instance, full.cursor)
        assert [r.partition_key for r in last.run_requests] == ["q3"]
        assert json.loads(last.cursor)["waiting"] == []


def test_store_changes_newer_publish_restarts_the_queue():
    cursor = json.dumps({"storage_id": 5, "waiting": ["q3"]})
    now, cursor = store_changes(cursor, 9, ["q1", "q2", "q3"], slots=1)
    assert now == [("q1", 9)] and json.loads(cursor) == {"storage_id": 9, "waiting": ["q2", "q3"]}
    now, cursor = store_changes(cursor, 9, ["q1", "q3"], slots=5)  # q2's partition was removed
    assert now == [("q3", 9)]


def test_runs_at_once_setting():
    assert runs_at_once({}) == 2
    assert runs_at_once({"CONVOCAUSAL_QUESTION_RUNS_AT_ONCE": "4"}) == 4
    with pytest.raises(ConfigError, match="CONVOCAUSAL_QUESTION_RUNS_AT_ONCE"):
        runs_at_once({"CONVOCAUSAL_QUESTION_RUNS_AT_ONCE": "0"})
