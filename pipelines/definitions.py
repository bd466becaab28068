"""Dagster entry point (`dagster dev` loads this via [tool.dagster] in pyproject.toml).

The warning filters come before the asset imports on purpose. Two features the assets rely on are
flagged by the pinned Dagster: ``backfill_policy`` (beta: one run for a backfill of many days) and
``partitions_def`` on an asset check spec (preview: checks per question partition). The warning is
raised when the decorators run, that is when this module is imported, and ``dagster dev`` imports
it in every process that loads the code location (the code server, and each run's worker
process), so one launch printed it 16 times. Both uses are deliberate and covered by tests; the
filters match those two messages only, so any other beta or preview use still warns.
"""

import warnings

warnings.filterwarnings("ignore", message=r"Parameter `backfill_policy` of function `asset` is currently in beta")
warnings.filterwarnings("ignore", message=r"Specifying a partitions_def on an AssetCheckSpec is currently in preview")

import dagster as dg

from assets.extraction import extraction_report_asset
from assets.monitoring import store_monitoring
from assets.questions import question_results
from assets.signals import analysis_store, signals_day
from pipelines.executors import executor_from_env
from pipelines.jobs import extraction_job, question_job, register_questions
from pipelines.resources import settings_from_env
from pipelines.schedules import nightly_extraction
from pipelines.sensors import make_registry_sensor, reestimate_after_store

_settings = settings_from_env()

defs = dg.Definitions(
    assets=[signals_day, analysis_store, store_monitoring, extraction_report_asset, question_results],
    jobs=[extraction_job, question_job, register_questions],
    schedules=[nightly_extraction],
    sensors=[make_registry_sensor(_settings.questions_config), reestimate_after_store],
    resources={"settings": _settings},
    executor=executor_from_env(),  # None (Dagster's default) unless CONVOCAUSAL_EXECUTOR=celery
)


def question_job_for_subprocesses():
    """The resolved question job, importable by name: `dg.reconstructable` needs this to run
    steps in child processes (multiprocess executor) outside `dagster dev`."""
    return defs.resolve_job_def("question_job")


def extraction_job_for_subprocesses():
    """The resolved extraction job, importable by name (Celery workers reconstruct it from this)."""
    return defs.resolve_job_def("extraction_job")


def register_questions_for_subprocesses():
    return defs.resolve_job_def("register_questions")
