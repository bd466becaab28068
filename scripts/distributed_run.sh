#!/usr/bin/env bash
# A real distributed run on this machine (issue 20): PostgreSQL-backed Dagster instance, Celery
# executor, Redis broker, two workers; compares the store with a single-process run's.
# Usage: scripts/distributed_run.sh [CONVERSATIONS]   (default 3000)
# Every service it starts is stopped on exit by pipelines/distributed.py (and the trap below).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
"$PY" -m pip install --quiet -r requirements-distributed.lock
WORK="$(mktemp -d -t convocausal-distributed-XXXX)"
trap 'rm -rf "$WORK"' EXIT
.venv/bin/convocausal fixtures --out "$WORK/raw" --conversations "${1:-3000}" --seed 7 >/dev/null
time "$PY" -m pipelines.distributed --raw "$WORK/raw" --store "$WORK/distributed.duckdb" \
  --reference "$WORK/single.duckdb" --json "$WORK/summary.json"
cat "$WORK/summary.json"
