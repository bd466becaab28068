"""The memo's "Guardrails and segments" section and the guardrail part of its decision (issue 16).

Read from the store's ``question_outcomes`` rows (``convocausal.questions.outcomes`` makes them),
like the rest of the memo. Kept apart from ``report.py`` so the decision memo's main module stays
one walk; ``report.py`` calls ``guardrail_decision``, ``guardrail_caveats``, ``decision_rule_note``,
``outcomes_section`` and ``run_table_lines``.
"""

from __future__ import annotations

import math

import pandas as pd

ALPHA = 0.05
STATUS_WORDS = {"harmed": "**harmed**", "cleared": "cleared", "inconclusive": "inconclusive",
                "blocked": "**failed checks**", "refused": "refused", "ok": "ok", "conservative": "ok (conservative)"}


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA


def _num(v, fmt="{:+.4f}") -> str:
    return "—" if _missing(v) else fmt.format(v)


def _p(v) -> str:
    return "—" if _missing(v) else ("< 0.001" if v < 0.001 else f"{v:.3f}")


def _rows(outcomes: pd.DataFrame | None, *kinds: str) -> pd.DataFrame:
    if outcomes is None or outcomes.empty:
        return pd.DataFrame(columns=["kind", "name", "status", "message"])
    return outcomes[outcomes["kind"].isin(kinds)]


def guardrail_decision(outcomes: pd.DataFrame | None) -> str | None:
    """The decision sentence when a guardrail is harmed (worse beyond its tolerance, one-sided at α/m), else None."""
    g = _rows(outcomes, "guardrail")
    harmed = g[g["status"] == "harmed"]
    if harmed.empty:
        return None
    m = len(g)
    parts = [f"`{r['name']}` worse by {abs(float(r['estimate'])):.4g} (estimate {float(r['estimate']):+.4f}, "
             f"95% CI {_num(r['ci_low'])} to {_num(r['ci_high'])}, one-sided p = {_p(r['p_value'])})"
             for _, r in harmed.iterrows()]
    return (f"**Do not act: guardrail {parts[0]}**" + ("; also " + "; ".join(parts[1:]) if len(parts) > 1 else "")
            + f". Worse beyond its tolerance by a one-sided test at α = {ALPHA:g}/{m} = {ALPHA / m:.4g} "
              f"(Bonferroni over {m} guardrail test{'s' if m > 1 else ''}).")


def guardrail_caveats(outcomes: pd.DataFrame | None) -> list[str]:
    """Guardrails that are neither harmed nor cleared: named beside the decision."""
    g = _rows(outcomes, "guardrail")
    out = []
    for status, words in (("inconclusive", "could be worse than its tolerance"),
                          ("blocked", "failed its checks"), ("refused", "could not be estimated")):
        names = list(g[g["status"] == status]["name"])
        if names:
            out.append(f"guardrail{'s' if len(names) > 1 else ''} {', '.join(f'`{n}`' for n in names)} {words}")
    return out


def guardrails_cleared(outcomes: pd.DataFrame | None) -> str:
    """A sentence naming the guardrails cleared, when every guardrail is (empty otherwise)."""
    g = _rows(outcomes, "guardrail")
    if g.empty or not (g["status"] == "cleared").all():
        return ""
    m = len(g)
    return (f" No guardrail is worse beyond its tolerance ({', '.join(f'`{n}`' for n in g['name'])}: "
            f"{m} one-sided test{'s' if m > 1 else ''} at α = {ALPHA:g}/{m}).")


def decision_rule_note(outcomes: pd.DataFrame | None) -> str:
    g = _rows(outcomes, "guardrail")
    if g.empty:
        return ""
    m = len(g)
    return (f" Act only if no guardrail is worse beyond its tolerance: {m} guardrail test{'s' if m > 1 else ''} "
            f"({', '.join(f'`{n}`' for n in g['name'])}), each one-sided at α = {ALPHA:g}/{m} = {ALPHA / m:.4g} "
            "(Bonferroni); a guardrail whose one-sided bound cannot rule out harm beyond its tolerance is a caveat.")


