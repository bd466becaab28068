"""The method registry: one declaration per method, and the only list of methods there is.

An entry says everything the rest of the project needs to know about a method: its name, the
design alias a question may use instead, why it fits that design (for the memo), which question
fields it needs and which of them name signals columns, how its data is pulled from the signals
relation, its pre-flight, the checks it carries, and its ``convocausal estimate`` arguments.
The question loader, the router, the Dagster asset checks, the store, the memo and the command
line all read this table; nothing else spells out the method list.

Adding a method (say instrumental variables) is a subpackage ``methods/iv/`` with its pure
numerics and one ``MethodSpec`` here with its small adapters; a method that needs a question
field outside the shared vocabulary of ``configs/questions.py`` also adds that field there.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd

from checks.catalog import CATALOG
from configs.questions import ConfigError, Question, QuestionSet, load_questions, parse_questions
from convocausal.questions.cli_values import coerce_like, split_list
from convocausal.questions.preflight import (
    PreflightFn,
    matching_preflight,
    randomized_preflight,
    rollout_preflight,
    treated_sql,
    window_sql,
)
from methods.result import Diagnostic, EstimateResult
from methods.sql import quote_ident as q

# (con, question, relation, seed) -> (result, info); info carries design notes for the memo
RunFn = Callable[[duckdb.DuckDBPyConnection, Question, str, int], tuple[EstimateResult, dict]]
# (con, question, catalog rows by name, relation, result) -> diagnostics judged against the estimate
AfterFn = Callable[[duckdb.DuckDBPyConnection, Question, dict, str, EstimateResult], list[Diagnostic]]


@dataclass(frozen=True)
class MethodSpec:
    name: str  # the store's and the JSON's `method` value
    design: str  # the alias a question may give as `design:`
    cli_name: str  # `convocausal estimate <cli_name>`
    why: str  # why this method fits the design, in words for the memo
    required: tuple[str, ...]  # question fields that must be set
    column_fields: tuple[str, ...]  # question fields whose values are signals columns
    preflight: PreflightFn
    run: RunFn
    checks: tuple[str, ...]  # catalogue checks this method carries
    add_cli_arguments: Callable[[argparse.ArgumentParser], None]
    estimate_from_args: Callable[[pd.DataFrame, argparse.Namespace], EstimateResult]
    cli_column_args: tuple[str, ...] = ()  # CLI arguments that name columns of --data (checked first)
    validate: Callable[[Question], None] | None = None  # shape rules beyond `required`
    after_estimate: AfterFn | None = None  # checks that need the estimate (e.g. omitted confounders)
    cli_help: str = ""


# ============================================================================ propensity matching
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


def _psm_after(con, question: Question, by_name: dict, relation: str, result: EstimateResult) -> list[Diagnostic]:
    """The causal graph's backdoor set (DoWhy), then the left-out start signals measured against the estimate."""
    from convocausal.questions.confounding import confounding_diagnostics
    from convocausal.questions.graph import identify
    from convocausal.questions.preflight import turn_covariates

    graph = identify(question, list(by_name.values()), frozenset(turn_covariates(question, by_name)))
    where, params = window_sql(question)
    out = confounding_diagnostics(con, question, graph.unadjusted, relation, where, params, result)
    mediators = ", ".join(graph.mediators[:12]) + (" …" if len(graph.mediators) > 12 else "")
    out.append(Diagnostic(
        "causal_graph", float(len(graph.unadjusted)), 0.0, True,
        (f"Causal graph from the signal catalogue: every start signal → {graph.treatment} and → {graph.outcome}; "
         f"{graph.treatment} → {graph.outcome}; {graph.treatment} → later signals ({mediators or 'none'}) → "
         f"{graph.outcome}. DoWhy's backdoor adjustment set: {', '.join(graph.backdoor_set) or 'empty'}. "
         + ("The covariates block every backdoor path." if graph.covariates_valid else
            f"The covariates leave open the paths through {', '.join(graph.unadjusted)}; "
            "the omitted_confounder check measures whether they move the estimate.")),
        "warn",
    ))
    result.extras["causal_graph_dot"] = graph.to_dot()
    return out


