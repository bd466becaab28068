"""The fixture generator: landing layout, internal consistency and the causal truths.

Truths are recomputed from the stored labels (potential outcomes) and the outcomes file,
never taken from generator internals, so a bug in the truth bookkeeping shows up here.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from data_fixtures import phrases
from data_fixtures.generator import (
    LOOKUP_ORDER_LAUNCH,
    N_WEEKS,
    PROMPT_V2_LAUNCH,
    SKILLS,
    START_DATE,
    TREATED_SKILLS,
    generate,
)

N = 20_000
UTC = pl.Datetime("us", "UTC")


@pytest.fixture(scope="session")
def fixture_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fixtures")
    out = {}
    for name, seed, variant in [
        ("standard", 0, "standard"),
        ("repeat", 0, "standard"),
        ("null", 1, "null"),
        ("diverging", 0, "diverging"),
    ]:
        generate(root / name, n_conversations=N, seed=seed, variant=variant)
        out[name] = root / name
    return out


@pytest.fixture(scope="session")
def std(fixture_dirs: dict[str, Path]) -> dict[str, pl.DataFrame]:
    d = fixture_dirs["standard"]
    return {
        "transcripts": pl.read_parquet(d / "transcripts" / "**" / "*.parquet", hive_partitioning=True),
        "outcomes": pl.read_parquet(d / "outcomes.parquet"),
        "customers": pl.read_parquet(d / "customers.parquet"),
        "labels": pl.read_parquet(d / "_truth" / "labels.parquet"),
        "truth": json.loads((d / "truth.json").read_text()),
    }


def test_calendar_constants() -> None:
    assert START_DATE == dt.date(2026, 1, 5) and START_DATE.weekday() == 0
    assert N_WEEKS == 26
    assert PROMPT_V2_LAUNCH == dt.date(2026, 5, 25) and LOOKUP_ORDER_LAUNCH == dt.date(2026, 3, 30)
    assert len(SKILLS) == 24 and set(TREATED_SKILLS) == {f"tier2-{k}" for k in range(1, 9)}


def test_layout_and_dtypes(fixture_dirs: dict[str, Path], std: dict) -> None:
    d = fixture_dirs["standard"]
    parts = sorted((d / "transcripts").glob("date=*/part-0.parquet"))
    assert len(parts) == N_WEEKS * 7
    assert parts[0].parent.name == "date=2026-01-05" and parts[-1].parent.name == "date=2026-07-05"
    one = pl.read_parquet(parts[0])
    assert dict(one.schema) == {
        "conversation_id": pl.String,
        "turn": pl.Int32,
        "ts": UTC,
        "role": pl.String,
        "text": pl.String,
        "tool_name": pl.String,
        "channel": pl.String,
        "agent_version": pl.String,
        "customer_id": pl.String,
        "skill": pl.String,
        "memory_items": pl.Int32,
    }
    assert dict(std["outcomes"].schema) == {
        "conversation_id": pl.String,
        "resolved": pl.Boolean,
        "reopened_7d": pl.Boolean,
        "escalated": pl.Boolean,
        "csat": pl.Int32,
    }
    assert dict(std["customers"].schema) == {"customer_id": pl.String, "persona_segment": pl.String}
    assert set(std["truth"]) == {"email_early_vs_late", "prompt_v2_launch", "lookup_order_rollout"}
    t = std["transcripts"]
    assert (
        t.select(
            pl.col(c).null_count()
            for c in ("conversation_id", "turn", "ts", "role", "channel", "agent_version")
        )
        .sum_horizontal()
        .item()
        == 0
    )
    assert set(t["role"].unique()) == {"user", "assistant", "tool", "system"}
    assert 0 < t["text"].null_count() < t.height // 100  # text is nullable (attachment-only follow-ups)
    assert set(t["channel"].unique()) == {"chat", "email", "voice", "sms"}
    assert set(t["skill"].unique()) == set(SKILLS)
    assert std["outcomes"].height == N and std["labels"].height == N
    assert std["outcomes"]["csat"].drop_nulls().is_between(1, 5).all()
    # anonymous conversations and customers missing from the CRM both exist
    assert t["customer_id"].null_count() > 0
    known = set(t["customer_id"].drop_nulls().unique())
    assert not known <= set(std["customers"]["customer_id"])


def test_messages_are_well_formed(std: dict) -> None:
    t = std["transcripts"]
    assert t.select(pl.struct("conversation_id", "turn").is_unique().all()).item()
    per = t.group_by("conversation_id").agg(
        n=pl.len(),
        tmin=pl.col("turn").min(),
        tmax=pl.col("turn").max(),
        n_channel=pl.col("channel").n_unique(),
        n_version=pl.col("agent_version").n_unique(),
        ordered=(pl.col("ts").sort_by("turn").diff().dt.total_microseconds().drop_nulls() >= 0).all(),
        part=pl.col("date").n_unique(),
        start=pl.col("ts").sort_by("turn").first(),
        date=pl.col("date").first(),
    )
    assert per.height == N
    assert (per["tmin"] == 0).all() and (per["tmax"] == per["n"] - 1).all()
    assert (per["n_channel"] == 1).all() and (per["n_version"] == 1).all() and per["ordered"].all()
    # all messages sit in the partition of the conversation's start date
    assert (per["part"] == 1).all() and (per["start"].dt.date() == per["date"]).all()
    # tool calls: an assistant row with tool_name, then a tool row with the same tool_name
    tools = t.filter(pl.col("tool_name").is_not_null())
    assert set(tools["role"].unique()) == {"assistant", "tool"}
    assert t.filter(pl.col("role") == "tool")["tool_name"].null_count() == 0
    # agent_version switches only for chat, only from the launch
    v2 = t.filter(pl.col("agent_version") == "v2.0")
    assert set(v2["channel"].unique()) == {"chat"} and v2["date"].min() == PROMPT_V2_LAUNCH
    # lookup_order only in tier2 queues after the rollout
    lk = t.filter(pl.col("tool_name") == "lookup_order")
    assert lk["skill"].str.starts_with("tier2-").all() and lk["date"].min() >= LOOKUP_ORDER_LAUNCH


def test_deterministic_by_seed(fixture_dirs: dict[str, Path]) -> None:
    a, b = fixture_dirs["standard"], fixture_dirs["repeat"]
    for rel in (
        "outcomes.parquet",
        "customers.parquet",
        "_truth/labels.parquet",
        "transcripts/date=2026-03-02/part-0.parquet",
        "transcripts/date=2026-06-30/part-0.parquet",
    ):
        assert pl.read_parquet(a / rel).equals(pl.read_parquet(b / rel)), rel
    assert (a / "truth.json").read_text() == (b / "truth.json").read_text()
    assert not pl.read_parquet(a / "outcomes.parquet").equals(
        pl.read_parquet(fixture_dirs["null"] / "outcomes.parquet")
    )


def _truths_from_labels(labels: pl.DataFrame) -> dict[str, float]:
    diff = lambda a, b: (pl.col(a).cast(pl.Int8) - pl.col(b).cast(pl.Int8)).mean()
    return {
        "email_early_vs_late": labels.filter(pl.col("asked_email_first") == 1)
        .select(diff("y_email_early", "y_email_late"))
        .item(),
        "prompt_v2_launch": labels.filter(pl.col("channel") == "chat", pl.col("date") >= PROMPT_V2_LAUNCH)
        .select(diff("y_prompt_v2", "y_prompt_v1"))
        .item(),
        "lookup_order_rollout": labels.filter(
            pl.col("skill").is_in(TREATED_SKILLS), pl.col("date") >= LOOKUP_ORDER_LAUNCH
        )
        .select(diff("y_lookup_on", "y_lookup_off"))
        .item(),
    }


def test_truth_matches_potential_outcomes(std: dict) -> None:
    labels = std["labels"].join(
        std["outcomes"].select("conversation_id", pl.col("resolved").alias("obs")), on="conversation_id"
    )
    # the observed outcome is the potential outcome of the observed treatments
    early = labels.filter(pl.col("asked_email_first") == 1)
    late = labels.filter(pl.col("asked_email_first") == 0)
    assert (early["obs"] == early["y_email_early"]).all() and (late["obs"] == late["y_email_late"]).all()
    obs_v = labels.select(
        pl.when(pl.col("agent_version") == "v2.0")
        .then(pl.col("y_prompt_v2"))
        .otherwise(pl.col("y_prompt_v1"))
        == pl.col("obs")
    ).to_series()
    assert obs_v.all()
    # Y(d) = u < p(d)
    assert (labels["y_lookup_on"] == (labels["u"] < labels["p_lookup_on"])).all()
    truth = std["truth"]
    for q, value in _truths_from_labels(std["labels"]).items():
        assert truth[q] == pytest.approx(value, abs=1e-12), q
    assert truth["prompt_v2_launch"] == pytest.approx(0.06, abs=0.02)
    assert truth["lookup_order_rollout"] == pytest.approx(0.05, abs=0.02)


def test_psm_confounding_makes_naive_wrong(std: dict) -> None:
    d = (
        std["labels"]
        .select("conversation_id", "asked_email_first")
        .join(std["outcomes"], on="conversation_id")
    )
    rate = d.group_by("asked_email_first").agg(pl.col("resolved").mean())
    r = dict(zip(rate["asked_email_first"].to_list(), rate["resolved"].to_list()))
    naive = r[1] - r[0]
    truth = std["truth"]["email_early_vs_late"]
    assert truth == pytest.approx(0.03, abs=0.015)
    assert naive >= 3 * truth
    share = d.filter(pl.col("asked_email_first").is_not_null()).height / N
    assert 0.6 < share < 0.8


def test_null_variant_has_zero_truth(fixture_dirs: dict[str, Path]) -> None:
    d = fixture_dirs["null"]
    truth = json.loads((d / "truth.json").read_text())
    assert truth == {"email_early_vs_late": 0.0, "prompt_v2_launch": 0.0, "lookup_order_rollout": 0.0}
    labels = pl.read_parquet(d / "_truth" / "labels.parquet")
    assert all(v == 0 for v in _truths_from_labels(labels).values())


def _pre_trend_slope(labels: pl.DataFrame) -> float:
    """Slope per week of tier2 minus others in the untreated resolution probability, pre-launch."""
    weekly = (
        labels.filter(pl.col("date") < LOOKUP_ORDER_LAUNCH)
        .with_columns(
            week=(pl.col("date") - START_DATE).dt.total_days() // 7,
            tier2=pl.col("skill").is_in(TREATED_SKILLS),
        )
        .group_by("week", "tier2")
        .agg(pl.col("p_lookup_off").mean())
        .pivot("tier2", index="week", values="p_lookup_off")
        .sort("week")
    )
    gap = (weekly["true"] - weekly["false"]).to_numpy()
    return float(np.polyfit(weekly["week"].to_numpy(), gap, 1)[0])


def test_diverging_variant_breaks_parallel_trends(fixture_dirs: dict[str, Path], std: dict) -> None:
    diverging = pl.read_parquet(fixture_dirs["diverging"] / "_truth" / "labels.parquet")
    assert abs(_pre_trend_slope(std["labels"])) < 0.003
    assert _pre_trend_slope(diverging) == pytest.approx(-0.01, abs=0.003)
    # the drift stops at the rollout, and the truth is still exact for the sample
    truth = json.loads((fixture_dirs["diverging"] / "truth.json").read_text())
    assert truth["lookup_order_rollout"] == pytest.approx(
        _truths_from_labels(diverging)["lookup_order_rollout"]
    )


def test_tiny_samples_still_write_a_landing_dir(tmp_path: Path) -> None:
    res = generate(tmp_path, n_conversations=5, seed=3)
    t = pl.read_parquet(tmp_path / "transcripts" / "**" / "*.parquet")
    assert t["conversation_id"].n_unique() == 5 and res["n_messages"] == t.height
    assert all(v is None or isinstance(v, float) for v in res["truth"].values())


def test_memory_label_matches_definition(std: dict) -> None:
    t = std["transcripts"]
    conv = (
        t.group_by("conversation_id")
        .agg(pl.col("customer_id").first(), pl.col("memory_items").first(), start=pl.col("ts").min())
        .sort("customer_id", "start")
    )
    conv = conv.with_columns(
        prev=pl.when(pl.col("customer_id").is_not_null()).then(pl.col("start").shift(1).over("customer_id"))
    ).with_columns(
        expected=(pl.col("memory_items").fill_null(0) > 0)
        | ((pl.col("start") - pl.col("prev")) <= pl.duration(days=30)).fill_null(False)
    )
    merged = conv.join(
        std["labels"].select("conversation_id", "memory_has_prior_session"), on="conversation_id"
    )
    assert (merged["expected"] == merged["memory_has_prior_session"]).all()
    assert 0.2 < merged["memory_has_prior_session"].mean() < 0.7


def test_openings_paraphrased_and_pii_present(std: dict) -> None:
    labels = std["labels"].select("conversation_id", "intent", "n_turns")
    t = std["transcripts"]
    opening = (
        t.filter(pl.col("role") == "user")
        .group_by("conversation_id")
        .agg(pl.col("text").sort_by("turn").first())
        .join(labels, on="conversation_id")
    )
    # strip the filled-in values so paraphrases, not PII, are counted
    skeleton = opening.with_columns(
        pl.col("text").str.replace_all(r"\S+@\S+|\+1 \d{3}-555-\d{4}|ORD-\d{6}|\d{4}", "<x>")
    )
    per_intent = skeleton.group_by("intent").agg(pl.col("text").n_unique())
    assert per_intent.height == len(phrases.INTENTS) and (per_intent["text"] >= 2).all()
    text = t["text"].drop_nulls()
    assert text.str.contains(r"[a-z]+\.[a-z]+\d+@(mail\.)?example\.(com|org|net)").sum() > N // 10
    assert text.str.contains(r"\+1 \d{3}-555-01\d{2}").sum() > N // 20
    # email requests: early in the first reply (turn <= 3), late near the end
    req = "|".join(re.escape(r) for r in phrases.EMAIL_REQUESTS)
    asked = (
        t.filter(pl.col("role") == "assistant", pl.col("text").str.contains(req))
        .group_by("conversation_id")
        .agg(pl.col("turn").min().alias("req_turn"))
        .join(
            std["labels"].select("conversation_id", "asked_email_first", "email_turn", "n_turns"),
            on="conversation_id",
        )
    )
    assert asked.height == std["labels"]["asked_email_first"].drop_nulls().len()
    assert (asked["req_turn"] == asked["email_turn"]).all()
    assert ((asked["req_turn"] <= 3) == (asked["asked_email_first"] == 1)).all()
    late = asked.filter(pl.col("asked_email_first") == 0)
    assert (late["req_turn"] == late["n_turns"] - 3).all()


def test_agent_marked_resolved_is_gameable(std: dict) -> None:
    t = std["transcripts"]
    closing = "|".join(re.escape(c) for c in phrases.AGENT_CLOSINGS)
    marked = t.filter(pl.col("text").str.contains(closing)).select("conversation_id").unique()
    labels = std["labels"]
    assert marked.height == labels["agent_marked_resolved"].sum()
    d = labels.join(
        std["outcomes"].select("conversation_id", pl.col("resolved").alias("r")), on="conversation_id"
    )
    unresolved = (
        d.filter(~pl.col("r")).group_by("asked_email_first").agg(pl.col("agent_marked_resolved").mean())
    )
    m = dict(zip(unresolved["asked_email_first"].to_list(), unresolved["agent_marked_resolved"].to_list()))
    assert m[1] > 2 * m[0]


def test_rejects_unknown_variant(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="variant"):
        generate(tmp_path, n_conversations=100, variant="bogus")


def test_chunked_generation_writes_whole_days_with_the_same_truth(tmp_path: Path, monkeypatch) -> None:
    """At 10M conversations messages are built a chunk of days at a time; chunking must not
    change the conversation-level sample (and so the truth), nor split a conversation."""
    import data_fixtures.generator as g

    whole = g.generate(tmp_path / "whole", n_conversations=6000, seed=5)
    monkeypatch.setattr(g, "CHUNK_CONVERSATIONS", 1000)
    assert len(g._day_chunks(np.sort(np.random.default_rng(0).integers(0, g.N_WEEKS * 7, 6000)), 1000)) >= 6
    chunked = g.generate(tmp_path / "chunked", n_conversations=6000, seed=5)
    assert chunked["truth"] == whole["truth"] and chunked["n_days"] == whole["n_days"]
    msgs = pl.read_parquet(tmp_path / "chunked" / "transcripts" / "*" / "*.parquet", hive_partitioning=True)
    per_conv = msgs.group_by("conversation_id").agg(
        pl.len().alias("n"), pl.col("turn").max().alias("last_turn"), pl.col("date").n_unique().alias("files"),
        pl.col("ts").max().alias("ended_at"))
    labels = pl.read_parquet(tmp_path / "chunked" / "_truth" / "labels.parquet")
    joined = labels.join(per_conv, on="conversation_id", how="full", coalesce=True)
    assert joined.height == 6000 and joined["n"].null_count() == 0
    assert (joined["n"] == joined["n_turns"]).all() and (joined["last_turn"] == joined["n_turns"] - 1).all()
    assert (joined["files"] == 1).all() and (joined["ended_at"] == joined["ended_at_right"]).all()
    same_cols = ["conversation_id", "date", "intent", "skill", "channel", "asked_email_first", "resolved"]
    whole_labels = pl.read_parquet(tmp_path / "whole" / "_truth" / "labels.parquet")
    assert labels.select(same_cols).equals(whole_labels.select(same_cols))
