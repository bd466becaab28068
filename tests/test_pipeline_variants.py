"""The pipeline does not invent effects (null variant) and flags broken assumptions (diverging)."""

from __future__ import annotations

import json

import pytest

from convocausal.runner import run_pipeline
from data_fixtures.generator import generate


def _run(tmp_path_factory, variant: str, seed: int) -> tuple[dict, dict]:
    root = tmp_path_factory.mktemp(variant)
    generate(root / "raw", n_conversations=30_000, seed=seed, variant=variant)
    rows = run_pipeline(root / "raw", root / "store.duckdb")
    return {r["question_id"]: r for r in rows}, json.loads((root / "raw" / "truth.json").read_text())


@pytest.fixture(scope="module")
def null_run(tmp_path_factory):
    return _run(tmp_path_factory, "null", seed=13)


@pytest.fixture(scope="module")
def diverging_run(tmp_path_factory):
    return _run(tmp_path_factory, "diverging", seed=17)


def test_null_truths_are_zero(null_run):
    _, truth = null_run
    assert set(truth.values()) == {0.0}


@pytest.mark.parametrize("qid", ["email_early_vs_late", "lookup_order_rollout", "prompt_v2_launch"])
def test_null_intervals_cover_zero(null_run, qid):
    rows, _ = null_run
    r = rows[qid]
    assert r["status"] == "ok", r.get("message")
    assert r["ci_low"] <= 0.0 <= r["ci_high"], r


def test_null_synthetic_control_permutation_p_not_small(null_run):
    rows, _ = null_run
    assert rows["prompt_v2_launch"]["p_value"] > 0.05


def test_diverging_pre_trends_fail_the_check(diverging_run):
    rows, _ = diverging_run
    did = rows["lookup_order_rollout"]
    assert did["checks"]["pre_trend"] is False
    assert rows["email_early_vs_late"]["checks"]["balance"]  # the other questions are unaffected
