"""Hostile signals configs and file settings are rejected with a message before anything runs.

Question configs are covered in test_questions_config.py and the YAML python tag in a signals
config in test_extract_signals.py; this file covers absurd signals configs and path settings
(traversal, NUL bytes, URLs, wrong kinds of file, allowed roots) from the CLI and the launchpad.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import pytest

from configs.signals import (
    MAX_INTENT_RULES,
    MAX_PATTERN_CHARS,
    SignalsConfigError,
    default_config_path,
    load_signals_config,
    parse_signals_config,
)
from convocausal.file_settings import ALLOWED_ROOTS_ENV, FileSettingError, check_file_settings

BASE = load_signals_config().model_dump()


def _with(**changes) -> dict:
    return {**BASE, **changes}


def _behaviour(pattern: str) -> dict:
    return {"behaviours": [{"name": "b", "pattern": pattern, "early_if": {"turn_at_most": 3}}]}


# --------------------------------------------------------------------------- signals config sizes
def test_signals_config_file_too_large(tmp_path):
    big = tmp_path / "signals.yaml"
    big.write_text(default_config_path().read_text() + "# " + "x" * 1_100_000 + "\n")
    with pytest.raises(SignalsConfigError, match=r"signals\.yaml: \d+ bytes is too large for a signals config"):
        load_signals_config(big)


def test_signals_config_not_a_regular_file(tmp_path):
    (tmp_path / "dir.yaml").mkdir()
    with pytest.raises(SignalsConfigError, match=r"dir\.yaml: not a regular file"):
        load_signals_config(tmp_path / "dir.yaml")


def test_too_many_intent_rules():
    rules = [{"name": f"r{i}", "keywords": [f"k{i}"]} for i in range(MAX_INTENT_RULES + 1)]
    with pytest.raises(SignalsConfigError, match=r"s\.yaml: .*\n  intent\.rules: List should have at most 200"):
        parse_signals_config(_with(intent={**BASE["intent"], "rules": rules}), source="s.yaml")


def test_too_many_patterns_in_one_rule():
    rule = {"name": "r", "patterns": ["a"] * 60, "keywords": ["b"] * 60}
    with pytest.raises(SignalsConfigError, match=r"intent\.rules\.0: .*120 patterns and keywords \(max 100\)"):
        parse_signals_config(_with(intent={**BASE["intent"], "rules": [rule]}))


def test_overlong_pattern_and_keyword():
    with pytest.raises(SignalsConfigError, match=r"behaviours\.0\.pattern: String should have at most 1000"):
        parse_signals_config(_with(**_behaviour("a" * (MAX_PATTERN_CHARS + 1))))
    rule = {"name": "r", "keywords": ["k" * (MAX_PATTERN_CHARS + 1)]}
    with pytest.raises(SignalsConfigError, match=r"intent\.rules\.0\.keywords\.0: String should have at most"):
        parse_signals_config(_with(intent={**BASE["intent"], "rules": [rule]}))


def test_too_many_behaviours_and_overlong_salt():
    many = [{"name": f"b{i}", "pattern": "x", "early_if": {"turn_at_most": 3}} for i in range(101)]
    with pytest.raises(SignalsConfigError, match=r"behaviours: List should have at most 100"):
        parse_signals_config(_with(behaviours=many))
    with pytest.raises(SignalsConfigError, match=r"customer_key\.salt: String should have at most 256"):
        parse_signals_config(_with(customer_key={"salt": "s" * 257}))


def test_regex_too_big_for_the_engine():
    with pytest.raises(SignalsConfigError, match=r"behaviours\.0\.pattern: .*size limit"):
        parse_signals_config(_with(**_behaviour("(a{1000}){1000}")))


def test_intent_rule_too_big_for_the_engine_together():
    # each pattern compiles alone; the rule's combined regex (what extraction runs) does not
    patterns = [r"a\w{200}", r"b\w{200}"]
    for p in patterns:
        parse_signals_config(_with(intent={**BASE["intent"], "rules": [{"name": "r", "patterns": [p]}]}))
    rule = {"name": "r", "patterns": patterns}
    with pytest.raises(SignalsConfigError, match=r"intent\.rules\.0: .*intent rule `r`.*size limit"):
        parse_signals_config(_with(intent={**BASE["intent"], "rules": [rule]}))


# --------------------------------------------------------------------------- file settings
@pytest.fixture
def layout(tmp_path, monkeypatch):
    """A root with a raw dir, a store location and valid configs; no allowed roots set."""
    monkeypatch.delenv(ALLOWED_ROOTS_ENV, raising=False)
    root = tmp_path / "root"
    (root / "raw" / "transcripts").mkdir(parents=True)
    (root / "signals.yaml").write_text(default_config_path().read_text())
    (root / "questions.yaml").write_text("questions: []\n")
    (root / "truth.json").write_text("{}")
    return root


def _settings(root: Path, **over) -> dict:
    kw = {"raw_dir": root / "raw", "store": root / "s.duckdb", "signals_config": root / "signals.yaml",
          "questions_config": root / "questions.yaml", "truth_file": root / "truth.json"}
    kw.update(over)
    return kw


def test_valid_settings_accepted(layout):
    check_file_settings(**_settings(layout))
    check_file_settings(layout / "raw", layout / "s.duckdb")  # configs default to the packaged ones


@pytest.mark.parametrize("setting, value", [
    ("signals_config", "../x.yaml"),
    ("questions_config", "configs/../../../etc/q.yaml"),
    ("truth_file", "../../truth.json"),
    ("store", "../outside.duckdb"),
    ("raw_dir", "data/../../.."),
])
def test_dotdot_traversal_rejected(layout, setting, value):
    with pytest.raises(FileSettingError, match=rf"^{setting} .*`\.\.` path components are not allowed$"):
        check_file_settings(**_settings(layout, **{setting: value}))


def test_nul_byte_and_control_characters_rejected(layout):
    with pytest.raises(FileSettingError, match=r"^signals_config .*NUL byte"):
        check_file_settings(**_settings(layout, signals_config=str(layout / "signals.yaml") + "\x00.txt"))
    with pytest.raises(FileSettingError, match=r"^store .*control character") as exc:
        check_file_settings(**_settings(layout, store=str(layout / "s\nx.duckdb")))
    assert "\n" not in str(exc.value)  # the value is shown escaped, the message stays one line


@pytest.mark.parametrize("value", ["file:///etc/passwd.yaml", "s3://bucket/signals.yaml",
                                   "https://example.com/signals.yaml", "file:/etc/signals.yaml",
                                   Path("s3://bucket/signals.yaml")])  # Path() folds it to `s3:/bucket`
def test_url_scheme_rejected(layout, value):
    with pytest.raises(FileSettingError, match=r"^signals_config .*URLs are not allowed"):
        check_file_settings(**_settings(layout, signals_config=value))


def test_wrong_suffix_rejected(layout):
    with pytest.raises(FileSettingError, match=r"^signals_config '/etc/passwd': .*`\.yaml` or `\.yml`"):
        check_file_settings(**_settings(layout, signals_config="/etc/passwd"))
    with pytest.raises(FileSettingError, match=r"^truth_file .*`\.json`"):
        check_file_settings(**_settings(layout, truth_file="/etc/shadow"))
    notes = layout / "notes.txt"
    notes.write_text("not a database")
    with pytest.raises(FileSettingError, match=r"^store .*not a DuckDB database; refusing to overwrite"):
        check_file_settings(**_settings(layout, store=notes))
    import duckdb

    duckdb.connect(str(layout / "analysis.db")).close()
    check_file_settings(**_settings(layout, store=layout / "analysis.db"))  # any name, if it is DuckDB


def test_directory_instead_of_file_rejected(layout):
    (layout / "dir.yaml").mkdir()
    with pytest.raises(FileSettingError, match=r"^questions_config .*dir\.yaml'?: not a regular file"):
        check_file_settings(**_settings(layout, questions_config=layout / "dir.yaml"))
    with pytest.raises(FileSettingError, match=r"^raw_dir .*not a directory"):
        check_file_settings(**_settings(layout, raw_dir=layout / "signals.yaml"))


def test_config_over_one_megabyte_rejected_before_anything_is_written(layout):
    """The size limit is the config loaders' own; a run stops on it before touching the store."""
    from configs.questions import ConfigError
    from pipelines.runner import run_pipeline

    (layout / "big.yml").write_text("# " + "x" * 1_000_001)
    store = layout / "s.duckdb"
    with pytest.raises(SignalsConfigError, match=r"big\.yml: 1000003 bytes is too large for a signals config"):
        run_pipeline(layout / "raw", store, signals_config=layout / "big.yml")
    with pytest.raises(ConfigError, match=r"big\.yml: 1000003 bytes is too large for a questions config"):
        run_pipeline(layout / "raw", store, questions_config=layout / "big.yml")
    assert not store.exists() and not store.with_name(store.name + ".parts").exists()


