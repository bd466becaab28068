"""Human-readable output: the run table, one method's summary, and the decision memo.

The memo follows BACKGROUND.md: decision, intervention, estimand, design, result, main
risks, decision rule. It is built from the store's rows (not from in-memory objects) so the
memo always says what the store says.

Why it looks the way it does (issue 18): every table is one block of lines (a blank line
between rows makes Markdown show a header-only table); the checks table has one row per check,
its value and threshold, and a note short enough for a cell; a longer note is numbered below the
table in full, never cut; every count says what it counts; an effect is worded with its sign
("lowers `escalated` by 0.055"); p-values below 0.001 read ``< 0.001``; and where a row's
interval and p-value disagree on 5 % the text says why. The HTML rendering of the same Markdown
is in ``convocausal/report_html.py``.
"""

from __future__ import annotations

import base64
import math
import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from checks.catalog import CATALOG
from configs.questions import Question
from convocausal.questions.history import history
from convocausal.questions.registry import MEASUREMENT_PREFIX, why_method
from convocausal.report_history import (
    HISTORY_FIGURE,
    family_size,
    history_lines,
    history_plot,
    monitoring_lines,
    sequence_lines,
)
from convocausal.report_html import memo_html
from convocausal.report_outcomes import (
    decision_rule_note,
    guardrail_caveats,
    guardrail_decision,
    guardrails_cleared,
    outcomes_section,
    run_table_lines,
)
from convocausal.store import StorePaths, connect, write_file_atomic
from methods.result import EstimateResult

FAILURE_MODES = {
    "hidden_confounder_risk": "hidden confounders",
    "omitted_confounder": "omitted confounder",
    "sample_size": "small sample",
    "outcome_not_agent_controlled": "gameable outcome",
    "survivorship_missing_outcome_gap": "survivorship",
}
ALPHA = 0.05
P_FLOOR = 0.001  # below it a p-value prints as "< 0.001": more digits claim a precision no test here has
NOTE_CELL_MAX = 100  # a note longer than this goes below the checks table, in full, and the cell points to it
SUMMARY_WIDTH = 78
# What n_treated / n_control count, per method: the same two words meant three different things
# (matched vs distinct controls, units' conversations over all periods), so the memo says which.
COUNT_WORDS = {
    "propensity_matching": ("{t} treated conversations matched to {c} distinct control conversations "
                            "(with replacement: one control can be the match of several treated)"),
    "synthetic_control": "{t} conversations in the treated units and {c} in the donor units, over all periods",
    "diff_in_diff": "{t} conversations in the treated group and {c} in the control group, before and after launch",
    "randomized_itt": "{t} conversations in the compared arm and {c} in the baseline arm",
    "randomized_iv": "{t} conversations in the compared arm and {c} in the baseline arm",
    "logged_policy_evaluation": ("{t} logged decisions where the candidate policy takes the logged action and "
                                 "{c} where it does not"),
    "judge_calibration": "{t} treated and {c} control conversations (the audit sample is part of both)",
    "mediation": "{t} treated and {c} control conversations",
}
FIGURES = {  # name -> caption, in reading order
    "propensity_overlap": "Propensity overlap of treated and control conversations",
    "balance_love_plot": "Covariate balance before and after matching (Love plot)",
    "trajectory": "Treated units against their synthetic control",
    "gaps": "Gap between treated and synthetic control, beside placebo donors",
    "group_means": "Treated and control means by period",
    "event_study": "Event study: effect by period relative to launch, with 95% intervals",
    "run_history": "Estimate by nightly run: fixed 95% interval (one look) and anytime-valid interval (all looks)",
}
# methods whose std_error gives a test statistic
STAT_NAME = {"propensity_matching": "z", "diff_in_diff": "t", "randomized_itt": "z", "randomized_iv": "z",
             "logged_policy_evaluation": "z", "judge_calibration": "z", "mediation": "z"}


# --- numbers -------------------------------------------------------------------------------------

def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA or v is pd.NaT


def _num(v, fmt="{:+.4f}") -> str:
    return "—" if _missing(v) else fmt.format(v)


def fmt_p(p) -> str:
    """``< 0.001`` below the floor, three decimals otherwise, ``—`` when there is none."""
    if _missing(p):
        return "—"
    return f"< {P_FLOOR:g}" if p < P_FLOOR else f"{p:.3f}"


