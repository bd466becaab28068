"""Behaviours (issue 14 item 3): several patterns, position by assistant message, tool behaviours from tool_name.

Each rule is checked on hand-built conversations whose answer is known by construction, and the
tool behaviour on the fixture generator, whose labels record which tools each conversation called
(extraction sees only the transcript rows).
"""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from configs.signals import SignalsConfigError, load_signals_config, parse_signals_config
from data_fixtures.generator import generate
from extract.catalog import build_catalog
from extract.signals import extract_signals

BASE = load_signals_config().model_dump()
T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.timezone.utc)


def cfg(*behaviours: dict, transcript: list[dict] | None = None):
    data = {**BASE, "behaviours": list(behaviours)}
    if transcript is not None:
        data["outcomes"] = {**BASE["outcomes"], "transcript": transcript}
    return parse_signals_config(data)


def frame(convs: dict[str, list[tuple]]) -> pl.DataFrame:
    """``{cid: [(role, text[, tool_name]), ...]}`` → transcript rows, 10 s apart."""
    rows = []
    for cid, msgs in convs.items():
        for turn, m in enumerate(msgs):
            rows.append({"conversation_id": cid, "turn": turn, "ts": T0 + dt.timedelta(seconds=10 * turn),
                         "role": m[0], "text": m[1], "tool_name": m[2] if len(m) > 2 else None,
                         "channel": "chat", "agent_version": "v1", "customer_id": None, "skill": "s",
                         "memory_items": 0})
    return pl.DataFrame(rows, schema={
        "conversation_id": pl.String, "turn": pl.Int32, "ts": pl.Datetime("us", "UTC"), "role": pl.String,
        "text": pl.String, "tool_name": pl.String, "channel": pl.String, "agent_version": pl.String,
        "customer_id": pl.String, "skill": pl.String, "memory_items": pl.Int32})


def signals(config, convs) -> dict[str, dict]:
    return {r["conversation_id"]: r for r in extract_signals(frame(convs), config=config).iter_rows(named=True)}


# --------------------------------------------------------------------------- several patterns
def test_several_patterns_any_matches_and_the_first_wins():
    b = {"name": "offered_help", "role": "assistant", "patterns": [r"\bhappy to help\b", r"\bglad to assist\b"],
         "early_if": {"turn_at_most": 1}}
    got = signals(cfg(b), {
        "first": [("user", "hi"), ("assistant", "Happy to help!")],                         # pattern 1, turn 1
        "second": [("user", "hi"), ("assistant", "ok"), ("user", "?"), ("assistant", "Glad to assist.")],
        "both": [("user", "hi"), ("assistant", "glad to assist"), ("assistant", "happy to help")],
        "none": [("user", "hi"), ("assistant", "bye")],
        "customer": [("user", "happy to help"), ("assistant", "thanks")],                  # wrong role
    })
    assert [(got[k]["offered_help"], got[k]["offered_help_turn"]) for k in ("first", "second", "both")] == [
        (1, 1), (0, 3), (1, 1)]
    assert got["none"]["offered_help"] is None and got["customer"]["offered_help_turn"] is None


def test_pattern_and_patterns_together_and_the_single_pattern_still_works():
    both = {"name": "b", "pattern": "alpha", "patterns": ["beta"], "early_if": {"turn_at_most": 5}}
    single = {"name": "c", "pattern": "alpha", "early_if": {"turn_at_most": 5}}
    config = cfg(both, single)
    assert config.behaviours[0].all_patterns == ["alpha", "beta"]
    got = signals(config, {"a": [("assistant", "ALPHA")], "b": [("assistant", "beta")], "n": [("assistant", "x")]})
    assert (got["a"]["b"], got["b"]["b"], got["n"]["b"]) == (1, 1, None)
    assert (got["a"]["c"], got["b"]["c"]) == (1, None)
    # the short form `patterns: x` is one pattern
    assert cfg({"name": "d", "patterns": "gamma", "early_if": {"turn_at_most": 1}}).behaviours[0].patterns == ["gamma"]