def _psm_cli(p: argparse.ArgumentParser) -> None:
    p.add_argument("--treatment", required=True)
    p.add_argument("--outcome", required=True)
    p.add_argument("--covariates", required=True)
    p.add_argument("--estimand", choices=["ATT", "ATE"], default="ATT")


def _psm_from_args(df: pd.DataFrame, args) -> EstimateResult:
    from methods.psm import estimate_psm

    return estimate_psm(df, treatment=args.treatment, outcome=args.outcome,
                        covariates=split_list(args.covariates), estimand=args.estimand, seed=args.seed)


# ============================================================================ synthetic control
def _run_sc(con, question: Question, relation: str, seed: int):
    from methods.sc import estimate_sc
    from methods.sc.panel import build_sc_panel

    panel, info = build_sc_panel(
        con, relation, outcome=question.outcome, unit_by=list(question.unit_by), treated=dict(question.treated),
        launch=question.launch, time_bucket=question.time_bucket, min_volume=question.min_volume,
        window=question.window.model_dump() if question.window else None,
    )
    result = estimate_sc(panel, unit=info["unit_col"], time=info["time_col"], outcome=info["value_col"],
                         treated_units=info["treated_units"], launch=info["launch"], weight=info.get("weight_col"))
    result.outcome = question.outcome
    return result, info


def _sc_validate(question: Question) -> None:
    if not question.unit_by:
        raise ValueError("synthetic control needs `unit_by` (the columns that define cohorts)")


def _sc_cli(p: argparse.ArgumentParser) -> None:
    p.add_argument("--unit", required=True)
    p.add_argument("--time", required=True)
    p.add_argument("--outcome", required=True)
    p.add_argument("--treated", required=True, help="treated unit(s), comma-separated")
    p.add_argument("--launch", required=True)
    p.add_argument("--weight", default=None, help="optional volume column")


def _sc_from_args(df: pd.DataFrame, args) -> EstimateResult:
    from methods.sc import estimate_sc

    treated = coerce_like(df[args.unit], split_list(args.treated))
    launch = coerce_like(df[args.time], [args.launch])[0]
    return estimate_sc(df, unit=args.unit, time=args.time, outcome=args.outcome,
                       treated_units=treated, launch=launch, weight=args.weight)


# ============================================================================ diff-in-diff
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
                              cluster=question.cluster, seed=seed, time_bucket=period)
    finally:
        con.execute("DROP TABLE IF EXISTS _did_rows")
    return result, {"period": period}


def _did_validate(question: Question) -> None:
    if question.time_bucket == "hour":
        raise ValueError("diff-in-diff takes time_bucket `week` or `date`")


def _did_cli(p: argparse.ArgumentParser) -> None:
    p.add_argument("--outcome", required=True)
    p.add_argument("--treated", required=True)
    p.add_argument("--post", default=None)
    p.add_argument("--time", default=None)
    p.add_argument("--launch", default=None)
    p.add_argument("--fixed-effects", default="")
    p.add_argument("--cluster", default=None)


def _did_from_args(df: pd.DataFrame, args) -> EstimateResult:
    from methods.did import estimate_did

    if not args.post and not (args.time and args.launch is not None):
        raise ConfigError("did needs --post COL, or --time COL with --launch VALUE")
    launch = coerce_like(df[args.time], [args.launch])[0] if args.time and args.launch is not None else None
    return estimate_did(df, outcome=args.outcome, treated=args.treated, post=args.post, time=args.time,
                        launch=launch, fixed_effects=split_list(args.fixed_effects), cluster=args.cluster,
                        seed=args.seed)


# ============================================================================ randomized designs
def _randomized_rows(con, question: Question, relation: str) -> str:
    """The question's columns and window as a private temp table (values bound, names quoted).

    Every assigned row is kept, outcome or not: the sample-ratio and balance checks count all of
    them. The method compresses this table to cells inside DuckDB; rows never reach pandas."""
    import uuid

    cols = list(dict.fromkeys([question.outcome, *question.secondary_outcomes, question.assignment,
                               *([question.uptake] if question.uptake else []), *question.covariates]))
    name = f"_randomized_{uuid.uuid4().hex[:12]}"
    where, params = window_sql(question)
    con.execute(f"CREATE TEMP TABLE {name} AS SELECT {', '.join(q(c) for c in cols)} FROM {relation} WHERE {where}",
                params)
    return name