def p_phrase(p) -> str:
    """``p < 0.001`` or ``p = 0.012``: the relation belongs to the sentence, not to the number."""
    text = fmt_p(p)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def fmt_value(v) -> str:
    """A diagnostic's value or threshold: counts with thousands separators, the rest 4 significant digits."""
    if _missing(v):
        return "—"
    v = float(v)
    if v.is_integer() and abs(v) < 1e15:
        return f"{int(v):,}"
    return f"{v:.4g}"


def fmt_count(n) -> str:
    return "—" if _missing(n) else f"{int(n):,}"


def _magnitude(x: float) -> str:
    return f"{abs(x):.3f}" if abs(x) >= 0.001 else f"{abs(x):.2g}"


def interval_p_note(row: Mapping) -> str | None:
    """Why the 95% interval and the p-value disagree about 5 %, in a few words; None when they agree.

    They agree by construction for a normal interval with its z-test (matching) or a single
    inverted test (synthetic control's conformal test); they can part when the interval is the
    hull of an accepted set with holes, when the p-value is the larger of two tests and the
    interval inverts one, or at the edge of an inversion grid. A reader seeing "excludes 0" beside
    p = 0.056 otherwise has to guess which to believe.
    """
    lo, hi, p = row.get("ci_low"), row.get("ci_high"), row.get("p_value")
    if _missing(lo) or _missing(hi) or _missing(p):
        return None
    excludes, significant = bool(lo > 0 or hi < 0), bool(p < ALPHA)
    if excludes == significant:
        return None
    how = str(row.get("ci_method") or "").lower()
    if "hull" in how or "hole" in how:
        why = ("the test accepts effects in separate pieces; the interval is their hull, and 0 falls in a gap "
               "the test rejects" if significant else
               "the interval is the hull of the accepted effects; the p-value tests 0 itself")
    elif "larger of" in how:
        why = "the p-value is the larger of two tests (placebo rank, working model); the interval inverts one of them"
    elif "placebo" in how or "permutation" in how or "rank" in how:
        why = "the p-value moves in steps of one placebo/permutation; the interval is read off a grid of effects"
    elif "inversion" in how:
        why = "the interval inverts the test on a grid; the p-value is the same test at 0, so they part only at 5%"
    else:
        why = "the interval and the p-value come from different constructions (see the interval method)"
    side = "excludes 0 but p ≥ 0.05" if excludes else "includes 0 but p < 0.05"
    return f"interval {side}: {why}"


# --- the run table --------------------------------------------------------------------------------

def format_run_table(rows: list[dict], truth: dict) -> str:
    """One line per question, with the true effect beside it when the data are synthetic.

    A ``*`` after the p-value marks a row whose interval and p-value disagree about 5 %; the
    footnote under the table says why (``interval_p_note``). ``q`` is the Benjamini–Hochberg
    q-value over the questions of the run.
    """
    head = f"{'question':<24} {'method':<20} {'estimate':>9} {'95% CI':>21} {'p':>7}  {'q':>7} {'naive':>8}"
    head += f" {'truth':>8} {'covers':>6}  checks failed" if truth else "  checks failed"
    lines, notes = [head, "-" * len(head)], []
    for r in rows:
        failed = [k for k, v in (r.get("checks") or {}).items() if v == "failed"]
        ci = f"[{_num(r.get('ci_low'))}, {_num(r.get('ci_high'))}]"
        note = interval_p_note(r)
        p = fmt_p(r.get("p_value")) + ("*" if note else " ")
        if note:
            notes.append(f"* {r['question_id']}: {note}.")
        line = (f"{r['question_id']:<24} {r['method']:<20} {_num(r.get('estimate')):>9} {ci:>21} "
                f"{p:>8} {fmt_p(r.get('q_value')):>7} "
                f"{_num(r.get('naive_estimate')):>8}")
        if truth:
            t = truth.get(r["question_id"])
            covers = (t is not None and not _missing(r.get("ci_low")) and not _missing(r.get("ci_high"))
                      and r["ci_low"] <= t <= r["ci_high"])
            line += f" {_num(t):>8} {('yes' if covers else 'NO'):>6}"
        line += "  " + (", ".join(failed) if failed else "none")
        if r.get("status") == "refused":
            line += f"\n    refused: {r.get('message')}"
        lines.append(line)
        lines += run_table_lines(r.get("outcomes"))  # guardrails, net value, segments (issue 16)
    return "\n".join(lines + ([""] + notes if notes else []))


