"""Which Dagster executor the Definitions use: the single-machine default unless told otherwise.

``CONVOCAUSAL_EXECUTOR=celery`` selects ``dagster_celery``'s ``celery_executor`` (each step is a
Celery task run by a ``celery -A dagster_celery.app worker`` process; broker and result backend come
from the run config's ``execution.config`` or, when absent, ``CONVOCAUSAL_CELERY_BROKER`` /
``CONVOCAUSAL_CELERY_BACKEND``). ``dagster-celery`` is an optional extra (``pip install
'.[distributed]'`` or ``requirements-distributed.lock``); it is imported only when selected. Unset or
``default``: ``None``, so Dagster's own default (multiprocess for jobs) is unchanged.
"""

from __future__ import annotations

import os

EXECUTOR_ENV = "CONVOCAUSAL_EXECUTOR"


def executor_from_env(environ=os.environ):
    name = (environ.get(EXECUTOR_ENV) or "default").strip().lower()
    if name in ("", "default"):
        return None
    if name != "celery":
        raise ValueError(f"{EXECUTOR_ENV}={name!r}: expected 'default' or 'celery'")
    try:
        from dagster_celery import celery_executor
    except ImportError as exc:  # the extra is not installed
        raise ImportError(f"{EXECUTOR_ENV}=celery needs dagster-celery: "
                          "pip install -r requirements-distributed.lock") from exc
    config = {}
    if environ.get("CONVOCAUSAL_CELERY_BROKER"):
        config["broker"] = environ["CONVOCAUSAL_CELERY_BROKER"]
    if environ.get("CONVOCAUSAL_CELERY_BACKEND"):
        config["backend"] = environ["CONVOCAUSAL_CELERY_BACKEND"]
    return celery_executor.configured(config) if config else celery_executor
