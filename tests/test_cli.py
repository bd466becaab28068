"""The command line's exit codes and one-line errors (CONTRACT §3)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from convocausal.cli import main


def _err(capsys) -> str:
    return capsys.readouterr().err.strip()


def test_missing_data_file_is_usage_error(tmp_path, capsys):
    code = main(["estimate", "psm", "--data", str(tmp_path / "nope.parquet"), "--treatment", "t",
                 "--outcome", "y", "--covariates", "a"])
    assert code == 2 and "nope.parquet" in _err(capsys)


def test_missing_column_names_it_and_lists_available(tmp_path, capsys):
    path = tmp_path / "d.csv"
    pd.DataFrame({"t": [0, 1], "y": [1, 0], "a": [1, 2]}).to_csv(path, index=False)
    code = main(["estimate", "psm", "--data", str(path), "--treatment", "t", "--outcome", "y",
                 "--covariates", "a,b"])
    err = _err(capsys)
    assert code == 2 and "no column b" in err and "available: t, y, a" in err
    assert len(err.splitlines()) == 1


def test_unreadable_file_is_usage_error(tmp_path, capsys):
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"not parquet at all")
    code = main(["estimate", "did", "--data", str(path), "--outcome", "y", "--treated", "t", "--post", "p"])
    assert code == 2 and "bad.parquet" in _err(capsys)


def test_did_needs_post_or_time_and_launch(tmp_path, capsys):
    path = tmp_path / "d.csv"
    pd.DataFrame({"y": [1.0], "t": [1], "w": [1]}).to_csv(path, index=False)
    code = main(["estimate", "did", "--data", str(path), "--outcome", "y", "--treated", "t", "--time", "w"])
    assert code == 2 and "--launch" in _err(capsys)


def test_run_requires_existing_raw_dir(tmp_path, capsys):
    assert main(["run", "--raw", str(tmp_path / "missing")]) == 2
    assert "not a directory" in _err(capsys)


def test_bad_arguments_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["estimate", "psm"])
    assert exc.value.code == 2


def test_run_rejects_hostile_questions_config_before_anything_runs(tmp_path, capsys):
    (tmp_path / "raw" / "transcripts").mkdir(parents=True)
    bad = tmp_path / "q.yaml"
    bad.write_text("questions:\n  - id: q\n    design: coexisting_variants\n    outcome: resolved\n"
                   "    treatment: asked_email_first\n    covariates: ['intent); DROP TABLE signals; --']\n")
    store = tmp_path / "s.duckdb"
    code = main(["run", "--raw", str(tmp_path / "raw"), "--store", str(store), "--questions", str(bad)])
    assert code == 2 and "covariates" in _err(capsys)
    assert not store.exists()


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
