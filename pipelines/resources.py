"""The one resource: where the raw landing directory, the store and the configs live.

Defaults come from environment variables so `dagster dev` loads with no flags; tests and
`convocausal run` pass explicit values.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg


class ConvocausalSettings(dg.ConfigurableResource):
    """Paths for one deployment. Parts may live on object storage once DuckDB's httpfs is set up."""

    raw_dir: str
    store: str = "convocausal.duckdb"
    signals_config: str | None = None
    questions_config: str | None = None
    truth_file: str | None = None  # synthetic fixtures only: printed beside estimates
    seed: int = 0

    @property
    def raw_path(self) -> Path:
        return Path(self.raw_dir)


def settings_from_env() -> ConvocausalSettings:
    return ConvocausalSettings(
        raw_dir=os.environ.get("CONVOCAUSAL_RAW", "demo_data"),
        store=os.environ.get("CONVOCAUSAL_STORE", "demo_store.duckdb"),
        signals_config=os.environ.get("CONVOCAUSAL_SIGNALS_CONFIG") or None,
        questions_config=os.environ.get("CONVOCAUSAL_QUESTIONS_CONFIG") or None,
        truth_file=os.environ.get("CONVOCAUSAL_TRUTH") or None,
    )
