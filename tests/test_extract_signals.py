"""Signal extraction: scored against the fixture generator's own labels, plus hand-built rule cases.

The generator draws texts from ``data_fixtures/phrases.py`` and records what it meant
(intent, when it asked for the email, which tools it called, whether the customer had a prior
session); extraction only sees the transcript text, so agreement is a real test of the rules.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import pandera.errors
import polars as pl
import pytest

from configs.signals import SignalsConfigError, load_signals_config, parse_signals_config
from data_fixtures.generator import generate
from extract.catalog import build_catalog
from extract.intent import IntentExtractor, RuleIntentExtractor, rule_match_counts
from extract.signals import extract_signals, opening_texts, signals_schema

CFG = load_signals_config()
T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.timezone.utc)  # a Monday
EMAIL_OR_PHONE = r"[\w.+-]+@[\w-]+\.[\w.]+|\+?\d[\d -]{7,}\d"


# --------------------------------------------------------------------------- helpers
def conv(cid: str, msgs: list[tuple], start: dt.datetime = T0, customer: str | None = "cust-1",
         memory: int | None = 0, channel: str = "chat", skill: str = "tier1-1") -> list[dict]:
    """Rows of one conversation; ``msgs`` = (role, text[, tool_name]) in turn order, 10 s apart."""
    rows = []
    for turn, m in enumerate(msgs):
        role, text = m[0], m[1]
        rows.append({
            "conversation_id": cid, "turn": turn, "ts": start + dt.timedelta(seconds=10 * turn),
            "role": role, "text": text, "tool_name": m[2] if len(m) > 2 else None,
            "channel": channel, "agent_version": "v1.4", "customer_id": customer, "skill": skill,
            "memory_items": memory,
        })
    return rows


def frame(*convs: list[dict]) -> pl.DataFrame:
    rows = [r for c in convs for r in c]
    return pl.DataFrame(rows, schema={
        "conversation_id": pl.String, "turn": pl.Int32, "ts": pl.Datetime("us", "UTC"), "role": pl.String,
        "text": pl.String, "tool_name": pl.String, "channel": pl.String, "agent_version": pl.String,
        "customer_id": pl.String, "skill": pl.String, "memory_items": pl.Int32,
    })


def by_id(sig: pl.DataFrame) -> dict[str, dict]:
    return {r["conversation_id"]: r for r in sig.iter_rows(named=True)}


def cfg_with(**changes) -> object:
    data = CFG.model_dump()
    data.update(changes)
    return parse_signals_config(data)


# --------------------------------------------------------------------------- against the generator
@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fx")
    generate(out, n_conversations=12_000, seed=3)
    return out


@pytest.fixture(scope="module")
def scored(fixture_dir) -> pl.DataFrame:
    sig = extract_signals(
        pl.scan_parquet(fixture_dir / "transcripts" / "*" / "*.parquet", hive_partitioning=False),
        outcomes=pl.read_parquet(fixture_dir / "outcomes.parquet"),
        customers=pl.read_parquet(fixture_dir / "customers.parquet"),
    )
    labels = pl.read_parquet(fixture_dir / "_truth" / "labels.parquet")
    assert sig.height == labels.height
    return sig.join(labels, on="conversation_id", how="inner", suffix="_true")


def test_intent_accuracy_vs_generator(scored):
    acc = (scored["intent"] == scored["intent_true"]).mean()
    assert acc >= 0.97, f"intent accuracy {acc:.4f}"


def test_behaviour_flags_exact(scored):
    assert scored["asked_email_first"].eq_missing(scored["asked_email_first_true"]).all()
    assert scored["asked_email_first_turn"].eq_missing(scored["email_turn"]).all()
    # both variants occur, so the test is not vacuous
    assert set(scored["asked_email_first"].drop_nulls().unique().to_list()) == {0, 1}
    assert scored["asked_email_first"].null_count() > 0


def test_tool_flags_exact(scored):
    assert (scored["tools_used"].list.sort() == scored["tools"].list.sort()).all()
    for tool in CFG.tool_names:
        truth = scored["tools"].list.contains(tool)
        assert (scored[f"tool_{tool}"] == truth).all(), tool
        assert (scored[f"tool_{tool}_turn"].is_not_null() == truth).all(), tool
        assert truth.sum() > 0, tool


def test_memory_and_transcript_outcome_exact(scored):
    assert (scored["memory_has_prior_session"] == scored["memory_has_prior_session_true"]).all()
    assert (scored["agent_marked_resolved"] == scored["agent_marked_resolved_true"]).all()
    assert (scored["resolved"] == scored["resolved_true"]).all()
    assert (scored["persona_segment"] == scored["persona_segment_true"]).all()
    assert (scored["n_turns"] == scored["n_turns_true"]).all()
    assert (scored["started_at"] == scored["started_at_true"]).all()


def test_memory_day_by_day_with_history(fixture_dir):
    """Extract one day partition at a time; history = earlier days' signals (customer_key)."""
    labels = pl.read_parquet(fixture_dir / "_truth" / "labels.parquet")
    days = sorted(p.name.removeprefix("date=") for p in (fixture_dir / "transcripts").iterdir())[:75]
    history = pl.DataFrame(schema={"customer_key": pl.String, "started_at": pl.Datetime("us", "UTC")})
    parts = []
    for day in days:
        msgs = pl.read_parquet(fixture_dir / "transcripts" / f"date={day}" / "part-0.parquet")
        sig = extract_signals(msgs, history=history, validate=False)
        history = pl.concat([history, sig.select("customer_key", "started_at")])
        parts.append(sig.select("conversation_id", "memory_has_prior_session"))
    got = pl.concat(parts).join(labels, on="conversation_id", suffix="_true")
    assert got.height == labels.filter(pl.col("date") <= dt.date.fromisoformat(days[-1])).height
    assert (got["memory_has_prior_session"] == got["memory_has_prior_session_true"]).all()
    # without history, earlier-day sessions are missed: the flag would be wrong somewhere
    alone = pl.concat([
        extract_signals(pl.read_parquet(fixture_dir / "transcripts" / f"date={d}" / "part-0.parquet"),
                        validate=False).select("conversation_id", "memory_has_prior_session")
        for d in days[40:50]
    ]).join(labels, on="conversation_id", suffix="_true")
    assert (alone["memory_has_prior_session"] != alone["memory_has_prior_session_true"]).any()


