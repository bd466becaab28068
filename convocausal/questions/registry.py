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
import math
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
from convocausal.questions.segment_scans import SEGMENT, known_levels, level_rows, per_level, prefill
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
    cli_aliases: tuple[str, ...] = ()  # earlier spellings of the subcommand, still accepted


# ============================================================================ propensity matching
ROW_COUNT = "__rows"  # the count column of grouped rows (no signal name starts with an underscore)
def _run_psm(con, question: Question, relation: str, seed: int):
    from methods.psm import estimate_psm

    cols = [question.treatment, question.outcome, *question.covariates]
    where, params = window_sql(question)
    select = ", ".join(
        f"CAST({q(c)} AS DOUBLE) AS {q(c)}" if c in (question.treatment, question.outcome) else q(c)
        for c in dict.fromkeys(cols)
    )
    # Grouped in DuckDB (one row per covariates × treatment × outcome, with its count): matching
    # works on those atoms anyway, and 10M rows never reach pandas. Sorted, so the atoms (and the
    # bootstrap's draws over them) come in the same order whatever order the parts are read in.
    df = con.execute(
        f"SELECT {select}, count(*) AS {ROW_COUNT} FROM {relation} WHERE {q(question.treatment)} IS NOT NULL "
        f"AND {q(question.outcome)} IS NOT NULL AND {where} GROUP BY ALL ORDER BY ALL",
        params,
    ).df()
    result = estimate_psm(df, treatment=question.treatment, outcome=question.outcome,
                          covariates=list(question.covariates), estimand=question.estimand,
                          caliper=question.caliper, seed=seed, weights=ROW_COUNT)
    return result, {"rows": int(df[ROW_COUNT].sum())}


def _psm_after(con, question: Question, by_name: dict, relation: str, result: EstimateResult) -> list[Diagnostic]:
    """The causal graph's backdoor set (DoWhy), then the left-out start signals measured against the estimate."""
    from convocausal.questions.confounding import confounding_diagnostics
    from convocausal.questions.graph import identify
    from convocausal.questions.preflight import turn_covariates

    graph = identify(question, list(by_name.values()), frozenset(turn_covariates(question, by_name)))
    where, params = window_sql(question)
    out = confounding_diagnostics(con, question, graph.unadjusted, relation, where, params, result,
                                  also_outcomes=[g.outcome for g in question.guardrails])
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
    from methods.did.compress import compress_from, compress_sets, validate_columns
    from methods.did.estimate import cell_keys, estimate_did_cells

    sel, sel_params = treated_sql(question)
    where, params = window_sql(question)
    period = "week" if question.time_bucket == "week" else "date"
    keep = list(dict.fromkeys([*question.fixed_effects, *([question.cluster] if question.cluster else [])]))
    extra = "".join(f", {q(c)}" for c in keep if c not in (question.outcome, period))
    y = q(question.outcome)

    def rows(source: str, level: str = "") -> str:  # the rows the method reads, as a subquery (no temp copy)
        return (f"(SELECT CAST({y} AS DOUBLE) AS {y}, CAST({sel} AS INTEGER) AS _treated, {q(period)} AS _period"
                f"{extra}{level} FROM {source} WHERE {y} IS NOT NULL AND {where}) AS _did_rows")

    fixed_effects = list(dict.fromkeys(question.fixed_effects))
    keys = cell_keys("_treated", None, "_period", fixed_effects, question.cluster)
    columns = [d[0] for d in con.execute(f"SELECT * FROM {rows(relation)} LIMIT 0", sel_params + params).description]
    validate_columns(columns, {"outcome": question.outcome, "treated": "_treated", "time": "_period",
                               "cluster": question.cluster,
                               **{f"fixed_effect[{i}]": f for i, f in enumerate(fixed_effects)}})
    if question.launch is None:
        raise ValueError("diff-in-diff needs post=COL, or time=COL with launch=VALUE (or event_time=COL)")

    def by_level(base: str, level_expr: str) -> pd.DataFrame:
        return compress_from(con, rows(base, f", {level_expr} AS {SEGMENT}"), question.outcome,
                             {**keys, SEGMENT: SEGMENT}, nullable=[SEGMENT], params=sel_params + params)

    def with_levels(base: str, level_exprs: list[str]) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
        names = [f"{SEGMENT}_{i}" for i in range(len(level_exprs))]
        levels = "".join(f", {e} AS {a}" for e, a in zip(level_exprs, names))
        return compress_sets(con, rows(base, levels), question.outcome, keys, names, level_role=SEGMENT,
                             params=sel_params + params)

    key = ("did_cells", y, sel, repr(sel_params), where, repr(params), period, extra, tuple(keys.items()))
    got = per_level(con, relation, key, by_level)
    if got is not None:
        cells = level_rows(got[1], got[0])
    else:
        # the question's segments take their cells from this scan too (GROUPING SETS), when their cells have
        # the same keys (the segment column is no fixed effect) and the pre-flight saw few enough levels
        from convocausal.questions.outcomes import MAX_SEGMENT_LEVELS

        also = [c for c in dict.fromkeys(question.segments) if c not in fixed_effects
                and (known_levels(con, relation, c) or MAX_SEGMENT_LEVELS + 1) <= MAX_SEGMENT_LEVELS]
        found, cells = prefill(con, relation, also, key, with_levels)
        if not found:
            cells = compress_from(con, rows(relation), question.outcome, keys, params=sel_params + params)
    result = estimate_did_cells(cells, outcome=question.outcome, treated="_treated", time="_period",
                                launch=question.launch, fixed_effects=fixed_effects, cluster=question.cluster,
                                seed=seed, time_bucket=period)
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


