"""The one configurable resource: where the raw landing directory, the store and the configs live.

Defaults come from environment variables so `dagster dev` loads with no flags; tests and
`convocausal run` pass explicit values. Every value can also be overridden from the launchpad's
run config, so the paths are checked (``convocausal.file_settings``) when the resource is set up
for a run: a hostile value fails the run before any asset body reads or writes a file.

The resource has methods rather than being read field by field: ``store()`` gives the analysis
store (connect, open the signals, write results) and ``questions()`` / ``question(id)`` /
``signals_config()`` give the configs, parsed once per run (per process) in
``setup_for_execution`` instead of once per asset. One resource, not three, so the launchpad's
single ``settings`` block stays the one place a path is set (Dagster does not propagate run
config of a resource into resources that depend on it).

Setting up also takes the store's lease (``convocausal.store_lease``) for the run's writer
identity (landing directory + signals config), released at teardown: steps of this deployment
share it (parallel question runs, a multi-run backfill, multiprocess steps), a run from another
landing directory on the same store fails in setup with one line naming the holder, and another
program's DuckDB file is refused before any step writes (``store.inspect_store``).
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from pydantic import PrivateAttr

from configs.questions import Question, QuestionSet
from configs.signals import SignalsConfig, load_signals_config
from convocausal.file_settings import check_file_settings
from convocausal.questions.registry import load_registry
from convocausal.store import StorePaths, store_paths
from convocausal.store_lease import Lease, acquire_lease
from extract.raw import OnUnreadable


class ConvocausalSettings(dg.ConfigurableResource):
    """Paths for one deployment: local paths, checked when a run sets the resource up."""

    raw_dir: str
    store: str = "convocausal.duckdb"
    signals_config: str | None = None
    questions_config: str | None = None
    truth_file: str | None = None  # synthetic fixtures only: printed beside estimates
    seed: int = 0
    # A transcript file that is not readable parquet: "stop" the run (default), or "quarantine"
    # it (one file-level quarantine row, a warning) and estimate from the readable files.
    on_unreadable: OnUnreadable = "stop"
    # Where the day parts live when not in <store>.parts/: s3://bucket/prefix?endpoint_override=host:port&scheme=http
    # (convocausal.part_store); credentials come from the AWS_* environment variables, never from here.
    parts_url: str | None = None
    _questions: QuestionSet | None = PrivateAttr(default=None)
    _signals: SignalsConfig | None = PrivateAttr(default=None)
    _lease: Lease | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Check the paths once per run (per process), before any step uses them.

        Not in the constructor: Definitions build this resource at import time from environment
        defaults (``settings_from_env``), and must load even where ``demo_data`` does not exist.
        """
        check_file_settings(
            self.raw_dir, self.store, signals_config=self.signals_config,
            questions_config=self.questions_config, truth_file=self.truth_file,
        )
        self.store_paths()  # a bad parts_url fails the run here, naming the setting
        run_id = getattr(context, "run_id", None)
        self._lease = acquire_lease(
            self.store, raw_dir=self.raw_dir, signals_config=self.signals_config,
            purpose=f"dagster run {run_id}" if run_id else "dagster run",
            warn=context.log.warning if context.log is not None else None,
        )

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        """Give the lease back (the process may run other runs: ``convocausal run``, tests)."""
        if self._lease is not None:
            self._lease.release()
            self._lease = None

    @property
    def raw_path(self) -> Path:
        return Path(self.raw_dir)

    def store_paths(self) -> StorePaths:
        return store_paths(self.store, self.parts_url)

    def questions(self) -> QuestionSet:
        """The question registry, read and shape-checked once per resource instance."""
        if self._questions is None:
            self._questions = load_registry(self.questions_config)
        return self._questions

    def question(self, question_id: str) -> Question | None:
        return self.questions().by_id().get(question_id)

    def signals(self) -> SignalsConfig:
        """The signals config, read and validated once per resource instance."""
        if self._signals is None:
            self._signals = load_signals_config(self.signals_config)
        return self._signals


def settings_from_env() -> ConvocausalSettings:
    return ConvocausalSettings(
        raw_dir=os.environ.get("CONVOCAUSAL_RAW", "demo_data"),
        store=os.environ.get("CONVOCAUSAL_STORE", "demo_store.duckdb"),
        signals_config=os.environ.get("CONVOCAUSAL_SIGNALS_CONFIG") or None,
        questions_config=os.environ.get("CONVOCAUSAL_QUESTIONS_CONFIG") or None,
        truth_file=os.environ.get("CONVOCAUSAL_TRUTH") or None,
        on_unreadable=os.environ.get("CONVOCAUSAL_ON_UNREADABLE") or "stop",
        parts_url=os.environ.get("CONVOCAUSAL_PARTS_URL") or None,
    )
