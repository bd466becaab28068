"""Human-readable output: the run table, one method's result, and the decision memo.

The memo follows BACKGROUND.md: decision, intervention, estimand, design, result, main
risks, decision rule. It is built from the store's rows (not from in-memory objects) so the
memo always says what the store says.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from pathlib import Path

from configs.questions import Question
from convocausal.questions.registry import why_method
from convocausal.store import StorePaths, connect, write_file_atomic
from methods.result import EstimateResult

FAILURE_MODES = {
    "hidden_confounder_risk": "hidden confounders",
    "omitted_confounder": "omitted confounder",
    "sample_size": "small sample",
    "outcome_not_agent_controlled": "gameable outcome",
    "survivorship_missing_outcome_gap": "survivorship",
}


def _num(v, fmt="{:+.4f}") -> str:
    return "—" if v is None or math.isnan(v) else fmt.format(v)


def format_run_table(rows: list[dict], truth: dict) -> str:
    """One line per question, with the true effect beside it when the data are synthetic."""
    head = f"{'question':<24} {'method':<20} {'estimate':>9} {'95% CI':>21} {'p':>7} {'naive':>8}"
    head += f" {'truth':>8} {'covers':>6}  checks failed" if truth else "  checks failed"
    lines = [head, "-" * len(head)]
    for r in rows:
        failed = [k for k, v in (r.get("checks") or {}).items() if v == "failed"]
        ci = f"[{_num(r.get('ci_low'))}, {_num(r.get('ci_high'))}]"
        line = (f"{r['question_id']:<24} {r['method']:<20} {_num(r.get('estimate')):>9} {ci:>21} "
                f"{_num(r.get('p_value'), '{:.3f}'):>7} {_num(r.get('naive_estimate')):>8}")
        if truth:
            t = truth.get(r["question_id"])
            covers = (t is not None and r.get("ci_low") is not None
                      and r["ci_low"] <= t <= r["ci_high"])
            line += f" {_num(t):>8} {('yes' if covers else 'NO'):>6}"
        line += "  " + (", ".join(failed) if failed else "none")
        if r.get("status") == "refused":
            line += f"\n    refused: {r.get('message')}"
        lines.append(line)
    return "\n".join(lines)


def format_result(result: EstimateResult) -> str:
    r = result
    out = [
        f"{r.method} — {r.estimand} on {r.outcome}",
        (f"  estimate {_num(r.estimate)}  (95% CI {_num(r.ci_low)} to {_num(r.ci_high)}; "
         f"SE {_num(r.std_error, '{:.4f}')}; p {_num(r.p_value, '{:.4f}')})"),
        f"  naive difference {_num(r.naive_estimate)}; n treated {r.n_treated}, n control {r.n_control}",
        f"  interval: {r.ci_method}",
    ]
    for x in r.refutations:
        out.append(f"  refuter {x.refuter:<28} {'pass' if x.passed else 'FAIL'}  new effect {_num(x.new_effect)}  {x.message}")
    bad = [b for b in r.balance if not b.passed]
    if r.balance:
        out.append(f"  balance: {len(r.balance) - len(bad)}/{len(r.balance)} covariate levels with |SMD| < 0.1 after matching")
    for d in r.diagnostics:
        out.append(f"  {'ok  ' if d.passed else 'FAIL'} {d.name}: {d.message}")
    return "\n".join(out)


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
            write_file_atomic(folder / f"{name}.png", png)
    return {p.stem: p for p in sorted(folder.glob("*.png"))} if folder.is_dir() else {}


@dataclass
class Memo:
    markdown_inline: str  # plots embedded as data URIs, for the Dagster UI
    markdown_files: str  # plots linked as files, for the report folder


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
    body = _memo_body(question, row, refs, diags, bal, checks)
    plots = plot_paths(paths, question.id)
    inline = body + "".join(
        f"\n\n**{name}**\n\n![{name}](data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()})"
        for name, p in plots.items()
    )
    files = body + "".join(f"\n\n![{name}]({question.id}/{p.name})" for name, p in plots.items())
    return Memo(inline, files)


def _memo_body(question: Question, row: dict, refs, diags, bal, checks) -> str:
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
    if refused:
        decision = f"**No decision yet.** The question was refused: {row.get('message')}"
    elif failed_errors:
        decision = "**Do not act on this number yet**: failed checks: " + ", ".join(failed_errors) + (
            "; also " + "; ".join(notes) if notes else "") + "."
    elif row["ci_low"] is not None and (row["ci_low"] > 0 or row["ci_high"] < 0):
        direction = "raises" if row["estimate"] > 0 else "lowers"
        decision = (f"The change {direction} `{question.outcome}` by {abs(row['estimate']):.3f} "
                    f"(estimate {row['estimate']:+.3f}, 95% CI {row['ci_low']:+.3f} to {row['ci_high']:+.3f}); "
                    + ("every check passed." if not notes else
                       "no ERROR check failed; read with care: " + "; ".join(notes) + "."))
    else:
        decision = "No effect distinguishable from zero at this sample size" + (
            " (read with care: " + "; ".join(notes) + ")." if notes else ".")
    lines = [
        f"# {question.id}",
        question.description or "",
        "## Decision", decision,
        "## Intervention",
        _intervention(question),
        "## Estimand", f"{row['estimand']} on `{question.outcome}`.",
        "## Design", row.get("message") if not refused and row.get("message") else why_method(question),
        "## Result",
    ]
    if not refused:
        lines.append(
            f"Estimate **{row['estimate']:+.4f}** (95% CI {row['ci_low']:+.4f} to {row['ci_high']:+.4f}, "
            f"p = {row['p_value']:.4f}; {row['ci_method']}). Naive comparison: {_num(row['naive_estimate'])}. "
            f"{int(row['n_treated'])} treated, {int(row['n_control'])} control."
        )
        if row.get("true_effect") is not None and row["true_effect"] == row["true_effect"]:
            lines.append(f"True effect built into the synthetic data: {row['true_effect']:+.4f}.")
    graph = diags[diags["name"] == "causal_graph"] if not diags.empty else diags
    if not graph.empty:
        lines += ["## Causal graph", str(graph.iloc[0]["message"])]
    lines.append("## Checks")
    if not checks.empty:
        lines.append("| check | severity | state | note |\n|---|---|---|---|\n" + "\n".join(
            f"| {c['check_name']} | {c['severity']} | {c['state'] if c['state'] != 'failed' else '**failed**'} | "
            f"{_cell(c['message'])} |" for _, c in checks[checks["state"] != "not_applicable"].iterrows()))
    lines.append("### Diagnostics")
    # one block per table: rows joined by single newlines, or Markdown shows a header-only table
    rows = ["| diagnostic | value | threshold | passed | note |", "|---|---|---|---|---|"]
    rows += [f"| {d['name']} | {_num(d['value'], '{:.4g}')} | {_num(d['threshold'], '{:.4g}')} | "
             f"{'yes' if d['passed'] else '**no**'} | {_cell(d['message'])} |" for _, d in diags.iterrows()]
    rows += [f"| refuter: {r['refuter']} | {_num(r['new_effect'])} | — | {'yes' if r['passed'] else '**no**'} | "
             f"{_cell(r['message'])} |" for _, r in refs.iterrows()]
    lines.append("\n".join(rows))
    if not bal.empty:
        worst = bal.reindex(bal["smd_after"].abs().sort_values(ascending=False).index).head(5)
        lines.append("\nLargest |SMD| after matching: " + ", ".join(
            f"{c} {a:+.3f} (before {b:+.3f})" for c, a, b in zip(worst["covariate"], worst["smd_after"], worst["smd_before"])))
    lines.append("## Main risks")
    risks = [f"- **{FAILURE_MODES.get(n, n)}**: {m}" for n, m in zip(failed["name"], failed["message"])] if not failed.empty else []
    risks += [f"- **refuter {r}**: {m}" for r, m in zip(failed_refs["refuter"], failed_refs["message"])] if not failed_refs.empty else []
    lines.extend(risks or ["- None of the automated checks failed. " + _residual_risk(question)])
    lines.append("## Decision rule")
    lines.append("Act when the 95% interval excludes zero, every ERROR-severity check passes and the refuters "
                 "hold; otherwise collect more data or fix the failing check first.")
    return "\n\n".join(x for x in lines if x is not None)


def _residual_risk(question: Question) -> str:
    """What no automated check can rule out, per design."""
    if question.treatment:
        return ("Unlogged reasons for the agent's choice can still confound: read the unobserved-confounder "
                "sensitivity refutation for how strong such a reason would have to be.")
    return ("Anything else that changed for the treated group at the launch (another release, a campaign, a "
            "routing change) would be read as the change's effect: check the release log for the launch weeks.")


def _cell(text) -> str:
    """A table cell: the whole message on one line, pipes escaped (never cut mid-word)."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _intervention(question: Question) -> str:
    if question.treatment:
        return f"Conversations where `{question.treatment}` = 1 versus = 0."
    sel = "; ".join(f"`{k}` in {list(v)}" for k, v in (question.treated or {}).items())
    return f"The change reached conversations with {sel} from {question.launch}."
