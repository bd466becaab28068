"""The memo's "Guardrails and segments" section and the guardrail part of its decision (issue 16).

Read from the store's ``question_outcomes`` rows (``convocausal.questions.outcomes`` makes them),
like the rest of the memo. Kept apart from ``report.py`` so the decision memo's main module stays
one walk; ``report.py`` calls ``guardrail_decision``, ``guardrail_caveats``, ``decision_rule_note``,
``outcomes_section`` and ``run_table_lines``. A randomized question with more than two arms adds
the table of every outcome per arm against the baseline, with the net value (rows of kind ``arm``).
"""

from __future__ import annotations

import json
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
    return out + _other_arm_harm(outcomes)


def _other_arm_harm(outcomes: pd.DataFrame | None) -> list[str]:
    """Guardrails harmed in an arm other than the headline (the first arm of the table): named, per arm."""
    a = _rows(outcomes, "arm")
    if a.empty:
        return []
    keys = _arm_keys(a)
    headline = keys[0]["arm"]
    harmed: dict[str, list[str]] = {}
    for k, status in zip(keys, a["status"]):
        if k["role"] == "guardrail" and status == "harmed" and k["arm"] != headline:
            harmed.setdefault(k["arm"], []).append(k["outcome"])
    return [f"in arm `{arm}` guardrail{'s' if len(g) > 1 else ''} {', '.join(f'`{o}`' for o in g)} "
            f"{'are' if len(g) > 1 else 'is'} worse beyond {'their' if len(g) > 1 else 'its'} tolerance: "
            "do not ship that arm" for arm, g in harmed.items()]


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
    out += arms_section(outcomes)
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


def _arm_keys(rows: pd.DataFrame) -> list[dict]:
    return [json.loads(n) for n in rows["name"]]


ROLE_WORDS = {"primary": "", "secondary": "", "guardrail": " (guardrail)", "net_value": ""}


def arms_section(outcomes: pd.DataFrame | None) -> list[str]:
    """Every arm against the baseline: one row per arm, one column per outcome and the net value."""
    a = _rows(outcomes, "arm")
    if a.empty:
        return []
    keys = _arm_keys(a)
    arms = list(dict.fromkeys(k["arm"] for k in keys))
    cols = list(dict.fromkeys((k["outcome"], k["role"]) for k in keys))
    baseline = keys[0]["baseline"]
    cell, counts, estimands = {}, {}, set()
    for k, (_, r) in zip(keys, a.iterrows()):
        text = "—" if _missing(r["estimate"]) else (
            f"{_num(r['estimate'])} ({_num(r['ci_low'])} to {_num(r['ci_high'])})")
        if k["role"] == "guardrail":
            text += f" {STATUS_WORDS.get(r['status'], r['status'])}"
        cell[(k["arm"], k["outcome"])] = text
        estimands.add(k["estimand"])
        if k["role"] == "primary":
            counts[k["arm"]] = (int(r["n_treated"] or 0), int(r["n_control"] or 0))
    head = ["arm", "conversations (arm / baseline)"] + [
        ("net value" if o == "net_value" else f"`{o}`") + ROLE_WORDS[role] for o, role in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arm in arms:
        n = counts.get(arm)
        lines.append("| " + " | ".join([f"`{arm}`", f"{n[0]:,} / {n[1]:,}" if n else "—"]
                                        + [cell.get((arm, o), "—") for o, _ in cols]) + " |")
    has_value = any(o == "net_value" for o, _ in cols)
    intro = (f"**Every arm against the baseline `{baseline}`** ({', '.join(sorted(estimands))}, 95% intervals, "
             f"{len(arms)} arms each against the baseline, pairwise, with no multiplicity correction across arms"
             + ("; the net value per conversation is estimated from one value column per conversation, so its "
                "interval carries the covariance of the outcomes" if has_value else "")
             + "; a guardrail's status per arm is its one-sided test at the guardrails' α/m).")
    return [intro, "\n".join(lines)]


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
    arm_rows = [o for o in outcomes or [] if o.get("kind") == "arm" and o.get("name")]
    for o in outcomes or []:
        kind, name, status = o.get("kind"), o.get("name"), o.get("status")
        if kind == "arm":
            continue
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
    return out + _arm_lines(arm_rows)


def _arm_lines(rows: list[dict]) -> list[str]:
    """One indented line per arm: its primary outcome and net value against the baseline."""
    by_arm: dict[str, list[str]] = {}
    for o in rows:
        k = json.loads(o["name"])
        if k["role"] not in ("primary", "net_value"):
            continue
        label = "net value" if k["role"] == "net_value" else k["outcome"]
        ci = "" if _missing(o.get("ci_low")) else f" [{_num(o.get('ci_low'))}, {_num(o.get('ci_high'))}]"
        by_arm.setdefault(f"arm {k['arm']} vs {k['baseline']}", []).append(f"{label} {_num(o.get('estimate'))}{ci}")
    return [f"    {arm}: " + "; ".join(parts) for arm, parts in by_arm.items()]
