"""Guardrails (issue 16 item 1): a guardrail the change makes worse beyond its tolerance blocks the
decision, whatever the primary outcome did; each guardrail is tested one-sided at α/m (Bonferroni)."""

from __future__ import annotations

import pandas as pd
import pytest

from configs.questions import ConfigError, Question, parse_questions, validate_against_catalog
from convocausal.questions.answer import answer_question
from convocausal.report import _memo_body, decision_memo, format_run_table
from convocausal.store import connect, store_paths, write_result
from tests.outcome_cases import (
    CATALOG,
    SHIPPED_LAUNCH,
    connection,
    randomized_signals,
    rollout_signals,
    shipped_signals,
)

GUARD = {"outcome": "escalated", "better": "lower", "tolerance": 0.01}
REFS = pd.DataFrame(columns=["refuter", "new_effect", "passed", "message"])
EMPTY = pd.DataFrame(columns=["name", "value", "threshold", "passed", "message"])


def _question(**kw) -> Question:
    return Question(id="q", design="randomized", outcome="resolved", assignment="arm", **kw)


def _answer(effects: dict, **kw):
    con = connection(randomized_signals(n=4000, seed=1, effects=effects))
    try:
        return answer_question(con, _question(**kw), CATALOG)
    finally:
        con.close()


def _decision(question, answer) -> str:
    r = answer.result
    row = {"status": "ok", "estimate": r.estimate, "ci_low": r.ci_low, "ci_high": r.ci_high, "p_value": r.p_value,
           "estimand": "ATT", "ci_method": r.ci_method, "naive_estimate": r.naive_estimate,
           "n_treated": r.n_treated, "n_control": r.n_control, "method": r.method, "message": "design"}
    checks = pd.DataFrame([{"check_name": "sample_size", "severity": "ERROR", "state": "passed", "message": "m"}])
    outcomes = pd.DataFrame([o.as_dict() for o in answer.info["outcomes"]])
    text = _memo_body(question, row, REFS, EMPTY, pd.DataFrame(), checks, outcomes=outcomes)
    return text


def _decision_text(question, answer) -> str:
    return _decision(question, answer).split("## Decision\n\n")[1].split("\n\n")[0]


def test_harmed_guardrail_blocks_the_decision():
    """Treatment raises resolution (+0.10) and escalation (+0.10): the memo must say do not act."""
    answer = _answer({"resolved": 0.10, "escalated": 0.10}, guardrails=[GUARD])
    (g,) = answer.info["outcomes"]
    assert g.kind == "guardrail" and g.name == "escalated" and g.status == "harmed"
    assert g.estimate == pytest.approx(0.10, abs=0.04) and g.p_value < 0.05
    assert answer.result.ci_low > 0  # the primary outcome did improve
    text = _decision(_question(guardrails=[GUARD]), answer)
    decision = text.split("## Decision\n\n")[1].split("\n\n")[0]
    assert decision.startswith("**Do not act: guardrail `escalated` worse by")
    assert "0.05/1" in decision and "1 guardrail test" in decision
    assert "## Guardrails and segments" in text and "**harmed**" in text
    assert "1 guardrail test (`escalated`), each one-sided" in text  # the decision rule says the number of tests


def test_unharmed_guardrail_lets_the_decision_stand():
    answer = _answer({"resolved": 0.10, "escalated": 0.0}, guardrails=[{**GUARD, "tolerance": 0.05}])
    (g,) = answer.info["outcomes"]
    assert g.status == "cleared"
    decision = _decision(_question(guardrails=[{**GUARD, "tolerance": 0.05}]), answer) \
        .split("## Decision\n\n")[1].split("\n\n")[0]
    assert decision.startswith("The change raises `resolved`") and "Do not act" not in decision


def test_inconclusive_guardrail_is_a_named_caveat():
    answer = _answer({"resolved": 0.10, "escalated": 0.0}, guardrails=[{**GUARD, "tolerance": 0.0}])
    (g,) = answer.info["outcomes"]
    assert g.status == "inconclusive"
    decision = _decision(_question(guardrails=[{**GUARD, "tolerance": 0.0}]), answer) \
        .split("## Decision\n\n")[1].split("\n\n")[0]
    assert "Do not act" not in decision and "guardrail `escalated` could be worse than its tolerance" in decision


