"""`convocausal init`: starter configs from a landing directory that load, run, and hold no PII."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest

from configs.questions import validate_against_catalog
from configs.signals import load_signals_config
from convocausal.cli import main
from convocausal.questions.registry import load_registry, question_columns
from extract.catalog import build_catalog
from tests.cli_helpers import uncomment

EMAIL, PHONE = "jane.doe@example.com", "+44 20 7946 0958"


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    from data_fixtures.generator import generate

    out = tmp_path_factory.mktemp("gen") / "raw"
    generate(out, n_conversations=600, seed=2)
    return out


def _landing(root: Path, with_outcomes: bool = True, extra_text: dict | None = None) -> Path:
    """A small flat landing directory written by hand: 3 channels, 2 skills, a tool shipped later."""
    rows = []
    t0 = datetime(2025, 3, 3, 9, tzinfo=timezone.utc)
    for i in range(60):
        cid, day = f"c{i:03d}", i // 6
        start = t0 + timedelta(days=day)
        skill = "tier2" if i % 2 else "tier1"
        opener = (extra_text or {}).get(i, "Where is my order 12345?" if i % 3 else "I want a refund please")
        tool = "lookup_order" if day >= 5 and skill == "tier2" else None
        rows += [
            {"conversation_id": cid, "turn": 0, "ts": start, "role": "user", "text": opener, "tool_name": None},
            {"conversation_id": cid, "turn": 1, "ts": start + timedelta(seconds=5), "role": "assistant",
             "text": "Let me check.", "tool_name": tool},
        ]
        for r in rows[-2:]:
            r.update(channel=["chat", "email", "voice"][i % 3], agent_version="v2" if day >= 7 else "v1",
                     customer_id=f"cust{i % 20}", skill=skill, memory_items=0, export_batch=7)
    (root / "transcripts").mkdir(parents=True)
    pl.DataFrame(rows).write_parquet(root / "transcripts" / "messages.parquet")
    if with_outcomes:
        pl.DataFrame({"conversation_id": [f"c{i:03d}" for i in range(60)], "resolved": [i % 2 == 0 for i in range(60)],
                      "csat": [i % 5 + 1 for i in range(60)], "nps": [0] * 60}).write_parquet(root / "outcomes.parquet")
    return root


def test_init_writes_configs_the_loaders_accept(tmp_path, capsys):
    raw = _landing(tmp_path / "raw")
    out = tmp_path / "cfg"
    assert main(["init", "--raw", str(raw), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "60 conversations" in printed and f"wrote {out / 'signals.yaml'}" in printed
    config = load_signals_config(out / "signals.yaml")
    assert config.tool_names == ["lookup_order"]
    assert [(o.name, o.dtype) for o in config.outcomes.downstream] == [("resolved", "bool"), ("csat", "int")]
    assert config.intent.rules == [] and config.behaviours == []
    assert load_registry(out / "questions.yaml").questions == []
    text = (out / "signals.yaml").read_text()
    assert "export_batch" in text and "ignored" in text  # a column outside the contract is named, not used
    assert "nps" in text and "not read" in text
    assert "Where is my order #?" in text  # the most frequent opener, digits folded


def test_commented_examples_load_and_validate_when_uncommented(generated, tmp_path, capsys):
    """What a user does next: uncomment the candidates and the example questions; all of it checks."""
    assert main(["init", "--raw", str(generated), "--out", str(tmp_path)]) == 0
    signals = uncomment(uncomment(uncomment((tmp_path / "signals.yaml").read_text(), "rules"), "behaviours"),
                        "transcript")
    (tmp_path / "all_signals.yaml").write_text(signals)
    (tmp_path / "all_questions.yaml").write_text(uncomment((tmp_path / "questions.yaml").read_text(), "questions"))
    config = load_signals_config(tmp_path / "all_signals.yaml")
    assert len(config.intent.rules) >= 5 and len(config.behaviours) == 1 and len(config.outcomes.transcript) == 1
    catalog = build_catalog(config).to_dicts()
    qs = load_registry(tmp_path / "all_questions.yaml")
    assert {q.design for q in qs.questions} == {"coexisting_variants", "shipped_change", "partial_rollout"}
    for q in qs.questions:
        validate_against_catalog(q, catalog, question_columns(q))
    by_design = {q.design: q for q in qs.questions}
    # proposed from the data: the build that reached chat only, the tool that reached tier2 only
    from data_fixtures.generator import D

    assert dict(by_design["shipped_change"].treated) == {"channel": ["chat"]}
    # the first day each was seen: the launch, or a day after it in a sample this small
    assert 0 <= (by_design["shipped_change"].launch - D.PROMPT_V2_LAUNCH).days < 7
    assert 0 <= (by_design["partial_rollout"].launch - D.LOOKUP_ORDER_LAUNCH).days < 7
    assert sorted(by_design["partial_rollout"].treated["skill"]) == [f"tier2-{i}" for i in range(1, 9)]
    assert by_design["coexisting_variants"].treatment != "tool_lookup_order"  # a rollout is not two variants


def test_openers_are_redacted(tmp_path, capsys):
    texts = {i: f"My email is {EMAIL}, call me on {PHONE}" for i in range(0, 60, 2)}
    raw = _landing(tmp_path / "raw", extra_text=texts)
    assert main(["init", "--raw", str(raw), "--out", str(tmp_path / "cfg")]) == 0
    text = (tmp_path / "cfg" / "signals.yaml").read_text() + (tmp_path / "cfg" / "questions.yaml").read_text()
    assert EMAIL not in text and "7946" not in text
    assert "[EMAIL]" in text and "[PHONE]" in text


def test_refuses_to_overwrite_without_force(tmp_path, capsys):
    raw = _landing(tmp_path / "raw")
    (tmp_path / "signals.yaml").write_text("# mine\n")
    code = main(["init", "--raw", str(raw), "--out", str(tmp_path)])
    err = _one_line(capsys)
    assert code == 2 and "signals.yaml" in err and "--force" in err
    assert (tmp_path / "signals.yaml").read_text() == "# mine\n"
    assert not (tmp_path / "questions.yaml").exists()
    assert main(["init", "--raw", str(raw), "--out", str(tmp_path), "--force"]) == 0
    load_signals_config(tmp_path / "signals.yaml")


def test_defaults_to_the_current_directory(tmp_path, monkeypatch, capsys):
    raw = _landing(tmp_path / "raw", with_outcomes=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(["init", "--raw", str(raw)]) == 0
    config = load_signals_config(work / "signals.yaml")
    assert config.outcomes.downstream == []
    assert "No outcomes export" in (work / "questions.yaml").read_text()
    assert not list(work.glob(".*.yaml"))  # no temp file left behind


@pytest.mark.parametrize("make, expected", [
    (lambda raw: raw.mkdir(), "not a directory"),
    (lambda raw: (raw / "transcripts").mkdir(parents=True), "no parquet files"),
    (lambda raw: ((raw / "transcripts").mkdir(parents=True),
                  pl.DataFrame({"conversation_id": ["a"], "turn": [0]}).write_parquet(raw / "transcripts" / "x.parquet")),
     "no column ts, role, channel, agent_version"),
    (lambda raw: ((raw / "transcripts").mkdir(parents=True), (raw / "transcripts" / "x.parquet").write_bytes(b"PAR1 no")),
     "x.parquet"),
])
def test_bad_landing_dir_is_one_line(tmp_path, capsys, make, expected):
    raw = tmp_path / "raw"
    make(raw)
    target = raw if expected != "not a directory" else tmp_path / "missing"
    code = main(["init", "--raw", str(target), "--out", str(tmp_path / "cfg")])
    err = _one_line(capsys)
    assert code == 2 and expected in err, err
    assert not (tmp_path / "cfg" / "signals.yaml").exists()
