"""The command line's exit codes and one-line errors (CONTRACT §3, docs/CLI.md).

Every user error is exactly one line on stderr and exit status 2, naming the file, the option or
column (or line and column) and what to do; the estimate subcommands are checked with bad columns
of every kind for every method in the registry.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from convocausal.cli import _parser, main

ROOT = Path(__file__).resolve().parents[1]


def _err(capsys) -> str:
    return capsys.readouterr().err.strip()


def _one_line_error(capsys) -> str:
    err = _err(capsys)
    assert len(err.splitlines()) == 1, err
    assert err.startswith("convocausal")
    return err


def test_missing_data_file_is_usage_error(tmp_path, capsys):
    code = main(["estimate", "psm", "--data", str(tmp_path / "nope.parquet"), "--treatment", "t",
                 "--outcome", "y", "--covariates", "a"])
    assert code == 2 and "nope.parquet" in _one_line_error(capsys)


def test_missing_column_names_it_and_lists_available(tmp_path, capsys):
    path = tmp_path / "d.csv"
    pd.DataFrame({"t": [0, 1], "y": [1, 0], "a": [1, 2]}).to_csv(path, index=False)
    code = main(["estimate", "psm", "--data", str(path), "--treatment", "t", "--outcome", "y",
                 "--covariates", "a,b"])
    err = _one_line_error(capsys)
    assert code == 2 and "no column b" in err and "available: t, y, a" in err


def test_unreadable_file_is_usage_error(tmp_path, capsys):
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"not parquet at all")
    code = main(["estimate", "did", "--data", str(path), "--outcome", "y", "--treated", "t", "--post", "p"])
    assert code == 2 and "bad.parquet" in _one_line_error(capsys)


def test_did_needs_post_or_time_and_launch(tmp_path, capsys):
    path = tmp_path / "d.csv"
    pd.DataFrame({"y": [1.0], "t": [1], "w": [1]}).to_csv(path, index=False)
    code = main(["estimate", "did", "--data", str(path), "--outcome", "y", "--treated", "t", "--time", "w"])
    assert code == 2 and "--launch" in _one_line_error(capsys)


def test_run_requires_existing_raw_dir(tmp_path, capsys):
    assert main(["run", "--raw", str(tmp_path / "missing")]) == 2
    assert "not a directory" in _one_line_error(capsys)


def test_bad_arguments_exit_2_with_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["estimate", "psm"])
    assert exc.value.code == 2
    err = _one_line_error(capsys)
    assert "required" in err and "--data" in err and "--help" in err


def test_run_rejects_hostile_questions_config_before_anything_runs(tmp_path, capsys):
    (tmp_path / "raw" / "transcripts").mkdir(parents=True)
    bad = tmp_path / "q.yaml"
    bad.write_text("questions:\n  - id: q\n    design: coexisting_variants\n    outcome: resolved\n"
                   "    treatment: asked_email_first\n    covariates: ['intent); DROP TABLE signals; --']\n")
    store = tmp_path / "s.duckdb"
    code = main(["run", "--raw", str(tmp_path / "raw"), "--store", str(store), "--questions", str(bad)])
    assert code == 2 and "covariates" in _one_line_error(capsys)
    assert not store.exists()


@pytest.mark.parametrize("config, text", [
    ("questions", "questions:\n  - id: q\n    outcome: [resolved\n"),
    ("questions", "questions:\n  - id: q\n outcome: resolved\n"),
    ("signals", "version: 1\nintent:\n  rules: []\n customer_key: {salt: x}\n"),
    ("signals", "version: 1\nintent: {rules: [}\n"),
])
def test_yaml_syntax_error_is_one_line_with_line_and_column(tmp_path, capsys, config, text):
    (tmp_path / "raw" / "transcripts").mkdir(parents=True)
    path = tmp_path / f"{config}.yaml"
    path.write_text(text)
    code = main(["run", "--raw", str(tmp_path / "raw"), "--store", str(tmp_path / "s.duckdb"), f"--{config}", str(path)])
    err = _one_line_error(capsys)
    assert code == 2
    assert re.search(rf"{re.escape(str(path))}: line \d+, column \d+: YAML syntax error", err), err


# ----------------------------------------------------------------------------- estimate: bad columns
@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    """Conversation-like rows: a 0/1 treatment, a 2–5 survey score, text columns, a week."""
    rng = np.random.default_rng(0)
    n = 800
    df = pd.DataFrame({
        "treated": rng.integers(0, 2, n), "resolved": rng.integers(0, 2, n).astype(bool),
        "csat": rng.integers(2, 6, n), "channel": rng.choice(["chat", "voice", "email"], n),
        "intent": rng.choice(["refund", "order"], n),
        "week": pd.to_datetime("2026-01-05") + pd.to_timedelta(rng.integers(0, 10, n) * 7, unit="D"),
        "skill": rng.choice([f"s{i}" for i in range(6)], n), "conversation_id": [f"c{i}" for i in range(n)],
    })
    path = tmp_path_factory.mktemp("tables") / "rows.parquet"
    df.to_parquet(path)
    return path


@pytest.fixture(scope="module")
def panel(tmp_path_factory) -> Path:
    rows = [{"unit": f"u{u}", "week": w, "rate": 0.5 + 0.01 * u + 0.001 * w, "label": "x"} for u in range(5)
            for w in range(12)]
    path = tmp_path_factory.mktemp("tables") / "panel.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


PSM = ["estimate", "psm", "--covariates", "intent"]
DID = ["estimate", "did", "--time", "week", "--launch", "2026-02-02"]
SC = ["estimate", "sc", "--unit", "unit", "--time", "week", "--launch", "6"]


@pytest.mark.parametrize("argv, expected", [
    # psm: a treatment must be 0/1, an outcome numeric
    (PSM + ["--treatment", "csat", "--outcome", "resolved"], ["--treatment csat", "must be 0/1", "2, 3, 4, 5", "recode"]),
    (PSM + ["--treatment", "channel", "--outcome", "resolved"], ["--treatment channel", "text column", "chat"]),
    (PSM + ["--treatment", "treated", "--outcome", "channel"], ["--outcome channel", "text column",
                                                                "numeric or true/false"]),
    (["estimate", "psm", "--covariates", ",", "--treatment", "treated", "--outcome", "resolved"],
     ["--covariates", "at least one column"]),
    (["estimate", "psm", "--covariates", "intent,week", "--treatment", "treated", "--outcome", "resolved"],
     ["--covariates week", "timestamp", "hour_of_day"]),
    (["estimate", "psm", "--covariates", "conversation_id", "--treatment", "treated", "--outcome", "resolved"],
     ["--covariates conversation_id", "800 distinct text values", "an id"]),
    # did: treated and post are 0/1, the outcome numeric, the launch in the time column's type
    (DID + ["--treated", "channel", "--outcome", "resolved"], ["--treated channel", "text column", "0/1"]),
    (["estimate", "did", "--treated", "treated", "--outcome", "resolved", "--post", "csat"],
     ["--post csat", "must be 0/1"]),
    (DID + ["--treated", "treated", "--outcome", "intent"], ["--outcome intent", "text column"]),
    (["estimate", "did", "--treated", "treated", "--outcome", "resolved", "--time", "week", "--launch", "2026-13-45"],
     ["--launch 2026-13-45", "column 'week'", "like"]),
])
def test_estimate_bad_columns_are_one_line(table, capsys, argv, expected):
    code = main(argv + ["--data", str(table)])
    err = _one_line_error(capsys)
    assert code == 2
    assert f"--data {table}" in err or "--covariates" in err
    for text in expected:
        assert text in err, err


@pytest.mark.parametrize("argv, expected", [
    (SC + ["--outcome", "label", "--treated", "u0"], ["--outcome label", "text column"]),
    (SC + ["--outcome", "rate", "--treated", "u9"], ["--treated u9", "no such unit", "u0, u1"]),
    (["estimate", "sc", "--unit", "label", "--time", "week", "--launch", "6", "--outcome", "rate", "--treated", "x"],
     ["share a (--unit label, --time week) pair", "one row per unit and period"]),
    (SC + ["--outcome", "rate", "--treated", "u0", "--weight", "label"], ["--weight label", "text column"]),
    (["estimate", "sc", "--unit", "unit", "--time", "week", "--launch", "week six", "--outcome", "rate",
      "--treated", "u0"], ["--launch week six", "whole numbers"]),
])
def test_estimate_sc_bad_panel_is_one_line(panel, capsys, argv, expected):
    code = main(argv + ["--data", str(panel)])
    err = _one_line_error(capsys)
    assert code == 2
    for text in expected:
        assert text in err, err


def test_csv_value_that_is_not_a_number_names_its_line(tmp_path, capsys):
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"t": rng.integers(0, 2, 50), "y": rng.random(50).round(3).astype(str), "a": ["x"] * 50})
    df.loc[17, "y"] = "n/a?"
    path = tmp_path / "d.csv"
    df.to_csv(path, index=False)
    code = main(["estimate", "psm", "--data", str(path), "--treatment", "t", "--outcome", "y", "--covariates", "a"])
    err = _one_line_error(capsys)
    assert code == 2 and f"{path}: line 19, column y: 'n/a?' is not a number" in err  # line 1 is the header


def test_every_estimate_option_has_help():
    """Every option of every registered method says what it takes (the registry or the CLI's defaults)."""
    from convocausal.questions.registry import REGISTRY

    parser = _parser()
    estimate = next(a for a in parser._subparsers._group_actions[0].choices.items() if a[0] == "estimate")[1]
    methods = estimate._subparsers._group_actions[0].choices
    assert set(methods) == {name for spec in REGISTRY.values() for name in (spec.cli_name, *spec.cli_aliases)}
    for name, sub in methods.items():
        for action in sub._actions:
            assert action.help, f"estimate {name} {action.option_strings} has no help"


def _subcommands(parser, path=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from _subcommands(sub, (*path, name))


def test_every_option_of_every_command_has_help():
    parser = _parser()
    seen = set()
    for path, sub in _subcommands(parser):
        seen.add(" ".join(path))
        for action in sub._actions:
            if action.option_strings:
                assert action.help, f"convocausal {' '.join(path)} {action.option_strings} has no help"
    assert {"init", "run", "fixtures", "questions", "estimate psm", "estimate sc", "estimate did", "signals"} <= seen


def test_help_points_at_docs_a_clone_has(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for doc in re.findall(r"docs/[A-Z]+\.md", out):
        assert (ROOT / doc).is_file(), doc
    assert "docs/CLI.md" in out and "docs/CONTRACT.md" in out
    readme = (ROOT / "README.md").read_text()
    for link in re.findall(r"\]\(((?:docs|\.\./)[^)#]*)", readme):
        assert (ROOT / link).is_file(), f"README links {link}, which a clone does not have"


def test_version_is_the_package_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"convocausal {version('convocausal')}"


def test_pyproject_version_matches_the_newest_changelog_entry():
    project = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE).group(1)
    changelog = (ROOT / "README.md").read_text().split("## Changelog", 1)[1]
    newest = re.search(r"^- (\d+\.\d+\.\d+) —", changelog, re.MULTILINE).group(1)
    assert project == newest


def test_estimate_psm_json_on_csv(tmp_path, capsys):
    rng = np.random.default_rng(0)
    n = 4000
    x = rng.integers(0, 3, n)
    t = (rng.random(n) < 0.2 + 0.25 * x).astype(int)
    y = (rng.random(n) < 0.3 + 0.15 * x + 0.1 * t).astype(int)
    path = tmp_path / "d.csv"
    pd.DataFrame({"treated": t, "resolved": y, "segment": [f"s{v}" for v in x]}).to_csv(path, index=False)
    code = main(["estimate", "psm", "--data", str(path), "--treatment", "treated", "--outcome", "resolved",
                 "--covariates", "segment", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert {"estimate", "std_error", "ci_low", "ci_high", "p_value", "method", "estimand", "refutations",
            "balance", "diagnostics"} <= set(out)
    assert out["method"] == "propensity_matching"
    assert out["ci_low"] <= 0.1 <= out["ci_high"]


def test_internal_error_keeps_its_traceback(monkeypatch, tmp_path, capsys):
    """A bug is not a user error: exit 1, the traceback, then one `internal error` line."""
    from convocausal import cli_estimate

    def boom(path):
        raise KeyError("unexpected")

    monkeypatch.setattr(cli_estimate, "read_table", boom)
    code = main(["estimate", "psm", "--data", str(tmp_path / "x.csv"), "--treatment", "t", "--outcome", "y",
                 "--covariates", "a"])
    err = _err(capsys)
    assert code == 1 and "Traceback" in err and err.splitlines()[-1].startswith("convocausal: internal error:")


def test_verbose_prints_the_traceback_of_a_user_error(tmp_path, capsys):
    code = main(["estimate", "psm", "--data", str(tmp_path / "nope.csv"), "--treatment", "t", "--outcome", "y",
                 "--covariates", "a", "--verbose"])
    err = _err(capsys)
    assert code == 2 and "Traceback" in err and err.splitlines()[-1].startswith("convocausal: error:")
