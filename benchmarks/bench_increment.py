"""The nightly increment (issue 20): one new day on a store that already holds months.

A store is built from a generated landing directory of ``--conversations`` conversations over the
fixture calendar (182 days) with its last day held back; then that day's transcripts land and the
nightly increment runs as the schedule and the re-estimate sensor run it: ``signals_day`` for that
one partition, ``analysis_store`` (the publish), ``store_monitoring``, ``extraction_report`` and every
registered question with every check. Each stage's wall seconds and the run process's peak RSS
after it are printed, with how the publish went (``incremental``: only the changed days' rows
replaced). Then, for the before/after figure, the same publish is forced down the full-rebuild
path (what every publish did before issue 20) by clearing the store's record of the published parts.

    .venv/bin/python benchmarks/bench_increment.py --conversations 1000000
    .venv/bin/python benchmarks/bench_increment.py --workdir /big/disk --keep      # 10M (the default)
    .venv/bin/python benchmarks/bench_increment.py --workdir /big/disk --reuse     # increment again on a kept store

``--reuse`` skips generation and the build: the newest day is taken out of the landing directory and
the store again (its parts removed, the store republished without it), and the increment re-run. Peak RSS is
the process's high-water mark (``ru_maxrss``): the build's peak stays in it, so with a build in the
same process read the increment's memory from a ``--reuse`` run. ``run_increment`` is also what
``tests/test_increment.py`` runs.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import dagster as dg

from convocausal.progress import Progress
from convocausal.store import PARTS_MANIFEST, connect, remove_days, store_paths
from convocausal.store_lease import holding_store_lease
from extract.raw_cache import release_held

HOLDOUT = Path("holdout")  # under the work folder: the held-back day's transcripts until it "lands"


@holding_store_lease("convocausal nightly increment")
def run_increment(raw_dir: str | Path, store: str | Path, day: date, signals_config=None, questions_config=None,
                  truth_file=None, seed: int = 0, timings: dict | None = None,
                  publish_report: dict | None = None, parts_url: str | None = None) -> list[dict]:
    """Extract ``day`` only, publish, monitor, report and answer every question; one row per question.

    The same assets, settings and run order as ``pipelines.runner.run_pipeline`` (whose stage
    helpers it uses), but the extraction materializes the single partition ``day``, as the nightly
    schedule does. ``publish_report`` receives the publish's ``publish_mode`` metadata; ``parts_url``: the
    day parts in an S3-compatible bucket (``convocausal.part_store``)."""
    from assets.extraction import extraction_report_asset
    from assets.monitoring import store_monitoring
    from assets.questions import question_results
    from assets.signals import analysis_store, signals_day
    from convocausal.questions.registry import load_registry
    from pipelines.partitions import days_from, questions
    from pipelines.resources import ConvocausalSettings
    from pipelines.runner import (
        _estimate_row,
        _latest_q_values,
        _only_check_failures,
        _Stages,
        _step_failure,
        complete_days,
    )

    stage = _Stages(timings, Progress.off())
    days = complete_days(raw_dir, store=store)
    run_days = days_from(days[0])
    extraction_asset = signals_day.map_asset_specs(lambda spec: spec.replace_attributes(partitions_def=run_days))
    settings = ConvocausalSettings(
        raw_dir=str(raw_dir), store=str(store), signals_config=str(signals_config) if signals_config else None,
        questions_config=str(questions_config) if questions_config else None,
        truth_file=str(truth_file) if truth_file else None, seed=seed, parts_url=parts_url)
    instance = dg.DagsterInstance.ephemeral()
    resources = {"settings": settings}
    quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
    with stage("extraction (the new day)"):
        dg.materialize([extraction_asset], instance=instance, resources=resources, run_config=quiet,
                       partition_key=day.isoformat())
    with stage("store publish"):
        result = dg.materialize([extraction_asset.to_source_asset(), analysis_store], instance=instance,
                                resources=resources, run_config=quiet)
        meta = {k: v.value for k, v in result.asset_materializations_for_node("analysis_store")[0].metadata.items()}
        if publish_report is not None:
            publish_report.update(meta.get("publish_mode") or {})
    with stage("monitoring"):
        dg.materialize([store_monitoring], instance=instance, resources=resources, run_config=quiet)
    with stage("extraction report"):
        dg.materialize([extraction_report_asset], instance=instance, resources=resources, run_config=quiet)
    qset = load_registry(questions_config)
    instance.add_dynamic_partitions(questions.name, [q.id for q in qset.questions])
    rows = []
    for q in qset.questions:
        with stage(f"question {q.id}"):
            result = dg.materialize([question_results], instance=instance, resources=resources, partition_key=q.id,
                                    raise_on_error=False, run_config=quiet)
            if not result.success and not _only_check_failures(result):
                raise _step_failure(q.id, result)
        rows.append(_estimate_row(store, result.run_id, q.id))
    _latest_q_values(store, rows)
    return rows


def hold_back(raw: Path, day: date, work: Path) -> None:
    """Move ``day``'s transcripts out of the landing directory (it has not "landed" yet)."""
    src = raw / "transcripts" / f"date={day.isoformat()}"
    dst = work / HOLDOUT / src.name
    if src.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(dst, ignore_errors=True)
        src.rename(dst)