def _parse_pairs(text: str | None, flag: str, accept, rule: str, example: str) -> dict | None:
    """``KEY=NUMBER,KEY=NUMBER`` from a command-line flag; every number must pass ``accept``.

    The key is split at its last ``=`` so an arm label may itself hold one (``--shares``); an
    outcome column cannot (``--value``), the identifier check of the question rejects it later."""
    if not text:
        return None
    out = {}
    for part in split_list(text):
        key, sep, number = part.rpartition("=")
        try:
            value = float(number)
        except ValueError:
            value = float("nan")
        if not sep or not key or not accept(value):
            raise ConfigError(f"{flag} {text}: give {rule}, e.g. {example}")
        out[key] = value
    return out


def _parse_shares(text: str | None) -> dict | None:
    """``--shares 0=0.5,1=0.5``: the designed assignment share of each arm."""
    return _parse_pairs(text, "--shares", lambda v: v > 0, "ARM=SHARE pairs with positive shares", "0=0.5,1=0.5")


def _parse_value(text: str | None) -> dict | None:
    """``--value resolved=14,handle_minutes=-0.8``: a weight per outcome column (net value per arm)."""
    return _parse_pairs(text, "--value", math.isfinite, "OUTCOME=WEIGHT pairs with numeric weights",
                        "resolved=14,handle_minutes=-0.8")


def _randomized_common_cli(p: argparse.ArgumentParser) -> None:
    p.add_argument("--covariates", default="", help="comma-separated pre-period columns (known before assignment) "
                   "to adjust for; text columns are used as categories")
    p.add_argument("--baseline", default=None, metavar="ARM",
                   help="the arm the others are compared with (default: 0/false, else the most frequent arm)")
    p.add_argument("--shares", default=None, metavar="ARM=SHARE,…",
                   help="the design's arm shares for the sample-ratio check, e.g. 0=0.5,1=0.5 (default: equal)")
    p.add_argument("--secondary-outcomes", default="", metavar="COL,COL…",
                   help="further outcome columns for the per-arm table (`arms` in the JSON)")
    p.add_argument("--value", default=None, metavar="COL=WEIGHT,…",
                   help="weights per outcome column, e.g. resolved=14,handle_minutes=-0.8: adds a net-value row per "
                        "arm to the `arms` table, its interval carrying the outcomes' covariance")


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
                        secondary_outcomes=split_list(args.secondary_outcomes), cov_type=args.cov_type,
                        value=_parse_value(args.value))


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
                       shares=_parse_shares(args.shares), secondary_outcomes=split_list(args.secondary_outcomes),
                       value=_parse_value(args.value))


_RANDOMIZED_CHECKS = ("sample_size", "outcome_not_agent_controlled", "survivorship", "sample_ratio",
                      "randomization_balance")
