"""Sensitivity to extraction error: does the estimate survive dropping the conversations whose intent is unsure?

Why: a question that adjusts for ``intent`` (a covariate, a fixed effect, a cohort of a synthetic
control, a treated selector) trusts the extractor's label on every conversation. When the
extractor errs more on one side of the comparison (a new product line the rules never heard
of, launched with the treatment), the mislabelled conversations bias the adjustment. Every
extractor gives ``intent_confidence`` (the rules: 1 on a match, 0 on the default), so the
question is re-estimated by the same method on the conversations with ``intent_confidence >=
LOW_CONFIDENCE`` (a null confidence means the extractor does not say: kept). Where a second
extractor's labels are available (a relation ``intent_compare`` with ``conversation_id, intent``
on the same connection, e.g. from ``intent.compare_with`` in the signals config, see
:func:`register_compare_intents`), the question is also re-estimated with those labels.

The check ``extraction_sensitivity`` (WARN, never blocking) fails when a re-estimate leaves the
original 95% interval or has the opposite sign. It is ``not_applicable`` when the question does
not use ``intent``; it passes without a rerun when fewer than ``MIN_LOW_SHARE`` (1%) of the
question's conversations are low-confidence (dropping them cannot move much, and a rerun of a
bootstrapped method is not free). The diagnostic it writes is what the memo's checks table shows.

One hook in ``answer.answer_question`` calls :func:`apply_extraction_sensitivity` after the
method's estimate and the verdicts; it re-runs ``spec.run`` (the data pull and estimate, not
the after-estimate diagnostics) on a temp view, so nothing about the method is special-cased.
"""

from __future__ import annotations

import math
import uuid

import duckdb
import polars as pl

from checks.catalog import CATALOG, NOT_APPLICABLE
from checks.verdict import CheckOutcome, evaluate_checks
from configs.questions import Question
from convocausal.questions.preflight import window_sql
from convocausal.questions.segment_scans import per_level, prefill, scan_with_levels
from methods.plots import unrendered
from methods.result import Diagnostic, EstimateResult, MethodRefusal
from methods.sql import quote_ident as q

CHECK = "extraction_sensitivity"
LOW_CONFIDENCE = 0.5  # intent_confidence below this is "low"
MIN_LOW_SHARE = 0.01  # below this share of low-confidence conversations the rerun is skipped
COMPARE_RELATION = "intent_compare"  # conversation_id, intent: a second extractor's labels
INTENT = "intent"


def uses_intent(question: Question) -> bool:
    """Whether ``intent`` enters the question as a covariate, fixed effect, cohort, cluster or selector.

    Only the fields the question's method reads count (``fixed_effects`` defaults to include
    ``intent`` on every question, but only diff-in-diff uses it).
    """
    from convocausal.questions.registry import question_columns

    return any(INTENT in names for role, names in question_columns(question).items() if role != "outcome")


def _columns(con: duckdb.DuckDBPyConnection, relation: str) -> set[str]:
    return {row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()}