# --- one method's summary (convocausal estimate) -------------------------------------------------

def format_result(result: EstimateResult, checks: Iterable | None = None, treatment: str | None = None,
                  width: int = SUMMARY_WIDTH) -> str:
    """A statsmodels-style ``summary()`` block of one method run: what was estimated on how many
    conversations, the coefficient line (estimate, std err, z or t, p, [0.025 0.975]), the checks
    with their severity and state, and numbered notes (how the interval and p-value were made,
    what the counts count, any disagreement between them).

    ``checks``: ``CheckOutcome``-like objects (name, severity, state); not-applicable ones are
    left out. ``treatment``: the treatment column or treated selector, when the caller knows it
    (the result object does not carry it). A method whose ``std_error`` is not a sampling SE
    (synthetic control: interval width / 3.92) prints no test statistic rather than a made-up one.
    """
    r = result
    eq, dash = "=" * width, "-" * width
    half = width // 2
    title = f"{r.method.replace('_', ' ').capitalize()} results".center(width).rstrip()

    def pair(lk, lv, rk, rv) -> str:
        left = f"{lk + ':':<18}{lv}"
        right = f"{rk + ':':<18}{rv:>{half - 18}}"
        return f"{left:<{half}}{right}"

    head = [pair("Method", r.method, "Estimand", r.estimand),
            pair("Outcome", r.outcome, "No. treated", fmt_count(r.n_treated)),
            pair("Treatment", treatment or "—", "No. control", fmt_count(r.n_control)),
            pair("Naive difference", _num(r.naive_estimate), "Conf. level", "95%")]
    stat_name = STAT_NAME.get(r.method)
    stat = (r.estimate / r.std_error if stat_name and not _missing(r.std_error) and r.std_error > 0
            and not _missing(r.estimate) else None)
    cols = ["coef", "std err", stat_name or "stat", f"P>|{stat_name}|" if stat_name else "P", "[0.025", "0.975]"]
    coef_head = f"{'':<12}" + "".join(f"{c:>11}" for c in cols)
    vals = [_num(r.estimate, "{:.4f}"), _num(r.std_error, "{:.4f}"), _num(stat, "{:.3f}"), fmt_p(r.p_value),
            _num(r.ci_low, "{:.4f}"), _num(r.ci_high, "{:.4f}")]
    coef_line = f"{'effect':<12}" + "".join(f"{v:>11}" for v in vals)
    out = [title, eq, *head, eq, coef_head, dash, coef_line, eq]
    shown = [c for c in (checks or []) if c.state != "not_applicable"]
    if shown:
        out.append(f"{'Checks':<34}{'severity':<10}state")
        out.append(dash)
        out += [f"{c.name:<34}{c.severity:<10}{c.state}" for c in shown]
        out.append(eq)
    notes = [f"Interval and p-value: {r.ci_method}." if r.ci_method else None,
             COUNT_WORDS.get(r.method, "{t} treated and {c} control conversations").format(
                 t=fmt_count(r.n_treated), c=fmt_count(r.n_control)) + ".",
             None if stat_name else "No test statistic: this method's std err is not a sampling standard error.",
             interval_p_note({"ci_low": r.ci_low, "ci_high": r.ci_high, "p_value": r.p_value,
                              "ci_method": r.ci_method})]
    failed_refs = [x for x in r.refutations if not x.passed]
    if r.refutations:
        notes.append(f"Refuters: {len(r.refutations) - len(failed_refs)} of {len(r.refutations)} passed"
                     + (" (failed: " + ", ".join(x.refuter for x in failed_refs) + ")." if failed_refs else "."))
    if r.balance:
        bad = [b for b in r.balance if not b.passed]
        notes.append(f"Balance: {len(r.balance) - len(bad)} of {len(r.balance)} covariate levels with |SMD| < 0.1 "
                     "after matching.")
    out.append("Notes:")
    for i, n in enumerate([n for n in notes if n], start=1):
        out += textwrap.wrap(n, width, initial_indent=f"[{i}] ", subsequent_indent="    ")
    return "\n".join(out)


# --- files ----------------------------------------------------------------------------------------

