"""The check catalogue: every check a question can carry, declared once.

A check is a yes/no verdict a user acts on ("is the design sound enough to use the number?").
Severity is deliberate: ERROR means the number must not be used (too few conversations,
covariates still unbalanced after matching, diverging pre-trends, a synthetic control that never
tracked the treated series, a logged confounder left out); WARN means "read with care" (a refuter moved the estimate, weak
placebo rank, gameable outcome, missing outcomes, possible hidden confounders). The checks that
mean "a number exists but is wrong" (balance, omitted confounder, pre-trend, pre-period fit, and for
randomized designs sample ratio, randomization balance, weak instrument) also *block*: Dagster
stops downstream consumers of the estimate. Sample size does not block: a refusal has no number
to consume.

Where a check's evidence comes from is declared here too (``source``): diagnostics that name it
(``Diagnostic.check``), the balance table, or the refutations. Which checks apply to a question
is the method registry's business (``convocausal/questions/registry.py``), not this file's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PASSED, FAILED, NOT_APPLICABLE, NOT_RUN = "passed", "failed", "not_applicable", "not_run"


@dataclass(frozen=True)
class CheckSpec:
    name: str
    severity: Literal["ERROR", "WARN"]
    blocking: bool
    description: str
    source: Literal["diagnostics", "balance", "refutations"] = "diagnostics"


CATALOG: dict[str, CheckSpec] = {c.name: c for c in (
    CheckSpec("sample_size", "ERROR", False, "Enough conversations to estimate anything"),
    CheckSpec("outcome_not_agent_controlled", "WARN", False, "Outcome comes from a system the agent cannot set"),
    CheckSpec("survivorship", "WARN", False, "Outcome missing at similar rates in the compared groups"),
    CheckSpec("refuters_passed", "WARN", False, "Every refutation test passed", source="refutations"),
    CheckSpec("balance", "ERROR", True, "Every covariate |SMD| < 0.1 after matching", source="balance"),
    CheckSpec("overlap", "WARN", False, "Treated and control propensities overlap"),
    CheckSpec("hidden_confounder_risk", "WARN", False, "No left-out start signal predicts the treatment"),
    CheckSpec("omitted_confounder", "ERROR", True,
              "No left-out start signal moves the estimate beyond its interval when adjusted for"),
    CheckSpec("pre_trend", "ERROR", True, "Pre-launch trajectories are parallel (joint Wald test)"),
    CheckSpec("pre_period_fit", "ERROR", True, "Synthetic control tracks the treated series before launch"),
    CheckSpec("placebo_rank", "WARN", False, "The treated unit's post/pre RMSPE ratio stands out from placebos"),
    # randomized designs: randomization is what makes the arms comparable, so a sign that it failed
    # (arm sizes off the design, pre-period covariates differing beyond chance) or that assignment
    # barely moved uptake (a weak instrument biases the Wald ratio) means the number is wrong: ERROR, blocking
    CheckSpec("sample_ratio", "ERROR", True, "Arm sizes match the design's shares (chi-square p >= 0.001)"),
    CheckSpec("randomization_balance", "ERROR", True,
              "Pre-period covariates alike across arms up to chance (family-wise p >= 0.001)"),
    CheckSpec("weak_instrument", "ERROR", True, "Assignment moves uptake: first-stage F >= 10"),
    # logged-policy evaluation: a candidate that takes actions the logger rarely took is valued from few,
    # heavily weighted rows (read with care); a judge that scores the same human quality differently in the
    # two arms makes the calibrated effect wrong (the calibration model assumes one bias for both)
    CheckSpec("policy_overlap", "WARN", False,
              "The candidate's actions had logging propensity >= 0.05 on >= 95% of its choices, ESS >= 10% of n"),
    CheckSpec("judge_bias_by_arm", "ERROR", True,
              "The judge scores the same human quality alike in both arms (arm x judge test p >= 0.01)"),
    # extraction error: the estimate re-made without the low-confidence intents (or with a second
    # extractor's labels) stays inside the original interval; WARN, since the labels may be right after all
    CheckSpec("extraction_sensitivity", "WARN", False,
              "Dropping low-confidence intents (or a second extractor's labels) keeps the estimate in its 95% interval"),
)}
