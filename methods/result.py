"""The small result object every method returns.

One shape for every method so the store writer, the CLI's ``--json`` and the Dagster
assets treat them alike. ``tidy()`` gives the one-row estimate table (as statsmodels'
``summary_frame`` or pyfixest's ``tidy`` do); the check lists map one-to-one onto the
store tables ``refutations``, ``balance`` and ``diagnostics`` (CONTRACT §2). Verdicts (which
check passed) are not computed here: a diagnostic names the check it feeds (``check``) and the
check catalogue in ``checks/`` turns them into check states.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd


@dataclass
class Refutation:
    """One refuter run. ``passed`` follows the refuter's documented pass rule in ``message``."""

    refuter: str
    estimate: float
    new_effect: float
    p_value: float | None
    passed: bool
    message: str = ""


@dataclass
class BalanceRow:
    covariate: str
    smd_before: float
    smd_after: float
    passed: bool
    variance_ratio_before: float | None = None
    variance_ratio_after: float | None = None


@dataclass
class Diagnostic:
    """A named measurement with its value, threshold and a sentence a PM can read.

    ``check`` names the catalogue check this diagnostic feeds (``checks/catalog.py``), e.g.
    ``"pre_trend"``; None for a note that feeds no check (a count, an inference remark). Checks
    find their diagnostics by this name only, never by matching parts of ``name``. ``tested`` is
    False when the data could not test the assumption at all (e.g. no pre-launch periods): the
    check it feeds is then ``not_run``, not ``failed``.
    """

    name: str
    value: float | None
    threshold: float | None
    passed: bool
    message: str = ""
    severity: str = "warn"  # "warn" | "error": error means the estimate must not be trusted
    check: str | None = None
    tested: bool = True


@dataclass
class EstimateResult:
    method: str
    estimand: str
    outcome: str
    estimate: float
    std_error: float
    ci_low: float
    ci_high: float
    p_value: float
    n_treated: int
    n_control: int
    naive_estimate: float
    refutations: list[Refutation] = field(default_factory=list)
    balance: list[BalanceRow] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)  # method-specific (weights, cross-checks…)
    plots: dict[str, bytes] = field(default_factory=dict)  # name -> PNG bytes
    ci_method: str = ""  # how the interval was obtained, in words

    def tidy(self) -> pd.DataFrame:
        """One row: the estimate with its interval, in the ``estimates`` column order."""
        return pd.DataFrame(
            [
                {
                    "method": self.method,
                    "estimand": self.estimand,
                    "outcome": self.outcome,
                    "estimate": self.estimate,
                    "std_error": self.std_error,
                    "ci_low": self.ci_low,
                    "ci_high": self.ci_high,
                    "p_value": self.p_value,
                    "n_treated": self.n_treated,
                    "n_control": self.n_control,
                    "naive_estimate": self.naive_estimate,
                }
            ]
        )

    def to_json(self) -> dict[str, Any]:
        """CONTRACT §3 JSON: estimate fields plus refutations, balance, diagnostics lists."""
        row = {k: _clean(v) for k, v in self.tidy().iloc[0].to_dict().items()}
        row["ci_method"] = self.ci_method
        row["refutations"] = [{k: _clean(v) for k, v in vars(r).items()} for r in self.refutations]
        row["balance"] = [{k: _clean(v) for k, v in vars(b).items()} for b in self.balance]
        row["diagnostics"] = [{k: _clean(v) for k, v in vars(d).items()} for d in self.diagnostics]
        for k, v in self.extras.items():
            row.setdefault(k, _clean_deep(v))
        return row


def _clean(v: Any) -> Any:
    """JSON-safe scalars: numpy → python, NaN/inf → None."""
    if hasattr(v, "item") and not isinstance(v, (list, dict, str)):
        try:
            v = v.item()
        except (ValueError, AttributeError):
            pass
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _clean_deep(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _clean_deep(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean_deep(x) for x in v]
    if isinstance(v, pd.DataFrame):
        return [_clean_deep(r) for r in v.to_dict(orient="records")]
    return _clean(v)


class MethodRefusal(Exception):
    """Raised when a method refuses to estimate (too small a sample, too short a pre-period…).

    The message says in plain words what is missing and what to wait for; the pipeline
    records it as a failed diagnostic rather than crashing the run.
    """