def write_shared(path: Path, data: bytes) -> None:
    """Write ``data`` group-readable, temp-then-rename (``store.write_file_atomic``): memos and plots
    were written 0600 by ``mkstemp`` and unreadable to the group that reads the reports."""
    write_file_atomic(path, data)


def plot_paths(paths: StorePaths, question_id: str, plots: dict[str, bytes] | None = None,
               write: bool = False) -> dict[str, Path]:
    """Where a question's PNGs live; with ``write`` the given plots are saved there first."""
    folder = paths.parts / "reports" / question_id
    if write and plots:
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.png"):
            if old.stem not in plots:
                old.unlink(missing_ok=True)  # another run may have removed it already
        for name, png in plots.items():
            write_shared(folder / f"{name}.png", png)
    return {p.stem: p for p in sorted(folder.glob("*.png"))} if folder.is_dir() else {}


def report_paths(paths: StorePaths, question_id: str) -> dict[str, Path]:
    """The memo's Markdown (plots linked as files beside it) and its self-contained HTML."""
    folder = paths.parts / "reports"
    return {"md": folder / f"{question_id}.md", "html": folder / f"{question_id}.html"}


def write_memo(paths: StorePaths, question_id: str, memo: Memo) -> dict[str, Path]:
    """Write ``<store>.parts/reports/<question>.md`` and ``.html``, group-readable; returns both paths."""
    out = report_paths(paths, question_id)
    write_shared(out["md"], memo.markdown_files.encode("utf-8"))
    write_shared(out["html"], memo.html.encode("utf-8"))
    return out


# --- the memo -------------------------------------------------------------------------------------

@dataclass
class Memo:
    markdown_inline: str  # plots embedded as data URIs, for the Dagster UI
    markdown_files: str  # plots linked as files, for the report folder
    html: str = ""  # the inline Markdown rendered to one self-contained page (plots as data URIs)


def decision_memo(paths: StorePaths, question: Question) -> Memo:
    with connect(paths.db, read_only=True) as con:
        est = con.execute(
            "SELECT * FROM estimates WHERE question_id = ? ORDER BY computed_at DESC LIMIT 1", [question.id]
        ).df()
        if est.empty:
            raise ValueError(f"no estimate stored for question {question.id}")
        row = est.iloc[0].to_dict()
        key = [row["run_id"], question.id]
        refs = con.execute("SELECT * FROM refutations WHERE run_id = ? AND question_id = ?", key).df()
        diags = con.execute("SELECT * FROM diagnostics WHERE run_id = ? AND question_id = ?", key).df()
        bal = con.execute("SELECT * FROM balance WHERE run_id = ? AND question_id = ?", key).df()
        checks = con.execute("SELECT * FROM checks WHERE run_id = ? AND question_id = ?", key).df()
        outcomes = (con.execute("SELECT * FROM question_outcomes WHERE run_id = ? AND question_id = ?", key).df()
                    if con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = "
                                   "'question_outcomes'").fetchone()[0] else None)
        runs = history(con, question.id)
        q_family = family_size(con, row["run_id"])
        drift_lines = monitoring_lines(con)
    history_png = history_plot(runs, question.outcome)
    if history_png and row.get("status") != "refused":
        plot_paths(paths, question.id, {**_current_plots(paths, question.id), HISTORY_FIGURE: history_png}, write=True)
    plots = plot_paths(paths, question.id) if row.get("status") != "refused" else {}
    extra = history_lines(runs) + drift_lines
    inline = _memo_body(question, row, refs, diags, bal, checks, figures=_figures(
        plots, lambda name, p: f"data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}"),
        extra_sections=extra, q_family=q_family, outcomes=outcomes)
    files = _memo_body(question, row, refs, diags, bal, checks, figures=_figures(
        plots, lambda name, p: f"{question.id}/{p.name}"), extra_sections=extra, q_family=q_family,
        outcomes=outcomes)
    return Memo(inline, files, memo_html(inline, title=f"{question.id} — decision memo"))


def _current_plots(paths: StorePaths, question_id: str) -> dict[str, bytes]:
    """The plots already on disk (the method's, written by the question step), to keep beside the history."""
    return {name: p.read_bytes() for name, p in plot_paths(paths, question_id).items() if name != HISTORY_FIGURE}


