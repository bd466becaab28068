"""Partitions: one per transcript day (extraction) and one per registered question.

Days are a fixed daily calendar starting at ``CONVOCAUSAL_START_DATE`` (default 2026-01-01);
questions are dynamic so that registering a question adds exactly one partition, which can
then be backfilled alone.

Why the start date is an environment variable only for Dagster: ``dagster dev`` builds the
definitions at import, before anything has looked at a landing directory, and a partition set
that moved whenever the data did would rename history in the UI. ``convocausal run`` knows the
days it found, so it builds its own calendar from the first of them (:func:`days_from`) and needs
no variable; :func:`days_before_start` is the message for a Dagster deployment whose data start
earlier than the calendar.

A backfill of many days is one run by default (one process extracts consecutive days in
chunks, the fastest on one machine). ``CONVOCAUSAL_BACKFILL_DAYS_PER_RUN=N`` splits it into
runs of N days instead, which a run launcher such as dagster-k8s places on separate workers:
spreading extraction over machines is this setting, not code.
"""

import os
from datetime import date

import dagster as dg

START_DATE_ENV = "CONVOCAUSAL_START_DATE"
START_DATE = os.environ.get(START_DATE_ENV, "2026-01-01")


def days_from(start: str | date) -> dg.DailyPartitionsDefinition:
    """A daily calendar from ``start`` (an ISO date) to yesterday: the one shape every day partition has."""
    return dg.DailyPartitionsDefinition(start_date=start.isoformat() if isinstance(start, date) else start)


transcript_days = days_from(START_DATE)
questions = dg.DynamicPartitionsDefinition(name="questions")


def days_before_start(days: list[date], start: str = START_DATE) -> str | None:
    """The message for transcripts that begin before the Dagster calendar, or None when they do not.

    Dagster cannot materialize a day outside its partition set, so those days would be missing
    from the store without a word; the message says which variable moves the calendar.
    """
    if days and days[0] < date.fromisoformat(start):
        return (f"transcripts start on {days[0]}, before {START_DATE_ENV}={start}: "
                "set that environment variable to an earlier date")
    return None


def days_backfill_policy(environ=os.environ) -> dg.BackfillPolicy:
    """One run for a whole backfill, or runs of ``CONVOCAUSAL_BACKFILL_DAYS_PER_RUN`` days."""
    raw = environ.get("CONVOCAUSAL_BACKFILL_DAYS_PER_RUN", "").strip()
    if not raw:
        return dg.BackfillPolicy.single_run()
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"CONVOCAUSAL_BACKFILL_DAYS_PER_RUN={raw!r}: expected a whole number of days >= 1")
    return dg.BackfillPolicy.multi_run(max_partitions_per_run=int(raw))
