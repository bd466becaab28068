"""Small stored results for the memo and HTML tests: a matching result written to a real store.

Built through the real pieces (``checks.verdict.evaluate_checks`` for the check states,
``store.write_result`` for the rows, ``report.plot_paths`` for the PNGs), so the memo under test
reads what a pipeline run would have stored; only the numbers are chosen by hand, to be small
and known. The plots are flat magenta squares: no other pixel of a rendered memo has that
colour, so finding it in a screenshot proves the images were inlined and decoded.
"""

from __future__ import annotations

import io
from pathlib import Path

from checks.verdict import evaluate_checks
from configs.questions import Question
from convocausal.questions.registry import REGISTRY
from convocausal.report import plot_paths
from convocausal.store import store_paths, write_result
from methods.result import BalanceRow, Diagnostic, EstimateResult, Refutation

MAGENTA = (255, 0, 255)
# a note much longer than a table cell, with a distinctive last word (an old memo cut it at 300 characters)
LONG_OVERLAP = ("1.2% of conversations (0.8% of treated) have a propensity outside the range where both groups "
                "exist [0.031, 0.962]; pass if at most 5%. " * 4 + "The last words of this note are zanzibar-quokka.")
PLANTED_HTML = "<script>document.title='pwned'</script>"


def magenta_png(px: int = 240) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(px / 100, px / 100), dpi=100)
    fig.patch.set_facecolor("#ff00ff")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, facecolor=fig.get_facecolor())
    plt.close(fig)
    return buf.getvalue()


def matching_result(estimate: float = 0.0367, se: float = 0.0078, p: float = 2.5e-6,
                    outcome: str = "resolved") -> EstimateResult:
    diags = [
        Diagnostic("sample_size", 5542.0, 50.0, True, "3400 treated and 5542 control conversations with an outcome.",
                   "error", check="sample_size"),
        Diagnostic("effective_sample_size_control", 3366.0, 50.0, True,
                   "Matched controls (with replacement) count as 3366 independent conversations (Kish ESS of the "
                   "matching weights); pass if at least 50.", check="sample_size"),
        Diagnostic("outcome_not_agent_controlled", 0.0, 0.0, True,
                   f"`{outcome}` comes from outcomes, which the agent cannot set.", check="outcome_not_agent_controlled"),
        Diagnostic("survivorship_missing_outcome_gap", 0.0, 0.05, True,
                   f"`{outcome}` is missing for 0.0% of conversations treated and 0.0% control.", check="survivorship"),
        Diagnostic("common_support_outside_share", 0.012, 0.05, True, LONG_OVERLAP, check="overlap"),
        Diagnostic("propensity_auc", 0.81, 0.9, True, "AUC 0.81; pass if at most 0.9.", check="overlap"),
        Diagnostic("hidden_confounder_risk", 0.0, 0.1, True, f"no left-out start signal predicts it {PLANTED_HTML}",
                   check="hidden_confounder_risk"),
        Diagnostic("omitted_confounder", 0.0001, 0.0153, True, "adding a left-out signal moves the effect by 0.0001.",
                   "error", check="omitted_confounder"),
        Diagnostic("treatment_coverage", 0.7, 0.5, True, "`asked_email_first` is defined for 70% of conversations."),
    ]
    refs = [Refutation("placebo_treatment", estimate, 0.0006, 0.6, True, "placebo effect +0.0006; passed."),
            Refutation("unobserved_confounder_robustness", estimate, -0.16, None, True, "robustness value 3.2%.")]
    bal = [BalanceRow(f"intent=i{k}", 0.3 - 0.01 * k, 0.04 - 0.001 * k, True) for k in range(6)]
    return EstimateResult(
        method="propensity_matching", estimand="ATT", outcome=outcome, estimate=estimate, std_error=se,
        ci_low=estimate - 1.96 * se, ci_high=estimate + 1.96 * se, p_value=p, n_treated=3400, n_control=3366,
        naive_estimate=estimate * 3, refutations=refs, balance=bal, diagnostics=diags,
        ci_method="bootstrap: 200 replicates; normal 95% interval estimate ± 1.96·SE, p from z = estimate/SE",
        plots={"propensity_overlap": magenta_png(), "balance_love_plot": magenta_png()},
    )


def matching_question(outcome: str = "resolved") -> Question:
    return Question(id="email_case", design="coexisting_variants", outcome=outcome, treatment="asked_email_first",
                    covariates=["intent"], description="Does asking for the email early change the outcome?")


def checks_of(result: EstimateResult):
    spec = REGISTRY[result.method]
    return evaluate_checks(spec.checks, result.diagnostics, result.balance, result.refutations, spec.name)


def stored_case(tmp_path: Path, result: EstimateResult | None = None, question: Question | None = None):
    """(store paths, question, result, check outcomes) with the result and its PNGs written."""
    result = result or matching_result()
    question = question or matching_question(result.outcome)
    paths = store_paths(tmp_path / "store.duckdb")
    checks = checks_of(result)
    write_result(paths.db, "run-1", question.id, result, message="two behaviours coexist", checks=checks)
    plot_paths(paths, question.id, result.plots, write=True)
    return paths, question, result, checks
