"""Verdicts: turn a question's diagnostics, balance and refutations into check states.

Each applicable check gets exactly one state: ``passed`` or ``failed`` from the evidence that
names it, ``not_run`` when no evidence exists (the question was refused before the method ran,
or the method produced none), ``not_applicable`` when the question's method does not carry the
check. Evidence is found by name only (``Diagnostic.check``), never by matching parts of names.
Pure code: the estimate asset maps each outcome to a Dagster ``AssetCheckResult``, the store
writes them to the ``checks`` table, the CLI prints them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from checks.catalog import CATALOG, FAILED, NOT_APPLICABLE, NOT_RUN, PASSED, CheckSpec
from methods.result import BalanceRow, Diagnostic, Refutation

MAX_MESSAGE = 2000


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    state: str  # passed | failed | not_applicable | not_run
    severity: str  # ERROR | WARN
    blocking: bool
    description: str
    message: str


def evaluate_checks(applicable: Sequence[str], diagnostics: Iterable[Diagnostic],
                    balance: Sequence[BalanceRow] | None, refutations: Sequence[Refutation] | None,
                    method: str, refusal: str | None = None,
                    catalogue: dict[str, CheckSpec] = CATALOG) -> list[CheckOutcome]:
    """One outcome per catalogue check, in catalogue order.

    ``applicable``: the check names the question's method carries. ``balance`` and
    ``refutations`` are None when the method did not run (a refusal, with ``refusal`` its reason).
    """
    diagnostics = list(diagnostics)
    unknown = [n for n in applicable if n not in catalogue]
    if unknown:
        raise KeyError(f"method {method} names checks missing from the catalogue: {unknown}")
    out = []
    for spec in catalogue.values():
        if spec.name not in applicable:
            out.append(_outcome(spec, NOT_APPLICABLE, f"not applicable to {method}"))
            continue
        if spec.source == "balance":
            state, message = _balance(balance)
        elif spec.source == "refutations":
            state, message = _refutations(refutations)
        else:
            state, message = _diagnostics([d for d in diagnostics if d.check == spec.name])
        if state == NOT_RUN and refusal:
            message = f"not run: the question was refused: {refusal}"
        out.append(_outcome(spec, state, message))
    return out


def states(outcomes: Iterable[CheckOutcome]) -> dict[str, str]:
    """name → state, the shape ``--json`` and the run table use."""
    return {o.name: o.state for o in outcomes}


def _outcome(spec: CheckSpec, state: str, message: str) -> CheckOutcome:
    return CheckOutcome(spec.name, state, spec.severity, spec.blocking, spec.description, message[:MAX_MESSAGE])


def _diagnostics(fed: list[Diagnostic]) -> tuple[str, str]:
    if not fed:
        return NOT_RUN, "not run: the method produced no diagnostic for this check"
    if not any(d.tested for d in fed):  # the data could not test the assumption at all
        return NOT_RUN, "not run: " + " ".join(d.message for d in fed if d.message)
    fed = [d for d in fed if d.tested]
    failed = [d for d in fed if not d.passed]
    shown = failed or fed
    return (FAILED if failed else PASSED), " ".join(d.message for d in shown if d.message)


def _balance(rows: Sequence[BalanceRow] | None) -> tuple[str, str]:
    if not rows:
        return NOT_RUN, "not run: no balance table was produced"
    bad = [b for b in rows if not b.passed]
    if bad:
        return FAILED, "unbalanced after matching: " + ", ".join(
            f"{b.covariate} (SMD {b.smd_after:+.3f})" for b in bad[:8])
    worst = max(abs(b.smd_after) for b in rows)
    return PASSED, f"{len(rows)} covariate levels balanced; largest |SMD| after matching {worst:.3f}"


def _refutations(refs: Sequence[Refutation] | None) -> tuple[str, str]:
    if not refs:
        return NOT_RUN, "not run: no refutation was run"
    failed = [r for r in refs if not r.passed]
    if failed:
        return FAILED, "; ".join(f"{r.refuter}: {r.message}" for r in failed)
    return PASSED, f"{len(refs)} refuters passed: " + ", ".join(r.refuter for r in refs)