def test_absolute_path_outside_allowed_roots_rejected(layout, tmp_path, monkeypatch):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "signals.yaml").write_text(default_config_path().read_text())
    monkeypatch.setenv(ALLOWED_ROOTS_ENV, os.pathsep.join([str(tmp_path / "other"), str(layout)]))
    with pytest.raises(FileSettingError, match=r"^signals_config .*outside the allowed roots"):
        check_file_settings(**_settings(layout, signals_config=outside / "signals.yaml"))
    with pytest.raises(FileSettingError, match=r"^store .*outside the allowed roots"):
        check_file_settings(**_settings(layout, store=outside / "s.duckdb"))
    # the same paths are fine for a local user who set no roots
    monkeypatch.delenv(ALLOWED_ROOTS_ENV)
    check_file_settings(**_settings(layout, signals_config=outside / "signals.yaml", store=outside / "s.duckdb"))


def test_symlink_inside_root_escaping_it_rejected(layout, tmp_path, monkeypatch):
    outside = tmp_path / "secret.yaml"
    outside.write_text(default_config_path().read_text())
    (layout / "link.yaml").symlink_to(outside)
    (layout / "rawlink").symlink_to(tmp_path, target_is_directory=True)
    monkeypatch.setenv(ALLOWED_ROOTS_ENV, str(layout))
    with pytest.raises(FileSettingError, match=r"^signals_config .*link\.yaml'?: resolves to .*secret\.yaml.*outside"):
        check_file_settings(**_settings(layout, signals_config=layout / "link.yaml"))
    with pytest.raises(FileSettingError, match=r"^raw_dir .*outside the allowed roots"):
        check_file_settings(**_settings(layout, raw_dir=layout / "rawlink"))