_RANDOMIZED_COLUMNS = ("assignment", "uptake", "covariates", "secondary_outcomes")


# ============================================================================ measurement and mechanisms (issue 17)
# Three designs whose numbers need more than an outcome column: a judge score calibrated on a human-audited
# sample (judged_outcome), a routing policy valued from logs with their logging probabilities (logged_policy),
# and a total effect split at a mediator (mediation). Each runs from a question (fields in configs/questions.py)
# and from `convocausal estimate judge|policy|mediation`. Their secondary numbers (the raw and audit-only judge
# effects; IPS, SNIPS, logged mean, ESS; direct effects and the share mediated) travel to the store as
# diagnostics named MEASUREMENT_PREFIX + name (value = the estimate, the interval in the message), which the
# memo's "Measurement and mechanism" section reads (convocausal/report.py).
MEASUREMENT_PREFIX = "measured_"


def _measured(name: str, label: str, est, se=None, lo=None, hi=None, meaning: str = "") -> Diagnostic:
    import math

    def ok(v) -> bool:
        return v is not None and isinstance(v, (int, float)) and math.isfinite(v)

    text = f"{label}: {est:+.4f}" if ok(est) else f"{label}: not identified"
    if ok(est) and ok(lo) and ok(hi):
        text += f" (95% CI {lo:+.4f} to {hi:+.4f}" + (f", SE {se:.4f})" if ok(se) else ")")
    return Diagnostic(MEASUREMENT_PREFIX + name, float(est) if ok(est) else None, None, True,
                      text + (f". {meaning}" if meaning else ""), "warn", None)


def _rows(con, relation: str, select: list[str], where: list[str], question: Question, params=()) -> pd.DataFrame:
    w, wparams = window_sql(question)
    return con.execute(f"SELECT {', '.join(select)} FROM {relation} WHERE {' AND '.join([*where, w])}",
                       [*params, *wparams]).df()


# ---------------------------------------------------------------- judged outcome
def _judge_validate(question: Question) -> None:
    if not question.treatment:
        raise ValueError("a judged outcome needs `treatment` (a 0/1 column; the arms are compared by their means, "
                         "so the treatment should be randomized or as good as random)")
    if not question.score:
        raise ValueError("a judged outcome needs `score` (the automated judge's score column); `outcome` is the "
                         "human score, set on the audited conversations and null elsewhere")
    if question.score == question.outcome:
        raise ValueError("`score` (the judge) and `outcome` (the human score) name the same column")
    if question.treatment in (*question.bias_covariates, question.score, question.outcome):
        raise ValueError(f"`{question.treatment}` is the treatment, not a score or a bias covariate")


def _judge_preflight(con, question: Question, by_name: dict, relation: str):
    from methods.judge.estimate import MIN_AUDIT_PER_ARM

    if by_name.get(question.score, {}).get("kind") != "outcome":
        return [], (f"`score` {question.score} is a {by_name.get(question.score, {}).get('kind', '?')} signal: it must "
                    "be the judge's score of each conversation (an outcome column of the outcomes export)")
    t, s, h = q(question.treatment), q(question.score), q(question.outcome)
    where, params = window_sql(question)
    n1, n0, a1, a0 = con.execute(
        f"SELECT count(*) FILTER (WHERE {t} = 1), count(*) FILTER (WHERE {t} = 0), "
        f"count(*) FILTER (WHERE {t} = 1 AND {h} IS NOT NULL), count(*) FILTER (WHERE {t} = 0 AND {h} IS NOT NULL) "
        f"FROM {relation} WHERE {t} IS NOT NULL AND {s} IS NOT NULL AND {where}", params).fetchone()
    refusal = None
    if min(a1, a0) < MIN_AUDIT_PER_ARM:
        refusal = (f"too few human-audited conversations: {a1} treated and {a0} control have `{question.outcome}` "
                   f"(of {n1} and {n0} with a judge score); the calibration needs at least {MIN_AUDIT_PER_ARM} per "
                   "arm: audit a random sample of each arm")
    return [Diagnostic("sample_size", float(min(a1, a0)), float(MIN_AUDIT_PER_ARM), refusal is None,
                       refusal or (f"{n1:,} treated and {n0:,} control conversations with a judge score; {a1:,} and "
                                   f"{a0:,} of them human-audited"), "error", check="sample_size")], refusal


