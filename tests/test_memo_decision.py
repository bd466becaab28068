"""The memo's decision follows the check states (issue 13): "do not act" only for a failed ERROR
check; failed WARN checks and ERROR checks the data could not test are named caveats; the
sentence never says "every check passed" while a check failed or did not run."""

from __future__ import annotations

import pandas as pd
import pytest

from configs.questions import Question
from convocausal.report import _memo_body

Q = Question(id="q", design="partial_rollout", outcome="resolved", treated={"skill": ["a"]}, launch="2026-03-02")
ROW = {"status": "ok", "estimate": 0.05, "ci_low": 0.02, "ci_high": 0.08, "p_value": 0.001, "estimand": "ATT",
       "ci_method": "placebo", "naive_estimate": 0.07, "n_treated": 100, "n_control": 300, "message": "design"}
EMPTY = pd.DataFrame(columns=["name", "value", "threshold", "passed", "message"])
REFS = pd.DataFrame(columns=["refuter", "new_effect", "passed", "message"])


def _checks(**states):
    sev = {"pre_trend": "ERROR", "sample_size": "ERROR", "refuters_passed": "WARN"}
    return pd.DataFrame([{"check_name": n, "severity": sev[n], "state": s, "message": "m"} for n, s in states.items()])


def _decision(checks, row=ROW) -> str:
    text = _memo_body(Q, row, REFS, EMPTY, pd.DataFrame(), checks)
    return text.split("## Decision\n\n")[1].split("\n\n")[0]


def test_all_passed_says_so():
    d = _decision(_checks(pre_trend="passed", sample_size="passed", refuters_passed="passed"))
    assert d.startswith("The change raises") and "every check passed" in d


def test_untestable_error_check_is_a_caveat_not_a_block():
    d = _decision(_checks(pre_trend="not_run", sample_size="passed", refuters_passed="passed"))
    assert "Do not act" not in d and "every check passed" not in d
    assert "the data could not test: pre_trend" in d


def test_failed_warn_is_a_caveat():
    d = _decision(_checks(pre_trend="passed", sample_size="passed", refuters_passed="failed"))
    assert "Do not act" not in d and "WARN checks failed: refuters_passed" in d and "every check passed" not in d


@pytest.mark.parametrize("other", ["passed", "not_run"])
def test_failed_error_blocks(other):
    d = _decision(_checks(pre_trend="failed", sample_size=other, refuters_passed="passed"))
    assert d.startswith("**Do not act on this number yet**: failed checks: pre_trend")


def test_null_with_caveats_names_them():
    row = {**ROW, "estimate": 0.0, "ci_low": -0.03, "ci_high": 0.03}
    d = _decision(_checks(pre_trend="not_run", sample_size="passed", refuters_passed="passed"), row)
    assert d.startswith("No effect distinguishable") and "could not test: pre_trend" in d


def test_negative_effect_is_worded_with_its_sign():
    """'lowers `escalated` by -0.055' said the direction twice and read as a rise (issue 18)."""
    q = Question(id="q", design="partial_rollout", outcome="escalated", treated={"skill": ["a"]}, launch="2026-03-02")
    row = {**ROW, "estimate": -0.055, "ci_low": -0.081, "ci_high": -0.029}
    text = _memo_body(q, row, REFS, EMPTY, pd.DataFrame(),
                      _checks(pre_trend="passed", sample_size="passed", refuters_passed="passed"))
    d = text.split("## Decision\n\n")[1].split("\n\n")[0]
    assert d.startswith("The change lowers `escalated` by 0.055 ")
    assert "by -" not in d and "by −" not in d
    assert "estimate -0.055, 95% CI -0.081 to -0.029" in d  # the signed numbers stay in the bracket


def test_p_value_below_a_thousandth_is_not_printed_as_zero():
    text = _memo_body(Q, {**ROW, "p_value": 4e-7}, REFS, EMPTY, pd.DataFrame(),
                      _checks(pre_trend="passed", sample_size="passed", refuters_passed="passed"))
    assert "p < 0.001" in text and "p = 0.000" not in text


def test_rollout_memo_points_to_no_sensitivity_refuter():
    """Synthetic control and DiD run no unobserved-confounder sensitivity: the memo must not send
    the reader to one (issue 18)."""
    text = _memo_body(Q, ROW, REFS, EMPTY, pd.DataFrame(),
                      _checks(pre_trend="passed", sample_size="passed", refuters_passed="passed"))
    assert "sensitivity" not in text.lower()


@pytest.mark.parametrize("refuters, named", [(["placebo_treatment", "unobserved_confounder_robustness"], True),
                                             (["placebo_treatment"], False)])
def test_matching_memo_names_the_sensitivity_refuter_only_when_run(refuters, named):
    q = Question(id="q", design="coexisting_variants", outcome="resolved", treatment="asked_email_first",
                 covariates=["intent"])
    refs = pd.DataFrame([{"refuter": r, "new_effect": 0.01, "passed": True, "message": "ok"} for r in refuters])
    text = _memo_body(q, ROW, refs, EMPTY, pd.DataFrame(),
                      _checks(pre_trend="passed", sample_size="passed", refuters_passed="passed"))
    risks = text.split("## Main risks\n\n")[1].split("\n\n## ")[0]
    assert ("`unobserved_confounder_robustness` refuter" in risks) is named
    assert named or "no sensitivity analysis was run" in risks