def test_valid_paths_inside_allowed_root_accepted(layout, monkeypatch):
    (layout / "inner.yaml").symlink_to(layout / "signals.yaml")  # a symlink that stays inside is fine
    monkeypatch.setenv(ALLOWED_ROOTS_ENV, str(layout))
    check_file_settings(**_settings(layout, signals_config=layout / "inner.yaml"))
    check_file_settings(**_settings(layout), allowed_roots=[layout])  # explicit roots, env ignored


# --------------------------------------------------------------------------- before anything runs
def test_cli_run_rejects_traversal_before_anything_runs(tmp_path, capsys, monkeypatch):
    """At the shell `..` is the user's own (the CLI makes paths absolute); under allowed roots
    a `..` that climbs out of them is refused with one line, and nothing is written."""
    from convocausal.cli import main

    root = tmp_path / "root"
    (root / "raw" / "transcripts").mkdir(parents=True)
    (tmp_path / "evil.yaml").write_text("version: 1\n")
    monkeypatch.setenv(ALLOWED_ROOTS_ENV, str(root))
    monkeypatch.chdir(root)
    store = root / "s.duckdb"
    code = main(["run", "--raw", "raw", "--store", "s.duckdb", "--signals", "../evil.yaml"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "signals_config" in err and "outside the allowed roots" in err
    assert not store.exists() and not store.with_name(store.name + ".parts").exists()


def _materialize_signals_day(settings, **kw):
    from assets.signals import signals_day
    from pipelines.partitions import START_DATE

    return dg.materialize([signals_day], partition_key=START_DATE, resources={"settings": settings},
                          raise_on_error=False, **kw)


def _failure_text(result) -> str:
    texts = []
    for event in result.all_events:
        err = getattr(event.event_specific_data, "error", None)
        while err is not None:
            texts.append(err.message)
            err = err.cause
    return "\n".join(texts)


def test_dagster_resource_rejects_hostile_setting_before_asset_body(tmp_path, monkeypatch):
    from pipelines.resources import ConvocausalSettings

    monkeypatch.delenv(ALLOWED_ROOTS_ENV, raising=False)
    (tmp_path / "raw" / "transcripts").mkdir(parents=True)
    store = tmp_path / "s.duckdb"
    settings = ConvocausalSettings(raw_dir=str(tmp_path / "raw"), store=str(store),
                                   signals_config="../../etc/passwd.yaml")
    result = _materialize_signals_day(settings)
    assert not result.success
    assert not [e for e in result.all_events if e.event_type_value == "STEP_START"]  # no asset body ran
    assert "signals_config '../../etc/passwd.yaml': `..` path components are not allowed" in _failure_text(result)
    assert not store.with_name(store.name + ".parts").exists() and not store.exists()


def test_launchpad_run_config_override_is_checked_too(tmp_path, monkeypatch):
    from pipelines.resources import ConvocausalSettings

    root = tmp_path / "root"
    (root / "raw" / "transcripts").mkdir(parents=True)
    monkeypatch.setenv(ALLOWED_ROOTS_ENV, str(root))
    settings = ConvocausalSettings(raw_dir=str(root / "raw"), store=str(root / "s.duckdb"))
    elsewhere = tmp_path / "elsewhere.duckdb"
    # the launchpad sends the resource's whole config, with one value edited
    override = {"resources": {"settings": {"config": {"raw_dir": str(root / "raw"), "store": str(elsewhere)}}}}
    result = _materialize_signals_day(settings, run_config=override)
    assert not result.success
    assert not [e for e in result.all_events if e.event_type_value == "STEP_START"]
    assert f"store {str(elsewhere)!r}: resolves to" in _failure_text(result)
    assert not list(tmp_path.glob("elsewhere*")) and not list(root.glob("s.duckdb*"))


def test_registry_sensor_refuses_a_traversing_questions_path(tmp_path, monkeypatch):
    """The sensor reads its questions config outside any run: the same path rules apply."""
    from pipelines.sensors import make_registry_sensor

    monkeypatch.chdir(tmp_path)
    (tmp_path.parent / "q.yaml").write_text("questions: []\n")
    with dg.instance_for_test() as instance:
        result = make_registry_sensor("../q.yaml")(dg.build_sensor_context(instance=instance))
    assert isinstance(result, dg.SkipReason) and "`..`" in result.skip_message


@pytest.mark.parametrize("name", ["x; DROP TABLE signals", "resolved ~ C(intent) + __import__('os')", 'a" OR 1=1 --'])
def test_signals_config_names_cannot_carry_sql_or_formula_text(name):
    data = load_signals_config().model_dump()
    data["behaviours"] = [{"name": name, "pattern": "x", "early_if": {"turn_at_most": 3}}]
    with pytest.raises(SignalsConfigError, match="not a valid signal name"):
        parse_signals_config(data)