def _run_judge(con, question: Question, relation: str, seed: int):
    from methods.judge import estimate_judge_effect

    t, s, h = question.treatment, question.score, question.outcome
    bias = [c for c in dict.fromkeys(question.bias_covariates) if c not in (t, s, h)]
    df = _rows(con, relation, ["conversation_id", f"CAST({q(t)} AS DOUBLE) AS {q(t)}",
                               f"CAST({q(s)} AS DOUBLE) AS {q(s)}", f"CAST({q(h)} AS DOUBLE) AS {q(h)}",
                               *(q(c) for c in bias)],
               [f"{q(t)} IS NOT NULL", f"{q(s)} IS NOT NULL"], question)
    audit = df.loc[df[h].notna(), ["conversation_id", h]]
    result = estimate_judge_effect(df.drop(columns=[h]), audit, treatment=t, judge=s, human=h,
                                   bias_covariates=bias, id_col="conversation_id")
    result.diagnostics += _judge_notes(result, s, h)
    return result, {"rows": len(df), "audited": len(audit)}


def _judge_notes(result: EstimateResult, score: str, human: str) -> list[Diagnostic]:
    eff = result.extras["effects"].set_index("effect")
    meaning = {
        "calibrated_ppi": f"the headline: `{score}` calibrated on the audit and corrected by the audit residuals "
                          f"(prediction-powered inference), in `{human}` units",
        "raw_judge": "the naive number: the judge's own score, carrying whatever the judge is biased by",
        "audit_only": f"`{human}` on the audited conversations alone: unbiased, the widest",
        "calibrated_plugin": "the calibration model's prediction alone, without the audit correction",
    }
    labels = {"calibrated_ppi": "calibrated effect", "raw_judge": "raw judge-score effect",
              "audit_only": "audit-sample effect", "calibrated_plugin": "calibration-only (plug-in) effect"}
    return [_measured(f"judge_{k}", labels[k], r["estimate"], r["std_error"], r["ci_low"], r["ci_high"], meaning[k])
            for k, r in eff.iterrows()]


# ---------------------------------------------------------------- logged policy
def _policy_validate(question: Question) -> None:
    missing = [f for f in ("action", "propensity_prefix", "policy") if getattr(question, f) in (None, "")]
    if missing:
        raise ValueError("a logged-policy question needs " + ", ".join(f"`{f}`" for f in missing) + " (the logged "
                         "action column, the prefix of its per-action logging probability columns, and the candidate "
                         "policy as rules)")
    if question.action == question.outcome:
        raise ValueError("`action` and `outcome` (the reward) name the same column")


def _policy_preflight(con, question: Question, by_name: dict, relation: str):
    from methods.ope.estimate import MIN_ROWS, NO_PROPENSITIES, propensity_columns

    prefix = question.propensity_prefix
    cols = propensity_columns(list(by_name), prefix)
    if not cols:
        return [], (f"{NO_PROPENSITIES}: no signals column starts with `{prefix}` (configure one downstream outcome "
                    f"`{prefix}<action>` per action in the signals config)")
    bad = [f"`{c}` ({by_name[c].get('kind')}, measured {by_name[c].get('measured_at')})"
           for c in question.policy.columns() if c in by_name and by_name[c].get("measured_at") != "start"]
    absent = [c for c in question.policy.columns() if c not in by_name]
    if absent:
        return [], (f"the policy's rules name {', '.join(f'`{c}`' for c in absent)}, not signals columns; available: "
                    + ", ".join(sorted(by_name)))
    if bad:
        return [], ("the policy's rules must read what the router knows when it decides, signals known at "
                    "conversation start; " + ", ".join(bad) + " are not")
    unlogged = [a for a in question.policy.actions() if a not in cols]
    if unlogged:
        return [], (f"the candidate takes action(s) {', '.join(unlogged)} with no logging-probability column "
                    + ", ".join(f"`{prefix}{a}`" for a in unlogged) + f" (found: {', '.join(cols.values())}): the "
                    "logs say nothing about how often the logger took them")
    a, y = q(question.action), q(question.outcome)
    where, params = window_sql(question)
    n = con.execute(f"SELECT count(*) FROM {relation} WHERE {a} IS NOT NULL AND {y} IS NOT NULL AND {where}",
                    params).fetchone()[0]
    refusal = None if n >= MIN_ROWS else (f"{n} logged conversations with an action and a reward; at least {MIN_ROWS} "
                                          "are needed")
    return [Diagnostic("sample_size", float(n), float(MIN_ROWS), refusal is None,
                       refusal or f"{n:,} logged conversations with an action and a reward; logging probabilities in "
                       + ", ".join(f"`{c}`" for c in cols.values()), "error", check="sample_size")], refusal


