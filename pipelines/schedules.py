"""Nightly schedule: extract the newest transcript day and republish the store.

Re-estimating every question follows from the ``reestimate_after_store`` sensor, which fires
when the store is republished, so the estimates never read a half-built store.
"""

import dagster as dg

from pipelines.jobs import extraction_job

nightly_extraction = dg.build_schedule_from_partitioned_job(
    extraction_job, hour_of_day=2, minute_of_hour=0, name="nightly_extraction",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
