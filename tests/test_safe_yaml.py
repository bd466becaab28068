"""The one safe YAML reader (configs.safe_yaml), through both config loaders that use it.

Each guard is checked for the questions loader and for the signals loader, each raising its own
error type: YAML syntax errors name the file, line and column; tags are refused (and never run);
non-UTF-8 bytes, non-regular files and files over the one size limit are refused before parsing.
"""

from __future__ import annotations

import os

import pytest

import configs.questions
import configs.signals
from configs import safe_yaml
from configs.questions import DEFAULT_PATH, ConfigError, load_questions, parse_questions
from configs.safe_yaml import MAX_CONFIG_BYTES, YamlConfigError, load_yaml, parse_yaml
from configs.signals import SignalsConfigError, default_config_path, load_signals_config

# (loader, its error type, how messages name the config)
LOADERS = {
    "questions": (load_questions, ConfigError, "questions config"),
    "signals": (load_signals_config, SignalsConfigError, "signals config"),
}
# A mapping value where a plain scalar was expected: the second ':' of the third line.
SYNTAX = {
    "questions": ("questions:\n  - id: q1\n    design: a: b\n", 3, 14),
    "signals": ("intent:\n  rules: []\n  default: a: b\n", 3, 13),
}


@pytest.fixture(params=sorted(LOADERS))
def kind(request) -> str:
    return request.param


def test_one_size_limit_for_every_config():
    assert MAX_CONFIG_BYTES == 1_000_000
    for module in (configs.questions, configs.signals):  # no second copy of the limit
        assert getattr(module, "MAX_CONFIG_BYTES", MAX_CONFIG_BYTES) is MAX_CONFIG_BYTES


def test_syntax_error_names_file_line_and_column(kind, tmp_path):
    load, error, _ = LOADERS[kind]
    text, line, column = SYNTAX[kind]
    path = tmp_path / f"{kind}.yaml"
    path.write_text(text)
    with pytest.raises(error, match=rf"{kind}\.yaml: line {line}, column {column}: YAML syntax error: "
                                    r"mapping values are not allowed here$"):
        load(path)


def test_parse_questions_reports_line_and_column_too():
    text, line, column = SYNTAX["questions"]
    with pytest.raises(ConfigError, match=rf"^questions\.yaml: line {line}, column {column}: YAML syntax error"):
        parse_questions(text, source="questions.yaml")


def test_unclosed_flow_sequence_points_at_the_end(kind, tmp_path):
    load, error, _ = LOADERS[kind]
    path = tmp_path / "c.yaml"
    path.write_text("intent: [unclosed\n")
    with pytest.raises(error, match=r"c\.yaml: line 2, column 1: YAML syntax error: expected ',' or ']'"):
        load(path)


def test_tags_are_refused_with_line_and_column_and_never_run(kind, tmp_path):
    load, error, _ = LOADERS[kind]
    marker = tmp_path / "pwned"
    path = tmp_path / "c.yaml"
    path.write_text(f"version: 1\nintent: !!python/object/apply:os.mkdir ['{marker}']\n")
    with pytest.raises(error, match=r"c\.yaml: line 2, column 9: not plain YAML: "
                                    r"tag '!!python/object/apply:os\.mkdir' is not allowed \(YAML tags are not allowed"):
        load(path)
    assert not marker.exists()
    path.write_text("intent: !custom {}\n")
    with pytest.raises(error, match=r"line 1, column 9: not plain YAML: tag '!custom' is not allowed"):
        load(path)


def test_parse_questions_refuses_tags():
    text = "questions: !!python/object/apply:os.system ['echo pwned']\n"
    with pytest.raises(ConfigError, match=r"<questions>: line 1, column 12: not plain YAML: tag"):
        parse_questions(text)


def test_non_utf8_is_refused(kind, tmp_path):
    load, error, _ = LOADERS[kind]
    path = tmp_path / "c.yaml"
    path.write_bytes(b"version: 1\n# caf\xe9\n")
    with pytest.raises(error, match=r"c\.yaml: not UTF-8 text \(invalid continuation byte at byte 16\)"):
        load(path)


def test_control_character_is_a_syntax_error_with_position(kind, tmp_path):
    load, error, _ = LOADERS[kind]
    path = tmp_path / "c.yaml"
    path.write_text("version: 1\nintent: \x00\n")
    with pytest.raises(error, match=r"c\.yaml: line 2, column 9: YAML syntax error: unacceptable character #x0000"):
        load(path)


