"""The method registry is the one list of methods: an entry alone makes a method usable."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from checks.catalog import CATALOG
from convocausal.cli import main
from convocausal.questions import registry
from convocausal.questions.registry import REGISTRY, parse_registry, spec_for
from methods.result import Diagnostic, EstimateResult


def test_entries_are_consistent():
    assert len({s.design for s in REGISTRY.values()}) == len({s.cli_name for s in REGISTRY.values()}) == len(REGISTRY)
    for spec in REGISTRY.values():
        assert set(spec.checks) <= set(CATALOG), spec.name
        assert "sample_size" in spec.checks and "outcome_not_agent_controlled" in spec.checks


def test_unknown_design_and_missing_field_are_named():
    from configs.questions import ConfigError

    with pytest.raises(ConfigError, match="unknown design `regression_discontinuity`; known: coexisting_variants"):
        parse_registry("questions:\n  - id: q\n    design: regression_discontinuity\n    outcome: resolved\n")
    with pytest.raises(ConfigError, match="diff_in_diff needs `launch`"):
        parse_registry("questions:\n  - id: q\n    design: partial_rollout\n    outcome: resolved\n"
                       "    treated: {skill: [a]}\n")


def _toy_from_args(df: pd.DataFrame, args) -> EstimateResult:
    """Difference in means: the smallest method there is."""
    y1, y0 = df.loc[df[args.treatment] == 1, args.outcome], df.loc[df[args.treatment] == 0, args.outcome]
    est = float(y1.mean() - y0.mean())
    se = float(np.sqrt(y1.var() / len(y1) + y0.var() / len(y0)))
    return EstimateResult("difference_in_means", "ATE", args.outcome, est, se, est - 1.96 * se, est + 1.96 * se,
                          0.0, len(y1), len(y0), est,
                          diagnostics=[Diagnostic("sample_size", float(min(len(y1), len(y0))), 2.0, True, "ok",
                                                  check="sample_size")])


def test_a_new_registry_entry_is_a_cli_method_with_check_states(tmp_path, capsys, monkeypatch):
    psm = REGISTRY["propensity_matching"]
    toy = replace(psm, name="difference_in_means", design="randomized_toy", cli_name="dim",
                  checks=("sample_size", "outcome_not_agent_controlled"), estimate_from_args=_toy_from_args,
                  cli_column_args=("treatment", "outcome"))

    def add_args(p):
        p.add_argument("--treatment", required=True)
        p.add_argument("--outcome", required=True)

    toy = replace(toy, add_cli_arguments=add_args)
    monkeypatch.setitem(REGISTRY, toy.name, toy)
    monkeypatch.setitem(registry.DESIGNS, toy.design, toy)
    rng = np.random.default_rng(0)
    t = rng.integers(0, 2, 4000)
    df = pd.DataFrame({"t": t, "y": 0.2 * t + rng.normal(size=4000)})
    path = tmp_path / "d.csv"
    df.to_csv(path, index=False)
    assert main(["estimate", "dim", "--data", str(path), "--treatment", "t", "--outcome", "y", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["method"] == "difference_in_means" and out["ci_low"] < 0.2 < out["ci_high"]
    assert out["checks"]["sample_size"] == "passed"
    assert out["checks"]["outcome_not_agent_controlled"] == "not_run"  # no pre-flight outside a question
    assert out["checks"]["balance"] == "not_applicable"
    q = parse_registry("questions:\n  - id: q\n    design: randomized_toy\n    outcome: y\n"
                       "    treatment: t\n    covariates: [x]\n").questions[0]
    assert spec_for(q).name == "difference_in_means"