def test_transcript_outcome_with_several_patterns():
    config = cfg(transcript=[{"name": "said_done", "patterns": ["all set", r"\bdone\b"]}])
    got = signals(config, {"a": [("assistant", "You're all set")], "b": [("assistant", "Done!")],
                           "c": [("assistant", "nothing")], "d": [("user", "done")]})
    assert [got[k]["said_done"] for k in "abcd"] == [True, True, False, False]


# --------------------------------------------------------------------------- position by assistant message
def test_assistant_message_at_most_counts_assistant_text_messages_only():
    b = {"name": "asked_order", "role": "assistant", "pattern": "order number",
         "early_if": {"assistant_message_at_most": 2}}
    got = signals(cfg(b), {
        # assistant texts: turn 1 (#1), turn 3 is a tool call without text, turn 5 (#2) matches → early
        "second_reply": [("user", "hi"), ("assistant", "hello"), ("user", "help"), ("assistant", None, "kb_search"),
                         ("tool", "3 articles", "kb_search"), ("assistant", "What is your order number?")],
        # the third assistant text message → not early, however early the turn
        "third_reply": [("assistant", "hi"), ("assistant", "one moment"), ("assistant", "your order number?")],
        # many customer turns before the first reply: still the first assistant message → early
        "late_turn": [("user", "a"), ("user", "b"), ("user", "c"), ("user", "d"), ("user", "e"),
                      ("assistant", "Your order number please")],
        "empty_text": [("assistant", ""), ("assistant", None), ("assistant", "hi"), ("assistant", "order number")],
        "never": [("user", "hi"), ("assistant", "bye")],
    })
    assert got["second_reply"]["asked_order"] == 1 and got["second_reply"]["asked_order_turn"] == 5
    assert got["third_reply"]["asked_order"] == 0
    assert got["late_turn"]["asked_order"] == 1 and got["late_turn"]["asked_order_turn"] == 5
    assert got["empty_text"]["asked_order"] == 1  # "" and null texts are not messages: "order number" is #2
    assert got["never"]["asked_order"] is None


def test_assistant_message_rule_for_a_customer_behaviour():
    """For a customer behaviour the count is the agent's messages before it."""
    b = {"name": "gave_email", "role": "user", "pattern": "@", "early_if": {"assistant_message_at_most": 1}}
    got = signals(cfg(b), {
        "after_one": [("user", "hi"), ("assistant", "email?"), ("user", "a@b.co")],
        "after_two": [("user", "hi"), ("assistant", "hello"), ("assistant", "email?"), ("user", "a@b.co")],
        "at_once": [("user", "hi a@b.co")],
    })
    assert (got["after_one"]["gave_email"], got["after_two"]["gave_email"], got["at_once"]["gave_email"]) == (1, 0, 1)


def test_position_rules_compared_on_one_conversation():
    msgs = {"c": [("user", "hi"), ("assistant", "hello"), ("user", "x"), ("user", "y"), ("user", "z"),
                  ("assistant", "please confirm")]}  # match at turn 5 of 0..5, second assistant message
    rules = {"turn": {"turn_at_most": 3}, "fraction": {"fraction_at_most": 0.9}, "message": {"assistant_message_at_most": 2}}
    got = {k: signals(cfg({"name": "b", "pattern": "confirm", "early_if": r}), msgs)["c"]["b"] for k, r in rules.items()}
    assert got == {"turn": 0, "fraction": 0, "message": 1}


# --------------------------------------------------------------------------- tool behaviours
def test_tool_behaviour_from_tool_name_alone():
    b = {"name": "looked_up", "role": "assistant", "tool_name": ["lookup_order", "track_parcel"],
         "early_if": {"assistant_message_at_most": 1}}
    got = signals(cfg(b), {
        "before_reply": [("user", "where?"), ("assistant", None, "lookup_order"), ("tool", "{}", "lookup_order"),
                         ("assistant", "It ships today")],
        "after_reply": [("user", "where?"), ("assistant", "let me check"), ("assistant", "still checking"),
                        ("assistant", None, "track_parcel")],
        "other_tool": [("assistant", None, "kb_search")],
        "result_only": [("tool", "{}", "lookup_order")],  # a tool row is not the assistant's call
        "text_only": [("assistant", "I will lookup_order now")],  # no text is read
    })
    assert (got["before_reply"]["looked_up"], got["before_reply"]["looked_up_turn"]) == (1, 1)
    assert (got["after_reply"]["looked_up"], got["after_reply"]["looked_up_turn"]) == (0, 3)
    assert all(got[k]["looked_up"] is None for k in ("other_tool", "result_only", "text_only"))


