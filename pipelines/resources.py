"""The one resource: where the raw landing directory, the store and the configs live.

Defaults come from environment variables so `dagster dev` loads with no flags; tests and
`convocausal run` pass explicit values. Every value can also be overridden from the launchpad's
run config, so the paths are checked (``convocausal.file_settings``) when the resource is set up
for a run: a hostile value fails the run before any asset body reads or writes a file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import dagster as dg

from convocausal.file_settings import check_file_settings


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
    on_unreadable: Literal["stop", "quarantine"] = "stop"

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Check the paths once per run (per process), before any step uses them.

        Not in the constructor: Definitions build this resource at import time from environment
        defaults (``settings_from_env``), and must load even where ``demo_data`` does not exist.
        """
        check_file_settings(
            self.raw_dir, self.store, signals_config=self.signals_config,
            questions_config=self.questions_config, truth_file=self.truth_file,
        )

    @property
    def raw_path(self) -> Path:
        return Path(self.raw_dir)

    @property
    def unreadable_mode(self) -> str:
        return self.reader_mode(self.on_unreadable)

    @staticmethod
    def reader_mode(on_unreadable: str) -> str:
        """The reader's name for ``on_unreadable`` (``extract.raw``: raise | report)."""
        return "raise" if on_unreadable == "stop" else "report"


def settings_from_env() -> ConvocausalSettings:
    return ConvocausalSettings(
        raw_dir=os.environ.get("CONVOCAUSAL_RAW", "demo_data"),
        store=os.environ.get("CONVOCAUSAL_STORE", "demo_store.duckdb"),
        signals_config=os.environ.get("CONVOCAUSAL_SIGNALS_CONFIG") or None,
        questions_config=os.environ.get("CONVOCAUSAL_QUESTIONS_CONFIG") or None,
        truth_file=os.environ.get("CONVOCAUSAL_TRUTH") or None,
        on_unreadable=os.environ.get("CONVOCAUSAL_ON_UNREADABLE") or "stop",
    )