def _has_relation(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    try:
        con.execute(f"SELECT 1 FROM {q(name)} LIMIT 0")
        return True
    except duckdb.Error:
        return False


def register_compare_intents(con: duckdb.DuckDBPyConnection, labels: pl.DataFrame | None) -> None:
    """Make a second extractor's labels (``conversation_id, intent``) available to the check on ``con``.

    ``None`` (no second extractor configured, see ``extract.report.compare_intents_from_raw``): nothing.
    """
    if labels is None:
        return
    frame = labels.select(pl.col("conversation_id").cast(pl.String), pl.col(INTENT).cast(pl.String)).to_arrow()
    con.register("_intent_compare_arrow", frame)
    con.execute(f"CREATE OR REPLACE TEMP TABLE {COMPARE_RELATION} AS SELECT * FROM _intent_compare_arrow")
    con.unregister("_intent_compare_arrow")


def _norm(alias: str) -> str:
    """An intent compared as the report compares them: lower-cased, non-alphanumerics dropped."""
    return f"regexp_replace(lower({alias}.{INTENT}), '[^a-z0-9]', '', 'g')"


def _moved(original: EstimateResult, again: EstimateResult) -> str | None:
    """Why the re-estimate counts as moved (left the interval, flipped sign), or None."""
    est = again.estimate
    if est is None or not math.isfinite(est):
        return None
    reasons = []
    if not original.ci_low <= est <= original.ci_high:
        reasons.append(f"outside the original 95% interval [{original.ci_low:+.4f}, {original.ci_high:+.4f}]")
    if original.estimate * est < 0:
        reasons.append("of the opposite sign")
    return " and ".join(reasons) or None


def _rerun(con, spec, question: Question, view_sql: str, params: list, seed: int) -> EstimateResult:
    name = f"_xs_{uuid.uuid4().hex[:12]}"
    # a temp table, not a view: the method may read it many times (bootstrap, panels), and prepared
    # parameters cannot live in a view definition
    con.execute(f"CREATE TEMP TABLE {name} AS {view_sql}", params)
    try:
        with unrendered():  # only its numbers are compared; its figures are never shown
            result, _ = spec.run(con, question, name, seed)
        return result
    finally:
        con.execute(f"DROP TABLE IF EXISTS {name}")


def sensitivity_diagnostics(con: duckdb.DuckDBPyConnection, spec, question: Question, relation: str,
                            result: EstimateResult, seed: int = 0, threshold: float = LOW_CONFIDENCE,
                            min_share: float = MIN_LOW_SHARE) -> list[Diagnostic]:
    """The ``extraction_sensitivity`` diagnostics of one estimated question (empty: not applicable)."""
    if not uses_intent(question):
        return []
    have = _columns(con, relation)
    out: list[Diagnostic] = []
    if "intent_confidence" not in have:
        out.append(Diagnostic("low_confidence_rerun", None, threshold, True,
                              "The signals carry no intent_confidence (extracted before it existed): "
                              "the low-confidence rerun cannot be made.", "warn", check=CHECK, tested=False))
    else:
        where, params = window_sql(question)
        select = "count(*), count(*) FILTER (WHERE intent_confidence < ?)"

        def by_level(base: str, level_expr: str) -> dict:  # a segment's count: one scan for all its levels
            out = con.execute(f"SELECT {level_expr}, {select} FROM {base} WHERE {where} GROUP BY 1",
                              [threshold, *params]).fetchall()
            return {row[0]: row[1:] for row in out}

        key = ("low_confidence", select, repr(threshold), where, repr(params))
        got = per_level(con, relation, key, by_level)
        if got is not None:  # a level without rows in the window: what the query returns on no rows
            n, n_low = got[1].get(got[0], (0, 0))
        else:
            found, own = prefill(con, relation, list(question.segments), key,
                            lambda base, exprs: scan_with_levels(con, select, base, where, [threshold, *params], exprs))
            n, n_low = own if found else con.execute(f"SELECT {select} FROM {relation} WHERE {where}",
                                                     [threshold, *params]).fetchone()
        share = n_low / n if n else 0.0
        if share < min_share:
            out.append(Diagnostic(
                "low_confidence_rerun", share, min_share, True,
                f"{n_low:,} of {n:,} conversations ({share:.2%}) have intent_confidence < {threshold:g}, fewer than "
                f"{min_share:.0%}: dropping them cannot move the estimate much, so it was not re-estimated.",
                "warn", check=CHECK))
        else:
            sql = (f"SELECT * FROM {relation} WHERE intent_confidence IS NULL OR intent_confidence >= "
                   f"{float(threshold)!r}")
            out.append(_compare(con, spec, question, result, sql, [], seed, "low_confidence_rerun",
                                f"Without the {n_low:,} of {n:,} conversations ({share:.1%}) whose intent_confidence "
                                f"< {threshold:g}"))
    if _has_relation(con, COMPARE_RELATION):
        others = ", ".join(f"s.{q(c)}" for c in sorted(have) if c != INTENT)
        sql = (f"SELECT {others}{', ' if others else ''}COALESCE(c.{INTENT}, s.{INTENT}) AS {INTENT} "
               f"FROM {relation} s LEFT JOIN {COMPARE_RELATION} c "
               f"ON CAST(s.conversation_id AS VARCHAR) = c.conversation_id")
        n_diff = con.execute(
            f"SELECT count(*) FROM {relation} s JOIN {COMPARE_RELATION} c "
            f"ON CAST(s.conversation_id AS VARCHAR) = c.conversation_id WHERE {_norm('c')} IS DISTINCT FROM {_norm('s')}"
        ).fetchone()[0] if "conversation_id" in have else 0
        out.append(_compare(con, spec, question, result, sql, [], seed, "second_extractor_rerun",
                            f"With the second extractor's intents ({n_diff:,} conversations labelled differently)"))
    return out


def _compare(con, spec, question, result, sql, params, seed, name, what) -> Diagnostic:
    try:
        again = _rerun(con, spec, question, sql, params, seed)
    except MethodRefusal as exc:
        return Diagnostic(name, None, None, True, f"{what}, the method refused: {exc}", "warn", check=CHECK,
                          tested=False)
    moved = _moved(result, again)
    shift = again.estimate - result.estimate
    text = (f"{what}, the estimate is {again.estimate:+.4f} (was {result.estimate:+.4f}, shift {shift:+.4f})")
    text += f": {moved}; the intent labels drive the number, check them (convocausal signals report)." if moved \
        else ", inside the original 95% interval."
    return Diagnostic(name, float(again.estimate), float(result.estimate), moved is None, text, "warn", check=CHECK)


def apply_extraction_sensitivity(con: duckdb.DuckDBPyConnection, spec, answer, relation: str, seed: int = 0) -> None:
    """The hook of ``answer_question``: add the diagnostics to the result and give the check its state.

    Not in the method's checks, or refused: nothing to do (the verdicts already said
    not_applicable / not_run). A question that does not use ``intent``: ``not_applicable``.
    """
    if CHECK not in spec.checks or answer.result is None:
        return
    idx = next((i for i, c in enumerate(answer.checks) if c.name == CHECK), None)
    if idx is None:
        return
    if not uses_intent(answer.question):
        c = CATALOG[CHECK]
        answer.checks[idx] = CheckOutcome(c.name, NOT_APPLICABLE, c.severity, c.blocking, c.description,
                                          "not applicable: the question does not use intent")
        return
    answer.result.diagnostics += sensitivity_diagnostics(con, spec, answer.question, relation, answer.result, seed)
    answer.checks[idx] = evaluate_checks((CHECK,), answer.diagnostics, None, None, spec.name,
                                         catalogue={CHECK: CATALOG[CHECK]})[0]
