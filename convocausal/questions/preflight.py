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
from methods.result import Diagnostic
from methods.sql import date_window_sql, quote_ident, treated_selector_sql

q = quote_ident

MIN_GROUP = 50  # conversations per arm below which matching is refused
MIN_COVERAGE = 0.5  # share of conversations where the treatment is defined
MAX_MISSING_GAP = 0.05  # allowed difference in outcome-missing share between groups
CONFOUNDER_GAP = 0.10  # treatment-rate spread across a left-out signal's levels that flags it
NOT_CONFOUNDERS = {"conversation_id", "customer_key", "started_at", "date", "week", "day_of_week"}


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
    """Two behaviours coexist: coverage, sample size per arm, survivorship, hidden confounders."""
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
    diags.append(_hidden_confounders(con, question, by_name, relation, where, params))
    return diags, refusal


def rollout_preflight(con, question: Question, by_name: dict, relation: str):
    """A change reached a selected group at a launch date: data after and before it, survivorship."""
    y = q(question.outcome)
    sel, sel_params = treated_sql(question)
    where, params = window_sql(question)
    n_treated_post, pre_days, miss_pre, miss_post = con.execute(
        f"""SELECT count(*) FILTER (WHERE {sel} AND date >= ? AND {y} IS NOT NULL),
                   count(DISTINCT date) FILTER (WHERE date < ?),
                   avg(CASE WHEN {y} IS NULL THEN 1 ELSE 0 END) FILTER (WHERE {sel} AND date < ?),
                   avg(CASE WHEN {y} IS NULL THEN 1 ELSE 0 END) FILTER (WHERE {sel} AND date >= ?)
            FROM {relation} WHERE {where}""",
        sel_params + [question.launch, question.launch] + sel_params + [question.launch] + sel_params
        + [question.launch] + params,
    ).fetchone()
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


def _hidden_confounders(con, question: Question, by_name: dict, relation, where, params) -> Diagnostic:
    """Start-of-conversation signals left out of the covariates that still predict the treatment.

    "Predict" is conditional on the covariates: the treatment is residualized on covariate
    dummies (a linear probability model fitted by weighted least squares on covariate ×
    candidate cells aggregated in DuckDB), and a candidate is flagged when its levels' mean
    residual spreads by more than ``CONFOUNDER_GAP`` (e.g. `skill` predicting the treatment
    only through intent is not flagged).
    """
    candidates = [
        n for n, row in by_name.items()
        if row["measured_at"] == "start" and row["kind"] == "covariate"
        and n not in question.covariates and n not in NOT_CONFOUNDERS
    ]
    flagged = [(n, g) for n in candidates if (g := _conditional_gap(con, question, n, relation, where, params)) > CONFOUNDER_GAP]
    worst = max((g for _, g in flagged), default=0.0)
    if flagged:
        names = ", ".join(f"{n} (shifts the treatment rate by up to {g:.0%} beyond the covariates)" for n, g in flagged)
        msg = (f"signals known at conversation start but not in the covariates predict the treatment: {names}. "
               "Add them, or say why they cannot affect the outcome. Reasons not in the logs at all cannot "
               "be checked here: see the sensitivity refuter for how strong such a confounder would need to be.")
    else:
        msg = (f"none of the {len(candidates)} start-of-conversation signals outside the covariates predicts the "
               "treatment once the covariates are accounted for; unlogged reasons can still confound: see the "
               "sensitivity refuter.")
    return Diagnostic("hidden_confounder_risk", worst, CONFOUNDER_GAP, not flagged, msg, "warn",
                      check="hidden_confounder_risk")


MAX_LEVELS = 30


def _conditional_gap(con, question: Question, candidate: str, relation, where, params) -> float:
    import numpy as np
    import pandas as pd

    t = q(question.treatment)
    keys = [*question.covariates, candidate]
    cols = ", ".join(f"CAST({q(k)} AS VARCHAR) AS k{i}" for i, k in enumerate(keys))
    cells = con.execute(
        f"SELECT {cols}, count(*) AS n, avg(CAST({t} AS DOUBLE)) AS rate FROM {relation} "
        f"WHERE {t} IS NOT NULL AND {where} GROUP BY ALL",
        params,
    ).df()
    if cells.empty:
        return 0.0
    names = [f"k{i}" for i in range(len(keys))]
    for name in names:  # pool rare levels so the design stays small
        counts = cells.groupby(name, dropna=False)["n"].sum().sort_values(ascending=False)
        keep = set(counts.index[:MAX_LEVELS])
        cells[name] = cells[name].where(cells[name].isin(keep), "__other").fillna("__null")
    cand = names[-1]
    # Residualize the treatment on the covariates, then ask whether the candidate's levels still
    # differ: robust to a candidate that is a function of the covariates (collinear dummies).
    design = pd.get_dummies(cells[names[:-1]], drop_first=True, dtype=float)
    x = np.column_stack([np.ones(len(cells)), design.to_numpy()])
    n = cells["n"].to_numpy(dtype=float)
    w = np.sqrt(n)
    rate = cells["rate"].to_numpy(dtype=float)
    beta, *_ = np.linalg.lstsq(x * w[:, None], rate * w, rcond=None)
    cells["resid_sum"] = (rate - x @ beta) * n
    by_level = cells.groupby(cand)[["resid_sum", "n"]].sum()
    by_level = by_level[by_level["n"] >= 30]
    means = by_level["resid_sum"] / by_level["n"]
    return float(means.max() - means.min()) if len(means) >= 2 else 0.0
