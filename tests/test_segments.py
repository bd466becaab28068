"""Heterogeneous effects (issue 16 item 3): per-segment estimates with the question's own method,
small segments refused with the reason, Cochran's Q and I² (against statsmodels' meta-analysis),
re-weighting to a target mix, and a forest plot."""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.stats.meta_analysis import combine_effects

from configs.questions import ConfigError, Question, validate_against_catalog
from convocausal.questions.answer import answer_question
from methods.heterogeneity import cochran_q, project
from tests.outcome_cases import CATALOG, connection, randomized_signals, rollout_signals

TRUTH = {"chat": 0.0, "email": 0.15, "voice": 0.30}


def _segment_rows(seed: int, n: int = 3000, small_level: int = 0, **kw):
    con = connection(randomized_signals(n=n, seed=seed, segment_effects=TRUTH, small_level=small_level))
    try:
        q = Question(id="q", design="randomized", outcome="resolved", assignment="arm", segments=["channel"], **kw)
        answer = answer_question(con, q, CATALOG, seed=seed)
    finally:
        con.close()
    return answer, {o.name: o for o in answer.info["outcomes"]}


def test_segment_effects_recover_their_truths_over_seeds():
    """Each segment's 95% interval covers its own simulated effect in most of 20 samples, and the
    average estimate is close to the truth: the segment rows really are per-segment estimates."""
    covers = {c: 0 for c in TRUTH}
    est = {c: [] for c in TRUTH}
    seeds = range(20)
    for seed in seeds:
        _, rows = _segment_rows(seed)
        for c, t in TRUTH.items():
            r = rows[f"channel={c}"]
            assert r.status == "ok"
            covers[c] += r.ci_low <= t <= r.ci_high
            est[c].append(r.estimate)
    for c, t in TRUTH.items():
        assert covers[c] >= 16, (c, covers[c])  # 95% nominal: P(fewer than 16 of 20) < 0.3%
        assert np.mean(est[c]) == pytest.approx(t, abs=0.03)


def test_heterogeneity_detected_and_matches_statsmodels():
    answer, rows = _segment_rows(0)
    het = rows["channel"] if rows["channel"].kind == "segment_heterogeneity" else None
    assert het is not None and het.p_value < 0.01  # effects 0, 0.15, 0.30 differ
    segs = [rows[f"channel={c}"] for c in sorted(TRUTH)]
    ref = combine_effects(np.array([s.estimate for s in segs]), np.array([s.std_error ** 2 for s in segs]))
    assert het.estimate == pytest.approx(ref.q, rel=1e-10)
    assert f"I² = {100 * ref.i2:.0f}%" in het.message
    assert "forest_channel" in answer.result.plots and answer.result.plots["forest_channel"][:8] == b"\x89PNG\r\n\x1a\n"


def test_cochran_q_against_reference_formula_and_statsmodels():
    rng = np.random.default_rng(3)
    eff, se = rng.normal(0, 0.1, 6), rng.uniform(0.02, 0.08, 6)
    h = cochran_q(eff, se)
    ref = combine_effects(eff, se ** 2)
    w = 1 / se ** 2
    pooled = np.sum(w * eff) / np.sum(w)
    assert h.q == pytest.approx(np.sum(w * (eff - pooled) ** 2)) and h.q == pytest.approx(ref.q)
    assert h.i2 == pytest.approx(ref.i2) and h.df == 5
    assert h.pooled == pytest.approx(ref.mean_effect_fe) and h.pooled_se == pytest.approx(np.sqrt(ref.var_eff_w_fe))
    from scipy import stats
    assert h.p_value == pytest.approx(stats.chi2.sf(h.q, 5))
    assert cochran_q([0.1, 0.1], [0.01, 0.02]).i2 == 0.0
    with pytest.raises(ValueError):
        cochran_q([0.1], [0.01])


def test_small_segment_refused_with_the_reason():
    _, rows = _segment_rows(0, small_level=30)  # 30 sms conversations: fewer than 50 per arm
    r = rows["channel=sms"]
    assert r.status == "refused" and r.estimate is None
    assert "too small" in r.message and "at least 50 of each" in r.message
    assert r.n_treated + r.n_control == 30
    assert rows["channel"].kind == "segment_heterogeneity" and "over 3 levels" in rows["channel"].message


def test_projection_to_a_target_mix():
    _, rows = _segment_rows(0, project_to={"channel": {"chat": 1, "voice": 3}})
    p = next(o for o in rows.values() if o.kind == "segment_projection")
    chat, voice = rows["channel=chat"], rows["channel=voice"]
    assert p.estimate == pytest.approx(0.25 * chat.estimate + 0.75 * voice.estimate)
    se = np.sqrt((0.25 * chat.std_error) ** 2 + (0.75 * voice.std_error) ** 2)
    assert p.std_error == pytest.approx(se) and p.ci_low == pytest.approx(p.estimate - 1.959964 * se, abs=1e-5)
    assert "chat 25%, voice 75%" in p.message


def test_projection_refused_when_a_level_has_no_estimate():
    _, rows = _segment_rows(0, small_level=30, project_to={"channel": {"chat": 0.5, "sms": 0.5}})
    p = next(o for o in rows.values() if o.kind == "segment_projection")
    assert p.status == "refused" and "sms" in p.message
    with pytest.raises(KeyError):
        project({"a": 0.1}, {"a": 0.01}, {"a": 1, "b": 1})