def test_no_text_or_pii_in_output(scored, fixture_dir):
    sig = extract_signals(pl.scan_parquet(fixture_dir / "transcripts" / "*" / "*.parquet"), validate=False)
    assert not {"text", "customer_id", "opening_text", "tool_name"} & set(sig.columns)
    assert not [c for c in sig.columns if c.startswith("__")]
    for col, dtype in sig.schema.items():
        if dtype == pl.String and col != "customer_key":
            assert not sig[col].str.contains(EMAIL_OR_PHONE).any(), col
    assert sig["customer_key"].drop_nulls().str.contains(r"^[0-9a-f]{64}$").all()
    raw_ids = pl.read_parquet(fixture_dir / "customers.parquet")["customer_id"]
    assert not sig["customer_key"].is_in(raw_ids.implode()).any()


def test_rule_match_counts_on_fixture(fixture_dir):
    openings = opening_texts(pl.scan_parquet(fixture_dir / "transcripts" / "*" / "*.parquet"))
    counts = rule_match_counts(openings, CFG)
    assert counts["n_wins"].sum() == openings.height
    assert counts["rule"].to_list() == [r.name for r in CFG.intent.rules] + ["other"]
    assert (counts["n_matches"] >= counts["n_wins"]).all()
    assert counts.filter(pl.col("rule") != "other")["n_wins"].min() > 0


# --------------------------------------------------------------------------- hand-built rules
def test_intent_first_match_wins_and_default():
    msgs = frame(
        conv("a", [("user", "I want a refund for my order ORD-1")]),      # refund before order_status
        conv("b", [("user", "Can I send my package to a different address?")]),  # address before package
        conv("c", [("user", "Hello there"), ("user", "my package is late")]),  # only turn 0 read → other
        conv("d", [("system", "routed"), ("assistant", "Hi!")]),            # no customer turn → other
        conv("e", [("user", None), ("assistant", "Hi!")]),                  # attachment-only opening
    )
    got = by_id(extract_signals(msgs))
    assert [got[k]["intent"] for k in "abcde"] == ["refund_request", "shipping_address", "other", "other", "other"]
    # rules: 1.0 when a rule matched, 0.0 for the default (no match, no customer turn, no text)
    assert [got[k]["intent_confidence"] for k in "abcde"] == [1.0, 1.0, 0.0, 0.0, 0.0]
    two = cfg_with(intent={**CFG.intent.model_dump(), "opening_user_turns": 2})
    assert by_id(extract_signals(msgs, config=two))["c"]["intent"] == "order_status"


