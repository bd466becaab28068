"""`convocausal run`: materialize the same Dagster Definitions in-process (Dagster wiring, so it lives here).

The file settings are checked before anything else (``convocausal.file_settings``: no traversal,
no URLs, expected suffixes and sizes, allowed roots). Configs are validated next (questions
against the catalog the signals config implies), so a typo in a question stops the run before
any extraction. Days are extracted in one run over the days present in the landing directory,
then each question partition runs.

Why the day calendar is built here: ``dagster dev`` needs its day partitions at import
(``pipelines.partitions.transcript_days``, from ``CONVOCAUSAL_START_DATE``), but this runner has
looked at the landing directory, so it runs ``signals_day`` on a calendar that starts at the first
day it found: a landing directory from 2025 runs without setting any variable.

Why the console stays quiet: Dagster logs a failed step (a corrupt file, a failed blocking check)
with its stack trace, which buries the one line a user acts on. The caller picks the console log
level (``log_level``; the CLI shows Dagster's log only under ``--verbose``); warnings the assets log
are read back from the run's event log and handed to ``progress.warn`` whatever the level, and a
step failure carries Dagster's full error text (:class:`StepFailure`), so nothing is lost.
"""

from __future__ import annotations

import logging
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
from convocausal.progress import Progress
from convocausal.questions.registry import load_registry, question_columns, spec_for
from convocausal.store import StorePaths, connect, store_paths
from convocausal.store_lease import holding_store_lease
from extract.catalog import build_catalog
from extract.raw import RawInputError, list_transcript_days, raw_cache_dir
from extract.redact import check_salt
from pipelines.partitions import days_from, questions, transcript_days


class StepFailure(RuntimeError):
    """A Dagster step failed for a reason other than a blocking check.

    ``detail`` is Dagster's full error text (every cause, with stacks) for ``--verbose`` and
    internal-error reports; ``error_classes`` names the exception classes in that chain, so the
    CLI can tell a bad input (exit 2) from a bug (exit 1) without the traceback on the console.
    """

    def __init__(self, message: str, detail: str = "", error_classes: tuple[str, ...] = ()):
        super().__init__(message)
        self.detail = detail
        self.error_classes = error_classes


