"""A question's estimates across nightly runs: the history, the anytime-valid interval, the q-values.

Why here and not in ``methods/``: these read the store's ``estimates`` table (earlier runs), which
a method never sees. The numerics are ``methods.monitoring``.

- ``anytime_interval``: the confidence sequence of this run's estimate intersected with the
  sequence stored for every earlier run of the same question (same method, outcome and
  estimand; an edited question with a new method or outcome starts a new sequence). Valid under
  nightly looks for matching and diff-in-diff, whose estimates are asymptotically linear in the
  conversations. Synthetic control has none: its uncertainty is a placebo/conformal rank over a
  handful of cohorts, not a sum over units, and no time-uniform version of that rank test is
  established, so the memo says so and the fixed interval is all there is.
- ``history``: every run's estimate, interval, sequence, sample sizes and check states.
- ``latest_q_values``: Benjamini–Hochberg (or Holm) across the latest estimate of every question.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import duckdb

from methods.monitoring import adjust, confidence_sequence, running_intersection

SEQUENCE_METHODS = ("propensity_matching", "diff_in_diff")
NO_SEQUENCE_REASON = {
    "synthetic_control": "synthetic control has no anytime-valid interval: its p-value is a placebo rank over a "
                         "few cohorts, and no time-uniform version of that test is established; under nightly "
                         "monitoring read its interval as valid for one look only",
}
T_STAR = 10_000  # conversations at which the sequence is tightest; fixed in advance, never from the data


@dataclass(frozen=True)
class AnytimeInterval:
    cs_low: float | None
    cs_high: float | None
    looks: int  # runs that went into the running intersection, this one included
    note: str


def anytime_interval(con: duckdb.DuckDBPyConnection | None, question_id: str, run_id: str, method: str,
                     outcome: str, estimand: str, estimate: float, std_error: float, n: int) -> AnytimeInterval:
    """This run's anytime-valid interval: its own sequence intersected with the earlier runs' ones."""
    if method not in SEQUENCE_METHODS:
        return AnytimeInterval(None, None, 0, NO_SEQUENCE_REASON.get(method, f"{method} has no confidence sequence"))
    cs = confidence_sequence(estimate, std_error, n, t_star=T_STAR)
    if not math.isfinite(cs.cs_low):
        return AnytimeInterval(None, None, 0, "no finite standard error: no sequence this run")
    prior = _prior_sequences(con, question_id, run_id, method, outcome, estimand) if con is not None else []
    lows = [lo for lo, _ in prior] + [cs.cs_low]
    highs = [hi for _, hi in prior] + [cs.cs_high]
    lo, hi = running_intersection(lows, highs)
    if lo[-1] > hi[-1]:
        return AnytimeInterval(cs.cs_low, cs.cs_high, 1,
                               f"the earlier runs' sequences and this run's do not overlap (this run "
                               f"[{cs.cs_low:+.4f}, {cs.cs_high:+.4f}]): the effect or the population moved "
                               f"between runs, so the sequence restarts here; read the drift checks")
    return AnytimeInterval(float(lo[-1]), float(hi[-1]), len(lows),
                           f"anytime-valid 95% over {len(lows)} run(s) (Waudby-Smith et al. 2021 asymptotic "
                           f"confidence sequence, tightest at {T_STAR:,} conversations, intersected over runs)")


def _prior_sequences(con, question_id, run_id, method, outcome, estimand) -> list[tuple[float, float]]:
    if not _has_columns(con, "estimates", ("cs_low", "cs_high")):
        return []
    rows = con.execute(
        "SELECT cs_low, cs_high FROM estimates WHERE question_id = ? AND run_id <> ? AND method = ? AND outcome = ? "
        "AND estimand = ? AND status = 'ok' AND cs_low IS NOT NULL AND cs_high IS NOT NULL ORDER BY computed_at",
        [question_id, run_id, method, outcome, estimand]).fetchall()
    return [(float(lo), float(hi)) for lo, hi in rows]


def history(con: duckdb.DuckDBPyConnection, question_id: str | None = None) -> list[dict]:
    """One dict per (run, question), oldest first, with counts of check states."""
    if not _has_table(con, "estimates"):
        return []
    extra = [c for c in ("cs_low", "cs_high", "q_value", "data_through") if _has_columns(con, "estimates", (c,))]
    cols = ["run_id", "question_id", "method", "outcome", "estimate", "ci_low", "ci_high", *extra, "p_value",
            "n_treated", "n_control", "status", "computed_at"]
    checks = ("SELECT run_id, question_id, count(*) FILTER (WHERE state = 'failed') AS checks_failed, "
              "count(*) FILTER (WHERE state = 'failed' AND blocking) AS blocking_failed, "
              "count(*) FILTER (WHERE state = 'passed') AS checks_passed, "
              "string_agg(check_name, ', ' ORDER BY check_name) FILTER (WHERE state = 'failed') AS failed_checks "
              "FROM checks GROUP BY 1, 2") if _has_table(con, "checks") else None
    select = ", ".join(f"e.{c}" for c in cols)
    sql = f"SELECT {select}"
    if checks:
        sql += (", coalesce(c.checks_failed, 0), coalesce(c.blocking_failed, 0), coalesce(c.checks_passed, 0), "
                f"c.failed_checks FROM estimates e LEFT JOIN ({checks}) c USING (run_id, question_id)")
        cols += ["checks_failed", "blocking_failed", "checks_passed", "failed_checks"]
    else:
        sql += " FROM estimates e"
    params: list = []
    if question_id is not None:
        sql += " WHERE e.question_id = ?"
        params.append(question_id)
    sql += " ORDER BY e.computed_at, e.question_id"
    return [dict(zip(cols, row)) for row in con.execute(sql, params).fetchall()]


def latest_q_values(con: duckdb.DuckDBPyConnection, question_ids: list[str], method: str = "bh") -> dict:
    """q-value per question over the latest estimate of each listed question (the run's family)."""
    if not question_ids or not _has_table(con, "estimates"):
        return {}
    rows = con.execute(
        "SELECT question_id, run_id, p_value FROM (SELECT question_id, run_id, p_value, row_number() OVER "
        "(PARTITION BY question_id ORDER BY computed_at DESC) AS k FROM estimates WHERE question_id IN "
        f"({', '.join('?' for _ in question_ids)})) WHERE k = 1 ORDER BY question_id", list(question_ids)).fetchall()
    q = adjust([r[2] for r in rows], method)
    return {r[0]: {"run_id": r[1], "q_value": None if math.isnan(v) else float(v)} for r, v in zip(rows, q)}


def _has_table(con, table: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?",
                            [table]).fetchone()[0])


def _has_columns(con, table: str, columns: tuple[str, ...]) -> bool:
    have = {r[0] for r in con.execute("SELECT column_name FROM information_schema.columns WHERE table_name = ?",
                                      [table]).fetchall()}
    return set(columns) <= have
