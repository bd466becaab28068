"""Pre-flight checks a question must pass before its method runs, in words a PM understands.

They cover the failure modes that no estimator can see from the inside: an outcome the agent
itself controls (gameable), too few conversations (small samples), outcomes missing more in
one group than the other (survivorship), and signals known at conversation start that push
the treatment but were left out of the covariates (hidden-confounder risk). All queries run
in DuckDB with identifiers quoted and values passed as parameters.

Which pre-flight a question gets is its method's registry entry (``registry.py``): matching
designs get ``matching_preflight``, rollout designs (a launch date and a treated selector)
``rollout_preflight``; both start with the outcome check every question gets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import duckdb

from configs.questions import Question
from convocausal.questions.segment_scans import per_level, prefill, scan_with_levels
from methods.result import Diagnostic
from methods.sql import date_window_sql, quote_ident, treated_selector_sql

q = quote_ident

MIN_GROUP = 50  # conversations per arm below which matching is refused
MIN_COVERAGE = 0.5  # share of conversations where the treatment is defined
MAX_MISSING_GAP = 0.05  # allowed difference in outcome-missing share between groups


def window_sql(question: Question) -> tuple[str, list]:
    """The question's date window as SQL (both bounds optional)."""
    w = question.window
    return date_window_sql(w.start if w else None, w.end if w else None)


def treated_sql(question: Question) -> tuple[str, list]:
    """The question's treated selector as SQL (never NULL: see ``methods.sql``)."""
    return treated_selector_sql(question.treated)


@dataclass
class Preflight:
    diagnostics: list[Diagnostic]
    refusal: str | None  # a sentence saying why not to run, and what to wait for

    @property
    def ok(self) -> bool:
        return self.refusal is None


PreflightFn = Callable[[duckdb.DuckDBPyConnection, Question, dict, str], tuple[list[Diagnostic], "str | None"]]


def run_preflight(con: duckdb.DuckDBPyConnection, question: Question, catalog: list[dict],
                  specific: PreflightFn, relation: str = "signals") -> Preflight:
    """The outcome check every question gets, then the method's own pre-flight (``specific``)."""
    by_name = {row["name"]: row for row in catalog}
    more, refusal = specific(con, question, by_name, relation)
    return Preflight([_agent_controlled(question, by_name)] + more, refusal)


def _agent_controlled(question: Question, by_name: dict) -> Diagnostic:
    controlled = bool(by_name.get(question.outcome, {}).get("agent_controlled"))
    msg = (
        f"`{question.outcome}` is set by the agent itself: a variant that closes tickets more eagerly "
        "inflates it (gameable). Prefer an outcome from ticketing or surveys (resolved, reopened_7d, csat)."
        if controlled else f"`{question.outcome}` comes from {by_name.get(question.outcome, {}).get('source', 'a downstream system')}, "
        "which the agent cannot set."
    )
    return Diagnostic("outcome_not_agent_controlled", float(controlled), 0.0, not controlled, msg, "warn",
                      check="outcome_not_agent_controlled")


def matching_preflight(con, question: Question, by_name: dict, relation: str):
    """Two behaviours coexist: coverage, sample size per arm, survivorship, turn order of covariates.

    Left-out confounders are measured after the estimate (``confounding.py``): whether one matters
    is judged against the estimate's own interval."""
    t, y = q(question.treatment), q(question.outcome)
    where, params = window_sql(question)
    total, defined, n1, n0, miss1, miss0 = con.execute(
        f"""SELECT count(*), count({t}),
                   count(*) FILTER (WHERE {t} = 1 AND {y} IS NOT NULL),
                   count(*) FILTER (WHERE {t} = 0 AND {y} IS NOT NULL),
                   avg(CASE WHEN {y} IS NULL THEN 1 ELSE 0 END) FILTER (WHERE {t} = 1),
                   avg(CASE WHEN {y} IS NULL THEN 1 ELSE 0 END) FILTER (WHERE {t} = 0)
            FROM {relation} WHERE {where}""",
        params,
    ).fetchone()
    diags: list[Diagnostic] = []
    coverage = defined / total if total else 0.0
    diags.append(Diagnostic(
        "treatment_coverage", coverage, MIN_COVERAGE, coverage >= MIN_COVERAGE,
        f"`{question.treatment}` is defined for {coverage:.0%} of conversations ({defined} of {total}); "
        "the rest never showed the behaviour and are left out of this question."
        + ("" if coverage >= MIN_COVERAGE else " That is most rows: check the behaviour's pattern."),
        "warn",
    ))
    smallest = min(n1, n0)
    refusal = None
    if smallest < MIN_GROUP:
        refusal = (f"too few conversations to compare: {n1} treated and {n0} control with an outcome; "
                   f"matching needs at least {MIN_GROUP} in each group, so wait for more traffic.")
    diags.append(Diagnostic(
        "sample_size", float(smallest), float(MIN_GROUP), smallest >= MIN_GROUP,
        refusal or f"{n1} treated and {n0} control conversations with an outcome.", "error", check="sample_size",
    ))
    diags.append(_survivorship(miss1, miss0, "treated", "control", question.outcome))
    order = turn_order_diagnostic(con, question, by_name, relation, where, params)
    if order is not None:
        diags.append(order)
        if not order.passed and refusal is None:
            refusal = order.message
    return diags, refusal