def test_did_segments_use_the_same_method():
    con = connection(rollout_signals(n=6000, seed=2))
    q = Question(id="d", design="partial_rollout", outcome="resolved", treated={"skill": ["a1", "a2", "a3", "a4"]},
                 launch="2026-03-30", fixed_effects=[], cluster="skill", time_bucket="week", segments=["channel"])
    answer = answer_question(con, q, CATALOG)
    rows = {o.name: o for o in answer.info["outcomes"]}
    assert answer.result.method == "diff_in_diff"
    for c in ("chat", "voice"):
        assert rows[f"channel={c}"].status in ("ok", "blocked") and rows[f"channel={c}"].estimate is not None
        assert rows[f"channel={c}"].n_treated < answer.result.n_treated


@pytest.mark.parametrize("segments, match", [(["n_turns"], "not known at conversation start"),
                                             (["nope"], "not a signals column"),
                                             (["resolved"], "not known at conversation start")])
def test_segments_must_be_start_covariates(segments, match):
    q = Question(id="q", design="randomized", outcome="resolved", assignment="arm", segments=segments)
    with pytest.raises(ConfigError, match=match):
        validate_against_catalog(q, CATALOG, {"outcome": ["resolved"]})


def test_segment_shape_rules():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        Question(id="q", design="randomized", outcome="resolved", assignment="arm", segments=["a", "b", "c", "d"])
    with pytest.raises(ValidationError, match="not one of the question's `segments`"):
        Question(id="q", design="randomized", outcome="resolved", assignment="arm", segments=["channel"],
                 project_to={"skill": {"a": 1}})


def test_cli_estimate_segments(tmp_path, capsys):
    import json

    from convocausal.cli import main

    df = randomized_signals(n=3000, seed=0, segment_effects=TRUTH, small_level=30)
    path = tmp_path / "ab.parquet"
    df.to_parquet(path)
    assert main(["estimate", "itt", "--data", str(path), "--outcome", "resolved", "--assignment", "arm",
                 "--segments", "channel", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = {r["level"]: r for r in out["segments"]["rows"]}
    assert rows["sms"]["status"] == "refused" and "too small" in rows["sms"]["message"]
    from methods.randomized import estimate_itt
    for c in TRUTH:  # each level is the method on that level's rows
        direct = estimate_itt(df[df["channel"] == c].reset_index(drop=True), outcome="resolved", assignment="arm")
        assert rows[c]["estimate"] == pytest.approx(direct.estimate) and rows[c]["ci_low"] == pytest.approx(direct.ci_low)
    ok = [rows[c] for c in sorted(TRUTH)]
    ref = combine_effects(np.array([r["estimate"] for r in ok]), np.array([r["std_error"] ** 2 for r in ok]))
    assert out["segments"]["heterogeneity"]["cochran_q"] == pytest.approx(ref.q)
    assert main(["estimate", "psm", "--data", str(path), "--outcome", "resolved", "--treatment", "arm",
                 "--covariates", "channel", "--segments", "channel"]) == 0
    text = capsys.readouterr().out
    assert "Segments by channel:" in text and "refused: too small" in text


def test_memo_section_and_run_table_lines():
    import pandas as pd

    from convocausal.report_outcomes import outcomes_section, run_table_lines

    answer, _ = _segment_rows(0, small_level=30, project_to={"channel": {"chat": 0.5, "voice": 0.5}},
                              value={"resolved": 2.0, "handle_minutes": -0.5})
    rows = [o.as_dict() for o in answer.info["outcomes"]]
    text = "\n\n".join(outcomes_section(pd.DataFrame(rows)))
    assert text.startswith("## Guardrails and segments")
    assert "**Net value** " in text and "| channel=sms | refused |" in text
    assert "**Heterogeneity over `channel`**: Cochran's Q" in text and "**Projected to the target mix of `channel`**" in text
    lines = run_table_lines(rows)
    assert all(line.startswith("    ") for line in lines) and len(lines) == len(rows)
    assert any("segment channel=sms: —  refused (too small" in line for line in lines)
    assert any(line.startswith("    heterogeneity over channel: Cochran's Q") for line in lines)
    assert outcomes_section(None) == [] and outcomes_section(pd.DataFrame()) == []


def test_matching_segments_drop_the_segment_column_from_the_covariates():
    """Within one channel, `channel` is constant: matching adjusts for the other covariates only."""
    df = randomized_signals(n=3000, seed=6, segment_effects={"chat": 0.0, "voice": 0.3})
    df["persona"] = np.where(np.random.default_rng(6).random(len(df)) < 0.5, "new", "known")
    catalog = [c for c in CATALOG if c["name"] in df.columns] + [{"name": "persona", "kind": "covariate", "measured_at": "start", "source": "crm",
                          "agent_controlled": False, "dtype": "str", "turn_column": None}]
    con = connection(df)
    q = Question(id="m", design="coexisting_variants", outcome="resolved", treatment="arm",
                 covariates=["channel", "persona"], segments=["channel"],
                 guardrails=[{"outcome": "escalated", "better": "lower", "tolerance": 0.05}])
    answer = answer_question(con, q, catalog)
    rows = {o.name: o for o in answer.info["outcomes"]}
    assert answer.result.method == "propensity_matching"
    assert rows["escalated"].kind == "guardrail" and rows["escalated"].status in ("cleared", "inconclusive")
    assert rows["channel=chat"].estimate == pytest.approx(0.0, abs=0.1)
    assert rows["channel=voice"].estimate == pytest.approx(0.3, abs=0.1)
    assert rows["channel"].p_value < 0.05