def test_rule_order_is_config_order():
    rules = [{"name": "order_status", "patterns": [r"\border"]}, {"name": "refund_request", "patterns": ["refund"]}]
    cfg = cfg_with(intent={"opening_user_turns": 1, "default": "misc", "rules": rules})
    openings = pl.DataFrame({"conversation_id": ["a", "b", "c"],
                             "opening_text": ["REFUND my ORDER", "refund please", "hello"]})
    out = RuleIntentExtractor(cfg).classify(openings)
    assert out["intent"].to_list() == ["order_status", "refund_request", "misc"]
    counts = {r["rule"]: r for r in rule_match_counts(openings, cfg).iter_rows(named=True)}
    assert counts["refund_request"]["n_matches"] == 2 and counts["refund_request"]["n_wins"] == 1
    assert counts["misc"]["n_wins"] == 1 and counts["order_status"]["order"] == 1


def test_behaviour_early_late_never():
    ask = "Could you share the email address on your account?"
    msgs = frame(
        conv("early", [("user", "hi"), ("assistant", "Hi! " + ask), ("user", "x@example.com"),
                       ("assistant", "done")]),
        conv("late", [("user", "hi"), ("assistant", "Hi!"), ("user", "ok"), ("assistant", "fine"),
                      ("user", "ok"), ("assistant", ask)]),
        conv("never", [("user", "hi"), ("assistant", "Hi!")]),
        # the customer typing the words does not count: the behaviour reads assistant turns only
        conv("user_says", [("user", "could you confirm your email address?"), ("assistant", "Hi!")]),
        conv("boundary", [("system", "s"), ("user", "hi"), ("assistant", "ok"), ("assistant", ask)]),
    )
    got = by_id(extract_signals(msgs))
    assert (got["early"]["asked_email_first"], got["early"]["asked_email_first_turn"]) == (1, 1)
    assert (got["late"]["asked_email_first"], got["late"]["asked_email_first_turn"]) == (0, 5)
    assert (got["never"]["asked_email_first"], got["never"]["asked_email_first_turn"]) == (None, None)
    assert got["user_says"]["asked_email_first"] is None
    assert (got["boundary"]["asked_email_first"], got["boundary"]["asked_email_first_turn"]) == (1, 3)


def test_fraction_position_rule():
    beh = {"name": "offered_discount", "role": "assistant", "pattern": "discount",
           "early_if": {"fraction_at_most": 0.5}}
    cfg = cfg_with(behaviours=[beh])
    five = [("user", "hi"), ("assistant", "a"), ("assistant", "b"), ("assistant", "c"), ("assistant", "d")]
    at = lambda k: [(r, "a DISCOUNT" if i == k else t) for i, (r, t) in enumerate(five)]
    msgs = frame(conv("mid", at(2)), conv("after", at(3)), conv("none", five))
    got = by_id(extract_signals(msgs, config=cfg))
    assert got["mid"]["offered_discount"] == 1       # 2 / (5 - 1) = 0.5
    assert got["after"]["offered_discount"] == 0     # 3 / 4 = 0.75
    assert got["none"]["offered_discount"] is None
    assert "asked_email_first" not in got["mid"]


def test_tool_turns_and_tools_used():
    msgs = frame(
        conv("t", [("user", "where is my order"), ("assistant", "Hi"), ("assistant", "Calling lookup_order", "lookup_order"),
                   ("tool", "shipped", "lookup_order"), ("assistant", "Calling crm_note", "crm_note"),
                   ("assistant", "Calling lookup_order", "lookup_order")]),
        conv("n", [("user", "hi"), ("assistant", "Hi")]),
    )
    got = by_id(extract_signals(msgs))
    assert got["t"]["tool_lookup_order"] is True and got["t"]["tool_lookup_order_turn"] == 2
    assert got["t"]["tool_kb_search"] is False and got["t"]["tool_kb_search_turn"] is None
    assert got["t"]["tools_used"] == ["crm_note", "lookup_order"]  # unknown tools listed too
    assert got["n"]["tools_used"] == [] and got["n"]["tool_lookup_order"] is False