def _run_policy(con, question: Question, relation: str, seed: int):
    from methods.ope import estimate_policy_value
    from methods.ope.estimate import propensity_columns

    schema = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()]
    props = list(propensity_columns(schema, question.propensity_prefix).values())
    cols = list(dict.fromkeys([question.action, *question.covariates, *question.policy.columns()]))
    df = _rows(con, relation, [*(q(c) for c in cols), f"CAST({q(question.outcome)} AS DOUBLE) AS {q(question.outcome)}",
                               *(f"CAST({q(c)} AS DOUBLE) AS {q(c)}" for c in props)],
               [f"{q(question.action)} IS NOT NULL", f"{q(question.outcome)} IS NOT NULL"], question)
    result = estimate_policy_value(df, action=question.action, reward=question.outcome, propensity=None,
                                   propensity_prefix=question.propensity_prefix, policy=question.policy.as_plain(),
                                   context=list(question.covariates), seed=seed)
    result.diagnostics += _policy_notes(result)
    return result, {"rows": len(df)}


def _policy_notes(result: EstimateResult) -> list[Diagnostic]:
    tab = result.extras["estimators"].set_index("estimator")
    meaning = {"doubly_robust": "the headline: reward model plus inverse-propensity correction",
               "ips": "inverse propensity weighting alone", "snips": "self-normalised IPS",
               "logged_mean": "the logging policy's own mean reward (the naive number for a new policy)",
               "dr_minus_logged": "the candidate's gain over the logging policy"}
    labels = {"doubly_robust": "doubly robust value", "ips": "IPS value", "snips": "SNIPS value",
              "logged_mean": "logged mean reward", "dr_minus_logged": "improvement over the logger"}
    out = [_measured(f"policy_{k}", labels[k], r["value"], r["std_error"], r["ci_low"], r["ci_high"], meaning[k])
           for k, r in tab.iterrows()]
    ess, n = result.extras["effective_sample_size"], result.n_treated + result.n_control
    share = ", ".join(f"{a} {v:.0%}" for a, v in result.extras["candidate_action_share"].items())
    out.append(Diagnostic(MEASUREMENT_PREFIX + "policy_effective_sample_size", float(ess), None, True,
                          f"effective sample size: {ess:,.0f} of {n:,} logged conversations; the candidate's "
                          f"actions: {share}", "warn", None))
    return out


# ---------------------------------------------------------------- mediation
def _mediation_validate(question: Question) -> None:
    if len(question.mediators) != 1:
        raise ValueError("a mediation question needs `mediators: [COL]` with one 0/1 signal (a tool call, a "
                         "behaviour) the treatment may work through")
    rollout = bool(question.treated or question.launch)
    if bool(question.treatment) == rollout:
        raise ValueError("a mediation question names either `treatment` (a behaviour) or `treated` with `launch` "
                         "(a rollout), not both and not neither")
    if rollout and not (question.treated and question.launch):
        raise ValueError("a rollout mediation needs both `treated` and `launch`")
    if rollout and question.time_bucket == "hour":
        raise ValueError("a rollout mediation takes time_bucket `week` or `date`")
    m = question.mediators[0]
    if m in (question.treatment, question.outcome, *question.covariates):
        raise ValueError(f"mediator `{m}` is also the treatment, the outcome or a covariate")