def _figures(plots: dict[str, Path], src) -> str:
    """The Figures section: one captioned image per plot, in reading order (known names first)."""
    if not plots:
        return ""
    names = [n for n in FIGURES if n in plots] + sorted(n for n in plots if n not in FIGURES)
    blocks = []
    for i, name in enumerate(names, start=1):
        caption = FIGURES.get(name) or (
            f"Effect by {name.removeprefix('forest_')} segment with 95% intervals (forest plot)"
            if name.startswith("forest_") else name.replace("_", " "))
        blocks.append(f"**Figure {i}.** {caption}.\n\n![{caption}]({src(name, plots[name])})")
    return "\n\n".join(blocks)


def _memo_body(question: Question, row: dict, refs, diags, bal, checks, figures: str = "",
               extra_sections: list[str] = (), q_family: int = 0, outcomes: pd.DataFrame | None = None) -> str:
    refused = row.get("status") == "refused"
    failed = diags[~diags["passed"].astype(bool)] if not diags.empty else diags
    failed_refs = refs[~refs["passed"].astype(bool)] if not refs.empty else refs

    def _names(severity: str, state: str) -> list[str]:
        if checks.empty:
            return []
        return list(checks[(checks["severity"] == severity) & (checks["state"] == state)]["check_name"])

    # the decision follows the check catalogue: only a failed ERROR check means do not act; failed
    # WARN checks and ERROR checks the data could not test (e.g. a pre-trend with too few placebo
    # groups) are caveats, named; the sentence never says "checks passed" while any check failed
    failed_errors, unrun_errors, caveats = _names("ERROR", "failed"), _names("ERROR", "not_run"), _names("WARN", "failed")
    notes = []
    if caveats:
        notes.append("these WARN checks failed: " + ", ".join(caveats))
    if unrun_errors:
        notes.append("the data could not test: " + ", ".join(unrun_errors))
    notes += guardrail_caveats(outcomes)
    harmed = guardrail_decision(outcomes)  # a guardrail worse beyond its tolerance: never act (issue 16)
    ci_lo, ci_hi, est = row.get("ci_low"), row.get("ci_high"), row.get("estimate")
    if refused:
        decision = f"**No decision yet.** The question was refused: {row.get('message')}"
    elif failed_errors:
        decision = "**Do not act on this number yet**: failed checks: " + ", ".join(failed_errors) + (
            "; also " + "; ".join(notes) if notes else "") + "."
    elif harmed:
        decision = harmed + (" Also " + "; ".join(notes) + "." if notes else "")
    elif _excludes_zero(ci_lo, ci_hi) and _has_sequence(row) and not _excludes_zero(row["cs_low"], row["cs_high"]):
        decision = (f"**Not yet.** The fixed 95% interval ({ci_lo:+.3f} to {ci_hi:+.3f}) excludes zero, but this "
                    f"question is re-estimated every night and its anytime-valid interval "
                    f"({row['cs_low']:+.3f} to {row['cs_high']:+.3f}) does not: acting on the first night the "
                    "fixed interval excludes zero is wrong far more often than 5% of the time. Keep collecting."
                    + (" Also " + "; ".join(notes) + "." if notes else ""))
    elif _excludes_zero(ci_lo, ci_hi):
        direction = "raises" if est > 0 else "lowers"
        decision = (f"The change {direction} `{question.outcome}` by {_magnitude(est)} "
                    f"(estimate {est:+.3f}, 95% CI {ci_lo:+.3f} to {ci_hi:+.3f}); "
                    + ("every check passed." if not notes else
                       "no ERROR check failed; read with care: " + "; ".join(notes) + ".")
                    + guardrails_cleared(outcomes))
    else:
        decision = "No effect distinguishable from zero at this sample size" + (
            " (read with care: " + "; ".join(notes) + ")." if notes else ".")
    lines = [
        f"# {question.id}",
        question.description or None,
        "## Decision", decision,
        "## Intervention",
        _intervention(question),
        "## Estimand", f"{row['estimand']} on `{question.outcome}`.",
        "## Design", row.get("message") if not refused and row.get("message") else why_method(question),
        "## Result",
    ]
    if refused:
        lines.append("No estimate: the question was refused before the method ran (see Decision).")
    else:
        lines.append(f"Estimate **{est:+.4f}** (95% CI {ci_lo:+.4f} to {ci_hi:+.4f}, {p_phrase(row['p_value'])}). "
                     f"Naive comparison (difference of raw means): {_num(row['naive_estimate'])}.")
        lines.append(COUNT_WORDS.get(row.get("method"), "{t} treated and {c} control conversations").format(
            t=fmt_count(row["n_treated"]), c=fmt_count(row["n_control"])) + ".")
        if row.get("ci_method"):
            lines.append(f"Interval and p-value: {row['ci_method']}.")
        lines += sequence_lines(row, q_family)
        disagree = interval_p_note(row)
        if disagree:
            lines.append(f"Note: the {disagree}.")
        if not _missing(row.get("true_effect")):
            lines.append(f"True effect built into the synthetic data: {row['true_effect']:+.4f}.")
    lines += measurement_section(row, diags)
    lines += outcomes_section(outcomes)
    if figures:
        lines += ["## Figures", figures]
    lines += extra_sections
    graph = diags[diags["name"] == "causal_graph"] if not diags.empty else diags
    if not graph.empty:
        lines += ["## Causal graph", str(graph.iloc[0]["message"])]
    lines.append("## Checks")
    lines += _checks_section(row, refs, diags, bal, checks)
    lines.append("## Main risks")
    risks = [f"- **{FAILURE_MODES.get(n, n)}**: {_line(m)}" for n, m in zip(failed["name"], failed["message"])] \
        if not failed.empty else []
    risks += [f"- **refuter {r}**: {_line(m)}" for r, m in zip(failed_refs["refuter"], failed_refs["message"])] \
        if not failed_refs.empty else []
    lines.append("\n".join(risks) if risks else "None of the automated checks failed. " + _residual_risk(question, refs))
    lines.append("## Decision rule")
    interval = ("the anytime-valid 95% interval (valid however many nights it is looked at)"
                if _has_sequence(row) else "the 95% interval")
    lines.append(f"Act when {interval} excludes zero and no check of severity ERROR in the checks table "
                 "failed. A failed WARN check, or an ERROR check the data could not test (state `not_run`), is "
                 "a caveat: read its note before acting. Otherwise collect more data or fix the failing check first."
                 + decision_rule_note(outcomes)
                 + (f" {q_family} questions were tested in this run: read the q-value (false-discovery rate) "
                    "beside the p-value." if q_family > 1 else ""))
    return "\n\n".join(x for x in lines if x)