def rollout_preflight(con, question: Question, by_name: dict, relation: str):
    """A change reached a selected group at a launch date: data after and before it, survivorship."""
    y = q(question.outcome)
    sel, sel_params = treated_sql(question)
    where, params = window_sql(question)
    select = f"""count(*) FILTER (WHERE {sel} AND date >= ? AND {y} IS NOT NULL),
                   count(DISTINCT date) FILTER (WHERE date < ?),
                   avg(CASE WHEN {y} IS NULL THEN 1 ELSE 0 END) FILTER (WHERE {sel} AND date < ?),
                   avg(CASE WHEN {y} IS NULL THEN 1 ELSE 0 END) FILTER (WHERE {sel} AND date >= ?)"""
    values = (sel_params + [question.launch, question.launch] + sel_params + [question.launch] + sel_params
              + [question.launch] + params)

    def by_level(base: str, level_expr: str) -> dict:  # a segment's pre-flight: one scan for all its levels
        out = con.execute(f"SELECT {level_expr}, {select} FROM {base} WHERE {where} GROUP BY 1", values).fetchall()
        return {row[0]: row[1:] for row in out}

    key = ("rollout_preflight", select, repr(values), where)
    got = per_level(con, relation, key, by_level)
    if got is not None:  # a level without rows in the window: what the query returns on no rows
        n_treated_post, pre_days, miss_pre, miss_post = got[1].get(got[0], (0, 0, None, None))
    else:
        found, own = prefill(con, relation, list(question.segments), key,
                            lambda base, exprs: scan_with_levels(con, select, base, where, values, exprs))
        n_treated_post, pre_days, miss_pre, miss_post = own if found else con.execute(
            f"SELECT {select} FROM {relation} WHERE {where}", values).fetchone()
    diags: list[Diagnostic] = []
    refusal = None
    if n_treated_post == 0:
        refusal = (f"no treated conversations with an outcome on or after the launch ({question.launch}): "
                   "check the `treated` selector and the launch date, or wait for post-launch data.")
    elif pre_days == 0:
        refusal = f"no data before the launch ({question.launch}): there is nothing to compare against."
    diags.append(Diagnostic(
        "sample_size", float(n_treated_post), 1.0, refusal is None,
        refusal or f"{n_treated_post} treated conversations after launch; {pre_days} days of data before it.",
        "error", check="sample_size",
    ))
    diags.append(_survivorship(miss_post, miss_pre, "after launch", "before launch", question.outcome))
    return diags, refusal


def _survivorship(miss_a, miss_b, label_a: str, label_b: str, outcome: str) -> Diagnostic:
    miss_a, miss_b = float(miss_a or 0.0), float(miss_b or 0.0)
    gap = abs(miss_a - miss_b)
    ok = gap <= MAX_MISSING_GAP
    msg = (f"`{outcome}` is missing for {miss_a:.1%} of conversations {label_a} and {miss_b:.1%} {label_b}. "
           + ("" if ok else "Customers with bad experiences may leave before they are measured "
              "(survivorship): compare only with an outcome recorded for everyone, or model the missingness."))
    return Diagnostic("survivorship_missing_outcome_gap", gap, MAX_MISSING_GAP, ok, msg.strip(), "warn",
                      check="survivorship")


def turn_covariates(question: Question, by_name: dict) -> list[str]:
    """Covariates measured during the conversation (a behaviour or tool at some turn)."""
    return [c for c in question.covariates if by_name.get(c, {}).get("measured_at") == "turn"]