def test_directory_is_refused(kind, tmp_path):
    load, error, _ = LOADERS[kind]
    (tmp_path / "dir.yaml").mkdir()
    with pytest.raises(error, match=r"dir\.yaml: not a regular file$"):
        load(tmp_path / "dir.yaml")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_fifo_is_refused_without_blocking(kind, tmp_path):
    load, error, _ = LOADERS[kind]
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)  # opening it for reading would block forever: refused on stat, never opened
    with pytest.raises(error, match=r"pipe\.yaml: not a regular file$"):
        load(fifo)


def test_missing_file_is_refused(kind, tmp_path):
    load, error, what = LOADERS[kind]
    with pytest.raises(error, match=rf"missing\.yaml: cannot read the {what} \("):
        load(tmp_path / "missing.yaml")


def test_oversize_is_refused_before_parsing(kind, tmp_path):
    load, error, what = LOADERS[kind]
    big = tmp_path / "big.yaml"
    big.write_text("!!python/object/apply:os.system ['x']\n" + "#" * MAX_CONFIG_BYTES)  # never parsed
    size = big.stat().st_size
    with pytest.raises(error, match=rf"big\.yaml: {size} bytes is too large for a {what} \(max {MAX_CONFIG_BYTES}\)"):
        load(big)


def test_a_file_of_exactly_the_limit_loads(kind, tmp_path):
    load, _, _ = LOADERS[kind]
    default = (DEFAULT_PATH if kind == "questions" else default_config_path()).read_text()
    exact = tmp_path / "exact.yaml"
    exact.write_text(default + "\n#" + "x" * (MAX_CONFIG_BYTES - len(default.encode()) - 2))
    assert exact.stat().st_size == MAX_CONFIG_BYTES
    assert load(exact) == load(None)


def test_both_loaders_share_the_one_limit(kind, tmp_path, monkeypatch):
    """Lowering the shared limit lowers it for both loaders: there is no second copy."""
    load, error, what = LOADERS[kind]
    monkeypatch.setattr(safe_yaml, "MAX_CONFIG_BYTES", 10)
    path = tmp_path / "c.yaml"
    path.write_text("version: 1\n")
    with pytest.raises(error, match=rf"11 bytes is too large for a {what} \(max 10\)"):
        load(path)


def test_default_error_type_and_plain_values(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("a: [1, 2]\nb: {c: x}\n")
    assert load_yaml(path, "config") == {"a": [1, 2], "b": {"c": "x"}}
    with pytest.raises(YamlConfigError, match=r"^s: line 1, column 3: not plain YAML: found unhashable key"):
        parse_yaml("? [a]\n: 1\n", "s")
    assert issubclass(YamlConfigError, ValueError)
    assert issubclass(ConfigError, ValueError) and issubclass(SignalsConfigError, ValueError)


def test_a_key_given_twice_is_refused_with_both_lines():
    """Plain safe_load keeps the last value silently (issue 19): a second `covariates:` would win."""
    from configs.questions import ConfigError, parse_questions

    text = ("questions:\n  - id: q\n    design: coexisting_variants\n    outcome: resolved\n"
            "    treatment: t\n    covariates: [intent]\n    covariates: [hour_of_day]\n")
    with pytest.raises(ConfigError, match=r"line 7, column 5: .*key 'covariates' appears twice .*first on line 6"):
        parse_questions(text, source="questions.yaml")
    assert parse_yaml("a: 1\nb: {a: 2}\n", "t") == {"a": 1, "b": {"a": 2}}  # same key in another mapping is fine


def test_a_signals_config_error_names_the_field_on_its_first_line():
    """It used to say only "invalid signals config" on the line a CLI prints (issue 19, case 11)."""
    from configs.signals import parse_signals_config

    with pytest.raises(SignalsConfigError) as err:
        parse_signals_config({"version": 1, "intent": {"rules": [{"name": "Bad Name", "patterns": ["x"]}]}},
                             "signals.yaml")
    first = str(err.value).splitlines()[0]
    assert first.startswith("signals.yaml: invalid signals config: intent.rules.0.name:") and "Bad Name" in first
