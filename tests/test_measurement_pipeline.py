"""The measurement and mechanism designs (issue 17) through the question route and Dagster, against simulated truth.

One in-process run (``run_pipeline``: ``dagster.materialize`` of extraction, the store and every question
partition into a temporary DuckDB file) on a landing directory from ``data_fixtures/measurement.py`` with
the example configs of ``configs/examples/measurement/``: a judged outcome, a logged routing policy and a
mediation question. The truths are built into the fixture (``_truth/measurement.json``).
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from configs.questions import ConfigError
from convocausal.questions.registry import parse_registry
from convocausal.store import connect

EXAMPLES = Path(__file__).resolve().parents[1] / "configs" / "examples" / "measurement"
N_CONVERSATIONS = 6_000


@pytest.fixture(scope="module")
def measurement_run(tmp_path_factory):
    from data_fixtures.measurement import generate_measurement
    from pipelines.runner import run_pipeline

    root = tmp_path_factory.mktemp("measurement")
    info = generate_measurement(root / "raw", n_conversations=N_CONVERSATIONS, seed=3)
    instance = dg.DagsterInstance.ephemeral()
    rows = run_pipeline(root / "raw", root / "store.duckdb", signals_config=EXAMPLES / "signals.yaml",
                        questions_config=EXAMPLES / "questions.yaml", instance=instance)
    return {r["question_id"]: r for r in rows}, info["measurement_truth"], root, instance


def _measured(root: Path, qid: str) -> dict[str, tuple[float, str]]:
    with connect(root / "store.duckdb", read_only=True) as con:
        rows = con.execute("SELECT name, value, message FROM diagnostics WHERE question_id = ? AND name LIKE "
                           "'measured_%'", [qid]).fetchall()
    return {n.removeprefix("measured_"): (v, m) for n, v, m in rows}


def _interval(message: str) -> tuple[float, float]:
    inside = message.split("95% CI ", 1)[1].split(",")[0].split(")")[0]
    lo, hi = inside.split(" to ")
    return float(lo), float(hi)


def test_each_design_routes_to_its_method_and_runs(measurement_run):
    rows, *_ = measurement_run
    assert {q: (r["method"], r["status"]) for q, r in rows.items()} == {
        "judge_quality": ("judge_calibration", "ok"),
        "routing_policy": ("logged_policy_evaluation", "ok"),
        "lookup_mediation": ("mediation", "ok"),
    }


def test_calibrated_judge_effect_lands_on_the_human_truth_while_the_raw_is_twice_it(measurement_run):
    rows, truth, root, _ = measurement_run
    r, t = rows["judge_quality"], truth["judge_quality"]
    assert t["raw_judge_effect"] == pytest.approx(2 * t["human_effect"])
    assert r["ci_low"] <= t["human_effect"] <= r["ci_high"], r
    raw = r["naive_estimate"]
    assert raw == pytest.approx(t["raw_judge_effect"], abs=0.08) and raw > 1.6 * r["estimate"]
    measured = _measured(root, "judge_quality")
    lo, hi = _interval(measured["judge_raw_judge"][1])
    assert not lo <= t["human_effect"] <= hi  # the raw judge effect's own interval misses the quality truth
    lo, hi = _interval(measured["judge_audit_only"][1])
    assert lo <= t["human_effect"] <= hi
    assert r["checks"]["judge_bias_by_arm"] == "passed"


def test_doubly_robust_value_covers_the_new_policy_while_the_logged_mean_does_not(measurement_run):
    rows, truth, root, _ = measurement_run
    r, t = rows["routing_policy"], truth["routing_policy"]
    assert r["ci_low"] <= t["policy_value"] <= r["ci_high"], (r, t)
    measured = _measured(root, "routing_policy")
    lo, hi = _interval(measured["policy_logged_mean"][1])
    assert not lo <= t["policy_value"] <= hi and r["naive_estimate"] < t["policy_value"] - 0.1
    assert {"policy_ips", "policy_snips", "policy_effective_sample_size"} <= set(measured)
    assert 0 < measured["policy_effective_sample_size"][0] < N_CONVERSATIONS
    assert r["checks"]["policy_overlap"] == "passed"


def test_total_and_direct_effects_recover_the_simulated_mediation(measurement_run):
    rows, truth, root, _ = measurement_run
    r, t = rows["lookup_mediation"], truth["lookup_mediation"]
    assert r["ci_low"] <= t["total_effect"] <= r["ci_high"], (r, t)
    measured = _measured(root, "lookup_mediation")
    lo, hi = _interval(measured["mediation_cde_0"][1])
    assert lo <= t["direct_effect"] <= hi
    lo, hi = _interval(measured["mediation_share_mediated"][1])
    assert lo <= t["share_mediated"] <= hi
    assert measured["mediation_cde_1"][0] is None  # the tool exists only where the rollout reached: not identified


def test_memos_have_their_design_section(measurement_run):
    _, _, root, _ = measurement_run
    reports = root / "store.duckdb.parts" / "reports"
    judge = (reports / "judge_quality.md").read_text()
    assert "## Judge calibration" in judge and "raw judge-score effect" in judge and "audit-sample effect" in judge
    policy = (reports / "routing_policy.md").read_text()
    assert "## Policy value" in policy and "IPS value" in policy and "effective sample size" in policy
    assert "Overlap" in policy and "candidate routing policy" in policy
    mediation = (reports / "lookup_mediation.md").read_text()
    assert "## Mediation" in mediation and "controlled direct effect" in mediation
    assert "answers a different question" in mediation


@pytest.mark.parametrize("qid, check", [("judge_quality", "judge_bias_by_arm"), ("routing_policy", "policy_overlap"),
                                        ("lookup_mediation", "sample_size")])
def test_asset_checks_recorded_for_the_question_partition(measurement_run, qid, check):
    from dagster._core.event_api import PartitionKeyFilter

    *_, instance = measurement_run
    key = dg.AssetCheckKey(dg.AssetKey("question_estimate"), check)
    records = instance.event_log_storage.get_asset_check_execution_history(
        key, limit=10, partition_filter=PartitionKeyFilter(key=qid))
    assert len(records) == 1 and records[0].partition == qid
    assert records[0].event.dagster_event.event_specific_data.metadata["state"].value == "passed"


def test_policy_question_without_propensity_columns_is_refused_with_the_reason(measurement_run):
    from convocausal.questions.answer import answer_question
    from convocausal.store import open_signals, store_paths

    _, _, root, _ = measurement_run
    text = (EXAMPLES / "questions.yaml").read_text().replace("propensity_prefix: route_p_",
                                                             "propensity_prefix: logged_prob_")
    question = parse_registry(text).by_id()["routing_policy"]
    paths = store_paths(root / "store.duckdb")
    with connect(paths.db, read_only=True) as con:
        catalog = con.execute("SELECT * FROM signal_catalog").df().to_dict(orient="records")
    con = open_signals(paths)
    try:
        answer = answer_question(con, question, catalog)
    finally:
        con.close()
    assert answer.result is None and "no logging propensities" in answer.refusal
    assert "logged_prob_" in answer.refusal
    states = {c.name: c.state for c in answer.checks}
    assert states["policy_overlap"] == "not_run"


@pytest.mark.parametrize("edit, message", [
    (("action: human\n", "action: 'rm -rf /'\n"), "action"),
    (("{in: [vip, at_risk]}", "{between: [1, 2]}"), "between"),
    (("mediators: [tool_lookup_order]", "mediators: []"), "mediators"),
    (("    score: judge_score\n", ""), "score"),
    (("propensity_prefix: route_p_", "propensity_prefix: 'x; DROP TABLE'"), "propensity_prefix"),
])
def test_bad_question_fields_are_named_and_never_evaluated(edit, message):
    text = (EXAMPLES / "questions.yaml").read_text()
    assert edit[0] in text
    with pytest.raises(ConfigError, match=message):
        parse_registry(text.replace(edit[0], edit[1], 1))


def test_example_truths_are_in_truth_json(measurement_run):
    _, truth, root, _ = measurement_run
    flat = json.loads((root / "raw" / "truth.json").read_text())
    assert flat["judge_quality"] == truth["judge_quality"]["human_effect"]
    assert flat["routing_policy"] == truth["routing_policy"]["policy_value"]
    assert flat["lookup_mediation"] == truth["lookup_mediation"]["total_effect"]
