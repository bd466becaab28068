"""Decision-grade answers around one question (issue 16): guardrails, net value, segment effects.

Called once per question by ``answer.answer_question`` after the primary estimate; every extra
estimate re-runs the question through the same walk (pre-flight, the method, its after-estimate
checks, the verdicts) with one thing changed, so it gets the same design and the same checks:

* a **guardrail** replaces the outcome (``question.model_copy(update={"outcome": g.outcome})``);
  it is *harmed* when a one-sided test at α/m (Bonferroni over the question's m guardrails) says
  it is worse than its tolerance, *cleared* when the one-sided bound at α/m says it is not,
  *inconclusive* otherwise; the test's standard error is the method's, or its 95% interval's
  half-width / 1.96 when that is wider (a bootstrap or conformal interval), never sharper;
* **net value** (Σ weight × outcome): for the row-level methods (matching, randomized) a
  per-conversation value column is estimated as the outcome, so its interval carries the
  covariance of the outcomes; for the aggregate methods (synthetic control, diff-in-diff) the
  per-outcome estimates are combined with a conservative interval (outcomes perfectly
  correlated: the weighted interval ends add up), and the row says so;
* a **segment** restricts the question's relation to one level of a start-of-conversation
  column; a level with fewer than ``MIN_SEGMENT_ARM`` treated or control conversations is refused
  with that reason. Over the estimated levels: a forest plot, Cochran's Q with its p-value and
  I², and ``project_to``'s re-weighting to a target mix (independent segments).

* **several arms** (randomized designs with more than two arms): one row per arm and outcome
  against the baseline — the primary outcome, the secondary outcomes, every guardrail (its status
  per arm, at the same α/m) and the net value — in the method's decision estimand (ITT, Lin-adjusted
  when covariates are given; TOT/LATE for the IV entry). The net value per arm comes from the same
  per-conversation value column, so its interval carries the covariance of the outcomes; its rows
  also join the primary result's ``extras["arms"]`` table.

Rows come back as ``OutcomeRow``; the store writes them to ``question_outcomes`` with the question.
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import asdict, dataclass

import duckdb
import pandas as pd
from scipy import stats

from configs.questions import Question
from convocausal.questions.preflight import MIN_GROUP, treated_sql, window_sql
from convocausal.questions.segment_scans import segment_view
from methods.heterogeneity import cochran_q, forest_png, project
from methods.plots import unrendered
from methods.result import EstimateResult
from methods.sql import quote_ident as q

ALPHA = 0.05
MIN_SEGMENT_ARM = MIN_GROUP  # treated and control conversations a segment needs to be estimated
MAX_SEGMENT_LEVELS = 30  # levels per segment column; more is a column to bucket first
NET_VALUE = "net_value"
ROW_LEVEL_METHODS = ("propensity_matching", "randomized_itt", "randomized_iv")  # one row per conversation
ARM_METHODS = ("randomized_itt", "randomized_iv")  # their result carries the table ``extras["arms"]``
KINDS = ("guardrail", "net_value", "segment", "segment_heterogeneity", "segment_projection", "arm")
# question fields cleared on every derived question, so the derived run adds no rows of its own
_CLEARED = {"guardrails": [], "value": None, "segments": [], "project_to": None}


@dataclass
class OutcomeRow:
    kind: str  # one of KINDS
    name: str  # guardrail outcome, "net_value", "<column>=<level>", "<column>"; arm: ``arm_key`` JSON
    estimate: float | None
    std_error: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    n_treated: int
    n_control: int
    status: str  # guardrail: harmed|cleared|inconclusive|blocked|refused; else ok|conservative|blocked|refused
    message: str

    def as_dict(self) -> dict:
        return asdict(self)


def question_outcomes(con: duckdb.DuckDBPyConnection, question: Question, catalog: list[dict], primary,
                      seed: int = 0, relation: str = "signals") -> dict:
    """Every guardrail, net-value and segment row of ``question`` (``primary``: its QuestionAnswer).

    Returns the rows (``OutcomeRow``); the forest plots join the primary result's ``plots``. Nothing
    when the question asks for none of them or its own estimate was refused (no decision to qualify)."""
    multi = primary.result is not None and primary.method in ARM_METHODS and _arm_count(primary.result) > 2
    if not (question.guardrails or question.value or question.segments or multi) or primary.result is None:
        return []
    from convocausal.questions.answer import answer_question  # the same walk, one thing changed

    base = question.model_copy(update=_CLEARED)
    rows: list[OutcomeRow] = []
    plots: dict[str, bytes] = {}
    by_outcome: dict[str, EstimateResult | None] = {question.outcome: primary.result}
    m = len(question.guardrails)
    guard_answers = []
    for g in question.guardrails:
        sub = _unplotted(answer_question)(con, base.model_copy(update={"outcome": g.outcome}), catalog, seed, relation)
        by_outcome[g.outcome] = sub.result
        guard_answers.append((g, sub))
        rows.append(_guardrail_row(g, sub, m))
    if question.value:
        rows.append(_net_value(con, base, question.value, catalog, primary.method, seed, relation, by_outcome,
                               answer_question))
        if primary.method in ARM_METHODS:
            _join_net_value_arms(primary.result, by_outcome.get(NET_VALUE))
    if multi:
        rows += _arm_rows(question, primary, guard_answers, m)
    for col in question.segments:
        seg_rows, png = _segments(con, base, catalog, primary.method, col, seed, relation, answer_question,
                                  (question.project_to or {}).get(col))
        rows += seg_rows
        if png:
            plots[f"forest_{col}"] = png
    primary.result.plots.update(plots)
    return rows


# --- guardrails ----------------------------------------------------------------------------------

def _se(r: EstimateResult) -> float | None:
    """The estimate's standard error; where the method's is not finite, the 95% interval's width / 3.92."""
    se = _finite(r.std_error)
    if se and se > 0:
        return se
    lo, hi = _finite(r.ci_low), _finite(r.ci_high)
    return (hi - lo) / (2 * stats.norm.ppf(1 - ALPHA / 2)) if lo is not None and hi is not None and hi > lo else None