def _shares(question: Question) -> dict | None:
    return dict(question.assignment_shares) if question.assignment_shares else None


def _run_itt(con, question: Question, relation: str, seed: int):
    from methods.randomized import estimate_itt

    name = _randomized_rows(con, question, relation)
    try:
        result = estimate_itt((con, name), outcome=question.outcome, assignment=question.assignment,
                              covariates=list(question.covariates), uptake=question.uptake,
                              baseline=question.baseline, shares=_shares(question),
                              secondary_outcomes=list(question.secondary_outcomes))
    finally:
        con.execute(f"DROP TABLE IF EXISTS {name}")
    return result, {"baseline": result.extras["baseline"], "arm": result.extras["arm"]}


def _run_iv(con, question: Question, relation: str, seed: int):
    from methods.randomized import estimate_iv

    name = _randomized_rows(con, question, relation)
    try:
        result = estimate_iv((con, name), outcome=question.outcome, treatment=question.uptake,
                             instrument=question.assignment, covariates=list(question.covariates),
                             baseline=question.baseline, shares=_shares(question),
                             secondary_outcomes=list(question.secondary_outcomes))
    finally:
        con.execute(f"DROP TABLE IF EXISTS {name}")
    return result, {"baseline": result.extras["baseline"], "arm": result.extras["arm"]}


def _randomized_validate(question: Question) -> None:
    if question.treatment:
        raise ValueError("a randomized design names the arm column `assignment` and the column saying whether the "
                         "treatment was used `uptake`, not `treatment`")
    if question.uptake and question.uptake == question.assignment:
        raise ValueError("`uptake` and `assignment` name the same column")
    for name in (question.assignment, question.uptake):
        if name and name in question.covariates:
            raise ValueError(f"`{name}` is the assignment or the uptake, not a covariate")


def _parse_shares(text: str | None) -> dict | None:
    if not text:
        return None
    out = {}
    for part in split_list(text):
        arm, sep, share = part.rpartition("=")
        try:
            value = float(share)
        except ValueError:
            value = float("nan")
        if not sep or not arm or not value > 0:
            raise ConfigError(f"--shares {text}: give ARM=SHARE pairs with positive shares, e.g. 0=0.5,1=0.5")
        out[arm] = value
    return out


def _randomized_common_cli(p: argparse.ArgumentParser) -> None:
    p.add_argument("--covariates", default="", help="comma-separated pre-period columns (known before assignment) "
                   "to adjust for; text columns are used as categories")
    p.add_argument("--baseline", default=None, metavar="ARM",
                   help="the arm the others are compared with (default: 0/false, else the most frequent arm)")
    p.add_argument("--shares", default=None, metavar="ARM=SHARE,…",
                   help="the design's arm shares for the sample-ratio check, e.g. 0=0.5,1=0.5 (default: equal)")
    p.add_argument("--secondary-outcomes", default="", metavar="COL,COL…",
                   help="further outcome columns for the per-arm table (`arms` in the JSON)")


def _itt_cli(p: argparse.ArgumentParser) -> None:
    p.add_argument("--outcome", required=True)
    p.add_argument("--assignment", required=True, metavar="COL",
                   help="the randomized arm of each row (0/1, true/false or arm names)")
    p.add_argument("--uptake", default=None, metavar="COL",
                   help="optional 0/1 column: the treatment was actually used (adds the Wald TOT/LATE to the JSON)")
    p.add_argument("--cov-type", choices=["HC2", "HC1"], default="HC2",
                   help="robust standard errors of the adjusted estimate (default HC2)")
    _randomized_common_cli(p)


def _itt_from_args(df: pd.DataFrame, args) -> EstimateResult:
    from methods.randomized import estimate_itt

    return estimate_itt(df, outcome=args.outcome, assignment=args.assignment, covariates=split_list(args.covariates),
                        uptake=args.uptake, baseline=args.baseline, shares=_parse_shares(args.shares),
                        secondary_outcomes=split_list(args.secondary_outcomes), cov_type=args.cov_type)


