"""Route a registered question to its method and feed it the data it needs.

The question's design decides the method (configs.questions.DESIGN_TO_METHOD); pre-flight
checks run first and may refuse. Each method gets only the columns it uses, pulled from the
``signals`` relation of a DuckDB connection: matching gets a narrow frame, synthetic control a
cohort × period panel aggregated in SQL, diff-in-diff a temp table it compresses to cells
itself. Nothing from the config reaches SQL unquoted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb

from checks.preflight import Preflight, q, run_preflight, treated_sql, window_sql
from configs.questions import Question
from methods.result import Diagnostic, EstimateResult, MethodRefusal


@dataclass
class QuestionAnswer:
    question: Question
    method: str
    result: EstimateResult | None
    preflight: Preflight
    refusal: str | None = None
    info: dict = field(default_factory=dict)

    @property
    def diagnostics(self) -> list[Diagnostic]:
        """Pre-flight diagnostics plus the method's own."""
        return list(self.preflight.diagnostics) + (list(self.result.diagnostics) if self.result else [])


def answer_question(con: duckdb.DuckDBPyConnection, question: Question, catalog: list[dict],
                    seed: int = 0, relation: str = "signals") -> QuestionAnswer:
    method = question.resolved_method
    pre = run_preflight(con, question, catalog, relation)
    if not pre.ok:
        return QuestionAnswer(question, method, None, pre, refusal=pre.refusal)
    runner = {"propensity_matching": _run_psm, "synthetic_control": _run_sc, "diff_in_diff": _run_did}[method]
    try:
        result, info = runner(con, question, relation, seed)
    except MethodRefusal as exc:
        return QuestionAnswer(question, method, None, pre, refusal=str(exc))
    return QuestionAnswer(question, method, result, pre, info=info)


def _run_psm(con, question: Question, relation: str, seed: int):
    from methods.psm import estimate_psm

    cols = [question.treatment, question.outcome, *question.covariates]
    where, params = window_sql(question)
    select = ", ".join(
        f"CAST({q(c)} AS DOUBLE) AS {q(c)}" if c in (question.treatment, question.outcome) else q(c)
        for c in dict.fromkeys(cols)
    )
    df = con.execute(
        f"SELECT {select} FROM {relation} WHERE {q(question.treatment)} IS NOT NULL "
        f"AND {q(question.outcome)} IS NOT NULL AND {where}",
        params,
    ).df()
    result = estimate_psm(df, treatment=question.treatment, outcome=question.outcome,
                          covariates=list(question.covariates), estimand=question.estimand,
                          caliper=question.caliper, seed=seed)
    return result, {"rows": len(df)}


def _run_sc(con, question: Question, relation: str, seed: int):
    from methods.panel import build_sc_panel
    from methods.synthetic_control import estimate_sc

    panel, info = build_sc_panel(
        con, relation, outcome=question.outcome, unit_by=list(question.unit_by), treated=dict(question.treated),
        launch=question.launch, time_bucket=question.time_bucket, min_volume=question.min_volume,
        window=question.window.model_dump() if question.window else None,
    )
    result = estimate_sc(panel, unit=info["unit_col"], time=info["time_col"], outcome=info["value_col"],
                         treated_units=info["treated_units"], launch=info["launch"], weight=info.get("weight_col"))
    result.outcome = question.outcome
    return result, info


def _run_did(con, question: Question, relation: str, seed: int):
    from methods.did import estimate_did

    sel, sel_params = treated_sql(question)
    where, params = window_sql(question)
    period = "week" if question.time_bucket == "week" else "date"
    keep = list(dict.fromkeys([*question.fixed_effects, *([question.cluster] if question.cluster else [])]))
    extra = "".join(f", {q(c)}" for c in keep if c not in (question.outcome, period))
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _did_rows AS SELECT CAST({q(question.outcome)} AS DOUBLE) AS {q(question.outcome)}, "
        f"CAST({sel} AS INTEGER) AS _treated, {q(period)} AS _period{extra} "
        f"FROM {relation} WHERE {q(question.outcome)} IS NOT NULL AND {where}",
        sel_params + params,
    )
    try:
        result = estimate_did((con, "_did_rows"), outcome=question.outcome, treated="_treated", time="_period",
                              launch=question.launch, fixed_effects=list(question.fixed_effects),
                              cluster=question.cluster, seed=seed)
    finally:
        con.execute("DROP TABLE IF EXISTS _did_rows")
    return result, {"period": period}