_MEASUREMENT_HEADINGS = {  # method -> (section title, sentence before the list)
    "judge_calibration": ("Judge calibration", ("The same comparison on three measurements of quality: the judge's "
                                                "raw score, the judge calibrated on the human audit (the estimate "
                                                "above), and the human audit alone. A raw effect far from the "
                                                "calibrated one is the judge's bias, not the treatment's.")),
    "logged_policy_evaluation": ("Policy value", ("The candidate policy's value by each estimator, beside what the "
                                                  "logging policy earned; the doubly robust value is the estimate "
                                                  "above.")),
    "mediation": ("Mediation", "The total effect (the estimate above) split at the mediator."),
}


def measurement_section(row: Mapping, diags: pd.DataFrame) -> list[str]:
    """Judge calibration, policy value or mediation (issue 17): the secondary numbers, from the diagnostics
    rows the registry names ``MEASUREMENT_PREFIX + …``; for a policy, the overlap warnings beside them; for
    mediation, the sentence that the mediator-adjusted number answers a different question."""
    method = row.get("method")
    if method not in _MEASUREMENT_HEADINGS or row.get("status") == "refused" or diags.empty:
        return []
    rows = diags[diags["name"].str.startswith(MEASUREMENT_PREFIX)]
    if rows.empty:
        return []
    title, lead = _MEASUREMENT_HEADINGS[method]
    note = rows[rows["name"] == MEASUREMENT_PREFIX + "mediation_note"]
    items = [f"- {_line(m)}" for n, m in zip(rows["name"], rows["message"]) if n != MEASUREMENT_PREFIX + "mediation_note"]
    out = [f"## {title}", lead, "\n".join(items)]
    if method == "logged_policy_evaluation" and "check_name" in diags.columns:
        overlap = diags[(diags["check_name"] == "policy_overlap") & ~diags["passed"].astype(bool)]
        out.append("**Overlap warnings:** " + " ".join(_line(m) for m in overlap["message"]) if not overlap.empty
                   else "Overlap: the candidate's actions were ones the logger took with a fair probability "
                        "(no overlap warning).")
    if not note.empty:
        out.append(f"**Read this first:** {_line(note.iloc[0]['message'])}")
    return out