def _iv_cli(p: argparse.ArgumentParser) -> None:
    p.add_argument("--outcome", required=True)
    p.add_argument("--treatment", required=True, help="0/1 (or true/false) column: the treatment was actually used")
    p.add_argument("--instrument", required=True, metavar="COL",
                   help="the randomized assignment of each row (0/1, true/false or arm names)")
    _randomized_common_cli(p)


def _iv_from_args(df: pd.DataFrame, args) -> EstimateResult:
    from methods.randomized import estimate_iv

    return estimate_iv(df, outcome=args.outcome, treatment=args.treatment, instrument=args.instrument,
                       covariates=split_list(args.covariates), baseline=args.baseline,
                       shares=_parse_shares(args.shares), secondary_outcomes=split_list(args.secondary_outcomes))


_RANDOMIZED_CHECKS = ("sample_size", "outcome_not_agent_controlled", "survivorship", "sample_ratio",
                      "randomization_balance")
_RANDOMIZED_COLUMNS = ("assignment", "uptake", "covariates", "secondary_outcomes")


# ============================================================================ CLI-only methods (issue 17)
def _cli_only(cli_name: str) -> tuple[PreflightFn, RunFn]:
    """Pre-flight and run of a method not yet wired into the question pipeline: both refuse, saying where it runs."""
    reason = (f"this design is available only via `convocausal estimate {cli_name}` for now; "
              "it does not yet run from a question")

    def preflight(con, question: Question, by_name: dict, relation: str):
        return [], reason

    def run(con, question: Question, relation: str, seed: int):
        from methods.result import MethodRefusal

        raise MethodRefusal(reason)

    return preflight, run


def _ope_cli(p: argparse.ArgumentParser) -> None:
    p.add_argument("--action", required=True, metavar="COL", help="the action the logging policy took in each row")
    p.add_argument("--propensity", default=None, metavar="COL",
                   help="the logging probability of the logged action, P(action | context), recorded at decision "
                        "time (without it the method refuses: the logs alone cannot value a new policy)")
    p.add_argument("--reward", required=True, metavar="COL", help="numeric reward of each logged row")
    p.add_argument("--policy", required=True, type=Path, metavar="POLICY.yaml",
                   help="the candidate policy as data: ordered rules `{rules: [{when: {COL: {gt: 1.0}}, action: A}], "
                        "default: B}`, first match wins; operators gt ge lt le eq in")
    p.add_argument("--context", "--covariates", dest="context", default="", metavar="COL,COL…",
                   help="context columns of the doubly robust reward model (one regression per action)")


def _ope_from_args(df: pd.DataFrame, args) -> EstimateResult:
    from configs.policy import load_policy
    from methods.ope import estimate_policy_value

    policy = load_policy(args.policy)
    missing = [c for c in policy.columns() if c not in df.columns]
    if missing:
        raise ConfigError(f"--policy {args.policy}: the rules name column(s) {', '.join(missing)} that --data "
                          f"{args.data} lacks; available: {', '.join(map(str, df.columns))}")
    return estimate_policy_value(df, action=args.action, reward=args.reward, propensity=args.propensity,
                                 policy=policy.as_plain(), context=split_list(args.context), seed=args.seed)


_OPE_PREFLIGHT, _OPE_RUN = _cli_only("ope")


def _judge_cli(p: argparse.ArgumentParser) -> None:
    p.add_argument("--treatment", required=True)
    p.add_argument("--judge", "--score", dest="judge", required=True, metavar="COL",
                   help="the automated (LLM-judge) score of each conversation")
    p.add_argument("--audit", required=True, type=Path, metavar="FILE",
                   help="human-audited sample (.parquet or .csv): conversation_id and the human score, joined to "
                        "--data by conversation_id; a random sample within each arm")
    p.add_argument("--human", default="human_score", metavar="COL",
                   help="the human score column of --audit (default human_score)")
    p.add_argument("--bias-covariates", default="", metavar="COL,COL…",
                   help="columns the judge may be biased by (e.g. response_length), used in the calibration model")
    p.add_argument("--id", dest="id_col", default="conversation_id", metavar="COL",
                   help="the conversation id column of both tables (default conversation_id)")