def test_tool_text_pattern():
    tools = {"known": [{"name": "lookup_order", "pattern": r"looking up your order"}]}
    cfg = cfg_with(tools=tools)
    msgs = frame(conv("p", [("user", "hi"), ("assistant", "I'm looking up your order now")]))
    got = by_id(extract_signals(msgs, config=cfg))["p"]
    assert got["tool_lookup_order"] is True and got["tool_lookup_order_turn"] == 1 and got["tools_used"] == []


def test_outcomes_customers_join_and_time_columns():
    msgs = frame(
        conv("a", [("user", "hi"), ("assistant", "I've marked this ticket as resolved.")], customer="c1"),
        conv("b", [("user", "hi"), ("assistant", "bye")], customer="c2",
             start=dt.datetime(2026, 3, 8, 23, 59, 55, tzinfo=dt.timezone.utc)),
        conv("c", [("user", "hi")], customer=None),
    )
    outcomes = pl.DataFrame({"conversation_id": ["a", "b", "zzz"], "resolved": [True, False, True],
                             "csat": [5, None, 1], "extra": [1, 2, 3]})  # no reopened_7d/escalated columns
    customers = pl.DataFrame({"customer_id": ["c1", "c2"], "persona_segment": ["vip", None]})
    sig = extract_signals(msgs, outcomes=outcomes, customers=customers)
    got = by_id(sig)
    assert sig.height == 3 and sig["csat"].dtype == pl.Int32
    assert (got["a"]["resolved"], got["a"]["csat"], got["a"]["escalated"]) == (True, 5, None)
    assert (got["b"]["resolved"], got["b"]["csat"]) == (False, None)
    assert got["c"]["resolved"] is None
    assert [got[k]["persona_segment"] for k in "abc"] == ["vip", "unknown", "unknown"]
    assert got["a"]["agent_marked_resolved"] is True and got["b"]["agent_marked_resolved"] is False
    b = got["b"]  # starts Sunday 23:59:55 and ends Monday 00:00:05
    assert (b["date"], b["week"], b["hour_of_day"], b["day_of_week"]) == (dt.date(2026, 3, 8), dt.date(2026, 3, 2), 23, 6)
    assert b["duration_s"] == 10.0 and b["ended_at"].date() == dt.date(2026, 3, 9)
    assert got["c"]["customer_key"] is None
    salt = CFG.customer_key.salt
    assert got["a"]["customer_key"] == hashlib.sha256(f"{salt}c1".encode()).hexdigest()
    no_out = extract_signals(msgs)
    assert no_out["resolved"].null_count() == 3 and no_out["persona_segment"].to_list() == ["unknown"] * 3


def test_memory_history_window_and_batch():
    day = dt.timedelta(days=1)
    msgs = frame(
        conv("h29", [("user", "hi")], customer="c29"),
        conv("h31", [("user", "hi")], customer="c31"),
        conv("b1", [("user", "hi")], customer="cb", start=T0),
        conv("b2", [("user", "hi")], customer="cb", start=T0 + 2 * day),   # earlier in the same batch
        conv("tie1", [("user", "hi")], customer="ct"),                      # same start: not "earlier"
        conv("tie2", [("user", "hi")], customer="ct"),
        conv("mem", [("user", "hi")], customer="cm", memory=3),
        conv("anon", [("user", "hi")], customer=None),
        conv("edge", [("user", "hi")], customer="ce"),
    )
    history = pl.DataFrame({
        "customer_id": ["c29", "c31", "ce", "cb"],
        "started_at": [T0 - 29 * day, T0 - 31 * day, T0 - 30 * day, T0 + 5 * day],  # later history is ignored
    })
    got = by_id(extract_signals(msgs, history=history))
    expect = {"h29": True, "h31": False, "b1": False, "b2": True, "tie1": False, "tie2": False,
              "mem": True, "anon": False, "edge": True}
    assert {k: got[k]["memory_has_prior_session"] for k in expect} == expect
    assert got["mem"]["memory_items"] == 3
    short = cfg_with(memory={"window_days": 1.5})
    assert by_id(extract_signals(msgs, history=history, config=short))["b2"]["memory_has_prior_session"] is False


