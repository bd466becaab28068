"""Answer one registered question: route it to its method, run the pre-flight, the method, the verdicts.

The walk is the same for every method and reads only the registry entry: pre-flight (may
refuse), the method's data pull and estimate (may refuse with ``MethodRefusal``), then every
catalogue check gets a state from the diagnostics, balance and refutations that name it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb

from checks.verdict import CheckOutcome, evaluate_checks
from configs.questions import Question
from convocausal.questions.confounding import shared_scans
from convocausal.questions.extraction_sensitivity import apply_extraction_sensitivity
from convocausal.questions.outcomes import question_outcomes
from convocausal.questions.preflight import Preflight, run_preflight
from convocausal.questions.registry import spec_for, why_method
from convocausal.questions.segment_scans import shared_segment_scans
from methods.result import Diagnostic, EstimateResult, MethodRefusal


@dataclass
class QuestionAnswer:
    question: Question
    method: str
    result: EstimateResult | None
    preflight: Preflight
    refusal: str | None = None
    info: dict = field(default_factory=dict)
    checks: list[CheckOutcome] = field(default_factory=list)

    @property
    def diagnostics(self) -> list[Diagnostic]:
        """Pre-flight diagnostics, the method's own, and the refusal when the method refused."""
        out = list(self.preflight.diagnostics) + (list(self.result.diagnostics) if self.result else [])
        if self.refusal and self.preflight.ok:  # refused by the method itself, after pre-flight passed
            out.append(Diagnostic("method_refusal", None, None, False, self.refusal, "error", check="sample_size"))
        return out

    @property
    def why(self) -> str:
        """Why this method, plus the design variant the method chose (e.g. synthetic control's prior weeks)."""
        detail = self.info.get("design_reason")
        return why_method(self.question) + (f" Design: {self.info.get('design')} — {detail}" if detail else "")


def answer_question(con: duckdb.DuckDBPyConnection, question: Question, catalog: list[dict],
                    seed: int = 0, relation: str = "signals") -> QuestionAnswer:
    # the guardrails' answers (question_outcomes) reuse the question's confounding scans, and a segment
    # column's levels one grouped scan per read
    with shared_scans(), shared_segment_scans():
        return _answer(con, question, catalog, seed, relation)


def _answer(con: duckdb.DuckDBPyConnection, question: Question, catalog: list[dict], seed: int,
            relation: str) -> QuestionAnswer:
    spec = spec_for(question)
    pre = run_preflight(con, question, catalog, spec.preflight, relation)
    if not pre.ok:
        answer = QuestionAnswer(question, spec.name, None, pre, refusal=pre.refusal)
    else:
        try:
            result, info = spec.run(con, question, relation, seed)
            if spec.after_estimate is not None:
                by_name = {row["name"]: row for row in catalog}
                result.diagnostics += spec.after_estimate(con, question, by_name, relation, result)
            answer = QuestionAnswer(question, spec.name, result, pre, info=info)
        except MethodRefusal as exc:
            answer = QuestionAnswer(question, spec.name, None, pre, refusal=str(exc))
    r = answer.result
    answer.checks = evaluate_checks(spec.checks, answer.diagnostics, r.balance if r else None,
                                    r.refutations if r else None, spec.name, answer.refusal)
    apply_extraction_sensitivity(con, spec, answer, relation, seed)  # issue 14: rerun without unsure intents
    answer.info["outcomes"] = question_outcomes(con, question, catalog, answer, seed, relation)  # issue 16
    return answer


def result_checks(result: EstimateResult) -> list[CheckOutcome]:
    """Check states of one method run outside a question (``convocausal estimate``): no pre-flight."""
    from convocausal.questions.registry import REGISTRY

    spec = REGISTRY[result.method]
    return evaluate_checks(spec.checks, result.diagnostics, result.balance, result.refutations, spec.name)