def test_tool_name_and_pattern_must_hold_on_the_same_row():
    b = {"name": "refund_call", "role": "tool", "tool_name": "issue_refund", "pattern": "refund created",
         "early_if": {"turn_at_most": 10}}
    assert cfg(b).behaviours[0].tool_name == ["issue_refund"]  # short form
    got = signals(cfg(b), {
        "yes": [("assistant", None, "issue_refund"), ("tool", "refund created for ORD-1", "issue_refund")],
        "failed": [("assistant", None, "issue_refund"), ("tool", "error", "issue_refund")],
        "other": [("tool", "refund created", "kb_search")],
    })
    assert (got["yes"]["refund_call"], got["failed"]["refund_call"], got["other"]["refund_call"]) == (1, None, None)


def test_tool_behaviour_against_the_generator(tmp_path):
    """`tool_name: lookup_order` agrees exactly with the generator's record of the tools it called."""
    generate(tmp_path, n_conversations=3_000, seed=5)
    b = {"name": "used_lookup", "role": "assistant", "tool_name": "lookup_order", "early_if": {"fraction_at_most": 0.5}}
    sig = extract_signals(pl.scan_parquet(tmp_path / "transcripts" / "*" / "*.parquet", hive_partitioning=False),
                          config=cfg(b))
    truth = pl.read_parquet(tmp_path / "_truth" / "labels.parquet").select("conversation_id", "tools")
    j = sig.join(truth, on="conversation_id")
    called = j["tools"].list.contains("lookup_order")
    assert called.sum() > 50 and (~called).sum() > 50
    assert (j["used_lookup"].is_not_null() == called).all()
    assert (j["used_lookup_turn"] == j["tool_lookup_order_turn"]).fill_null(True).all()  # the call row, as the tool column


# --------------------------------------------------------------------------- config and catalogue
@pytest.mark.parametrize("behaviour, message", [
    ({"name": "b", "early_if": {"turn_at_most": 1}}, "needs a `pattern`, `patterns` or `tool_name`"),
    ({"name": "b", "pattern": "x", "early_if": {"turn_at_most": 1, "assistant_message_at_most": 2}}, "exactly one"),
    ({"name": "b", "pattern": "x", "early_if": {"assistant_message_at_most": 0}}, "greater than or equal to 1"),
    ({"name": "b", "patterns": ["(unclosed"], "early_if": {"turn_at_most": 1}}, "invalid regex"),
    ({"name": "b", "patterns": [r"a\w{200}", r"b\w{200}"], "early_if": {"turn_at_most": 1}}, "size limit"),
    ({"name": "b", "patterns": ["(?<=x)y"], "early_if": {"turn_at_most": 1}}, "regex"),
    ({"name": "b", "tool_name": [""], "early_if": {"turn_at_most": 1}}, "at least 1 character"),
])
def test_behaviour_config_errors(behaviour, message):
    with pytest.raises(SignalsConfigError, match=message):
        cfg(behaviour)


def test_catalogue_describes_the_new_rules():
    config = cfg({"name": "m", "pattern": "x", "early_if": {"assistant_message_at_most": 2}},
                 {"name": "t", "tool_name": ["lookup_order"], "early_if": {"turn_at_most": 4}})
    cat = {r["name"]: r for r in build_catalog(config).iter_rows(named=True)}
    assert "first 2 assistant text message" in cat["m"]["description"]
    assert "calling lookup_order" in cat["t"]["description"] and "turn <= 4" in cat["t"]["description"]
    assert cat["t"]["kind"] == "behaviour" and cat["t"]["turn_column"] == "t_turn"