@holding_store_lease("convocausal run")  # one writer identity per store for the whole run (issue 19)
def run_pipeline(raw_dir: str | Path, store: str | Path, signals_config=None, questions_config=None,
                 truth_file=None, instance: dg.DagsterInstance | None = None, seed: int = 0,
                 timings: dict | None = None, log_level: str = "WARNING", on_unreadable: str = "stop",
                 progress: Progress | None = None, parts_url: str | None = None) -> list[dict]:
    """Run extraction, the store and every question; return one dict per question (estimates + checks).

    ``timings``, when given, receives seconds and peak RSS (MiB) per stage (for benchmarks).
    ``on_unreadable``: "stop" at a transcript file that is not readable parquet, or "quarantine"
    it and go on (see ``ConvocausalSettings.on_unreadable``). ``log_level``: Dagster's console
    logger. ``progress``: stage lines, a bar and the assets' warnings (default: silent). ``parts_url``:
    the day parts in an S3-compatible bucket instead of ``<store>.parts/`` (``convocausal.part_store``).
    A bad path raises ``RawInputError`` (raw_dir) or ``ConfigError`` (the others) before any config
    is read or any file written; the ``FileSettingError`` is kept as the cause.
    """
    progress = progress or Progress.off()
    try:
        check_file_settings(raw_dir, store, signals_config=signals_config, questions_config=questions_config,
                            truth_file=truth_file)
    except FileSettingError as exc:
        raise (RawInputError if exc.setting == "raw_dir" else ConfigError)(str(exc)) from exc
    paths = store_paths(store, parts_url)  # a bad parts URL: one ConfigError line, before any config is read
    stage = _Stages(timings, progress)
    from assets.extraction import extraction_report_asset
    from assets.monitoring import store_monitoring
    from assets.questions import question_results
    from assets.signals import analysis_store, signals_day
    from pipelines.resources import ConvocausalSettings

    config = load_signals_config(str(signals_config) if signals_config else None)
    check_salt(config.customer_key.salt, raw_dir)
    qset = load_registry(questions_config)
    catalog = build_catalog(config).to_dicts()
    for q in qset.questions:
        validate_against_catalog(q, catalog, question_columns(q))
    days = complete_days(raw_dir, on_unreadable, store=store)
    progress.line(f"{raw_dir}: {len(days)} transcript day(s), {days[0]} to {days[-1]}; "
                  f"{len(qset.questions)} question(s) registered")
    # The calendar of this run starts at the first day found (see the module doc); the asset is
    # the same function, so its day parts and metadata are what a Dagster backfill writes.
    run_days = days_from(days[0])
    extraction_asset = signals_day.map_asset_specs(lambda spec: spec.replace_attributes(partitions_def=run_days))
    settings = ConvocausalSettings(
        raw_dir=str(raw_dir), store=str(store), signals_config=str(signals_config) if signals_config else None,
        questions_config=str(questions_config) if questions_config else None,
        truth_file=str(truth_file) if truth_file else None, seed=seed, on_unreadable=on_unreadable,
        parts_url=parts_url or None,
    )
    instance = instance or dg.DagsterInstance.ephemeral()
    resources = {"settings": settings}
    quiet = {"loggers": {"console": {"config": {"log_level": log_level}}}}
    started = time.time()
    with stage("extraction", total=len(days), unit="days", poll=lambda: _parts_written(paths, days, started)) as st:
        result = dg.materialize(
            [extraction_asset], instance=instance, resources=resources, run_config=quiet,
            tags={"dagster/asset_partition_range_start": days[0].isoformat(),
                  "dagster/asset_partition_range_end": days[-1].isoformat()},
        )
        _forward_warnings(instance, result.run_id, progress)
        st.summary = f"{len(days)} day(s), {_rows(paths, 'signals', days):,} conversations"
    with stage("store") as st:
        result = dg.materialize([extraction_asset.to_source_asset(), analysis_store], instance=instance,
                                resources=resources, run_config=quiet)
        _forward_warnings(instance, result.run_id, progress)
        meta = {k: v.value for k, v in result.asset_materializations_for_node("analysis_store")[0].metadata.items()}
        st.summary = (f"{meta.get('signals_rows', 0):,} conversations, {meta.get('quarantine_rows', 0):,} "
                      f"quarantined row(s) in {paths.db}")
    with stage("monitoring") as st:  # before the questions: their memos report tonight's drift checks
        result = dg.materialize([store_monitoring], instance=instance, resources=resources, run_config=quiet)
        _forward_warnings(instance, result.run_id, progress)
        failed = [c.check_name for c in result.get_asset_check_evaluations() if not c.passed]
        st.summary = ("drift checks: " + (f"{len(failed)} failed ({', '.join(failed)})" if failed else "none failed"))
    with stage("extraction report") as st:
        result = dg.materialize([extraction_report_asset], instance=instance, resources=resources, run_config=quiet)
        _forward_warnings(instance, result.run_id, progress)
        failed = [c for c in result.get_asset_check_evaluations() if not c.passed]
        st.summary = ("default_intent_share failed: " + (failed[0].description or "see the extraction report")
                      if failed else "default-intent share ok")
    existing = set(instance.get_dynamic_partitions(questions.name))
    new = [q.id for q in qset.questions if q.id not in existing]
    if new:
        instance.add_dynamic_partitions(questions.name, new)
    rows = []
    for i, q in enumerate(qset.questions, 1):
        with stage(f"question {i}/{len(qset.questions)} {q.id}", key=f"question:{q.id}") as st:
            # A failed blocking check is a finding, not a crash: it is reported (the memo is written in
            # the same step before the checks), and the run goes on.
            result = dg.materialize([question_results], instance=instance, resources=resources,
                                    partition_key=q.id, raise_on_error=False, run_config=quiet)
            _forward_warnings(instance, result.run_id, progress)
            if not result.success and not _only_check_failures(result):
                raise _step_failure(q.id, result)
            row = _estimate_row(store, result.run_id, q.id)
            st.summary = _question_summary(spec_for(q).name, row)
        rows.append(row)
    _latest_q_values(store, rows)
    return rows


def _latest_q_values(store, rows: list[dict]) -> None:
    """Each question step refreshes the family's q-values; the rows read before the last step are stale."""
    if not rows:
        return
    with connect(store_paths(store).db, read_only=True) as con:
        q = dict(con.execute(
            "SELECT question_id, q_value FROM estimates WHERE (run_id, question_id) IN "
            f"({', '.join('(?, ?)' for _ in rows)})", [v for r in rows for v in (r['run_id'], r['question_id'])]
        ).fetchall())
    for row in rows:
        v = q.get(row["question_id"])
        row["q_value"] = None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def complete_days(raw_dir: str | Path, on_unreadable: str = "stop", store: str | Path | None = None) -> list[date]:
    """The transcript days of ``raw_dir`` up to yesterday (UTC): today is not complete yet.

    Raises ``RawInputError`` when there is none, saying whether nothing was found or everything
    found is from today or later. With ``store``, the conversation index comes from (and goes to)
    the store's raw cache (``extract.raw_cache``), as the extraction step's does.
    """
    found = list_transcript_days(raw_dir, on_unreadable, cache_dir=raw_cache_dir(store) if store else None)
    last_complete = date.fromisoformat(transcript_days.get_last_partition_key())
    days = [d for d in found if d <= last_complete]
    if not found:
        raise RawInputError(f"{Path(raw_dir) / 'transcripts'}: no transcript files found")
    if not days:
        raise RawInputError(f"{Path(raw_dir) / 'transcripts'}: every transcript day ({found[0]} to {found[-1]}) "
                            f"is after {last_complete}; a day is extracted once it is complete (UTC)")
    return days


