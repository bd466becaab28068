"""The memo's nightly-monitoring parts: the anytime-valid interval, q-values, the run history, drift.

Why apart from ``report.py``: these read across runs (the whole ``estimates`` history and the
store's ``monitor_windows``), where the rest of the memo reads one run's rows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import timezone

import duckdb

from convocausal.questions.history import NO_SEQUENCE_REASON, T_STAR
from convocausal.questions.monitoring import REFERENCE_DAYS

HISTORY_FIGURE = "run_history"
HISTORY_ROWS = 10  # the memo's table shows the latest runs; `convocausal history` shows all


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _has_table(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?",
                            [table]).fetchone()[0])


def sequence_lines(row: Mapping, q_family: int) -> list[str]:
    """Result lines: the anytime-valid interval (or why there is none) and the q-value."""
    out = []
    if not _missing(row.get("cs_low")) and not _missing(row.get("cs_high")):
        out.append(f"Anytime-valid 95% interval: {row['cs_low']:+.4f} to {row['cs_high']:+.4f} (valid under nightly "
                   f"looks: an asymptotic confidence sequence, Waudby-Smith et al. 2021, tightest at {T_STAR:,} "
                   "conversations, intersected with every earlier run of this question).")
    elif row.get("method") in NO_SEQUENCE_REASON:
        out.append(f"No anytime-valid interval: {NO_SEQUENCE_REASON[row['method']]}.")
    if not _missing(row.get("q_value")) and q_family > 1:
        out.append(f"q-value (Benjamini–Hochberg over the latest estimate of {q_family} questions): "
                   f"{_fmt_q(row['q_value'])}.")
    return out


def _fmt_q(q: float) -> str:
    return "< 0.001" if q < 0.001 else f"{q:.3f}"


def family_size(con: duckdb.DuckDBPyConnection, run_id: str) -> int:
    """How many questions share the multiplicity family: those whose latest estimate carries a q-value."""
    if not _has_table(con, "estimates"):
        return 0
    have = {r[0] for r in con.execute("SELECT column_name FROM information_schema.columns "
                                      "WHERE table_name = 'estimates'").fetchall()}
    if "q_value" not in have:
        return 0
    return int(con.execute(
        "SELECT count(*) FROM (SELECT q_value, row_number() OVER (PARTITION BY question_id ORDER BY computed_at DESC) "
        "AS k FROM estimates) WHERE k = 1 AND q_value IS NOT NULL").fetchone()[0])


def history_lines(runs: list[dict]) -> list[str]:
    """The History section: the latest runs as one Markdown table (oldest first)."""
    if len(runs) < 2:
        return ["## History", ("First run of this question: no history yet. Each nightly run adds a row "
                "(`convocausal history QUESTION`).")]
    rows = ["| run at (UTC) | estimate | 95% CI | anytime-valid | n treated / control | failed checks |",
            "|---|---|---|---|---|---|"]
    for r in runs[-HISTORY_ROWS:]:
        when = str(r.get("computed_at"))[:16]
        if r.get("status") != "ok" or _missing(r.get("estimate")):
            rows.append(f"| {when} | refused | — | — | — | — |")
            continue
        cs = ("—" if _missing(r.get("cs_low")) or _missing(r.get("cs_high"))
              else f"{r['cs_low']:+.4f} to {r['cs_high']:+.4f}")
        rows.append(f"| {when} | {r['estimate']:+.4f} | {r['ci_low']:+.4f} to {r['ci_high']:+.4f} | {cs} | "
                    f"{int(r['n_treated']):,} / {int(r['n_control']):,} | {r.get('failed_checks') or 'none'} |")
    shown = min(len(runs), HISTORY_ROWS)
    return ["## History", f"{len(runs)} runs of this question; the latest {shown}:", "\n".join(rows)]


def history_plot(runs: list[dict], outcome: str) -> bytes | None:
    """The trajectory figure, from two successful runs on."""
    ok = [r for r in runs if r.get("status") == "ok" and not _missing(r.get("estimate"))]
    if len(ok) < 2:
        return None
    from methods.monitoring.plots import trajectory_plot

    when = [r["computed_at"].astimezone(timezone.utc).replace(tzinfo=None) if getattr(r["computed_at"], "tzinfo", None)
            else r["computed_at"] for r in ok]  # numpy dates carry no zone: UTC, said in the axis label
    return trajectory_plot(when, [r["estimate"] for r in ok], [r["ci_low"] for r in ok],
                           [r["ci_high"] for r in ok], [r.get("cs_low") for r in ok], [r.get("cs_high") for r in ok],
                           outcome=outcome, title="Estimate by nightly run")


def monitoring_lines(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The Population drift section: the latest store-monitoring run's check states."""
    if not _has_table(con, "monitor_windows"):
        return []
    rows = con.execute(
        "SELECT since, until, n_new, check_name, state, message FROM monitor_windows WHERE run_id = "
        "(SELECT run_id FROM monitor_windows ORDER BY computed_at DESC LIMIT 1) ORDER BY check_name").fetchall()
    if not rows:
        return []
    since, until, n_new = rows[0][0], rows[0][1], rows[0][2]
    failed = [(c, m) for _, _, _, c, s, m in rows if s == "failed"]
    head = (f"Store monitoring compared the {n_new:,} conversations after {since} (through {until}) with the "
            f"{REFERENCE_DAYS} days before them: ")
    if not failed:
        states = ", ".join(sorted({s for *_, s, _ in rows}))
        return ["## Population drift", head + f"no drift check failed (states: {states})."]
    items = "\n".join(f"- **{c}**: {m}" for c, m in failed)
    return ["## Population drift", head + f"{len(failed)} drift check(s) failed: the new days differ from the days "
            "before them. Read whether the move matters for this design (a shifted treated share or covariate "
            "mix changes who the estimate averages over; a base-rate trend alone is what diff-in-diff and "
            "synthetic control difference out):", items]