def _judge_from_args(df: pd.DataFrame, args) -> EstimateResult:
    from convocausal.cli_common import UsageError
    from convocausal.cli_estimate import read_table
    from methods.judge import estimate_judge_effect

    try:
        audit = read_table(args.audit)
    except UsageError as exc:
        raise UsageError(str(exc).replace("--data", "--audit", 1)) from None
    for frame, cols, opt in ((df, [args.id_col], "--data"), (audit, [args.id_col, args.human], "--audit")):
        missing = [c for c in cols if c not in frame.columns]
        if missing:
            raise UsageError(f"{opt} {args.data if opt == '--data' else args.audit}: no column {', '.join(missing)}; "
                             f"available: {', '.join(map(str, frame.columns))}")
    return estimate_judge_effect(df, audit, treatment=args.treatment, judge=args.judge, human=args.human,
                                 bias_covariates=split_list(args.bias_covariates), id_col=args.id_col)


_JUDGE_PREFLIGHT, _JUDGE_RUN = _cli_only("judge")


def _mediation_cli(p: argparse.ArgumentParser) -> None:
    p.add_argument("--treatment", required=True)
    p.add_argument("--outcome", required=True)
    p.add_argument("--mediator", "--mediators", dest="mediator", required=True, metavar="COL",
                   help="0/1 (or true/false) column the treatment may work through, e.g. tool_lookup_order (one)")
    p.add_argument("--covariates", default="", help="comma-separated columns known before the treatment "
                   "(confounders of treatment, mediator and outcome); text columns are used as categories")


def _mediation_from_args(df: pd.DataFrame, args) -> EstimateResult:
    from methods.mediation import estimate_mediation

    mediators = split_list(args.mediator)
    if len(mediators) != 1:
        raise ConfigError(f"--mediator {args.mediator}: give exactly one 0/1 mediator column")
    return estimate_mediation(df, treatment=args.treatment, outcome=args.outcome, mediator=mediators[0],
                              covariates=split_list(args.covariates), seed=args.seed)


_MEDIATION_PREFLIGHT, _MEDIATION_RUN = _cli_only("mediation")


# ============================================================================ the registry
_ROLLOUT_REQUIRED = ("treated", "launch")
_COMMON_CHECKS = ("sample_size", "outcome_not_agent_controlled", "survivorship", "refuters_passed")