def outcomes_section(outcomes: pd.DataFrame | None) -> list[str]:
    """``## Guardrails and segments``: the guardrail table, the net value, and the segment table per column."""
    if outcomes is None or outcomes.empty:
        return []
    out = ["## Guardrails and segments"]
    g = _rows(outcomes, "guardrail")
    if not g.empty:
        m = len(g)
        out.append(f"{m} guardrail test{'s' if m > 1 else ''}, each one-sided at α = {ALPHA:g}/{m} = {ALPHA / m:.4g} "
                   "(Bonferroni): *harmed* = worse beyond its tolerance; *cleared* = the one-sided bound rules that "
                   "out; *inconclusive* = neither.")
        out.append(_table(g, "guardrail", with_p="one-sided p"))
    nv = _rows(outcomes, "net_value")
    for _, r in nv.iterrows():
        if r["status"] == "refused":
            out.append(f"**Net value**: not estimated: {r['message']}.")
        else:
            out.append(f"**Net value** {_num(r['estimate'])} per conversation (95% CI {_num(r['ci_low'])} to "
                       f"{_num(r['ci_high'])}, p = {_p(r['p_value'])}): {r['message']}.")
    seg = _rows(outcomes, "segment")
    if not seg.empty:
        out.append("Effect per segment, with the question's method and checks; small segments are refused "
                   "with the reason.")
        out.append(_table(seg, "segment", with_p="p"))
    for _, r in _rows(outcomes, "segment_heterogeneity").iterrows():
        out.append(f"**Heterogeneity over `{r['name']}`**: {r['message']}.")
    for _, r in _rows(outcomes, "segment_projection").iterrows():
        if r["status"] == "refused":
            out.append(f"**Projected to the target mix of `{r['name']}`**: not computed: {r['message']}.")
        else:
            out.append(f"**Projected to the target mix of `{r['name']}`**: {_num(r['estimate'])} (95% CI "
                       f"{_num(r['ci_low'])} to {_num(r['ci_high'])}): {r['message']}.")
    return out


def _table(rows: pd.DataFrame, head: str, with_p: str) -> str:
    lines = [f"| {head} | status | estimate | 95% CI | {with_p} | treated | control | note |",
             "|---|---|---|---|---|---|---|---|"]
    for _, r in rows.iterrows():
        ci = "—" if _missing(r["ci_low"]) else f"{_num(r['ci_low'])} to {_num(r['ci_high'])}"
        note = " ".join(str(r["message"] or "").split()).replace("|", "\\|")
        lines.append(f"| {r['name']} | {STATUS_WORDS.get(r['status'], r['status'])} | {_num(r['estimate'])} | {ci} | "
                     f"{_p(r['p_value'])} | {int(r['n_treated'] or 0):,} | {int(r['n_control'] or 0):,} | {note} |")
    return "\n".join(lines)


def run_table_lines(outcomes: list[dict] | None) -> list[str]:
    """Indented lines under a question in the run table: one per guardrail, net value, segment."""
    out = []
    for o in outcomes or []:
        kind, name, status = o.get("kind"), o.get("name"), o.get("status")
        if kind == "segment_heterogeneity":
            text = (f"heterogeneity over {name}: Cochran's Q {_num(o.get('estimate'), '{:.2f}')}, p {_p(o.get('p_value'))}"
                    if status == "ok" else f"heterogeneity over {name}: {status}")
        else:
            label = {"guardrail": "guardrail", "net_value": "net value", "segment": "segment",
                     "segment_projection": "projected mix"}.get(kind, kind)
            ci = "" if _missing(o.get("ci_low")) else f" [{_num(o.get('ci_low'))}, {_num(o.get('ci_high'))}]"
            text = f"{label} {name}: {_num(o.get('estimate'))}{ci}  {status}"
            if status == "refused":
                text += f" ({' '.join(str(o.get('message') or '').split())[:90]})"
        out.append("    " + text)
    return out