def _mediation_preflight(con, question: Question, by_name: dict, relation: str):
    from methods.mediation.estimate import MIN_CELL

    m = question.mediators[0]
    row = by_name.get(m, {})
    if row.get("measured_at") == "start":
        return [], (f"mediator `{m}` is known at conversation start, so the treatment cannot move it: it is a "
                    "confounder (put it in `covariates`), not a mediator")
    if row.get("kind") not in ("tool", "behaviour"):
        return [], (f"mediator `{m}` is a {row.get('kind', '?')} signal; a mediator is something that happens in "
                    "the conversation after the treatment (a tool call or a behaviour)")
    t_sql, params = _mediation_treatment(question)
    where, wparams = window_sql(question)
    y, ms = q(question.outcome), _mediator_sql(m, row)
    cells = con.execute(
        f"SELECT count(*) FILTER (WHERE _t = 0 AND _m = 0), count(*) FILTER (WHERE _t = 0 AND _m = 1), "
        f"count(*) FILTER (WHERE _t = 1 AND _m = 0), count(*) FILTER (WHERE _t = 1 AND _m = 1) FROM "
        f"(SELECT {t_sql} AS _t, {ms} AS _m FROM {relation} WHERE {y} IS NOT NULL AND {where}) WHERE _t IS NOT NULL",
        [*params, *wparams]).fetchone()
    needed = [c for i, c in enumerate(cells) if i != 1 or c > 0]  # (t=0, m=1) may be empty: a treatment-only tool
    smallest = min(needed)
    refusal = None if smallest >= MIN_CELL else (
        f"too few conversations in a treatment x mediator cell (t0/m0 {cells[0]}, t0/m1 {cells[1]}, t1/m0 {cells[2]}, "
        f"t1/m1 {cells[3]}); at least {MIN_CELL} in each are needed to separate the paths")
    return [Diagnostic("sample_size", float(smallest), float(MIN_CELL), refusal is None,
                       refusal or (f"treatment x mediator `{m}` cells: t0/m0 {cells[0]:,}, t0/m1 {cells[1]:,}, "
                                   f"t1/m0 {cells[2]:,}, t1/m1 {cells[3]:,}"), "error", check="sample_size")], refusal


def _mediator_sql(m: str, row: dict) -> str:
    """0/1: a tool was called (true), or a behaviour happened at all (early or later; null = never)."""
    return f"CAST({q(m)} IS NOT NULL AS INTEGER)" if row.get("kind") == "behaviour" else \
        f"CAST(coalesce(CAST({q(m)} AS BOOLEAN), FALSE) AS INTEGER)"


def _mediation_treatment(question: Question) -> tuple[str, list]:
    """The 0/1 treatment: the behaviour column, or (a rollout) in the treated group on or after the launch."""
    if question.treatment:
        return f"CAST({q(question.treatment)} AS INTEGER)", []
    sel, params = treated_sql(question)
    return f"CAST(({sel}) AND CAST(date AS DATE) >= ? AS INTEGER)", [*params, question.launch]


def _run_mediation(con, question: Question, relation: str, seed: int):
    from methods.mediation import estimate_mediation

    m = question.mediators[0]
    kind = con.execute(f"SELECT column_type FROM (DESCRIBE SELECT {q(m)} FROM {relation})").fetchone()[0]
    row = {"kind": "behaviour" if kind.upper().startswith(("TINYINT", "INT", "SMALLINT")) else "tool"}
    t_sql, params = _mediation_treatment(question)
    covs = list(question.covariates)
    tname = question.treatment or "treated_after_launch"
    select = [f"{t_sql} AS {q(tname)}", f"{_mediator_sql(m, row)} AS {q(m)}",
              f"CAST({q(question.outcome)} AS DOUBLE) AS {q(question.outcome)}", *(q(c) for c in covs)]
    info = {"form": "behaviour" if question.treatment else "rollout"}
    if not question.treatment:  # a rollout: the treated group and the period as covariates (two-way fixed effects)
        sel, sel_params = treated_sql(question)
        period = "week" if question.time_bucket == "week" else "date"
        select += [f"CAST({sel} AS INTEGER) AS _group", f"CAST({q(period)} AS VARCHAR) AS _period"]
        params = [*params, *sel_params]
        covs += ["_group", "_period"]
        info["period"] = period
    w, wparams = window_sql(question)
    df = con.execute(f"SELECT {', '.join(select)} FROM {relation} WHERE {q(question.outcome)} IS NOT NULL AND {w}",
                     [*params, *wparams]).df().dropna(subset=[tname])
    result = estimate_mediation(df, treatment=tname, outcome=question.outcome, mediator=m, covariates=covs, seed=seed)
    result.diagnostics += _mediation_notes(result, m)
    return result, info


