"""The per-question checks shown in the Dagster UI, derived from a question's answer.

Pure code: the estimate asset turns each ``CheckOutcome`` into an ``AssetCheckResult``.
Severity is deliberate: a check that means the number must not be used (too few
conversations, covariates still unbalanced after matching, diverging pre-trends, a synthetic
control that never tracked the treated series) is an ERROR; the three that mean "a number
exists but is wrong" (balance, pre-trend, pre-period fit) also block downstream consumers (a
refusal has no number to consume, so sample size does not block);
a check that says "read with care" (a refuter moved the estimate, weak placebo rank,
gameable outcome, missing outcomes, possible hidden confounders) is a WARN.
"""

from __future__ import annotations

from dataclasses import dataclass

from methods.router import QuestionAnswer

# name, severity, blocking, description, methods it applies to
CHECKS: tuple[tuple[str, str, bool, str, tuple[str, ...]], ...] = (
    ("sample_size", "ERROR", False, "Enough conversations to estimate anything", ()),
    ("outcome_not_agent_controlled", "WARN", False, "Outcome comes from a system the agent cannot set", ()),
    ("survivorship", "WARN", False, "Outcome missing at similar rates in the compared groups", ()),
    ("refuters_passed", "WARN", False, "Every refutation test passed", ()),
    ("balance", "ERROR", True, "Every covariate |SMD| < 0.1 after matching", ("propensity_matching",)),
    ("overlap", "WARN", False, "Treated and control propensities overlap", ("propensity_matching",)),
    ("hidden_confounder_risk", "WARN", False, "No left-out start signal predicts the treatment",
     ("propensity_matching",)),
    ("pre_trend", "ERROR", True, "Pre-launch trajectories are parallel (joint Wald test)", ("diff_in_diff",)),
    ("pre_period_fit", "ERROR", True, "Synthetic control tracks the treated series before launch",
     ("synthetic_control",)),
    ("placebo_rank", "WARN", False, "The treated unit's post/pre RMSPE ratio stands out from placebos",
     ("synthetic_control",)),
)
CHECK_NAMES = tuple(c[0] for c in CHECKS)


@dataclass
class CheckOutcome:
    name: str
    passed: bool
    severity: str
    blocking: bool
    description: str
    message: str
    applicable: bool = True


def evaluate_checks(answer: QuestionAnswer) -> list[CheckOutcome]:
    diags = {d.name: d for d in answer.diagnostics}
    result = answer.result
    out = []
    for name, severity, blocking, description, methods in CHECKS:
        applicable = not methods or answer.method in methods
        if not applicable:
            out.append(CheckOutcome(name, True, severity, blocking, description,
                                    f"not applicable to {answer.method}", applicable=False))
            continue
        passed, message = _evaluate(name, answer, diags, result)
        out.append(CheckOutcome(name, passed, severity, blocking, description, message))
    return out


def _evaluate(name: str, answer: QuestionAnswer, diags: dict, result) -> tuple[bool, str]:
    if answer.refusal and name != "outcome_not_agent_controlled":
        return False, f"question refused: {answer.refusal}"
    if name == "sample_size":
        relevant = [d for n, d in diags.items() if "sample" in n or n in ("n_clusters", "donor_pool")]
        return _all(relevant, "enough data")
    if name == "outcome_not_agent_controlled":
        return _all([diags.get("outcome_not_agent_controlled")], "")
    if name == "survivorship":
        return _all([d for n, d in diags.items() if n.startswith("survivorship")], "no missing outcomes")
    if name == "refuters_passed":
        refs = result.refutations
        failed = [r for r in refs if not r.passed]
        if not refs:
            return False, "no refutation was run"
        if failed:
            return False, "; ".join(f"{r.refuter}: {r.message}" for r in failed)
        return True, f"{len(refs)} refuters passed: " + ", ".join(r.refuter for r in refs)
    if name == "balance":
        rows = result.balance
        bad = [b for b in rows if not b.passed]
        if not rows:
            return False, "no balance table was produced"
        if bad:
            return False, "unbalanced after matching: " + ", ".join(f"{b.covariate} (SMD {b.smd_after:+.3f})" for b in bad[:8])
        worst = max(abs(b.smd_after) for b in rows)
        return True, f"{len(rows)} covariate levels balanced; largest |SMD| after matching {worst:.3f}"
    if name == "overlap":
        return _all([d for n, d in diags.items() if "overlap" in n or "support" in n or "auc" in n], "")
    if name == "hidden_confounder_risk":
        return _all([diags.get("hidden_confounder_risk")], "")
    if name == "pre_trend":
        return _all([d for n, d in diags.items() if n.startswith("pre_trend")], "")
    if name == "pre_period_fit":
        return _all([d for n, d in diags.items() if "fit" in n and "out_of_sample" not in n], "")
    if name == "placebo_rank":
        p = result.p_value
        ok = p is not None and p <= 0.10
        return ok, (f"permutation p-value {p:.3f} from the rank of the post/pre RMSPE ratio among "
                    f"{'placebos' if ok else 'placebos: the effect does not stand out from untreated units'}")
    raise KeyError(name)


def _all(diags: list, default: str) -> tuple[bool, str]:
    diags = [d for d in diags if d is not None]
    if not diags:
        return False, f"diagnostic not produced by this method{': ' + default if default else ''}"
    failed = [d for d in diags if not d.passed]
    chosen = failed or diags
    return not failed, " ".join(d.message for d in chosen if d.message)[:2000]
