"""Partitions: one per transcript day (extraction) and one per registered question.

Days are a fixed daily calendar starting at ``CONVOCAUSAL_START_DATE`` (default 2026-01-01);
questions are dynamic so that registering a question adds exactly one partition, which can
then be backfilled alone.

A backfill of many days is one run by default (one process extracts consecutive days in
chunks, the fastest on one machine). ``CONVOCAUSAL_BACKFILL_DAYS_PER_RUN=N`` splits it into
runs of N days instead, which a run launcher such as dagster-k8s places on separate workers:
spreading extraction over machines is this setting, not code.
"""

import os

import dagster as dg

START_DATE = os.environ.get("CONVOCAUSAL_START_DATE", "2026-01-01")

transcript_days = dg.DailyPartitionsDefinition(start_date=START_DATE)
questions = dg.DynamicPartitionsDefinition(name="questions")


def days_backfill_policy(environ=os.environ) -> dg.BackfillPolicy:
    """One run for a whole backfill, or runs of ``CONVOCAUSAL_BACKFILL_DAYS_PER_RUN`` days."""
    raw = environ.get("CONVOCAUSAL_BACKFILL_DAYS_PER_RUN", "").strip()
    if not raw:
        return dg.BackfillPolicy.single_run()
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"CONVOCAUSAL_BACKFILL_DAYS_PER_RUN={raw!r}: expected a whole number of days >= 1")
    return dg.BackfillPolicy.multi_run(max_partitions_per_run=int(raw))
