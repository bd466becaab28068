"""Registering a question adds exactly one partition and one run; an unchanged config requests nothing."""

from __future__ import annotations

import dagster as dg

from configs.questions import load_questions
from pipelines.partitions import questions
from pipelines.sensors import make_registry_sensor

EXTRA = {"id": "csat_after_email", "design": "coexisting_variants", "outcome": "csat",
         "treatment": "asked_email_first", "covariates": ["intent", "channel"]}


def _tick(sensor, instance, cursor):
    ctx = dg.build_sensor_context(instance=instance, cursor=cursor)
    result = sensor(ctx)
    return result, ctx


def test_registry_sensor_adds_new_question_alone(tmp_path):
    path = tmp_path / "questions.yaml"
    base = load_questions().model_dump(mode="json")
    import yaml

    path.write_text(yaml.safe_dump(base))
    sensor = make_registry_sensor(str(path))
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
