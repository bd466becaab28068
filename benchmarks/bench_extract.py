"""Benchmark extraction against a plain DuckDB scan of the text column (signals alone, and the pipeline's stage).

Why the scan: reading every message's text once is the floor for any extraction that looks at
text, so "within k× of ``SELECT sum(length(text)) FROM read_parquet(...)``" is a
hardware-independent yardstick. The fixture generator writes the landing directory (1M
conversations ≈ 7.6M messages by default); each measurement runs in a fresh child process so
its peak RSS is its own (not the generator's).

    .venv/bin/python benchmarks/bench_extract.py [--conversations 1000000] [--dir /tmp/cc_bench]
    .venv/bin/python benchmarks/bench_extract.py --text sgd [--sgd-replicate 994]   # real dialogues, ~1M

Besides ``extract_signals`` alone, ``--stages`` measures the pipeline's extraction stage (issue 20):
the ``signals_day`` asset's own loop without Dagster (read/validate, history, signals, part
writing, per stage) and the same asset materialized by Dagster over every day (its excess over
the loop is the orchestration). ``--text sgd`` runs on the Schema-Guided Dialogue rows
(``data_fixtures/sgd_landing.py``, real crowd-sourced text, each dialogue replicated under new ids
to production size) instead of the generator's templated text. Every figure is the median of
``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _child_generate(out_dir: str, n: int) -> dict:
    from data_fixtures.generator import generate

    t = time.perf_counter()
    info = generate(out_dir, n_conversations=n, seed=0)
    return {"seconds": time.perf_counter() - t, "n_messages": info["n_messages"]}


def _child_generate_sgd(out_dir: str, replicate: int) -> dict:
    from data_fixtures.sgd_landing import build_landing

    t = time.perf_counter()
    info = build_landing(ROOT.parent / "shared" / "data" / "sgd_dialogues", out_dir, replicate=replicate)
    return {"seconds": time.perf_counter() - t, "n_messages": info["n_messages"]}


def _median(xs: list[float]) -> float:
    return sorted(xs)[len(xs) // 2]


def _part_writer():
    """The asset's background part writer (``extract.overlap.InBackground``), or, on an older tree (a
    before-figure), one that writes at once."""
    try:
        from extract.overlap import InBackground
    except ImportError:
        import contextlib

        class _Now(contextlib.AbstractContextManager):
            def submit(self, fn, *args):
                fn(*args)

            def __exit__(self, *exc):
                return None

        return _Now()
    return InBackground(name="write-parts")


def _child_stages(out_dir: str, repeats: int) -> dict:
    """The signals_day asset's loop without Dagster, per stage (the median run's stages)."""
    import inspect
    import shutil
    import tempfile

    from configs.signals import load_signals_config
    from convocausal.store import store_paths, write_day
    from extract.day import extract_days
    from extract.intent import extractor_from_config, models_dir
    from extract.raw import list_transcript_days, load_customers, load_outcomes

    runs = []
    for _ in range(repeats):
        work = Path(tempfile.mkdtemp(prefix="cc_bench_stages_"))
        t0 = time.perf_counter()
        stage: dict[str, float] = {}
        config = load_signals_config()
        paths = store_paths(work / "store.duckdb")
        days = list_transcript_days(out_dir)
        outcomes = load_outcomes(out_dir, None, config=config)
        customers = load_customers(out_dir)
        stage["read_validate"] = time.perf_counter() - t0  # the index, outcomes and customers
        n, write = 0, 0.0
        # ``timings`` is the stage split of issue 20; an older tree (a before-figure) has none
        split = {"timings": stage} if "timings" in inspect.signature(extract_days).parameters else {}
        with _part_writer() as writes:
            for r in extract_days(out_dir, days, config, outcomes, customers,
                                  intent_extractor=extractor_from_config(config, models_dir(paths.parts)),
                                  first_day=days[0], **split):
                t = time.perf_counter()
                writes.submit(write_day, paths, r.day, r.signals, r.quarantine)
                write += time.perf_counter() - t
                n += r.signals.height
            t = time.perf_counter()
        write += time.perf_counter() - t
        # since the seventh round the parts are written on a second thread as the asset writes them, and
        # the next chunk read on another while this one is extracted: then ``part_writing`` is the time the
        # loop waited for writes, and ``read_validate`` overlaps ``signals`` (the stages add up to more
        # than the loop's seconds, and ``other`` goes negative)
        stage["part_writing"] = write
        total = time.perf_counter() - t0
        stage["other"] = total - sum(stage.values())
        runs.append({"seconds": total, "stages": {k: round(v, 3) for k, v in stage.items()}, "n_conversations": n})
        shutil.rmtree(work, ignore_errors=True)
    med = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]
    return {**med, "all": [round(r["seconds"], 3) for r in runs]}


def _child_dagster(out_dir: str, repeats: int) -> dict:
    """The signals_day asset materialized by Dagster over every day, as ``convocausal run`` does."""
    import shutil
    import tempfile

    import dagster as dg

    from assets.signals import signals_day
    from extract.raw import list_transcript_days
    from pipelines.partitions import days_from
    from pipelines.resources import ConvocausalSettings

    # the SGD landing directory is no generated fixture, but public text without customer ids:
    # the shipped salt protects nothing there, so the benchmark accepts it (as the loop child does)
    os.environ.setdefault("CONVOCAUSAL_ALLOW_DEFAULT_SALT", "1")
    times = []
    for _ in range(repeats):
        work = Path(tempfile.mkdtemp(prefix="cc_bench_dagster_"))
        t0 = time.perf_counter()
        days = list_transcript_days(out_dir)
        run_days = days_from(days[0])
        asset = signals_day.map_asset_specs(lambda spec, p=run_days: spec.replace_attributes(partitions_def=p))
        settings = ConvocausalSettings(raw_dir=out_dir, store=str(work / "store.duckdb"))
        result = dg.materialize([asset], instance=dg.DagsterInstance.ephemeral(), resources={"settings": settings},
                                run_config={"loggers": {"console": {"config": {"log_level": "ERROR"}}}},
                                tags={"dagster/asset_partition_range_start": days[0].isoformat(),
                                      "dagster/asset_partition_range_end": days[-1].isoformat()})
        assert result.success
        times.append(time.perf_counter() - t0)
        shutil.rmtree(work, ignore_errors=True)
    return {"seconds": _median(times), "all": [round(x, 3) for x in times]}


def _child_scan(out_dir: str, repeats: int) -> dict:
    import duckdb

    glob = f"{out_dir}/transcripts/*/*.parquet"
    con = duckdb.connect()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        total = con.execute(f"SELECT sum(length(text)), count(*) FROM read_parquet('{glob}')").fetchone()
        times.append(time.perf_counter() - t)
    warm = times[1:] or times  # the first run warms the page cache
    return {"seconds": _median(warm), "all": times, "text_chars": int(total[0]), "n_messages": int(total[1])}


def _child_extract(out_dir: str, repeats: int) -> dict:
    import polars as pl

    from configs.signals import load_signals_config
    from extract.signals import extract_signals

    cfg = load_signals_config()
    times, stages = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        stage: dict[str, float] = {}
        msgs = pl.scan_parquet(f"{out_dir}/transcripts/*/*.parquet", hive_partitioning=False)
        sig = extract_signals(
            msgs,
            outcomes=pl.scan_parquet(f"{out_dir}/outcomes.parquet"),
            customers=(pl.scan_parquet(f"{out_dir}/customers.parquet")
                       if Path(f"{out_dir}/customers.parquet").exists() else None),
            config=cfg,
            timings=stage,
        )
        times.append(time.perf_counter() - t)
        stages.append({k: round(v, 3) for k, v in stage.items()})
        n_rows = sig.height
        del sig
    best = sorted(range(repeats), key=times.__getitem__)[repeats // 2]  # the median run
    return {"seconds": times[best], "all": times, "stages": stages[best], "n_conversations": n_rows}


def _run_child(mode: str, *args: str) -> dict:
    """Run one measurement in a fresh interpreter; returns its result plus its own peak RSS."""
    cmd = [sys.executable, __file__, "--child", mode, *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--conversations", type=int, default=1_000_000)
    p.add_argument("--dir", default="/tmp/convocausal_bench_extract")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--regenerate", action="store_true")
    p.add_argument("--text", choices=["fixture", "sgd"], default="fixture",
                   help="templated fixture text, or the real SGD dialogues replicated to size")
    p.add_argument("--sgd-replicate", type=int, default=994, help="copies of each of the 1,006 SGD dialogues")
    p.add_argument("--stages", action="store_true",
                   help="also the pipeline's extraction stage: the asset's loop per stage, and under Dagster")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = p.parse_args(argv)

    if a.child:
        mode, *rest = a.child
        fn = {"generate": _child_generate, "generate_sgd": _child_generate_sgd, "scan": _child_scan,
              "extract": _child_extract, "stages": _child_stages, "dagster": _child_dagster}[mode]
        res = fn(rest[0], int(rest[1]))
        res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(res))
        return res

    if a.text == "sgd":
        out_dir = f"{a.dir}/sgd_x{a.sgd_replicate}"
        marker = Path(out_dir) / "_labels" / "intents.parquet"
        if a.regenerate or not marker.exists():
            gen = _run_child("generate_sgd", out_dir, str(a.sgd_replicate))
            print(f"wrote SGD x{a.sgd_replicate}: {gen['n_messages']:,} messages in {gen['seconds']:.1f}s")
    else:
        out_dir = f"{a.dir}/n{a.conversations}"
        marker = Path(out_dir) / "_truth" / "labels.parquet"
        if a.regenerate or not marker.exists():
            gen = _run_child("generate", out_dir, str(a.conversations))
            print(f"generated {a.conversations:,} conversations / {gen['n_messages']:,} messages "
                  f"in {gen['seconds']:.1f}s")
    scan = _run_child("scan", out_dir, str(a.repeats + 1))  # first run warms the page cache
    ext = _run_child("extract", out_dir, str(a.repeats))
    n_msgs = scan["n_messages"]
    report = {
        "n_conversations": ext["n_conversations"],
        "n_messages": n_msgs,
        "cpus": os.cpu_count(),
        "extract_s": round(ext["seconds"], 3),
        "extract_all_s": [round(x, 3) for x in ext["all"]],
        "messages_per_s": round(n_msgs / ext["seconds"]),
        "extract_peak_rss_mb": round(ext["peak_rss_mb"]),
        "duckdb_text_scan_s": round(scan["seconds"], 3),
        "scan_peak_rss_mb": round(scan["peak_rss_mb"]),
        "ratio_extract_to_scan": round(ext["seconds"] / scan["seconds"], 2),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "text": a.text,
        "stages_s": ext["stages"],
    }
    if a.stages:
        st = _run_child("stages", out_dir, str(a.repeats))
        dag = _run_child("dagster", out_dir, str(a.repeats))
        report.update({
            "stage_loop_s": round(st["seconds"], 3),
            "stage_loop_all_s": st["all"],
            "stage_loop_stages_s": st["stages"],
            "stage_dagster_s": round(dag["seconds"], 3),
            "stage_dagster_all_s": dag["all"],
            "orchestration_s": round(dag["seconds"] - st["seconds"], 3),
            "ratio_stage_to_scan": round(dag["seconds"] / scan["seconds"], 1),
            "ratio_loop_to_scan": round(st["seconds"] / scan["seconds"], 1),
        })
    for k, v in report.items():
        print(f"{k:>24}: {v}")
    return report


if __name__ == "__main__":
    main()