def test_unordered_and_lazy_input_match_ordered():
    ask = "Can I get your email address so I can look this up?"
    msgs = frame(*[
        conv(f"c{i}", [("system", "s"), ("user", "I need to cancel my subscription"), ("assistant", ask),
                       ("tool", "r", "kb_search"), ("assistant", "ok")][: 3 + i % 3], customer=f"k{i % 4}",
             start=T0 + dt.timedelta(hours=i))
        for i in range(12)
    ])
    ref = extract_signals(msgs).sort("conversation_id")
    shuffled = msgs.sample(fraction=1.0, shuffle=True, seed=1)
    assert not shuffled.equals(msgs)
    assert extract_signals(shuffled).sort("conversation_id").equals(ref)
    assert extract_signals(msgs.lazy()).sort("conversation_id").equals(ref)
    # the same conversation split in two runs (ids not contiguous) is still one row
    split = pl.concat([msgs.filter(pl.col("turn") < 2), msgs.filter(pl.col("turn") >= 2)])
    assert extract_signals(split).sort("conversation_id").equals(ref)


def test_custom_intent_extractor_and_empty_input():
    class Constant:
        def classify(self, openings: pl.DataFrame) -> pl.DataFrame:
            return openings.select("conversation_id", pl.lit("billing_model").alias("intent"))

    assert isinstance(Constant(), IntentExtractor)
    msgs = frame(conv("a", [("user", "hi")]), conv("b", [("assistant", "hello?")]))
    got = extract_signals(msgs, intent_extractor=Constant()).sort("conversation_id")
    assert got["intent"].to_list() == ["billing_model", "other"]
    # an extractor that reports no confidence: null; no customer message: the default with 0.0
    assert got["intent_confidence"].to_list() == [None, 0.0]

    class OutOfRange:
        def classify(self, openings: pl.DataFrame) -> pl.DataFrame:
            return openings.select("conversation_id", pl.lit("x").alias("intent"),
                                   pl.lit(1.5).alias("intent_confidence"))

    with pytest.raises(ValueError, match="outside 0..1"):
        extract_signals(msgs, intent_extractor=OutOfRange())
    empty = extract_signals(msgs.clear())
    assert empty.height == 0 and empty.columns == list(signals_schema().columns)


def test_schema_rejects_bad_rows_and_missing_columns():
    sig = extract_signals(frame(conv("a", [("user", "hi"), ("assistant", "ok")])))
    with pytest.raises(pandera.errors.SchemaError):
        signals_schema().validate(sig.with_columns(pl.lit(25, pl.Int32).alias("hour_of_day")))
    with pytest.raises(pandera.errors.SchemaError):
        signals_schema().validate(sig.with_columns(pl.lit("raw text").alias("text")))
    with pytest.raises(ValueError, match="tool_name"):
        extract_signals(frame(conv("a", [("user", "hi")])).drop("tool_name"))


# --------------------------------------------------------------------------- catalog and config
def test_catalog_measured_at_and_agent_controlled():
    cat = {r["name"]: r for r in build_catalog(CFG).iter_rows(named=True)}
    sig = extract_signals(frame(conv("a", [("user", "hi")])))
    assert list(cat) == sig.columns
    assert all(cat[c]["dtype"] == str(t) for c, t in sig.schema.items())
    for name in ("intent", "channel", "skill", "persona_segment", "memory_has_prior_session", "agent_version",
                 "hour_of_day", "day_of_week", "memory_items"):
        assert cat[name]["measured_at"] == "start", name
    for name in ("n_turns", "duration_s", "resolved", "agent_marked_resolved", "tools_used"):
        assert cat[name]["measured_at"] == "end", name
    assert (cat["asked_email_first"]["kind"], cat["asked_email_first"]["measured_at"],
            cat["asked_email_first"]["turn_column"]) == ("behaviour", "turn", "asked_email_first_turn")
    assert (cat["tool_lookup_order"]["kind"], cat["tool_lookup_order"]["turn_column"]) == ("tool", "tool_lookup_order_turn")
    assert cat["agent_marked_resolved"]["agent_controlled"] is True
    assert cat["agent_marked_resolved"]["source"] == "transcript"
    assert (cat["resolved"]["agent_controlled"], cat["resolved"]["source"], cat["resolved"]["kind"]) == (False, "outcomes", "outcome")
    assert cat["intent"]["agent_controlled"] is False
    # the confidence qualifies the intent's measurement: known at the start, but no cause (kind extraction)
    assert (cat["intent_confidence"]["kind"], cat["intent_confidence"]["measured_at"]) == ("extraction", "start")
    assert {r["kind"] for r in cat.values()} <= {"id", "time", "covariate", "extraction", "behaviour", "tool",
                                                 "outcome"}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"behaviours": [{"name": "Bad-Name", "pattern": "x", "early_if": {"turn_at_most": 3}}]}, "not a valid signal name"),
        ({"behaviours": [{"name": "b", "pattern": "(unclosed", "early_if": {"turn_at_most": 3}}]}, "invalid regex"),
        ({"behaviours": [{"name": "b", "pattern": "(?<=x)y", "early_if": {"turn_at_most": 3}}]}, "regex"),
        ({"behaviours": [{"name": "b", "pattern": "x", "early_if": {"turn_at_most": 3, "fraction_at_most": 0.5}}]},
         "exactly one"),
        ({"behaviours": [{"name": "b", "pattern": "x", "early_if": {"turn_at_most": 3}, "colour": "red"}]},
         "Extra inputs"),
        ({"behaviours": [{"name": "intent", "pattern": "x", "early_if": {"turn_at_most": 3}}]}, "shadow"),
        ({"outcomes": {"downstream": ["resolved"], "transcript": [{"name": "resolved", "pattern": "x"}]}}, "collide"),
        ({"intent": {"rules": [{"name": "a", "patterns": ["x"]}, {"name": "a", "keywords": ["y"]}]}}, "duplicate"),
        ({"memory": {"window_days": 0}}, "window_days"),
        ({"tols": {}}, "Extra inputs"),
    ],
)
def test_config_validation_errors(change, message):
    data = CFG.model_dump()
    data.update(change)
    with pytest.raises(SignalsConfigError, match=message):
        parse_signals_config(data)