def _excludes_zero(lo, hi) -> bool:
    return not _missing(lo) and not _missing(hi) and (lo > 0 or hi < 0)


def _has_sequence(row: Mapping) -> bool:
    return not _missing(row.get("cs_low")) and not _missing(row.get("cs_high"))


def _checks_section(row: dict, refs, diags, bal, checks) -> list[str]:
    """The checks table (one row per applicable check: check, state, severity, value, threshold,
    note), the checks that do not apply in one sentence, the numbered notes in full, and the
    measurements that feed no check."""
    if checks.empty:
        return ["No check states were stored for this run."]
    applicable = checks[checks["state"] != "not_applicable"]
    has_check_col = "check_name" in diags.columns
    table = ["| check | state | severity | value | threshold | note |", "|---|---|---|---|---|---|"]
    notes: list[str] = []
    for _, c in applicable.iterrows():
        name, state = c["check_name"], c["state"]
        fed = diags[diags["check_name"] == name] if has_check_col and not diags.empty else diags.iloc[0:0]
        value, threshold = _check_value(name, state, fed, refs, bal)
        message = _line(c["message"])
        n = len(notes) + 1
        cell = _cell(message) if len(message) <= NOTE_CELL_MAX else f"see note {n} below"
        notes.append(_note(n, name, state, message, fed, refs, bal))
        shown_state = f"**{state}**" if state == "failed" else state
        table.append(f"| {name} | {shown_state} | {c['severity']} | {value} | {threshold} | {cell} |")
    out = ["\n".join(table)]  # one block: a blank line between rows ends a Markdown table
    na = list(checks[checks["state"] == "not_applicable"]["check_name"])
    if na:
        out.append(f"Not applicable to {row.get('method') or 'this method'}: " + ", ".join(na) + ".")
    out += ["### Notes on the checks", "\n".join(notes)]
    other = diags[diags["check_name"].isna()] if has_check_col and not diags.empty else diags
    other = other[(other["name"] != "causal_graph") & ~other["name"].str.startswith(MEASUREMENT_PREFIX)] \
        if not other.empty else other
    if not other.empty:
        out += ["### Other measurements", "\n".join(
            f"- `{d['name']}` = {fmt_value(d['value'])}" + (f" (threshold {fmt_value(d['threshold'])})"
                                                            if not _missing(d["threshold"]) else "")
            + ("" if d["passed"] else " — **did not pass**") + f": {_line(d['message'])}"
            for _, d in other.iterrows())]
    return out


def _check_value(name: str, state: str, fed, refs, bal) -> tuple[str, str]:
    """Value and threshold of a check's row: the deciding evidence (its first failed diagnostic,
    else the one named like the check, else the first), named when it is not the check itself."""
    source = CATALOG[name].source if name in CATALOG else "diagnostics"
    if source == "balance":
        if bal.empty:
            return "—", "—"
        return f"max \\|SMD\\| {bal['smd_after'].abs().max():.3f}", "0.1"
    if source == "refutations":
        if refs.empty:
            return "—", "—"
        return f"{int(refs['passed'].astype(bool).sum())} of {len(refs)} passed", "all pass"
    if fed.empty or state == "not_run":
        return "—", "—"
    failed = fed[~fed["passed"].astype(bool)]
    same = fed[fed["name"] == name]
    d = (failed if not failed.empty else same if not same.empty else fed).iloc[0]
    value = fmt_value(d["value"]) + ("" if d["name"] == name else f" (`{d['name']}`)")
    return value, fmt_value(d["threshold"])