def _decision_se(r: EstimateResult) -> float | None:
    """The standard error a guardrail is tested with: the method's, or its interval's half-width / z when that is
    wider (diff-in-diff's wild cluster bootstrap, synthetic control's conformal interval), so a guardrail's verdict
    is never sharper than the method's own interval."""
    se = _se(r)
    lo, hi = _finite(r.ci_low), _finite(r.ci_high)
    if se is None or lo is None or hi is None or hi <= lo:
        return se
    return max(se, (hi - lo) / (2 * stats.norm.ppf(1 - ALPHA / 2)))


def _failed_errors(answer) -> list[str]:
    return [c.name for c in answer.checks if c.severity == "ERROR" and c.state == "failed"]


def _guardrail_basis(g, m: int) -> str:
    return (f"one-sided test at α = {ALPHA:g}/{m} = {ALPHA / m:.4g} (Bonferroni over {m} guardrail"
            f"{'s' if m > 1 else ''}); {g.better} is better, tolerance {g.tolerance:g}")


def _guardrail_status(g, estimate: float, se: float, m: int, failed: list[str]) -> tuple[str, str, float]:
    """(status, why, one-sided p) of guardrail ``g`` from one estimate and its standard error (module doc)."""
    level = ALPHA / m
    worse = estimate if g.better == "lower" else -estimate  # > 0: the change made it worse
    z = stats.norm.ppf(1 - level)
    p = float(stats.norm.sf((worse - g.tolerance) / se))  # H0: worse by at most the tolerance
    bound = worse + z * se  # one-sided upper bound of how much worse
    if failed:
        return "blocked", f"failed checks on this guardrail: {', '.join(failed)}", p
    if worse - z * se > g.tolerance:
        return "harmed", (f"worse by {abs(worse):.4g} (estimate {estimate:+.4f}), beyond its tolerance "
                          f"{g.tolerance:g}: p = {p:.3g} < {level:.4g}"), p
    if bound <= g.tolerance:
        return "cleared", (f"not worse beyond its tolerance: at most {bound:+.4g} worse "
                           f"(one-sided {100 * (1 - level):.4g}% bound)"), p
    return "inconclusive", (f"could be worse than its tolerance: up to {bound:+.4g} worse "
                            f"(one-sided {100 * (1 - level):.4g}% bound), harm not shown (p = {p:.3g})"), p


