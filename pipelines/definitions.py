"""Dagster entry point (`dagster dev` loads this via [tool.dagster] in pyproject.toml)."""

import dagster as dg

from assets.questions import question_results
from assets.signals import analysis_store, signals_day
from pipelines.jobs import extraction_job, question_job
from pipelines.resources import settings_from_env
from pipelines.schedules import nightly_extraction
from pipelines.sensors import make_registry_sensor, reestimate_after_store

_settings = settings_from_env()

defs = dg.Definitions(
    assets=[signals_day, analysis_store, question_results],
    jobs=[extraction_job, question_job],
    schedules=[nightly_extraction],
    sensors=[make_registry_sensor(_settings.questions_config), reestimate_after_store],
    resources={"settings": _settings},
)


def question_job_for_subprocesses():
    """The resolved question job, importable by name: `dg.reconstructable` needs this to run
    steps in child processes (multiprocess executor) outside `dagster dev`."""
    return defs.resolve_job_def("question_job")
