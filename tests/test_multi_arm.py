"""Several arms against a baseline (issue 16 item 4): one table of every outcome per arm with net value.

A simulated three-arm randomized rollout with known per-arm effects on resolution and handle time and
known value weights: every arm's ITT per outcome and its net value must cover the truth, the net value's
interval must carry the covariance of the outcomes, and the memo must show the table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from configs.questions import Question
from convocausal.questions.answer import answer_question
from convocausal.report import _memo_body, decision_memo
from convocausal.report_outcomes import arms_section, run_table_lines
from convocausal.store import store_paths, write_result
from methods.randomized import estimate_itt, estimate_iv
from tests.outcome_cases import CATALOG, connection, multi_arm_signals, multi_arm_truth

WEIGHTS = {"resolved": 14.0, "handle_minutes": -0.8}
TRUTH = multi_arm_truth(WEIGHTS)  # arm 1: resolved +0.04, handle +0.92, net -0.176; arm 2: +0.10, -1.70, +2.76
GUARD = {"outcome": "escalated", "better": "lower", "tolerance": 0.01}
REFS = pd.DataFrame(columns=["refuter", "new_effect", "passed", "message"])
EMPTY = pd.DataFrame(columns=["name", "value", "threshold", "passed", "message"])


def _question(**kw) -> Question:
    return Question(id="m", design="randomized", outcome="resolved", assignment="arm",
                    secondary_outcomes=["handle_minutes"], value=WEIGHTS, **kw)


def _answer(seed: int = 3, escalation: dict | None = None, **kw):
    con = connection(multi_arm_signals(n=9000, seed=seed, escalation=escalation))
    try:
        return answer_question(con, _question(**kw), CATALOG)
    finally:
        con.close()


def _arm_rows(answer) -> dict:
    import json

    return {(k["arm"], k["outcome"]): o for o in answer.info["outcomes"] if o.kind == "arm"
            for k in [json.loads(o.name)]}


def test_every_arm_and_outcome_covers_its_truth():
    answer = _answer()
    rows = _arm_rows(answer)
    assert set(rows) == {(a, o) for a in ("1", "2") for o in ("resolved", "handle_minutes", "net_value")}
    for (arm, outcome), r in rows.items():
        truth = TRUTH[arm][outcome]
        assert r.ci_low <= truth <= r.ci_high, (arm, outcome, r.estimate, truth)
        assert r.n_treated > 2500 and r.n_control > 2500
    # the arms differ: arm 2's net value is positive and excludes arm 1's truth
    assert rows[("2", "net_value")].ci_low > 0 and not rows[("2", "net_value")].ci_low <= TRUTH["1"]["net_value"]
    # the method's own table carries the same net-value row per arm
    table = answer.result.extras["arms"]
    nv = table[table["outcome"] == "net_value"].set_index("arm")
    assert set(nv.index) == {"1", "2"}
    for arm in ("1", "2"):
        assert nv.loc[arm, "estimate"] == pytest.approx(rows[(arm, "net_value")].estimate)
        assert nv.loc[arm, "std_error"] == pytest.approx(rows[(arm, "net_value")].std_error)


def test_net_value_per_arm_carries_the_covariance():
    df = multi_arm_signals(n=9000, seed=5)
    r = estimate_itt(df, "resolved", "arm", secondary_outcomes=["handle_minutes"], value=WEIGHTS)
    t = r.extras["arms"].set_index(["outcome", "arm"])
    v = 14.0 * df["resolved"] - 0.8 * df["handle_minutes"]
    for arm in ("1", "2"):
        a, b = v[df["arm"] == int(arm)], v[df["arm"] == 0]
        se = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))  # Neyman = HC2 for a difference in means
        assert t.loc[("net_value", arm), "estimate"] == pytest.approx(a.mean() - b.mean(), rel=1e-9)
        assert t.loc[("net_value", arm), "std_error"] == pytest.approx(se, rel=1e-6)
        # resolution lowers handle time, so the outcomes covary: the independent sum of variances is wrong
        indep = np.hypot(14 * t.loc[("resolved", arm), "std_error"], 0.8 * t.loc[("handle_minutes", arm), "std_error"])
        assert abs(indep - se) / se > 0.05
        # the estimate is the weighted sum of the per-outcome ITTs (a linear combination)
        assert t.loc[("net_value", arm), "estimate"] == pytest.approx(
            14 * t.loc[("resolved", arm), "estimate"] - 0.8 * t.loc[("handle_minutes", arm), "estimate"])
    assert r.extras["net_value"] == pytest.approx(t.loc[("net_value", "1"), "estimate"])


def test_coverage_per_arm_over_seeds():
    """Every arm's ITT per outcome and net value: the 95% interval covers the truth in ~95% of 120 worlds."""
    hits: dict = {}
    for seed in range(120):
        df = multi_arm_signals(n=3000, seed=1000 + seed)
        r = estimate_itt(df, "resolved", "arm", covariates=["channel"], secondary_outcomes=["handle_minutes"],
                         value=WEIGHTS)
        t = r.extras["arms"]
        t = t[t["estimand"] == "ITT_adjusted"]
        for _, row in t.iterrows():
            truth = TRUTH[row["arm"]][row["outcome"]]
            hits.setdefault((row["arm"], row["outcome"]), []).append(row["ci_low"] <= truth <= row["ci_high"])
    assert len(hits) == 6
    rates = {k: float(np.mean(v)) for k, v in hits.items()}
    print("coverage per (arm, outcome):", rates)
    # 120 draws at 95%: a binomial 99.9% band is about [0.88, 0.99]
    assert all(0.88 <= c <= 1.0 for c in rates.values()), rates
    assert 0.92 <= float(np.mean(list(rates.values()))) <= 0.98, rates