def _parts_written(paths: StorePaths, days: list[date], since: float) -> int:
    """Days whose signals part this run has written so far (the bar's count; a part is renamed into place)."""
    return sum(t >= since - 1 for t in paths.part_store.modified("signals", days).values())


def _rows(paths: StorePaths, table: str, days: list[date]) -> int:
    """Rows in the day parts of ``days`` (parquet footers only: no data is read)."""
    listed = paths.part_store.list(table)
    return sum(paths.part_store.num_rows(listed[d][0]) for d in days if d in listed)


MAX_WARNINGS = 10  # per stage: a landing directory with a thousand odd folders must not bury the result


def _forward_warnings(instance: dg.DagsterInstance, run_id: str, progress: Progress) -> None:
    """The assets' own warnings (``context.log.warning``) from the run's event log, one line each,
    at most ``MAX_WARNINGS`` then a count (all of them are in the Dagster run's log)."""
    lines = [entry.user_message.strip().splitlines()[0] for entry in instance.all_logs(run_id)
             if not entry.is_dagster_event and entry.level >= logging.WARNING and entry.user_message.strip()]
    for line in lines[:MAX_WARNINGS]:
        progress.warn(line)
    if len(lines) > MAX_WARNINGS:
        progress.warn(f"… and {len(lines) - MAX_WARNINGS} more warning(s) like these (`--verbose` shows every one)")


def _question_summary(method: str, row: dict) -> str:
    from checks.catalog import CATALOG

    if row.get("status") == "refused":
        head = f"{method} refused"
    else:
        est, lo, hi = (row.get(k) for k in ("estimate", "ci_low", "ci_high"))
        head = (f"{method} {est:+.4f} [{lo:+.4f}, {hi:+.4f}]" if None not in (est, lo, hi)
                else f"{method} {'—' if est is None else f'{est:+.4f}'}")
    failed = [k for k, v in row["checks"].items() if v == "failed"]
    blocking = [k for k in failed if k in CATALOG and CATALOG[k].blocking]
    if blocking:
        return f"{head}; blocking check failed: {', '.join(blocking)}"
    return f"{head}; checks failed: {', '.join(failed)}" if failed else f"{head}; no check failed"


def _only_check_failures(result) -> bool:
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return all(e.event_specific_data.error.cls_name == "DagsterAssetCheckFailedError" for e in failures)


def _step_failure(question_id: str, result) -> StepFailure:
    for e in result.all_events:
        if e.event_type_value == "STEP_FAILURE" and e.event_specific_data.error is not None:
            chain = _chain_infos(e.event_specific_data.error)
            last = next((c for c in reversed(chain) if c.message.strip()), chain[0])
            return StepFailure(f"question {question_id} failed: {last.message.strip().splitlines()[-1]}",
                               detail=chain[0].to_string(), error_classes=tuple(c.cls_name for c in chain if c.cls_name))
    return StepFailure(f"question {question_id} failed: unknown failure")


def _chain_infos(error) -> list:
    """Dagster's error, then its causes (``raise … from``) or contexts, outermost first."""
    out, cur = [], error
    while cur is not None:
        out.append(cur)
        cur = cur.cause or cur.context
    return out


class _Stages:
    """One context per stage: a progress stage and, for benchmarks, wall seconds and peak RSS."""

    def __init__(self, sink: dict | None, progress: Progress):
        self.sink = sink
        self.progress = progress

    @contextmanager
    def __call__(self, name: str, key: str | None = None, **stage_kw):
        start = time.perf_counter()
        with self.progress.stage(name, **stage_kw) as st:
            yield st
        if self.sink is not None:
            peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            self.sink[key or name] = {"seconds": round(time.perf_counter() - start, 2), "peak_rss_mib": round(peak_mib)}


def _estimate_row(store, run_id: str, question_id: str) -> dict:
    """The stored estimate row plus ``checks``: check name → state, as the store's ``checks`` table says."""
    with connect(store_paths(store).db, read_only=True) as con:
        df = con.execute("SELECT * FROM estimates WHERE run_id = ? AND question_id = ?", [run_id, question_id]).df()
        checks = con.execute("SELECT check_name, state FROM checks WHERE run_id = ? AND question_id = ?",
                             [run_id, question_id]).fetchall()
        has = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'question_outcomes'"
                          ).fetchone()[0]
        outcomes = (con.execute("SELECT * EXCLUDE (run_id, question_id) FROM question_outcomes WHERE run_id = ? "
                                "AND question_id = ?", [run_id, question_id]).df().to_dict(orient="records")
                    if has else [])
    outcomes = [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in o.items()} for o in outcomes]
    row = {k: (None if math.isnan(v) else v) if isinstance(v, float) else v for k, v in df.iloc[0].to_dict().items()}
    row["checks"] = dict(checks)
    row["outcomes"] = outcomes  # guardrails, net value, segments (issue 16): printed under the question
    return row
