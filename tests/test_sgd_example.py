"""The SGD example end to end (issue 14 item 2): real labelled dialogues, the learned classifier, the pipeline.

``data/sgd_dialogues`` (Schema-Guided Dialogue dev rows, CC BY-SA 4.0) is copied into the repository
so these tests need nothing outside it. Asserted:

* the landing directory the rows become is deterministic and passes the raw reader whole;
* 5-fold cross-validated accuracy of the example's classifier on the first customer message is above
  the example's rules (the baseline) and above floors measured in ``benchmarks/intent_sgd.md``;
* ``convocausal signals train`` + ``run_pipeline`` with ``configs/examples/sgd/`` writes a store whose
  intents, on a fold the model never saw (fold 5 of the benchmark's split), beat the rules on the
  same conversations; the behaviours agree with SGD's own annotations (tool calls, CONFIRM acts).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest

from configs.signals import load_signals_config
from convocausal.cli_signals import add_signals_parser
from data_fixtures.sgd_landing import DEFAULT_SGD, build_landing
from extract.intent import RuleIntentExtractor
from extract.intent_classifier import train_intent_model
from extract.raw import load_transcripts
from extract.signals import opening_texts

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "configs" / "examples" / "sgd"
CONFIG = load_signals_config(EXAMPLE / "signals.yaml")


def norm(label: str) -> str:
    return re.sub(r"[^a-z0-9]", "", label.lower())


def task(label: str) -> str:
    """Service versions merged: the task after the service (rule names: after the last `_`)."""
    return norm(label.rsplit(".", 1)[-1] if "." in label else label.rsplit("_", 1)[-1])


def accuracy(gold: list[str], pred: list[str]) -> tuple[float, float]:
    n = len(gold)
    return (sum(norm(g) == norm(p) for g, p in zip(gold, pred)) / n,
            sum(task(g) == task(p) for g, p in zip(gold, pred)) / n)


@pytest.fixture(scope="module")
def landing(tmp_path_factory) -> dict:
    return build_landing(DEFAULT_SGD, tmp_path_factory.mktemp("sgd") / "raw")


@pytest.fixture(scope="module")
def rows(landing) -> pl.DataFrame:
    """Gold label and first customer message per conversation, sorted by id (the benchmark's order)."""
    openings = opening_texts(load_transcripts(landing["raw"]).accepted, CONFIG.intent.opening_user_turns)
    return pl.read_parquet(landing["labels"]).join(openings, on="conversation_id", how="left").sort("conversation_id")


def rule_predictions(rows: pl.DataFrame) -> list[str]:
    return RuleIntentExtractor(CONFIG).classify(rows.select("conversation_id", "opening_text"))["intent"].to_list()


# --------------------------------------------------------------------------- the data and the landing dir
def test_the_data_ships_with_its_licence():
    for name in ("README.md", "LICENSE.txt", "messages.parquet", "conversations.parquet", "schema.json"):
        assert (DEFAULT_SGD / name).is_file(), name
    assert "CC BY-SA 4.0" in (DEFAULT_SGD / "README.md").read_text()
    assert "Attribution-ShareAlike 4.0" in (DEFAULT_SGD / "LICENSE.txt").read_text()


def test_landing_directory_is_deterministic_and_valid(landing, tmp_path):
    again = build_landing(DEFAULT_SGD, tmp_path / "again")
    files = sorted(p.relative_to(landing["raw"]) for p in landing["raw"].rglob("*.parquet"))
    assert files == sorted(p.relative_to(again["raw"]) for p in again["raw"].rglob("*.parquet"))
    for rel in files:
        assert pl.read_parquet(landing["raw"] / rel).equals(pl.read_parquet(again["raw"] / rel)), rel
    batch = load_transcripts(landing["raw"])
    assert batch.counts["quarantined"] == 0 and batch.accepted.height == landing["n_messages"]
    assert batch.accepted["conversation_id"].n_unique() == landing["n_conversations"] == 1006
    days = batch.accepted["ts"].dt.date()
    assert str(days.min()) == "2026-01-05" and landing["days"] == 28
    outcomes = pl.read_parquet(landing["raw"] / "outcomes.parquet")
    assert outcomes["resolved"].value_counts().sort("resolved").rows() == [(None, 246), (False, 110), (True, 650)]
    assert "CC BY-SA 4.0" in (landing["raw"] / "_ATTRIBUTION.txt").read_text()


# --------------------------------------------------------------------------- cross-validated accuracy
def test_cross_validated_accuracy_beats_the_rules(rows, tmp_path):
    """5-fold CV (stratified, grouped by conversation) of the example classifier vs its rules and the majority."""
    res = train_intent_model(CONFIG, rows.select("conversation_id", "opening_text"),
                             rows.select("conversation_id", "intent"), tmp_path, seed=0)
    cv = res.cv_predictions
    exact, merged = accuracy(cv["intent"].to_list(), cv["predicted"].to_list())
    r_exact, r_merged = accuracy(rows["intent"].to_list(), rule_predictions(rows))
    majority = rows["intent"].value_counts()["count"].max() / rows.height
    assert res.card["cv"]["folds"] == 5 and res.card["cv"]["stratified"]
    assert res.card["cv"]["accuracy"] == pytest.approx(exact)  # the card's number is exact accuracy
    # measured (benchmarks/intent_sgd.md): 87.4% exact, 96.7% merged; rules 84.4% / 94.8%; majority 9.3%
    assert exact > r_exact and merged > r_merged and exact > 4 * majority
    assert exact >= 0.86 and merged >= 0.955, (exact, merged)


# --------------------------------------------------------------------------- end to end
def _cli(*argv: str) -> int:
    p = argparse.ArgumentParser(prog="convocausal")
    add_signals_parser(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(list(argv))
    return args.func(args)


@pytest.fixture(scope="module")
def store_run(landing, rows, tmp_path_factory):
    """Train on folds 1-4 of the benchmark's split with the CLI, then run the whole pipeline."""
    from sklearn.model_selection import StratifiedKFold

    from pipelines.runner import run_pipeline

    y = np.array(rows["intent"].to_list(), dtype=object)
    train, held = list(StratifiedKFold(5, shuffle=True, random_state=14).split(np.zeros(len(y)), y))[4]
    work = tmp_path_factory.mktemp("sgd_store")
    labels = work / "train_labels.parquet"
    rows.select("conversation_id", "intent")[train].write_parquet(labels)
    store = work / "sgd.duckdb"
    assert _cli("signals", "train", "--labels", str(labels), "--raw", str(landing["raw"]),
                "--signals", str(EXAMPLE / "signals.yaml"), "--store", str(store)) == 0
    results = run_pipeline(landing["raw"], store, signals_config=EXAMPLE / "signals.yaml",
                           questions_config=EXAMPLE / "questions.yaml")
    with duckdb.connect(str(store), read_only=True) as con:
        signals = pl.from_arrow(con.sql("SELECT * FROM signals").to_arrow_table())
    return results, signals, rows[held]["conversation_id"].to_list()


def test_pipeline_intents_beat_the_rules_on_unseen_conversations(store_run, rows):
    results, signals, held = store_run
    assert results == []  # the example registers no question
    assert signals.height == 1006
    assert signals["intent_confidence"].is_between(0.0, 1.0).all()
    got = signals.filter(pl.col("conversation_id").is_in(held)).join(rows, on="conversation_id").sort("conversation_id")
    assert got.height == len(held) == 201
    exact, merged = accuracy(got["intent_right"].to_list(), got["intent"].to_list())
    r_exact, r_merged = accuracy(got["intent_right"].to_list(), rule_predictions(got.select(
        "conversation_id", "opening_text")))
    # measured on fold 5 (benchmarks/intent_sgd.md): classifier 87.1% / 96.5%, rules 84.1% / 95.0%
    assert exact > r_exact and merged > r_merged, (exact, merged, r_exact, r_merged)
    # a wrong intent is less sure of itself than a right one
    right = got.filter(pl.col("intent") == pl.col("intent_right"))["intent_confidence"].mean()
    wrong = got.filter(pl.col("intent") != pl.col("intent_right"))["intent_confidence"].mean()
    assert right > wrong


def test_pipeline_behaviours_agree_with_the_sgd_annotations(store_run):
    """Tool behaviours against SGD's tool calls (exact); the confirm patterns against its CONFIRM acts."""
    _, signals, _ = store_run
    msgs = pl.read_parquet(DEFAULT_SGD / "messages.parquet").sort("conversation_id", "turn_index")
    msgs = msgs.with_columns(
        ((pl.col("role") == "assistant") & pl.col("text").is_not_null()).cast(pl.Int32)
        .cum_sum().over("conversation_id").alias("n_assistant_texts"))
    search = set(next(b for b in CONFIG.behaviours if b.name == "searched_before_second_reply").tool_name)
    first_search = (msgs.filter((pl.col("role") == "assistant") & pl.col("tool_name").is_in(list(search)))
                    .group_by("conversation_id").agg(pl.col("turn_index").min().alias("turn"),
                                                     pl.col("n_assistant_texts").min().alias("k")))
    got = signals.join(first_search, on="conversation_id", how="left")
    assert (got["searched_before_second_reply_turn"].eq_missing(got["turn"])).all()
    assert (got["searched_before_second_reply"].eq_missing((got["k"] <= 1).cast(pl.Int8))).all()
    assert got["searched_before_second_reply"].drop_nulls().n_unique() == 2  # both early and late occur
    gold_confirm = (msgs.filter((pl.col("role") == "assistant") & pl.col("act_types").list.contains("CONFIRM"))
                    .group_by("conversation_id").agg(pl.col("turn_index").min().alias("confirm_turn")))
    c = signals.join(gold_confirm, on="conversation_id", how="left")
    found = c["confirmed_details_early_turn"].is_not_null() == c["confirm_turn"].is_not_null()
    same_turn = c["confirmed_details_early_turn"].eq_missing(c["confirm_turn"])
    # measured: 82% of conversations agree on whether the agent asked to confirm (the patterns miss
    # paraphrases such as "So a shared cab for 1 to …"; almost no false alarms), 78% on the first turn
    assert found.mean() >= 0.8 and same_turn.mean() >= 0.75, (found.mean(), same_turn.mean())