REGISTRY: dict[str, MethodSpec] = {spec.name: spec for spec in (
    MethodSpec(
        name="propensity_matching", design="coexisting_variants", cli_name="psm",
        why=("two behaviours coexist in the logs, so conversations that were alike on everything that pushed "
             "the agent one way or the other can be compared (propensity matching)"),
        required=("treatment", "covariates"), column_fields=("treatment", "covariates"),
        preflight=matching_preflight, run=_run_psm,
        checks=(*_COMMON_CHECKS, "balance", "overlap", "hidden_confounder_risk", "omitted_confounder",
                "extraction_sensitivity"),
        after_estimate=_psm_after, add_cli_arguments=_psm_cli, estimate_from_args=_psm_from_args,
        cli_column_args=("treatment", "outcome", "covariates"),
        cli_help="propensity score matching on a table with a 0/1 treatment column",
    ),
    MethodSpec(
        name="synthetic_control", design="shipped_change", cli_name="sc",
        why=("a change shipped at a known date to some cohorts, so a weighted mix of cohorts it never reached "
             "gives the counterfactual trajectory (synthetic control)"),
        required=(*_ROLLOUT_REQUIRED, "unit_by"), column_fields=("treated", "unit_by"),
        preflight=rollout_preflight, run=_run_sc, validate=_sc_validate,
        checks=(*_COMMON_CHECKS, "pre_period_fit", "placebo_rank", "extraction_sensitivity"),
        add_cli_arguments=_sc_cli, estimate_from_args=_sc_from_args,
        cli_column_args=("unit", "time", "outcome", "weight"),  # --treated names units, not a column
        cli_help="synthetic control on a long unit x period panel",
    ),
    MethodSpec(
        name="diff_in_diff", design="partial_rollout", cli_name="did",
        why=("a feature reached a subset at a known date, so the treated group's change is compared with the "
             "untouched groups' change over the same weeks (difference-in-differences)"),
        required=_ROLLOUT_REQUIRED, column_fields=("treated", "fixed_effects", "cluster"),
        preflight=rollout_preflight, run=_run_did, validate=_did_validate,
        checks=(*_COMMON_CHECKS, "pre_trend", "extraction_sensitivity"),
        add_cli_arguments=_did_cli, estimate_from_args=_did_from_args,
        cli_column_args=("outcome", "treated", "post", "time", "cluster", "fixed_effects"),
        cli_help="difference-in-differences on rows with a 0/1 treated column",
    ),
    # A randomized question gets the ITT (what randomization identifies) unless it asks for the IV entry:
    # with `uptake` set, the ITT entry also reports the Wald TOT/LATE and first stage in its extras.
    MethodSpec(
        name="randomized_itt", design="randomized", cli_name="itt",
        why=("conversations were assigned to arms at random before they started, so the arms differ only by chance "
             "and by what the assignment did: the difference in outcomes between arms is the effect of being "
             "assigned (intent-to-treat), adjusted for pre-period covariates to narrow the interval"),
        required=("assignment",), column_fields=_RANDOMIZED_COLUMNS,
        preflight=randomized_preflight, run=_run_itt, validate=_randomized_validate,
        checks=(*_RANDOMIZED_CHECKS, "extraction_sensitivity"),
        add_cli_arguments=_itt_cli, estimate_from_args=_itt_from_args,
        cli_column_args=("outcome", "assignment", "uptake", "covariates", "secondary_outcomes"),
        cli_help="intent-to-treat effect of a randomized assignment (difference in means, or Lin-adjusted)",
    ),
    MethodSpec(
        name="randomized_iv", design="randomized_uptake", cli_name="iv",
        why=("conversations were assigned at random but not every assigned one used the treatment (and some "
             "unassigned ones did), so the assignment is an instrument for use: the effect of using it on those "
             "whose use followed the assignment is the intent-to-treat effect divided by the change in uptake "
             "(Wald / 2SLS)"),
        required=("assignment", "uptake"), column_fields=_RANDOMIZED_COLUMNS,
        preflight=randomized_preflight, run=_run_iv, validate=_randomized_validate,
        checks=(*_RANDOMIZED_CHECKS, "weak_instrument", "extraction_sensitivity"),
        add_cli_arguments=_iv_cli, estimate_from_args=_iv_from_args,
        cli_column_args=("outcome", "treatment", "instrument", "covariates", "secondary_outcomes"),
        cli_help="treatment-on-the-treated (Wald / 2SLS) with the randomized assignment as the instrument",
    ),
    MethodSpec(
        name="logged_policy_evaluation", design="logged_policy", cli_name="ope",
        why=("the logs record which action the logging policy took and with what probability, so a new routing "
             "rule can be valued offline by reweighting the rows where it agrees with the logged action "
             "(inverse propensity weighting, doubly robust with a cross-fitted reward model)"),
        required=(), column_fields=(),
        preflight=_OPE_PREFLIGHT, run=_OPE_RUN,
        checks=("sample_size", "outcome_not_agent_controlled", "policy_overlap"),
        add_cli_arguments=_ope_cli, estimate_from_args=_ope_from_args,
        cli_column_args=("action", "reward", "propensity", "context"),
        cli_help="value of a candidate routing policy (rules as data) from logs with logging propensities",
    ),
    MethodSpec(
        name="judge_calibration", design="judged_outcome", cli_name="judge",
        why=("the outcome is an automated judge's score and a random sample of conversations also has a human "
             "score, so the judge is calibrated on that sample and the audit's residuals correct what the "
             "calibration misses (prediction-powered inference)"),
        required=(), column_fields=(),
        preflight=_JUDGE_PREFLIGHT, run=_JUDGE_RUN,
        checks=("sample_size", "outcome_not_agent_controlled", "judge_bias_by_arm"),
        add_cli_arguments=_judge_cli, estimate_from_args=_judge_from_args,
        cli_column_args=("treatment", "judge", "bias_covariates"),
        cli_help="effect on a human-rated score from an automated judge's score calibrated on a human audit sample",
    ),
    MethodSpec(
        name="mediation", design="mediation", cli_name="mediation",
        why=("the question is about a mechanism (did the treatment work because a tool was called?), so the total "
             "effect is split into the effect with the mediator held fixed (controlled direct effect) and the part "
             "that runs through the mediator (regression-based mediation, bootstrap intervals); the "
             "mediator-adjusted number answers a different question from the total effect"),
        required=(), column_fields=(),
        preflight=_MEDIATION_PREFLIGHT, run=_MEDIATION_RUN,
        checks=("sample_size", "outcome_not_agent_controlled"),
        add_cli_arguments=_mediation_cli, estimate_from_args=_mediation_from_args,
        cli_column_args=("treatment", "outcome", "mediator", "covariates"),
        cli_help="total effect, controlled direct effect and share mediated through a 0/1 mediator",
    ),
)}
DESIGNS: dict[str, MethodSpec] = {spec.design: spec for spec in REGISTRY.values()}