def land(raw: Path, day: date, work: Path) -> None:
    """The held-back day arrives in the landing directory."""
    src = work / HOLDOUT / f"date={day.isoformat()}"
    src.rename(raw / "transcripts" / src.name)


def last_day(raw: Path) -> date:
    return max(date.fromisoformat(p.name.removeprefix("date=")) for p in (raw / "transcripts").glob("date=*"))


def forced_rebuild(raw: Path, store: Path) -> dict:
    """The publish as it was before issue 20: every part read again (the record of what was loaded is
    cleared, so the publish takes its rebuild path)."""
    with connect(store) as con:
        con.execute(f"DELETE FROM {PARTS_MANIFEST}")
    return publish_store(raw, store)


def publish_store(raw: Path, store: Path) -> dict:
    """The ``analysis_store`` asset on its own: seconds, peak RSS and how it published."""
    from assets.signals import analysis_store, signals_day
    from pipelines.resources import ConvocausalSettings

    settings = ConvocausalSettings(raw_dir=str(raw), store=str(store))
    t0 = time.perf_counter()
    result = dg.materialize([signals_day.to_source_asset(), analysis_store], resources={"settings": settings},
                            run_config={"loggers": {"console": {"config": {"log_level": "ERROR"}}}})
    seconds = time.perf_counter() - t0
    meta = {k: v.value for k, v in result.asset_materializations_for_node("analysis_store")[0].metadata.items()}
    return {"seconds": round(seconds, 2), "peak_rss_mib": _peak(), "publish": meta.get("publish_mode")}


def _peak() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--conversations", type=int, default=10_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the work folder (landing directory and store)")
    ap.add_argument("--reuse", action="store_true", help="reuse the landing directory and store kept in --workdir")
    ap.add_argument("--no-rebuild", action="store_true", help="skip the forced full-rebuild publish at the end")
    args = ap.parse_args()
    if args.reuse and args.workdir is None:
        ap.error("--reuse needs --workdir")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="convocausal_incr_"))
    work.mkdir(parents=True, exist_ok=True)
    raw, store = work / "raw", work / "store.duckdb"
    from pipelines.runner import run_pipeline

    build: dict = {}
    if args.reuse:
        day = max([last_day(raw), *(date.fromisoformat(p.name.removeprefix("date="))
                                    for p in (work / HOLDOUT).glob("date=*"))])
        hold_back(raw, day, work)
        t0 = time.perf_counter()
        remove_days(store_paths(store), [day])  # as the nightly run does when a day's raw is gone
        build["remove the day, republish"] = publish_store(raw, store)
        release_held()  # its validated outcomes and customers: the increment validates its own, as a new process does
    else:
        for stale in (raw, work / HOLDOUT, store, store.with_name(store.name + ".parts")):
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
        t0 = time.perf_counter()
        code = ("import sys; from data_fixtures.generator import generate; "
                "generate(sys.argv[1], n_conversations=int(sys.argv[2]), seed=int(sys.argv[3]))")
        subprocess.run([sys.executable, "-c", code, str(raw), str(args.conversations), str(args.seed)], check=True)
        build["generate (child process)"] = {
            "seconds": round(time.perf_counter() - t0, 2),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)}
        day = last_day(raw)
        hold_back(raw, day, work)
        t0 = time.perf_counter()
        run_pipeline(raw, store, timings=build)
        build["build total"] = {"seconds": round(time.perf_counter() - t0, 2), "peak_rss_mib": _peak()}
    paths = store_paths(store)
    with connect(store, read_only=True) as con:
        n_before, n_days = con.execute("SELECT count(*), count(DISTINCT date) FROM signals").fetchone()
    land(raw, day, work)
    timings: dict = {}
    publish_mode: dict = {}
    t0 = time.perf_counter()
    rows = run_increment(raw, store, day, timings=timings, publish_report=publish_mode)
    total = time.perf_counter() - t0
    with connect(store, read_only=True) as con:
        n_after = con.execute("SELECT count(*) FROM signals").fetchone()[0]
    store_mb = paths.db.stat().st_size / 2**20
    rebuild = None if args.no_rebuild else forced_rebuild(raw, store)

    print(f"store before the increment: {n_before:,} conversations over {n_days} days; new day {day}: "
          f"{n_after - n_before:,} conversations; DuckDB file {store_mb:,.0f} MiB")
    from stage_table import print_estimates, print_stages  # benchmarks/, the script's folder

    print("build (not part of the increment):")
    print_stages(build)
    print("nightly increment:")
    print_stages(timings, "increment total", total)
    print(f"  publish: {json.dumps(publish_mode, default=str)}")
    if rebuild:
        print(f"  {'publish, forced full rebuild (before issue 20)':<45} {rebuild['seconds']:>8.1f} s   "
              f"peak RSS {rebuild['peak_rss_mib']:>7,} MiB   {json.dumps(rebuild['publish'], default=str)}")
    print_estimates(rows, json.loads((raw / "truth.json").read_text()))
    if not args.keep and args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