def test_bonferroni_over_guardrails():
    guards = [GUARD, {"outcome": "handle_minutes", "better": "lower", "tolerance": 0.0}]
    answer = _answer({"resolved": 0.10, "escalated": 0.0, "handle_minutes": 1.0}, guardrails=guards)
    rows = {o.name: o for o in answer.info["outcomes"]}
    assert set(rows) == {"escalated", "handle_minutes"}
    assert all("0.05/2 = 0.025" in o.message for o in rows.values())
    assert rows["handle_minutes"].status == "harmed"
    # one-sided p of H0 "worse by at most the tolerance", from the guardrail's own estimate and SE
    from scipy import stats
    h = rows["handle_minutes"]
    assert h.p_value == pytest.approx(stats.norm.sf(h.estimate / h.std_error))


def test_higher_is_better_guardrail_harmed_when_it_falls():
    answer = _answer({"resolved": 0.10, "escalated": -0.08},
                     guardrails=[{"outcome": "escalated", "better": "higher", "tolerance": 0.01}])
    assert answer.info["outcomes"][0].status == "harmed"


def test_stored_with_the_question_and_memo_reads_the_store(tmp_path):
    answer = _answer({"resolved": 0.10, "escalated": 0.10}, guardrails=[GUARD])
    paths = store_paths(tmp_path / "s.duckdb")
    write_result(paths.db, "run1", "q", answer.result, checks=answer.checks, outcomes=answer.info["outcomes"])
    with connect(paths.db, read_only=True) as con:
        rows = con.execute("SELECT kind, name, status, n_treated FROM question_outcomes "
                           "WHERE run_id = 'run1' AND question_id = 'q'").fetchall()
    assert rows == [("guardrail", "escalated", "harmed", answer.info["outcomes"][0].n_treated)]
    write_result(paths.db, "run1", "q", answer.result, checks=answer.checks, outcomes=answer.info["outcomes"])
    with connect(paths.db, read_only=True) as con:  # idempotent: same transaction deletes the key first
        assert con.execute("SELECT count(*) FROM question_outcomes").fetchone()[0] == 1
    memo = decision_memo(paths, _question(guardrails=[GUARD]))
    assert "**Do not act: guardrail `escalated` worse by" in memo.markdown_files


def test_run_table_prints_a_line_per_guardrail():
    row = {"question_id": "q", "method": "randomized_itt", "estimate": 0.1, "ci_low": 0.05, "ci_high": 0.15,
           "p_value": 0.001, "q_value": 0.001, "naive_estimate": 0.1, "checks": {},
           "outcomes": [{"kind": "guardrail", "name": "escalated", "estimate": 0.08, "ci_low": 0.06, "ci_high": 0.1,
                         "p_value": 1e-6, "status": "harmed", "message": "m"}]}
    lines = format_run_table([row], {}).splitlines()
    assert lines[3].startswith("    guardrail escalated: +0.0800 [+0.0600, +0.1000]") and "harmed" in lines[3]


@pytest.mark.parametrize("guard, match", [
    ({"outcome": "escalated", "better": "down"}, "better"),
    ({"outcome": "escalated", "better": "lower", "tolerance": -0.1}, "tolerance"),
    ({"outcome": "Escalated; DROP", "better": "lower"}, "outcome"),
    ({"outcome": "resolved", "better": "lower"}, "own outcome"),
])
def test_guardrail_shape_is_checked(guard, match):
    text = ("questions:\n  - {id: q, design: randomized, outcome: resolved, assignment: arm, guardrails: ["
            + ", ".join(f"{k}: {v!r}" if isinstance(v, str) else f"{k}: {v}" for k, v in guard.items()) + "]}\n")
    text = text.replace("guardrails: [", "guardrails: [{").replace("]}\n", "}]}\n")
    with pytest.raises(ConfigError, match=match):
        parse_questions(text)


def test_guardrail_must_be_an_outcome():
    q = _question(guardrails=[{"outcome": "n_turns", "better": "lower"}])
    with pytest.raises(ConfigError, match="guardrail `n_turns` is a covariate, not an outcome"):
        validate_against_catalog(q, CATALOG, {"outcome": ["resolved"]})
    q = _question(guardrails=[{"outcome": "nope", "better": "lower"}])
    with pytest.raises(ConfigError, match="guardrail `nope` is not a signals column"):
        validate_against_catalog(q, CATALOG, {"outcome": ["resolved"]})