for _spec in REGISTRY.values():  # a typo in an entry fails at import, not in a nightly run
    _unknown = [c for c in _spec.checks if c not in CATALOG]
    if _unknown:
        raise RuntimeError(f"method {_spec.name} names checks missing from checks/catalog.py: {_unknown}")
    _fields = set(Question.model_fields)
    if not set(_spec.required) | set(_spec.column_fields) <= _fields:
        raise RuntimeError(f"method {_spec.name} names question fields that do not exist: "
                           f"{sorted((set(_spec.required) | set(_spec.column_fields)) - _fields)}")


# ============================================================================ questions through the registry
def spec_for(question: Question) -> MethodSpec:
    """The method a question runs: its explicit `method`, else its `design`'s method."""
    if question.method:
        if question.method not in REGISTRY:
            raise ConfigError(f"question {question.id}: `method`: unknown method `{question.method}`; "
                              f"known: {', '.join(REGISTRY)}")
        return REGISTRY[question.method]
    if question.design:
        if question.design not in DESIGNS:
            raise ConfigError(f"question {question.id}: `design`: unknown design `{question.design}`; "
                              f"known: {', '.join(DESIGNS)}")
        return DESIGNS[question.design]
    raise ConfigError(f"question {question.id}: a question needs a `design` ({', '.join(DESIGNS)}) "
                      "or an explicit `method`")


def why_method(question: Question) -> str:
    spec = spec_for(question)
    how = (f"design `{question.design}`" if question.design and not question.method
           else f"method `{question.method}` set explicitly")
    return f"{spec.why}; chosen from {how}."


def question_columns(question: Question) -> dict[str, list[str]]:
    """Every signals column the question names, by role (for validation against the catalog)."""
    out = {"outcome": [question.outcome]}
    for name in spec_for(question).column_fields:
        value = getattr(question, name)
        out[name] = [] if value is None else [value] if isinstance(value, str) else list(value)
    return out


def check_shape(question: Question, source: str = "<questions>") -> None:
    """Raise ConfigError when the question lacks a field its method needs (names the field)."""
    spec = spec_for(question)
    missing = [f for f in spec.required if getattr(question, f) in (None, [], {}, "")]
    if missing:
        raise ConfigError(f"{source}: question {question.id}: {spec.name} needs "
                          + ", ".join(f"`{f}`" for f in missing) + _FIELD_HINTS.get(missing[0], ""))
    for col, values in (question.treated or {}).items():
        if not values or len(values) > 1000:
            raise ConfigError(f"{source}: question {question.id}: `treated.{col}` needs between 1 and 1000 values")
    if spec.validate:
        try:
            spec.validate(question)
        except ValueError as exc:
            raise ConfigError(f"{source}: question {question.id}: {exc}") from exc


_FIELD_HINTS = {
    "treatment": " (a behaviour column)",
    "covariates": " (pre-treatment signals)",
    "treated": " (column: [values]) to pick the treated group",
    "launch": " (the date the change shipped)",
    "unit_by": " (the columns that define cohorts)",
    "assignment": " (the column holding each conversation's randomized arm, known at conversation start)",
    "uptake": " (a 0/1 column: the treatment was actually used)",
}


def load_registry(path: str | Path | None = None) -> QuestionSet:
    """Read the questions config once and check every question against its method's needs."""
    qs = load_questions(path)
    for question in qs.questions:
        check_shape(question, str(path) if path else "questions.yaml")
    return qs


def parse_registry(text: str, source: str = "<questions>") -> QuestionSet:
    qs = parse_questions(text, source=source)
    for question in qs.questions:
        check_shape(question, source)
    return qs
