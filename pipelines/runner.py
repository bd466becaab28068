"""`convocausal run`: materialize the same Dagster Definitions in-process (Dagster wiring, so it lives here).

The file settings are checked before anything else (``convocausal.file_settings``: no traversal,
no URLs, expected suffixes and sizes, allowed roots). Configs are validated next (questions
against the catalog the signals config implies), so a typo in a question stops the run before
any extraction. Days are extracted in one run over the partition range present in the landing
directory, then each question partition runs.
"""

from __future__ import annotations

import math
import resource
import time
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import dagster as dg

from configs.questions import ConfigError, validate_against_catalog
from configs.signals import load_signals_config
from convocausal.file_settings import FileSettingError, check_file_settings
from convocausal.questions.registry import load_registry, question_columns
from convocausal.store import connect, store_paths
from extract.catalog import build_catalog
from extract.raw import RawInputError, list_transcript_days
from pipelines.partitions import START_DATE, questions, transcript_days


def run_pipeline(raw_dir: str | Path, store: str | Path, signals_config=None, questions_config=None,
                 truth_file=None, instance: dg.DagsterInstance | None = None, seed: int = 0,
                 timings: dict | None = None, log_level: str = "WARNING", on_unreadable: str = "stop") -> list[dict]:
    """Run extraction, the store and every question; return one dict per question (estimates + checks).

    ``timings``, when given, receives seconds and peak RSS (MiB) per stage (for benchmarks).
    ``on_unreadable``: "stop" at a transcript file that is not readable parquet, or "quarantine"
    it and go on (see ``ConvocausalSettings.on_unreadable``).
    A bad path raises ``RawInputError`` (raw_dir) or ``ConfigError`` (the others) before any config
    is read or any file written; the ``FileSettingError`` is kept as the cause.
    """
    try:
        check_file_settings(raw_dir, store, signals_config=signals_config, questions_config=questions_config,
                            truth_file=truth_file)
    except FileSettingError as exc:
        raise (RawInputError if exc.setting == "raw_dir" else ConfigError)(str(exc)) from exc
    stage = _Stopwatch(timings)
    from assets.questions import question_results
    from assets.signals import analysis_store, signals_day
    from pipelines.resources import ConvocausalSettings

    config = load_signals_config(str(signals_config) if signals_config else None)
    qset = load_registry(questions_config)
    catalog = build_catalog(config).to_dicts()
    for q in qset.questions:
        validate_against_catalog(q, catalog, question_columns(q))
    last_partition = date.fromisoformat(transcript_days.get_last_partition_key())
    days = [d for d in list_transcript_days(raw_dir, on_unreadable)
            if d <= last_partition]  # today is not complete yet
    if not days:
        raise RawInputError(f"{Path(raw_dir) / 'transcripts'}: no transcript files found")
    if days[0] < date.fromisoformat(START_DATE):
        raise ConfigError(f"transcripts start on {days[0]}, before CONVOCAUSAL_START_DATE={START_DATE}: "
                          "set that environment variable to an earlier date")
    settings = ConvocausalSettings(
        raw_dir=str(raw_dir), store=str(store), signals_config=str(signals_config) if signals_config else None,
        questions_config=str(questions_config) if questions_config else None,
        truth_file=str(truth_file) if truth_file else None, seed=seed, on_unreadable=on_unreadable,
    )
    instance = instance or dg.DagsterInstance.ephemeral()
    resources = {"settings": settings}
    quiet = {"loggers": {"console": {"config": {"log_level": log_level}}}}
    with stage("extraction"):
        dg.materialize(
            [signals_day], instance=instance, resources=resources, run_config=quiet,
            tags={"dagster/asset_partition_range_start": days[0].isoformat(),
                  "dagster/asset_partition_range_end": days[-1].isoformat()},
        )
    with stage("store"):
        dg.materialize([signals_day.to_source_asset(), analysis_store], instance=instance, resources=resources,
                       run_config=quiet)
    existing = set(instance.get_dynamic_partitions(questions.name))
    new = [q.id for q in qset.questions if q.id not in existing]
    if new:
        instance.add_dynamic_partitions(questions.name, new)
    rows = []
    for q in qset.questions:
        with stage(f"question:{q.id}"):
            # A failed blocking check is a finding, not a crash: it is reported (the memo is written in
            # the same step before the checks), and the run goes on.
            result = dg.materialize([question_results], instance=instance, resources=resources,
                                    partition_key=q.id, raise_on_error=False, run_config=quiet)
            if not result.success and not _only_check_failures(result):
                raise RuntimeError(f"question {q.id} failed: {_first_failure(result)}")
        rows.append(_estimate_row(store, result.run_id, q.id))
    return rows


def _only_check_failures(result) -> bool:
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return all(e.event_specific_data.error.cls_name == "DagsterAssetCheckFailedError" for e in failures)


def _first_failure(result) -> str:
    for e in result.all_events:
        if e.event_type_value == "STEP_FAILURE":
            return e.event_specific_data.error.message.strip().splitlines()[-1]
    return "unknown failure"


class _Stopwatch:
    """Records wall seconds and the process's peak RSS after each stage."""

    def __init__(self, sink: dict | None):
        self.sink = sink

    @contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        yield
        if self.sink is not None:
            peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            self.sink[name] = {"seconds": round(time.perf_counter() - start, 2), "peak_rss_mib": round(peak_mib)}


def _estimate_row(store, run_id: str, question_id: str) -> dict:
    """The stored estimate row plus ``checks``: check name → state, as the store's ``checks`` table says."""
    with connect(store_paths(store).db, read_only=True) as con:
        df = con.execute("SELECT * FROM estimates WHERE run_id = ? AND question_id = ?", [run_id, question_id]).df()
        checks = con.execute("SELECT check_name, state FROM checks WHERE run_id = ? AND question_id = ?",
                             [run_id, question_id]).fetchall()
    row = {k: (None if math.isnan(v) else v) if isinstance(v, float) else v for k, v in df.iloc[0].to_dict().items()}
    row["checks"] = dict(checks)
    return row