def test_fingerprint_unchanged_when_the_new_fields_are_unset():
    q = _question()
    import hashlib
    import json

    from configs.questions import MEASUREMENT_FIELDS  # issue 17's fields: also left out while unset

    dump = {k: v for k, v in q.model_dump(mode="json").items()
            if k not in ("guardrails", "value", "segments", "project_to", *MEASUREMENT_FIELDS)}
    assert q.fingerprint() == hashlib.sha256(json.dumps(dump, sort_keys=True).encode()).hexdigest()[:16]
    assert _question(guardrails=[GUARD]).fingerprint() != q.fingerprint()


# --- the aggregate designs: diff-in-diff and synthetic control --------------------------------------

DID = {"id": "d", "design": "partial_rollout", "outcome": "resolved", "treated": {"skill": ["a1", "a2", "a3", "a4"]},
       "launch": "2026-03-30", "fixed_effects": [], "cluster": "skill", "time_bucket": "week"}
SC = {"id": "s", "design": "shipped_change", "outcome": "resolved", "treated": {"channel": ["chat"]},
      "launch": SHIPPED_LAUNCH.isoformat(), "unit_by": ["channel", "skill"], "time_bucket": "week", "min_volume": 20}


def _aggregate(kind: str, escalation: float, tolerance: float):
    """A rollout (DiD) or a shipped change (SC) that truly raises resolution by 0.08 and escalation by
    ``escalation``; the question guards escalation with ``tolerance``."""
    fields = DID if kind == "did" else SC
    df = (rollout_signals(n=6000, seed=2, effects={"escalated": escalation}) if kind == "did"
          else shipped_signals(n=30000, seed=1, effects={"escalated": escalation}))
    q = Question(**fields, guardrails=[{**GUARD, "tolerance": tolerance}])
    con = connection(df)
    try:
        return q, answer_question(con, q, CATALOG)
    finally:
        con.close()


@pytest.mark.parametrize("kind, method", [("did", "diff_in_diff"), ("sc", "synthetic_control")])
def test_harmed_guardrail_blocks_the_aggregate_designs(kind, method):
    """True escalation effect +0.15 against a tolerance of 0.01: harmed, and the memo says do not act,
    though resolution truly rose (+0.08) and its interval says so."""
    q, answer = _aggregate(kind, escalation=0.15, tolerance=0.01)
    assert answer.method == method and answer.result.ci_low > 0  # the primary outcome did improve
    assert not [c.name for c in answer.checks if c.severity == "ERROR" and c.state == "failed"]
    (g,) = answer.info["outcomes"]
    assert g.kind == "guardrail" and g.status == "harmed", g.message
    assert abs(g.estimate - 0.15) < 0.03  # the guardrail's own estimate recovers its truth
    assert g.estimate - 1.645 * g.std_error > 0.01  # worse beyond the tolerance, one-sided at 0.05/1
    # the test is never sharper than the method's own interval (DiD's wild bootstrap, SC's conformal one)
    assert g.std_error >= (g.ci_high - g.ci_low) / (2 * 1.959964) - 1e-12
    decision = _decision_text(q, answer)
    assert decision.startswith("**Do not act: guardrail `escalated` worse by"), decision
    assert "0.05/1" in decision


@pytest.mark.parametrize("kind", ["did", "sc"])
def test_guardrail_that_holds_is_cleared_in_the_aggregate_designs(kind):
    """No true escalation effect, tolerance 0.06: cleared, and the decision stands (and says so)."""
    q, answer = _aggregate(kind, escalation=0.0, tolerance=0.06)
    (g,) = answer.info["outcomes"]
    assert g.status == "cleared", g.message
    assert g.ci_low <= 0.0 <= g.ci_high and abs(g.estimate) < 0.03  # covers its truth, no effect
    decision = _decision_text(q, answer)
    assert decision.startswith("The change raises `resolved`") and "Do not act" not in decision
    assert "No guardrail is worse beyond its tolerance (`escalated`" in decision
