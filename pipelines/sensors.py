"""Sensors: register new or changed questions, and re-estimate after each store publish.

``question_registry_sensor`` keeps a cursor of each question's content fingerprint: a new
question adds exactly one partition and one run; an edited question re-runs only itself; an
unchanged config requests nothing.

Both sensors stagger their runs. On the first start every question is new, and after a publish
every question is stale: requesting them all in one tick put 16 question runs of 2–2.5 minutes
each on a 2-core machine at once. So each tick requests at most as many runs as leave
``CONVOCAUSAL_QUESTION_RUNS_AT_ONCE`` (default 2) ``question_job`` runs queued or running; the
rest stay pending in the cursor and are requested on later ticks as runs finish. Every run they
request carries the tag ``convocausal/question_run=true``, so a deployment that wants a hard
limit across all launchers sets a run-queue tag limit on it in ``dagster.yaml``
(``concurrency: runs: tag_concurrency_limits: [{key: convocausal/question_run, limit: 2}]``).
"""

from __future__ import annotations

import json
import os

import dagster as dg

from configs.questions import ConfigError, QuestionSet
from convocausal.file_settings import FileSettingError, check_config_file
from convocausal.questions.registry import load_registry
from pipelines.jobs import question_job
from pipelines.partitions import questions

RUNS_AT_ONCE_ENV = "CONVOCAUSAL_QUESTION_RUNS_AT_ONCE"
DEFAULT_RUNS_AT_ONCE = 2
QUESTION_RUN_TAG = {"convocausal/question_run": "true"}
IN_FLIGHT = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
             dg.DagsterRunStatus.STARTED]
STORE_ASSET = dg.AssetKey("analysis_store")


def runs_at_once(environ=os.environ) -> int:
    """The cap on queued + running question runs the sensors fill up to (``CONVOCAUSAL_QUESTION_RUNS_AT_ONCE``)."""
    raw = environ.get(RUNS_AT_ONCE_ENV, "").strip()
    if not raw:
        return DEFAULT_RUNS_AT_ONCE
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"{RUNS_AT_ONCE_ENV}={raw!r}: expected a whole number of runs >= 1")
    return int(raw)


def free_slots(instance: dg.DagsterInstance, limit: int) -> int:
    """How many more question runs may start now: the cap minus those queued or running."""
    busy = instance.get_runs_count(dg.RunsFilter(job_name=question_job.name, statuses=IN_FLIGHT))
    return max(limit - busy, 0)


def registry_changes(question_set: QuestionSet, cursor: str | None, existing: set[str],
                     slots: int | None = None):
    """Pure diff of the registry against the cursor: (partitions to add, questions to run now,
    new cursor, questions left waiting).

    The cursor maps each question to the fingerprint of its last *requested* run. With ``slots``,
    only that many changed questions are requested (in config order); the others keep their old
    fingerprint (or none) in the cursor, so they are still changed on the next tick. Partitions
    are added for every new question at once: that is cheap and lets each be backfilled alone.
    """
    seen: dict[str, str] = json.loads(cursor) if cursor else {}
    current = {q.id: q.fingerprint() for q in question_set.questions}
    to_add = [qid for qid in current if qid not in existing]
    changed = [qid for qid, fp in current.items() if seen.get(qid) != fp]
    to_run = changed if slots is None else changed[:slots]
    waiting = [qid for qid in changed if qid not in to_run]
    new_seen = {qid: fp for qid, fp in current.items() if qid not in waiting}
    new_seen.update({qid: seen[qid] for qid in waiting if qid in seen})
    return to_add, to_run, json.dumps(new_seen, sort_keys=True), waiting


