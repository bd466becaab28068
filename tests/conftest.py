"""Shared fixtures: one synthetic landing directory per variant, generated once per session."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

FIXTURE_CONVERSATIONS = 30_000
# Many tests build small landing directories by hand and run them with the packaged signals config,
# whose salt is the shipped default; outside the generated fixtures that is refused
# (extract/redact.check_salt). tests/test_environment_errors.py clears this to test the refusal.
os.environ.setdefault("CONVOCAUSAL_ALLOW_DEFAULT_SALT", "1")


def _landing(tmp_path_factory, variant: str, seed: int) -> Path:
    from data_fixtures.generator import generate

    out = tmp_path_factory.mktemp(f"landing_{variant}")
    generate(out, n_conversations=FIXTURE_CONVERSATIONS, seed=seed, variant=variant)
    return out


@pytest.fixture(scope="session")
def landing_dir(tmp_path_factory) -> Path:
    """Standard variant: every question has a known non-zero effect and built-in confounding."""
    return _landing(tmp_path_factory, "standard", seed=11)


@pytest.fixture(scope="session")
def truth(landing_dir) -> dict:
    return json.loads((landing_dir / "truth.json").read_text())


@pytest.fixture(scope="session")
def pipeline_run(landing_dir, tmp_path_factory):
    """The whole Dagster graph run once in-process on the standard fixture: (rows, store path)."""
    from pipelines.runner import run_pipeline

    store = tmp_path_factory.mktemp("store") / "store.duckdb"
    rows = run_pipeline(landing_dir, store)
    return rows, store
