"""Partitions: one per transcript day (extraction) and one per registered question.

Days are a fixed daily calendar starting at ``CONVOCAUSAL_START_DATE`` (default 2026-01-01);
questions are dynamic so that registering a question adds exactly one partition, which can
then be backfilled alone.
"""

import os

import dagster as dg

START_DATE = os.environ.get("CONVOCAUSAL_START_DATE", "2026-01-01")

transcript_days = dg.DailyPartitionsDefinition(start_date=START_DATE)
questions = dg.DynamicPartitionsDefinition(name="questions")
