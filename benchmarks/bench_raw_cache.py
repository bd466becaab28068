"""The raw cache (issue 20): what a nightly process pays for the history, without and with it.

Each measurement runs in a new process (the in-process index cache never helps a nightly run):
``outcomes + customers`` is ``load_outcomes(raw, None, config=…)`` + ``load_customers(raw)`` as
``signals_day`` calls them, ``index`` is ``transcript_index(raw)``. Three modes: ``none`` (no
cache_dir: the behaviour before the cache), ``cold`` (an empty cache folder: everything read and
the cache written) and ``warm`` (the cache of the previous run present, nothing changed). Also a
``none`` and a ``warm`` run of the ``analysis_store`` form, the outcomes checked against known
conversation ids with the salt (all but 1,000 of the outcome ids, so the unknown rows' raw rows are
read again).

    .venv/bin/convocausal fixtures --out /tmp/rc1m --conversations 1000000 --seed 7
    .venv/bin/python benchmarks/bench_raw_cache.py /tmp/rc1m --runs 3
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

_CHILD = r"""
import json, sys, time
import polars as pl
from configs.signals import load_signals_config
from extract.raw import load_customers, load_outcomes
from extract.raw_index import transcript_index
raw, cache, known = sys.argv[1], (None if sys.argv[2] == "-" else sys.argv[2]), sys.argv[3] == "1"
config = load_signals_config()
ids = None
if known:
    ids = pl.read_parquet(f"{raw}/outcomes.parquet", columns=["conversation_id"])["conversation_id"]
    ids = ids.slice(1000)
t = time.perf_counter()
load_outcomes(raw, ids, config=config, salt=config.customer_key.salt if known else None, cache_dir=cache)
load_customers(raw, cache_dir=cache)
tables = time.perf_counter() - t
t = time.perf_counter()
transcript_index(raw, cache)
index = time.perf_counter() - t
print(json.dumps({"tables": tables, "index": index}))
"""


def _run(raw: str, cache: str | None, known: bool = False) -> dict:
    out = subprocess.run([sys.executable, "-c", _CHILD, raw, cache or "-", "1" if known else "0"],
                         check=True, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("raw", help="a landing directory (e.g. from `convocausal fixtures`)")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    figures: dict[str, list[dict]] = {"none": [], "cold": [], "warm": [], "none, known ids": [], "warm, known ids": []}
    with tempfile.TemporaryDirectory(prefix="rawcache-") as tmp:
        cache = str(Path(tmp) / "cache")
        for _ in range(args.runs):  # interleaved, so a change of machine load hits every mode alike
            figures["none"].append(_run(args.raw, None))
            shutil.rmtree(cache, ignore_errors=True)
            figures["cold"].append(_run(args.raw, cache))
            figures["warm"].append(_run(args.raw, cache))
            figures["none, known ids"].append(_run(args.raw, None, known=True))
            figures["warm, known ids"].append(_run(args.raw, cache, known=True))
        size = sum(p.stat().st_size for p in Path(cache).rglob("*") if p.is_file())
    print(f"{'mode':<18} {'outcomes+customers s':>24} {'index s':>24}")
    for mode, runs in figures.items():
        cells = []
        for key in ("tables", "index"):
            vals = [r[key] for r in runs]
            cells.append(f"{statistics.median(vals):.2f} ({', '.join(f'{v:.2f}' for v in vals)})")
        print(f"{mode:<18} {cells[0]:>24} {cells[1]:>24}")
    print(f"cache size: {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