def _guardrail_row(g, sub, m: int) -> OutcomeRow:
    r = sub.result
    if r is None:
        return OutcomeRow("guardrail", g.outcome, None, None, None, None, None, 0, 0, "refused",
                          f"guardrail `{g.outcome}` could not be estimated: {sub.refusal}")
    se = _decision_se(r)
    base = _guardrail_basis(g, m)
    if se is None:
        return OutcomeRow("guardrail", g.outcome, _finite(r.estimate), None, _finite(r.ci_low), _finite(r.ci_high),
                          None, int(r.n_treated), int(r.n_control), "inconclusive",
                          f"`{g.outcome}`: no standard error, so harm cannot be tested; {base}")
    status, what, p = _guardrail_status(g, r.estimate, se, m, _failed_errors(sub))
    return OutcomeRow("guardrail", g.outcome, _finite(r.estimate), se, _finite(r.ci_low), _finite(r.ci_high), p,
                      int(r.n_treated), int(r.n_control), status, f"`{g.outcome}` {what}; {base}")


# --- net value -----------------------------------------------------------------------------------

def _value_sql(weights: dict) -> str:
    return " + ".join(f"({float(w)!r}) * CAST({q(o)} AS DOUBLE)" for o, w in weights.items() if w)


def _net_value(con, base: Question, value: dict, catalog, method: str, seed: int, relation: str, by_outcome: dict,
               answer_question) -> OutcomeRow:
    weights = {o: float(w) for o, w in value.items() if w}
    words = " ".join(f"{'−' if w < 0 else '+'} {abs(w):g} × {o}" for o, w in weights.items()).lstrip("+ ")
    if method in ROW_LEVEL_METHODS:
        view = f"_net_value_{uuid.uuid4().hex[:12]}"
        con.execute(f"CREATE OR REPLACE TEMP VIEW {view} AS SELECT *, {_value_sql(weights)} AS {NET_VALUE} "
                    f"FROM {relation}")
        by_name = {row["name"]: row for row in catalog}
        extended = list(catalog) + [{
            "name": NET_VALUE, "kind": "outcome", "measured_at": "end", "source": "the question's value weights",
            "agent_controlled": any(bool(by_name.get(o, {}).get("agent_controlled")) for o in weights),
            "dtype": "double", "turn_column": None}]
        try:
            sub = _unplotted(answer_question)(con, base.model_copy(update={"outcome": NET_VALUE, "secondary_outcomes": []}),
                                  extended, seed, view)
        finally:
            con.execute(f"DROP VIEW IF EXISTS {view}")
        r = sub.result
        by_outcome[NET_VALUE] = r
        if r is None:
            return OutcomeRow("net_value", NET_VALUE, None, None, None, None, None, 0, 0, "refused",
                              f"net value ({words}) could not be estimated: {sub.refusal}")
        failed = _failed_errors(sub)
        return OutcomeRow("net_value", NET_VALUE, _finite(r.estimate), _finite(r.std_error), _finite(r.ci_low),
                          _finite(r.ci_high), _finite(r.p_value), int(r.n_treated), int(r.n_control),
                          "blocked" if failed else "ok",
                          f"net value per conversation = {words}, estimated as one per-conversation outcome with the "
                          "question's method (its interval carries the covariance of the outcomes; conversations "
                          "missing any weighted outcome are left out)"
                          + (f"; failed checks: {', '.join(failed)}" if failed else ""))
    parts, refused = {}, []
    for o in weights:
        if o not in by_outcome:
            sub = _unplotted(answer_question)(con, base.model_copy(update={"outcome": o}), catalog, seed, relation)
            by_outcome[o] = sub.result
        if by_outcome[o] is None:
            refused.append(o)
        else:
            parts[o] = by_outcome[o]
    if refused:
        return OutcomeRow("net_value", NET_VALUE, None, None, None, None, None, 0, 0, "refused",
                          f"net value ({words}) needs every weighted outcome; refused: {', '.join(refused)}")
    est = sum(w * parts[o].estimate for o, w in weights.items())
    lo = sum(w * (parts[o].ci_low if w > 0 else parts[o].ci_high) for o, w in weights.items())
    hi = sum(w * (parts[o].ci_high if w > 0 else parts[o].ci_low) for o, w in weights.items())
    ses = [_se(parts[o]) for o in weights]
    se = sum(abs(w) * s for w, s in zip(weights.values(), ses)) if all(s is not None for s in ses) else None
    p = float(2 * stats.norm.sf(abs(est) / se)) if se else None
    r0 = parts[base.outcome] if base.outcome in parts else next(iter(parts.values()))
    return OutcomeRow("net_value", NET_VALUE, _finite(est), _finite(se), _finite(lo), _finite(hi), _finite(p),
                      int(r0.n_treated), int(r0.n_control), "conservative",
                      f"net value per conversation = {words}, combined from one estimate per outcome: "
                      f"{method.replace('_', ' ')} has no per-conversation value column, so the interval assumes the "
                      "outcomes' errors are perfectly correlated (the weighted interval ends add up): conservative")