def test_config_file_errors(tmp_path):
    bad = tmp_path / "s.yaml"
    bad.write_text("intent: [unclosed\n")
    with pytest.raises(SignalsConfigError, match=r"s\.yaml: line 2, column 1: YAML syntax error"):
        load_signals_config(bad)
    bad.write_text("!!python/object/apply:os.system ['true']\n")  # safe_load refuses object tags
    with pytest.raises(SignalsConfigError):
        load_signals_config(bad)
    with pytest.raises(SignalsConfigError, match="cannot read"):
        load_signals_config(tmp_path / "missing.yaml")
    assert load_signals_config().model_dump() == CFG.model_dump()


def test_keywords_are_literal_and_case_insensitive():
    rules = [{"name": "pricing", "keywords": ["C++ plan", "Pro.Max"]}]
    cfg = cfg_with(intent={"opening_user_turns": 1, "rules": rules})
    openings = pl.DataFrame({"conversation_id": ["a", "b", "c"],
                             "opening_text": ["about the c++ PLAN", "pro.max price", "proXmax"]})
    assert RuleIntentExtractor(cfg).classify(openings)["intent"].to_list() == ["pricing", "pricing", "other"]


def test_base_fallbacks_for_unordered_times_and_late_memory():
    """Timestamps not increasing with turn, memory_items only on a later row: still right."""
    rows = conv("a", [("user", "hi"), ("assistant", "ok"), ("user", "thanks")], memory=None)
    rows[1]["ts"] = T0 - dt.timedelta(seconds=30)   # clock skew: turn 1 stamped before turn 0
    rows[2]["memory_items"] = 2
    msgs = frame(rows, conv("b", [("user", "hi"), ("assistant", "ok")], memory=0))
    got = by_id(extract_signals(msgs))
    assert got["a"]["started_at"] == T0 - dt.timedelta(seconds=30)
    assert got["a"]["ended_at"] == T0 + dt.timedelta(seconds=20) and got["a"]["duration_s"] == 50.0
    assert (got["a"]["memory_items"], got["a"]["memory_has_prior_session"]) == (2, True)
    assert (got["b"]["memory_items"], got["b"]["n_turns"], got["b"]["n_user_turns"]) == (0, 2, 1)
    assert (got["a"]["n_turns"], got["a"]["n_user_turns"]) == (3, 2)


def test_duplicate_side_rows_never_multiply_conversations():
    msgs = frame(conv("a", [("user", "hi")], customer="c1"), conv("b", [("user", "hi")], customer="c2"))
    outcomes = pl.DataFrame({"conversation_id": ["a", "a", "b"], "resolved": [True, False, None]})
    customers = pl.DataFrame({"customer_id": ["c1", "c1"], "persona_segment": ["vip", "new"]})
    got = by_id(extract_signals(msgs, outcomes=outcomes, customers=customers))
    assert len(got) == 2 and got["a"]["resolved"] is True and got["a"]["persona_segment"] == "vip"