def make_registry_sensor(questions_config: str | None, max_runs_at_once: int | None = None):
    """``max_runs_at_once``: the cap (default ``runs_at_once()``, read at each tick)."""

    @dg.sensor(job=question_job, minimum_interval_seconds=30, name="question_registry_sensor",
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="Adds a partition and requests a run for each new or edited question, "
                           f"at most {RUNS_AT_ONCE_ENV} (default {DEFAULT_RUNS_AT_ONCE}) question runs at once.")
    def question_registry_sensor(context: dg.SensorEvaluationContext):
        try:
            limit = max_runs_at_once or runs_at_once()
        except ConfigError as exc:
            return dg.SkipReason(str(exc))
        try:
            if questions_config is not None:
                check_config_file("questions_config", questions_config)
            qs = load_registry(questions_config)
        except (ConfigError, FileSettingError) as exc:
            return dg.SkipReason(f"questions config is invalid: {exc}")
        existing = set(context.instance.get_dynamic_partitions(questions.name))
        to_add, to_run, cursor, waiting = registry_changes(
            qs, context.cursor, existing, slots=free_slots(context.instance, limit))
        if not to_add and not to_run and not waiting:
            return dg.SkipReason("no new or changed questions")
        fingerprints = {q.id: q.fingerprint() for q in qs.questions}
        return dg.SensorResult(
            run_requests=[dg.RunRequest(partition_key=qid, run_key=f"{qid}:{fingerprints[qid]}", tags=QUESTION_RUN_TAG)
                          for qid in to_run],
            dynamic_partitions_requests=[questions.build_add_request(to_add)] if to_add else [],
            cursor=cursor,
            skip_reason=None if to_run else (f"{len(waiting)} question(s) waiting: {limit} question run(s) "
                                             "already queued or running"),
        )

    return question_registry_sensor


def store_changes(cursor: str | None, latest_storage_id: int | None, partitions: list[str], slots: int):
    """Pure step of ``reestimate_after_store``: (questions to run now as (id, storage id), new cursor).

    The cursor holds the storage id of the last publish seen and the questions still waiting to
    be re-estimated for it. A newer publish makes every question partition wait again (the older
    publish's waiting runs are superseded: they would read the newer store anyway). The first
    evaluation only records the newest publish: on a first start the registry sensor already
    requests every question, and asking twice would double the load this staggering avoids.
    """
    state = json.loads(cursor) if cursor else None
    if state is None:
        return [], json.dumps({"storage_id": latest_storage_id, "waiting": []})
    seen, waiting = state.get("storage_id"), list(state.get("waiting", []))
    if latest_storage_id is not None and (seen is None or latest_storage_id > seen):
        seen, waiting = latest_storage_id, list(partitions)
    known = set(partitions)
    waiting = [q for q in waiting if q in known]  # a partition removed meanwhile is not re-run
    now, later = waiting[:slots], waiting[slots:]
    return [(q, seen) for q in now], json.dumps({"storage_id": seen, "waiting": later})


def make_store_sensor(max_runs_at_once: int | None = None):
    @dg.sensor(job=question_job, minimum_interval_seconds=30, name="reestimate_after_store",
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="After each store publish, re-estimate every registered question, "
                           f"at most {RUNS_AT_ONCE_ENV} (default {DEFAULT_RUNS_AT_ONCE}) question runs at once.")
    def reestimate_after_store(context: dg.SensorEvaluationContext):
        try:
            limit = max_runs_at_once or runs_at_once()
        except ConfigError as exc:
            return dg.SkipReason(str(exc))
        records = context.instance.fetch_materializations(STORE_ASSET, limit=1, ascending=False).records
        latest = records[0].storage_id if records else None
        partitions = list(context.instance.get_dynamic_partitions(questions.name))
        to_run, cursor = store_changes(context.cursor, latest, partitions, free_slots(context.instance, limit))
        waiting = len(json.loads(cursor)["waiting"])
        return dg.SensorResult(
            run_requests=[dg.RunRequest(partition_key=qid, run_key=f"{qid}:store:{sid}", tags=QUESTION_RUN_TAG)
                          for qid, sid in to_run],
            cursor=cursor,
            skip_reason=None if to_run else (
                f"{waiting} question(s) waiting: {limit} question run(s) already queued or running" if waiting
                else "no new store publish"),
        )

    return reestimate_after_store


reestimate_after_store = make_store_sensor()