# --- several arms --------------------------------------------------------------------------------

def _arm_table(result: EstimateResult | None) -> pd.DataFrame | None:
    table = (result.extras or {}).get("arms") if result is not None else None
    return table if isinstance(table, pd.DataFrame) and not table.empty else None


def _arm_count(result: EstimateResult) -> int:
    """Arms of a randomized result: the baseline plus every arm of its table."""
    table = _arm_table(result)
    return 0 if table is None else 1 + int(table["arm"].nunique())


def _join_net_value_arms(primary: EstimateResult, value_result: EstimateResult | None) -> None:
    """Every arm's net value rows (the value column's own estimate) join the primary result's arm table."""
    table, value_table = _arm_table(primary), _arm_table(value_result)
    if table is None or value_table is None:
        return
    own = value_table[value_table["outcome"] == NET_VALUE]
    kept = table[table["outcome"] != NET_VALUE]
    primary.extras["arms"] = pd.concat([kept, own[list(table.columns)]], ignore_index=True)


def arm_key(arm: str, baseline: str, outcome: str, estimand: str, role: str) -> str:
    """The ``name`` of an arm row: JSON, since arm labels are data (any text)."""
    return json.dumps({"arm": arm, "baseline": baseline, "outcome": outcome, "estimand": estimand, "role": role},
                      sort_keys=True)


def _decision_rows(table: pd.DataFrame, outcome: str, method: str) -> pd.DataFrame:
    """Per arm, the row of ``outcome`` in the method's decision estimand (ITT, adjusted when present; TOT/LATE)."""
    t = table[table["outcome"] == outcome]
    if method == "randomized_iv":
        return t[t["estimand"].isin(["TOT", "LATE"])]
    adjusted = t[t["estimand"] == "ITT_adjusted"]
    return adjusted if not adjusted.empty else t[t["estimand"] == "ITT"]