def _mediation_notes(result: EstimateResult, mediator: str) -> list[Diagnostic]:
    from methods.mediation.estimate import NOTE

    tab = result.extras["effects"].set_index("effect")
    rows = [("total", "total effect", "what the treatment did, by every path (the number to decide on)"),
            ("cde_0", "controlled direct effect, mediator off",
             f"the effect if `{mediator}` were held off for everyone"),
            ("cde_1", "controlled direct effect, mediator on", f"the effect if `{mediator}` were forced on for everyone"),
            ("nde", "natural direct effect", f"the effect with `{mediator}` left as it would be untreated"),
            ("nie", "indirect effect", f"the part that runs through `{mediator}`"),
            ("share_mediated", "share mediated", "indirect / (natural direct + indirect)")]
    out = [_measured(f"mediation_{k}", label, tab.loc[k, "estimate"], tab.loc[k, "std_error"], tab.loc[k, "ci_low"],
                     tab.loc[k, "ci_high"], meaning) for k, label, meaning in rows if k in tab.index]
    out.append(Diagnostic(MEASUREMENT_PREFIX + "mediation_note", None, None, True, NOTE, "warn", None))
    return out


def _ope_cli(p: argparse.ArgumentParser) -> None:
    p.add_argument("--action", required=True, metavar="COL", help="the action the logging policy took in each row")
    p.add_argument("--propensity-prefix", default=None, metavar="PREFIX",
                   help="the logging probability of action `a`, P(a | context) recorded at decision time, is in column "
                        "PREFIX + a (one column per action; without logging probabilities the method refuses: the "
                        "logs alone cannot value a new policy)")
    p.add_argument("--propensity", default=None, metavar="COL",
                   help="instead of --propensity-prefix: one column holding the logged action's probability")
    p.add_argument("--reward", required=True, metavar="COL", help="numeric reward of each logged row")
    p.add_argument("--policy", required=True, type=Path, metavar="POLICY.yaml",
                   help="the candidate policy as data: ordered rules `{rules: [{when: {COL: {gt: 1.0}}, action: A}], "
                        "default: B}`, first match wins; operators gt ge lt le eq in")
    p.add_argument("--covariates", "--context", dest="context", default="", metavar="COL,COL…",
                   help="context columns of the doubly robust reward model (one regression per action)")


def _ope_from_args(df: pd.DataFrame, args) -> EstimateResult:
    from configs.policy import load_policy
    from methods.ope import estimate_policy_value

    policy = load_policy(args.policy)
    missing = [c for c in policy.columns() if c not in df.columns]
    if missing:
        raise ConfigError(f"--policy {args.policy}: the rules name column(s) {', '.join(missing)} that --data "
                          f"{args.data} lacks; available: {', '.join(map(str, df.columns))}")
    if args.propensity_prefix and args.propensity:
        raise ConfigError("give --propensity-prefix (one column per action) or --propensity (the logged action's), "
                          "not both")
    return estimate_policy_value(df, action=args.action, reward=args.reward, propensity=args.propensity,
                                 propensity_prefix=args.propensity_prefix, policy=policy.as_plain(),
                                 context=split_list(args.context), seed=args.seed)




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
        name="logged_policy_evaluation", design="logged_policy", cli_name="policy", cli_aliases=("ope",),
        why=("the logs record which action the logging policy took and with what probability, so a new routing "
             "rule can be valued offline by reweighting the rows where it agrees with the logged action "
             "(inverse propensity weighting, doubly robust with a cross-fitted reward model)"),
        required=("action", "propensity_prefix", "policy"), column_fields=("action", "covariates"),
        preflight=_policy_preflight, run=_run_policy, validate=_policy_validate,
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
        required=("treatment", "score"), column_fields=("treatment", "score", "bias_covariates"),
        preflight=_judge_preflight, run=_run_judge, validate=_judge_validate,
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
        required=("mediators",), column_fields=("treatment", "treated", "covariates", "mediators"),
        preflight=_mediation_preflight, run=_run_mediation, validate=_mediation_validate,
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