def turn_order_diagnostic(con, question: Question, by_name: dict, relation: str, where: str,
                          params: list) -> Diagnostic | None:
    """A turn-level covariate is pre-treatment only if it happens before the treatment's turn.

    The catalogue's static rule (``configs/questions.py``) lets a turn-level covariate through for
    a treatment that has a turn, on condition that the data show the order: in every conversation
    where both happen, the covariate's first turn comes before the treatment's. One conversation
    the other way round and the covariate can be a consequence of the treatment (a mediator), so
    the question is refused with the count. None when the question has no turn-level covariate.
    """
    turn_covs = turn_covariates(question, by_name)
    if not turn_covs:
        return None
    t_turn = by_name.get(question.treatment, {}).get("turn_column")
    parts, bad, checked = [], [], 0
    for cov in turn_covs:
        c_turn = by_name[cov].get("turn_column")
        if not t_turn or not c_turn:
            bad.append(f"`{cov}` has no turn to compare with the treatment's")
            continue
        after, both = con.execute(
            f"SELECT count(*) FILTER (WHERE {q(c_turn)} >= {q(t_turn)}), "
            f"count(*) FILTER (WHERE {q(c_turn)} IS NOT NULL AND {q(t_turn)} IS NOT NULL) "
            f"FROM {relation} WHERE {q(question.treatment)} IS NOT NULL AND {where}", params,
        ).fetchone()
        checked += int(both)
        if after:
            bad.append(f"`{cov}` happens at or after the treatment's turn in {after} of {both} conversations "
                       "where both happen")
        else:
            parts.append(f"`{cov}` happens before the treatment's turn in all {both} conversations where both happen")
    if bad:
        msg = ("turn-level covariate(s) not measured before the treatment: " + "; ".join(bad)
               + ". Such a signal can be a consequence of the treatment (a mediator): adjusting for it hides "
               "part of the effect. Drop it from `covariates`, or use a signal known at conversation start.")
        return Diagnostic("covariate_turn_order", float(len(bad)), 0.0, False, msg, "error")
    return Diagnostic("covariate_turn_order", 0.0, 0.0, True,
                      "turn-level covariates used as pre-treatment signals: " + "; ".join(parts) + ".", "warn")


ASSIGNMENT_KINDS = ("covariate", "behaviour")
UPTAKE_KINDS = ("behaviour", "tool", "covariate")


def randomized_preflight(con, question: Question, by_name: dict, relation: str):
    """A randomized design: the assignment known before the conversation, the uptake after it.

    The assignment is what randomization made independent of everything else, so it must be fixed
    before the conversation starts (a start-measured covariate or behaviour in the catalogue, e.g.
    the arm a routing layer drew); a value set during or after the conversation can be its
    consequence, and comparing on it is not a randomized comparison. Uptake (a behaviour or tool
    used in the conversation) is read as 1/true = used, 0/false/null = not used. Sample size,
    survivorship (outcome missing by arm), the sample ratio and covariate balance are measured by
    the method itself from its cells (``methods/randomized``), so ``convocausal estimate itt|iv``
    reports them too.
    """
    diags: list[Diagnostic] = []
    refusal = None
    a = by_name.get(question.assignment, {})
    kind, when = a.get("kind", "?"), a.get("measured_at", "?")
    ok = when == "start" and kind in ASSIGNMENT_KINDS
    if not ok:
        refusal = (f"assignment `{question.assignment}` is a {kind} signal measured "
                   f"{'at the end of the conversation' if when == 'end' else 'during the conversation' if when == 'turn' else when}: "
                   "the arm must be fixed before the conversation starts (a start covariate, such as the arm the routing "
                   "layer drew). A value set during or after the conversation can be a consequence of it, so comparing "
                   "on it is not a randomized comparison.")
    diags.append(Diagnostic(
        "assignment_measured_at_start", float(ok), 1.0, ok,
        refusal or f"assignment `{question.assignment}` ({kind}) is known at conversation start.", "error"))
    if question.uptake:
        u = by_name.get(question.uptake, {})
        if u.get("kind") not in UPTAKE_KINDS and refusal is None:
            refusal = (f"uptake `{question.uptake}` is a {u.get('kind', '?')} signal: it must say whether the treatment "
                       "was used in the conversation (a behaviour or tool column, 1/true = used).")
        elif u.get("kind") == "behaviour":
            diags.append(Diagnostic(
                "uptake_coding", None, None, True,
                f"uptake `{question.uptake}` is a behaviour (1 early / 0 later / null never): 1 counts as used, "
                "0 and null as not used. Give a column that is 1 whenever the treatment was used if 'later' counts too.",
                "warn"))
    bad_outcomes = [o for o in question.secondary_outcomes if by_name.get(o, {}).get("kind") != "outcome"]
    if bad_outcomes and refusal is None:
        refusal = ("secondary outcome(s) " + ", ".join(f"`{o}`" for o in bad_outcomes)
                   + " are not outcome signals: the per-arm table compares outcomes only.")
    return diags, refusal