def _arm_rows(question: Question, primary, guard_answers: list, m: int) -> list[OutcomeRow]:
    """One row per arm and outcome (module doc): the primary and secondary outcomes, guardrails, net value."""
    table = _arm_table(primary.result)
    if table is None:
        return []
    sources: list[tuple[str, str, pd.DataFrame, object, list[str]]] = []  # outcome, role, table, guardrail, failed
    guarded = {g.outcome for g, _ in guard_answers}
    for o in dict.fromkeys([question.outcome, *(o for o in question.secondary_outcomes if o not in guarded)]):
        sources.append((o, "primary" if o == question.outcome else "secondary", table, None, []))
    for g, sub in guard_answers:
        own = _arm_table(sub.result)
        if own is not None:
            sources.append((g.outcome, "guardrail", own, g, _failed_errors(sub)))
    sources.append((NET_VALUE, "net_value", table, None, []))
    rows: list[OutcomeRow] = []
    for outcome, role, t, g, failed in sources:
        for _, r in _decision_rows(t, outcome, primary.method).iterrows():
            est, se = _finite(r["estimate"]), _finite(r["std_error"])  # normal intervals: se = half-width / z
            status = "ok"
            what = (f"{r['estimand']} of arm `{r['arm']}` against the baseline `{r['baseline']}` on `{outcome}` "
                    "(pairwise, no multiplicity correction across arms)")
            if g is not None and est is not None and se:
                status, why, _ = _guardrail_status(g, est, se, m, failed)
                what += f"; guardrail: {why}; {_guardrail_basis(g, m)}"
            rows.append(OutcomeRow("arm", arm_key(str(r["arm"]), str(r["baseline"]), outcome, str(r["estimand"]),
                                                  role),
                                   est, se, _finite(r["ci_low"]), _finite(r["ci_high"]), _finite(r["p_value"]),
                                   int(r["n_arm"]), int(r["n_baseline"]), status, what))
    return rows


# --- segments ------------------------------------------------------------------------------------

def _literal(value) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _arm_counts(con, question: Question, method: str, col: str, relation: str) -> tuple[dict, str | None]:
    """Treated and control conversations per level of ``col``; None as the arm expression when unknown."""
    where, params = window_sql(question)
    if method == "propensity_matching":
        arm, arm_params = f"CAST({q(question.treatment)} AS INTEGER)", []
    elif question.treated:
        sel, arm_params = treated_sql(question)
        arm = f"CAST({sel} AS INTEGER)"
    elif question.assignment:
        base = question.baseline
        arm = (f"CASE WHEN CAST({q(question.assignment)} AS VARCHAR) = {_literal(base)} THEN 0 ELSE 1 END"
               if base is not None else
               f"CASE WHEN CAST({q(question.assignment)} AS VARCHAR) IN ('0', 'false') THEN 0 ELSE 1 END")
        arm_params = []
    else:
        return {}, None
    out: dict = {}
    for level, a, n in con.execute(
            f"SELECT {q(col)} AS level, {arm} AS arm, count(*) FROM {relation} WHERE {where} "
            f"AND {q(question.outcome)} IS NOT NULL GROUP BY ALL", arm_params + params).fetchall():
        if a is None:
            continue
        out.setdefault(level, [0, 0])[0 if a == 1 else 1] += int(n)
    return out, arm


def _segment_question(base: Question, col: str) -> Question:
    """The question within one level: the segment column, now constant, leaves the adjustment sets."""
    update = {}
    if col in base.covariates:
        update["covariates"] = [c for c in base.covariates if c != col]
    if col in base.fixed_effects:
        update["fixed_effects"] = [c for c in base.fixed_effects if c != col]
    return base.model_copy(update=update) if update else base