def _note(n: int, name: str, state: str, message: str, fed, refs, bal) -> str:
    """Note ``n``: the check's whole message, then each piece of evidence with its own numbers, so
    two counts under one check (conversations with an outcome vs matched controls' effective
    size) each say what they count."""
    indent = " " * len(f"{n}. ")
    items: list[str] = []
    source = CATALOG[name].source if name in CATALOG else "diagnostics"
    if source == "refutations":
        items = [f"`{r['refuter']}` ({'passed' if r['passed'] else '**failed**'}; new effect "
                 f"{_num(r['new_effect'])}): {_line(r['message'])}" for _, r in refs.iterrows()]
    elif source == "balance" and not bal.empty:
        worst = bal.reindex(bal["smd_after"].abs().sort_values(ascending=False).index).head(5)
        items = [f"{len(bal)} covariate levels; largest |SMD| after matching: " + ", ".join(
            f"{c} {a:+.3f} (before {b:+.3f})" for c, a, b in
            zip(worst["covariate"], worst["smd_after"], worst["smd_before"]))]
    elif len(fed) > 1 or (len(fed) == 1 and _line(fed.iloc[0]["message"]) != message):
        for _, d in fed.iterrows():
            limit = f", threshold {fmt_value(d['threshold'])}" if not _missing(d["threshold"]) else ""
            items.append(f"`{d['name']}` = {fmt_value(d['value'])}{limit}"
                         f"{'' if d['passed'] else ', **did not pass**'}: {_line(d['message'])}")
        if state != "not_run":  # the check's message is these messages joined: each is shown once, with its numbers
            return "\n".join([f"{n}. **{name}** ({state}), from {len(fed)} measurement{'s' if len(fed) > 1 else ''}:"]
                             + [f"{indent}- {i}" for i in items])
    head = f"{n}. **{name}** ({state}): {message}"
    return "\n".join([head] + [f"{indent}- {i}" for i in items])


def _residual_risk(question: Question, refs) -> str:
    """What no automated check can rule out, per design; a refuter is named only when it was run."""
    if getattr(question, "assignment", None):
        tail = (" The effect of actual use (Wald / 2SLS) also rests on exclusion (assignment changes the outcome "
                "only through use) and monotonicity (no one uses it because they were assigned away from it)."
                if getattr(question, "uptake", None) else "")
        return ("Assignment was randomized, so confounding is ruled out by design as long as the assignment "
                "log is complete and assignment was not re-done after the conversation started." + tail)
    if getattr(question, "policy", None) is not None:
        return ("The value rests on the logged probabilities being the ones the router really used, and on the "
                "context columns of the reward model being what it decided on; a logging bug or an unlogged "
                "override (a human re-routing by hand) biases every estimator alike.")
    if getattr(question, "score", None):
        return ("The arms are compared by their means: anything besides the treatment that differs between them "
                "is read as its effect, so the treatment should be randomized; and the audited sample must be a "
                "random sample within each arm.")
    if question.treatment:
        sens = [r for r in (refs["refuter"] if not refs.empty else []) if "unobserved_confounder" in r]
        read = (f"the `{sens[0]}` refuter's note says how strong such a reason would have to be."
                if sens else "no sensitivity analysis was run for this estimate, so how strong such a reason "
                             "would have to be is unknown.")
        return "Unlogged reasons for the agent's choice can still confound: " + read
    return ("Anything else that changed for the treated group at the launch (another release, a campaign, a "
            "routing change) would be read as the change's effect: check the release log for the launch weeks.")


def _line(text) -> str:
    """A message on one line (whitespace runs collapsed), never cut."""
    return " ".join(str(text).split()) if not _missing(text) else ""


def _cell(text) -> str:
    """A table cell: the whole message on one line, pipes escaped (never cut mid-word)."""
    return _line(text).replace("|", "\\|")


def _intervention(question: Question) -> str:
    if getattr(question, "policy", None) is not None:  # logged-policy evaluation (issue 17)
        rules = "; ".join(
            "if " + " and ".join(f"`{c}` {' '.join(f'{op} {v}' for op, v in cond.items())}"
                                 for c, cond in r["when"].items()) + f" → `{r['action']}`"
            for r in question.policy.as_plain()["rules"])
        return (f"The candidate routing policy ({rules + '; ' if rules else ''}otherwise `{question.policy.default}`; "
                f"the first rule that matches wins) instead of the logged `{question.action}`.")
    if getattr(question, "assignment", None):
        base = f" against the baseline arm `{question.baseline}`" if getattr(question, "baseline", None) else ""
        use = (f"; actual use is recorded in `{question.uptake}`" if getattr(question, "uptake", None) else "")
        return f"Randomized assignment in `{question.assignment}`: each arm{base}{use}."
    if question.treatment:
        return f"Conversations where `{question.treatment}` = 1 versus = 0."
    sel = "; ".join(f"`{k}` in {list(v)}" for k, v in (question.treated or {}).items())
    return f"The change reached conversations with {sel} from {question.launch}."
