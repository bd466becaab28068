"""Sensors: register new or changed questions, and re-estimate after each store publish.

``question_registry_sensor`` keeps a cursor of each question's content fingerprint: a new
question adds exactly one partition and one run; an edited question re-runs only itself; an
unchanged config requests nothing.
"""

from __future__ import annotations

import json

import dagster as dg

from configs.questions import ConfigError, QuestionSet
from convocausal.file_settings import FileSettingError, check_config_file
from convocausal.questions.registry import load_registry
from pipelines.jobs import question_job
from pipelines.partitions import questions


def registry_changes(question_set: QuestionSet, cursor: str | None, existing: set[str]):
    """Pure diff of the registry against the cursor: (partitions to add, questions to run, new cursor)."""
    seen: dict[str, str] = json.loads(cursor) if cursor else {}
    current = {q.id: q.fingerprint() for q in question_set.questions}
    to_add = [qid for qid in current if qid not in existing]
    to_run = [qid for qid, fp in current.items() if seen.get(qid) != fp]
    return to_add, to_run, json.dumps(current, sort_keys=True)


def make_registry_sensor(questions_config: str | None):
    @dg.sensor(job=question_job, minimum_interval_seconds=30, name="question_registry_sensor",
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="Adds a partition and requests a run for each new or edited question.")
    def question_registry_sensor(context: dg.SensorEvaluationContext):
        try:
            if questions_config is not None:
                check_config_file("questions_config", questions_config)
            qs = load_registry(questions_config)
        except (ConfigError, FileSettingError) as exc:
            return dg.SkipReason(f"questions config is invalid: {exc}")
        existing = set(context.instance.get_dynamic_partitions(questions.name))
        to_add, to_run, cursor = registry_changes(qs, context.cursor, existing)
        if not to_add and not to_run:
            return dg.SkipReason("no new or changed questions")
        return dg.SensorResult(
            run_requests=[dg.RunRequest(partition_key=qid, run_key=f"{qid}:{json.loads(cursor)[qid]}")
                          for qid in to_run],
            dynamic_partitions_requests=[questions.build_add_request(to_add)] if to_add else [],
            cursor=cursor,
        )

    return question_registry_sensor


@dg.asset_sensor(asset_key=dg.AssetKey("analysis_store"), job=question_job, name="reestimate_after_store",
                 default_status=dg.DefaultSensorStatus.RUNNING,
                 description="After the nightly store publish, re-estimate every registered question.")
def reestimate_after_store(context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry):
    storage_id = asset_event.storage_id
    for qid in context.instance.get_dynamic_partitions(questions.name):
        yield dg.RunRequest(partition_key=qid, run_key=f"{qid}:store:{storage_id}")