def test_iv_net_value_per_arm():
    """With uptake, the net value's Wald ratio per arm is its ITT over the arm's first stage."""
    rng = np.random.default_rng(8)
    df = multi_arm_signals(n=9000, seed=8)
    df["used"] = ((df["arm"] > 0) & (rng.random(len(df)) < 0.7)).astype(int)
    r = estimate_iv(df, "resolved", "used", "arm", secondary_outcomes=["handle_minutes"], value=WEIGHTS)
    t = r.extras["arms"].set_index(["outcome", "arm", "estimand"])
    for arm in ("1", "2"):
        fs = t.loc[("net_value", arm, "first_stage"), "estimate"]
        itt = t.loc[("net_value", arm, "ITT_reduced_form"), "estimate"]
        assert t.loc[("net_value", arm, "TOT"), "estimate"] == pytest.approx(itt / fs)
        assert fs == pytest.approx(0.7, abs=0.03)
    assert r.extras["net_value"] == pytest.approx(t.loc[("net_value", "1", "TOT"), "estimate"])


def test_value_weights_are_checked():
    df = multi_arm_signals(n=600, seed=1)
    with pytest.raises(ValueError, match="unknown column"):
        estimate_itt(df, "resolved", "arm", value={"nope": 1.0})
    with pytest.raises(ValueError, match="net_value"):
        estimate_itt(df.assign(net_value=1.0), "resolved", "arm", value=WEIGHTS)
    con = connection(df)
    with pytest.raises(ValueError, match="unknown or non-numeric"):
        estimate_itt((con, "signals"), "resolved", "arm", value={"nope": 1.0})


def _memo(question, answer) -> str:
    r = answer.result
    row = {"status": "ok", "estimate": r.estimate, "ci_low": r.ci_low, "ci_high": r.ci_high, "p_value": r.p_value,
           "estimand": "ITT", "ci_method": r.ci_method, "naive_estimate": r.naive_estimate,
           "n_treated": r.n_treated, "n_control": r.n_control, "method": r.method, "message": "design"}
    checks = pd.DataFrame([{"check_name": "sample_size", "severity": "ERROR", "state": "passed", "message": "m"}])
    outcomes = pd.DataFrame([o.as_dict() for o in answer.info["outcomes"]])
    return _memo_body(question, row, REFS, EMPTY, pd.DataFrame(), checks, outcomes=outcomes)


def test_memo_table_and_harm_in_another_arm():
    """Arm 2 raises escalation by 0.08 (tolerance 0.01): its guardrail cell says harmed and the decision
    names it, though the headline arm 1 is not harmed."""
    q = _question(guardrails=[GUARD])
    answer = _answer(seed=3, escalation={2: 0.08}, guardrails=[GUARD])
    rows = _arm_rows(answer)
    assert rows[("2", "escalated")].status == "harmed" and rows[("1", "escalated")].status != "harmed"
    text = _memo(q, answer)
    section = "\n\n".join(arms_section(pd.DataFrame([o.as_dict() for o in answer.info["outcomes"]])))
    assert section in text
    assert "**Every arm against the baseline `0`**" in section
    header = section.split("\n")[2]
    assert header == ("| arm | conversations (arm / baseline) | `resolved` | `handle_minutes` | "
                      "`escalated` (guardrail) | net value |")
    arm2 = next(line for line in section.split("\n") if line.startswith("| `2` |"))
    assert "**harmed**" in arm2
    nv = rows[("2", "net_value")]
    assert f"{nv.estimate:+.4f} ({nv.ci_low:+.4f} to {nv.ci_high:+.4f})" in arm2
    decision = text.split("## Decision\n\n")[1].split("\n\n")[0]
    assert "in arm `2` guardrail `escalated` is worse beyond its tolerance: do not ship that arm" in decision
    lines = run_table_lines([o.as_dict() for o in answer.info["outcomes"]])
    assert any(line.startswith("    arm 2 vs 0: resolved ") and "net value" in line for line in lines)


def test_two_arms_add_no_arm_rows():
    con = connection(multi_arm_signals(n=4000, seed=2).query("arm < 2"))
    answer = answer_question(con, _question(), CATALOG)
    assert [o.kind for o in answer.info["outcomes"]] == ["net_value"]
    table = answer.result.extras["arms"]  # the net value still joins the method's table
    assert list(table[table["outcome"] == "net_value"]["arm"]) == ["1"]


def test_stored_and_rendered_from_the_store(tmp_path):
    answer = _answer()
    paths = store_paths(tmp_path / "s.duckdb")
    write_result(paths.db, "run1", "m", answer.result, checks=answer.checks, outcomes=answer.info["outcomes"])
    memo = decision_memo(paths, _question())
    assert "**Every arm against the baseline `0`**" in memo.markdown_files
    assert "| `2` |" in memo.markdown_files


def test_cli_value_adds_a_net_value_row_per_arm(tmp_path, capsys):
    """`estimate itt … --value`: the JSON's `arms` table carries each arm's net value, covering its truth."""
    import json

    from convocausal.cli import main

    multi_arm_signals(n=9000, seed=5).to_parquet(tmp_path / "arms.parquet")
    base = ["estimate", "itt", "--data", str(tmp_path / "arms.parquet"), "--outcome", "resolved",
            "--assignment", "arm", "--secondary-outcomes", "handle_minutes", "--json"]
    assert main([*base, "--value", "resolved=14,handle_minutes=-0.8"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = {(r["outcome"], r["arm"]): r for r in out["arms"]}
    for arm in ("1", "2"):
        row = rows[("net_value", arm)]
        assert row["ci_low"] <= TRUTH[arm]["net_value"] <= row["ci_high"]
    assert main([*base, "--value", "resolved=lots"]) == 2
    assert "--value resolved=lots" in capsys.readouterr().err