def _segments(con, base: Question, catalog, method: str, col: str, seed: int, relation: str, answer_question,
              mix: dict | None) -> tuple[list[OutcomeRow], bytes | None]:
    counts, _ = _arm_counts(con, base, method, col, relation)
    levels = sorted(counts, key=lambda v: (v is None, str(v)))
    if len(levels) > MAX_SEGMENT_LEVELS:
        return [OutcomeRow("segment_heterogeneity", col, None, None, None, None, None, 0, 0, "refused",
                           f"`{col}` has {len(levels)} levels (at most {MAX_SEGMENT_LEVELS}): bucket it first")], None
    sub_q = _segment_question(base, col)
    rows: list[OutcomeRow] = []
    ok: dict = {}
    for level in levels:
        n_t, n_c = counts[level]
        name = f"{col}={level if level is not None else 'null'}"
        if n_t < MIN_SEGMENT_ARM or n_c < MIN_SEGMENT_ARM:
            rows.append(OutcomeRow("segment", name, None, None, None, None, None, n_t, n_c, "refused",
                                   f"too small: {n_t:,} treated and {n_c:,} control conversations with the outcome "
                                   f"(at least {MIN_SEGMENT_ARM} of each needed)"))
            continue
        with segment_view(con, relation, col, level) as view:  # its reads: one grouped scan per column
            sub = _unplotted(answer_question)(con, sub_q, catalog, seed, view)
        r = sub.result
        if r is None:
            rows.append(OutcomeRow("segment", name, None, None, None, None, None, n_t, n_c, "refused",
                                   f"refused: {sub.refusal}"))
            continue
        failed = _failed_errors(sub)
        rows.append(OutcomeRow("segment", name, _finite(r.estimate), _se(r), _finite(r.ci_low), _finite(r.ci_high),
                               _finite(r.p_value), int(r.n_treated), int(r.n_control), "blocked" if failed else "ok",
                               f"{method.replace('_', ' ')} within `{col}` = {level}"
                               + (f"; failed checks: {', '.join(failed)}" if failed else "")))
        if rows[-1].std_error and rows[-1].estimate is not None:
            ok[level] = rows[-1]
    png = None
    if ok:
        labels = [str(k) for k in ok]
        het = None
        if len(ok) >= 2:
            het = cochran_q([x.estimate for x in ok.values()], [x.std_error for x in ok.values()])
            rows.append(OutcomeRow("segment_heterogeneity", col, het.q, None, None, None, het.p_value,
                                   sum(x.n_treated for x in ok.values()), sum(x.n_control for x in ok.values()), "ok",
                                   f"Cochran's Q = {het.q:.3f} on {het.df} df over {len(ok)} levels of `{col}`, "
                                   f"p = {het.p_value:.3g}, I² = {100 * het.i2:.0f}% (share of the spread beyond "
                                   f"sampling error); inverse-variance pooled effect {het.pooled:+.4f} "
                                   f"(SE {het.pooled_se:.4f})"))
        else:
            rows.append(OutcomeRow("segment_heterogeneity", col, None, None, None, None, None, 0, 0, "refused",
                                   f"heterogeneity needs at least two estimated levels of `{col}`; "
                                   f"{len(ok)} estimated"))
        png = forest_png(labels, [x.estimate for x in ok.values()], [x.ci_low for x in ok.values()],
                         [x.ci_high for x in ok.values()], base.outcome, col, het.pooled if het else None)
    if mix:
        rows.append(_projection(col, mix, ok))
    return rows, png


def _projection(col: str, mix: dict, ok: dict) -> OutcomeRow:
    by_text = {str(k): v for k, v in ok.items()}
    est = {str(k): v.estimate for k, v in ok.items()}
    ses = {str(k): v.std_error for k, v in ok.items()}
    target = {str(k): float(v) for k, v in mix.items()}
    try:
        p = project(est, ses, target, ALPHA)
    except KeyError as exc:
        return OutcomeRow("segment_projection", col, None, None, None, None, None, 0, 0, "refused",
                          f"the target mix needs an estimate for `{col}` = {exc.args[0]}, which was refused or "
                          "has no data")
    mix_text = ", ".join(f"{k} {w:.0%}" for k, w in p.weights.items())
    pv = float(2 * stats.norm.sf(abs(p.estimate) / p.std_error)) if p.std_error > 0 else None
    return OutcomeRow("segment_projection", col, p.estimate, p.std_error, p.ci_low, p.ci_high, pv,
                      sum(by_text[k].n_treated for k in p.weights), sum(by_text[k].n_control for k in p.weights),
                      "ok", f"segment effects re-weighted to the target mix of `{col}` ({mix_text}); interval "
                            "assumes independent segments")


def _finite(v) -> float | None:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _unplotted(answer_question):
    """``answer_question`` with its figures left unrendered: a guardrail's, the net value's or a segment's
    figures are never stored or shown (``methods.plots.unrendered``); the rows are all that is kept."""
    def run(*args, **kwargs):
        with unrendered():
            return answer_question(*args, **kwargs)
    return run
