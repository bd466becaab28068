"""Raw landing-directory reading: one crafted bad file per rule, layouts, reconciliation.

Every frame is built here (no dependence on the fixture generator). Each rule test checks the
exact reason string, the source_file of the quarantined rows, and raw = accepted + quarantined.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from extract import raw
from extract.raw import (
    RawInputError,
    list_transcript_days,
    load_customers,
    load_outcomes,
    load_transcripts,
    load_transcripts_day,
)
from extract.redact import contains_pii
from extract.schemas import TranscriptSchema

DAY = dt.date(2026, 1, 5)
T0 = dt.datetime(2026, 1, 5, 10, 0, tzinfo=dt.timezone.utc)
ROLES4 = ["system", "user", "assistant", "user"]


def conversations(n_conv: int = 3, n_turns: int = 4, start: dt.datetime = T0, prefix: str = "c",
                  every: dt.timedelta = dt.timedelta(minutes=10)) -> pl.DataFrame:
    """Well-formed messages: n_conv conversations of n_turns turns (one every ``every``, turns a
    minute apart), plus an ignored extra column."""
    cid = [f"{prefix}{c}" for c in range(n_conv) for _ in range(n_turns)]
    turn = [k for _ in range(n_conv) for k in range(n_turns)]
    return pl.DataFrame(
        {
            "conversation_id": cid,
            "turn": turn,
            "ts": [start + every * c + dt.timedelta(minutes=k) for c in range(n_conv) for k in range(n_turns)],
            "role": [ROLES4[k % 4] for k in turn],
            "text": [f"message {k} from me at jane.roe{c}@example.com" for c, k in zip(cid, turn)],
            "tool_name": pl.Series([None] * len(cid), dtype=pl.String),
            "channel": ["chat"] * len(cid),
            "agent_version": ["v1.4"] * len(cid),
            "customer_id": [f"cust-{c}" for c in cid],
            "skill": ["tier1-1"] * len(cid),
            "memory_items": [0] * len(cid),
            "platform_extra": ["ignored"] * len(cid),
        }
    )


def write_hive(root: Path, df: pl.DataFrame | pa.Table, day: dt.date = DAY, name: str = "part-0.parquet") -> Path:
    d = root / "transcripts" / f"date={day.isoformat()}"
    d.mkdir(parents=True, exist_ok=True)
    path = d / name
    if isinstance(df, pa.Table):
        pq.write_table(df, path)
    else:
        df.write_parquet(path)
    return path


def reconciles(batch: raw.RawBatch) -> None:
    c = batch.counts
    assert c["raw_rows"] == c["accepted"] + c["quarantined"]
    assert batch.accepted.height == c["accepted"] and batch.quarantine.height == c["quarantined"]
    assert batch.quarantine.columns == ["source_file", "conversation_id", "reason", "raw_row", "table", "date"]


def with_value(df: pl.DataFrame, col: str, cid: str, turn: int, value, dtype=None) -> pl.DataFrame:
    hit = (pl.col("conversation_id") == cid) & (pl.col("turn").cast(pl.String) == str(turn))
    lit = pl.lit(value, dtype=dtype or df.schema[col])
    return df.with_columns(pl.when(hit).then(lit).otherwise(pl.col(col)).alias(col))


# --------------------------------------------------------------------------- clean input
def test_clean_hive_day_is_fully_accepted_and_extra_columns_ignored(tmp_path):
    path = write_hive(tmp_path, conversations())
    batch = load_transcripts_day(tmp_path, DAY)
    reconciles(batch)
    assert batch.counts["accepted"] == 12 and batch.counts["quarantined"] == 0
    assert "platform_extra" not in batch.accepted.columns
    assert batch.accepted["source_file"].unique().to_list() == [str(path)]
    assert batch.accepted.schema["ts"] == pl.Datetime("us", "UTC")
    TranscriptSchema.validate(batch.accepted)
    assert list_transcript_days(tmp_path) == [DAY]


def test_flat_layout_days_from_conversation_start(tmp_path):
    flat = tmp_path / "transcripts"
    flat.mkdir(parents=True)
    a = conversations(2, 4, start=T0, prefix="a")
    # conversation b0 starts 23:58 on Jan 6 and runs past midnight: it belongs to Jan 6
    b = conversations(1, 4, start=dt.datetime(2026, 1, 6, 23, 58, tzinfo=dt.timezone.utc), prefix="b")
    a.write_parquet(flat / "export-1.parquet")
    # out of file order and split across files
    pl.concat([b.slice(2, 2), a.head(0)]).write_parquet(flat / "export-2.parquet")
    b.slice(0, 2).write_parquet(flat / "export-3.parquet")
    assert list_transcript_days(tmp_path) == [DAY, dt.date(2026, 1, 6)]
    d6 = load_transcripts_day(tmp_path, dt.date(2026, 1, 6))
    reconciles(d6)
    assert d6.accepted["conversation_id"].unique().to_list() == ["b0"]
    assert d6.accepted["turn"].to_list() == [0, 1, 2, 3]
    assert d6.counts["conversations_with_turn_gaps"] == 0
    everything = load_transcripts(tmp_path)
    reconciles(everything)
    assert everything.counts["raw_rows"] == 12 and everything.counts["accepted"] == 12


def test_hive_many_days(tmp_path):
    write_hive(tmp_path, conversations(2, 4, prefix="x"), DAY)
    write_hive(tmp_path, conversations(3, 4, start=T0 + dt.timedelta(days=1), prefix="y"), DAY + dt.timedelta(days=1))
    batch = load_transcripts(tmp_path)
    reconciles(batch)
    assert batch.counts["accepted"] == 20 and batch.counts["days"] == ["2026-01-05", "2026-01-06"]
    assert load_transcripts_day(tmp_path, DAY + dt.timedelta(days=5)).counts["files"] == 0


# --------------------------------------------------------------------------- one test per rule
def _quarantined(tmp_path, df, n_expected: int, reason: str):
    path = write_hive(tmp_path, df)
    batch = load_transcripts_day(tmp_path, DAY)
    reconciles(batch)
    q = batch.quarantine
    assert q.height == n_expected, q.to_dicts()
    assert q["reason"].unique().to_list() == [reason]
    assert q["source_file"].unique().to_list() == [str(path)]
    assert q["table"].unique().to_list() == ["transcripts"] and q["date"].unique().to_list() == [DAY]
    return batch


@pytest.mark.parametrize("col", ["conversation_id", "ts", "role", "channel", "agent_version", "turn"])
def test_null_in_required_column(tmp_path, col):
    df = with_value(conversations(), col, "c1", 1, None)
    batch = _quarantined(tmp_path, df, 1, f"null in required column: {col}")
    assert batch.counts["accepted"] == 11


def test_nullable_columns_may_be_null(tmp_path):
    df = conversations().with_columns(pl.lit(None, pl.String).alias("text"), pl.lit(None, pl.String).alias("skill"))
    write_hive(tmp_path, df)
    assert load_transcripts_day(tmp_path, DAY).counts["quarantined"] == 0


def test_role_outside_allowed_set(tmp_path):
    df = with_value(conversations(), "role", "c2", 2, "bot")
    batch = _quarantined(tmp_path, df, 1, "role not in {user, assistant, tool, system}")
    assert batch.quarantine["conversation_id"].to_list() == ["c2"]


def test_exact_duplicate_keeps_one_copy(tmp_path):
    base = conversations()
    df = pl.concat([base, base.filter(pl.col("conversation_id") == "c0", pl.col("turn") == 1)])
    batch = _quarantined(tmp_path, df, 1, "duplicate message: exact copy of (conversation_id, turn)")
    assert batch.accepted.filter(pl.col("conversation_id") == "c0").height == 4


def test_conflicting_duplicate_turn_quarantines_conversation(tmp_path):
    base = conversations()
    copy = base.filter(pl.col("conversation_id") == "c0", pl.col("turn") == 1).with_columns(text=pl.lit("other"))
    batch = _quarantined(tmp_path, pl.concat([base, copy]), 5, "conflicting duplicate turn in conversation")
    assert "c0" not in batch.accepted["conversation_id"].to_list()
    assert batch.counts["quarantined_conversations"] == 1


def test_channel_not_constant_quarantines_conversation(tmp_path):
    df = with_value(conversations(), "channel", "c1", 3, "voice")
    batch = _quarantined(tmp_path, df, 4, "channel not constant within conversation")
    assert set(batch.quarantine["conversation_id"]) == {"c1"}


def test_negative_turn(tmp_path):
    df = with_value(conversations(), "turn", "c0", 0, -1)
    _quarantined(tmp_path, df, 1, "negative turn")


def test_unparseable_timestamp_string(tmp_path):
    df = conversations().with_columns(pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    df = with_value(df, "ts", "c1", 2, "yesterday-ish")
    batch = _quarantined(tmp_path, df, 1, "unparseable timestamp: ts")
    # the well-formed strings were parsed as UTC
    assert batch.accepted["ts"].min() == T0


def test_uncastable_turn_quarantines_row_not_file(tmp_path):
    df = conversations().with_columns(pl.col("turn").cast(pl.String))
    df = with_value(df, "turn", "c2", 1, "abc")
    batch = _quarantined(tmp_path, df, 1, "wrong type: turn cannot be cast to Int64")
    assert batch.counts["accepted"] == 11 and batch.accepted.schema["turn"] == pl.Int64
    assert json.loads(batch.quarantine["raw_row"][0])["turn"] == "abc"


def test_fractional_float_turn_is_wrong_type(tmp_path):
    df = conversations().with_columns(pl.col("turn").cast(pl.Float64))
    df = df.with_columns(pl.when(pl.int_range(pl.len()) == 2).then(2.5).otherwise(pl.col("turn")).alias("turn"))
    _quarantined(tmp_path, df, 1, "wrong type: turn cannot be cast to Int64")


def _binary_table(df: pl.DataFrame, col: str, bad_index: int) -> pa.Table:
    table = df.to_arrow()
    values = [None if v is None else v.encode() for v in df[col].to_list()]
    values[bad_index] = b"caf\xe9 \xff\xfe " + values[bad_index]  # latin-1 byte + garbage
    i = table.schema.get_field_index(col)
    return table.set_column(i, col, pa.array(values, type=pa.binary()))


def test_invalid_utf8_in_text_is_repaired_not_dropped(tmp_path):
    write_hive(tmp_path, _binary_table(conversations(), "text", 5))
    batch = load_transcripts_day(tmp_path, DAY)
    reconciles(batch)
    assert batch.counts["quarantined"] == 0
    assert batch.counts["repaired"] == {"text: invalid UTF-8 bytes replaced with U+FFFD": 1}
    repaired = batch.accepted["text"][5]
    assert repaired.startswith("caf\ufffd \ufffd\ufffd message")
    assert batch.accepted["text"][4] == conversations()["text"][4]


def test_invalid_utf8_in_string_annotated_column_is_read(tmp_path):
    """Polars refuses such a file; the pyarrow fallback still reads it row by row."""
    table = _binary_table(conversations(), "text", 2)
    i = table.schema.get_field_index("text")
    table = table.set_column(i, "text", table.column("text").cast(pa.binary()).chunk(0).view(pa.string()))
    write_hive(tmp_path, table)
    batch = load_transcripts_day(tmp_path, DAY)
    reconciles(batch)
    assert batch.counts["accepted"] == 12 and "\ufffd" in batch.accepted["text"][2]


def test_invalid_utf8_in_identifier_column_is_quarantined(tmp_path):
    path = write_hive(tmp_path, _binary_table(conversations(), "channel", 3))
    batch = load_transcripts_day(tmp_path, DAY)
    reconciles(batch)
    q = batch.quarantine
    assert q["reason"].to_list() == ["invalid UTF-8 in channel"]
    assert q["source_file"].to_list() == [str(path)]
    assert "\ufffd" in json.loads(q["raw_row"][0])["channel"]


def test_empty_conversation_quarantined(tmp_path):
    base = conversations()
    empty = pl.DataFrame(
        {
            "conversation_id": ["e0", "e0"],
            "turn": [0, 1],
            "ts": [T0, T0 + dt.timedelta(seconds=5)],
            "role": ["system", "tool"],
            "text": ["Session opened", "kb result"],
            "tool_name": [None, "kb_search"],
            "channel": ["chat", "chat"],
            "agent_version": ["v1.4", "v1.4"],
            "customer_id": [None, None],
            "skill": ["tier1-1", "tier1-1"],
            "memory_items": [0, 0],
            "platform_extra": ["x", "x"],
        },
        schema=base.schema,
    )
    batch = _quarantined(tmp_path, pl.concat([base, empty]), 2, "empty conversation: no user or assistant message")
    assert set(batch.quarantine["conversation_id"]) == {"e0"}


def test_gaps_and_out_of_order_turns_are_kept_sorted_with_warning(tmp_path):
    base = conversations()
    df = base.filter(~((pl.col("conversation_id") == "c1") & (pl.col("turn") == 2))).reverse()
    write_hive(tmp_path, df)
    batch = load_transcripts_day(tmp_path, DAY)
    reconciles(batch)
    assert batch.counts["quarantined"] == 0
    assert batch.counts["conversations_with_turn_gaps"] == 1
    assert batch.accepted.filter(pl.col("conversation_id") == "c1")["turn"].to_list() == [0, 1, 3]
    assert batch.accepted.filter(pl.col("conversation_id") == "c0")["turn"].to_list() == [0, 1, 2, 3]


def test_several_reasons_on_one_row_are_joined(tmp_path):
    df = with_value(with_value(conversations(), "role", "c0", 1, "robot"), "channel", "c0", 1, None)
    write_hive(tmp_path, df)
    batch = load_transcripts_day(tmp_path, DAY)
    reconciles(batch)
    reason = batch.quarantine.filter(pl.col("conversation_id") == "c0", pl.col("raw_row").str.contains("robot"))
    assert reason["reason"].to_list() == ["null in required column: channel; role not in {user, assistant, tool, system}"]


# --------------------------------------------------------------------------- file-level errors
def _corrupt(path):
    path.write_bytes(b"PAR1 this is not parquet at all")


def _fifo(path):
    os.mkfifo(path)  # opening a FIFO blocks until a writer appears: the run used to hang (issue 19, case 8)


@pytest.mark.parametrize(("make", "name", "why"), [(_corrupt, "part-1.parquet", "cannot be read"),
                                                    (_fifo, "stream.parquet", "cannot be read.*a FIFO")])
def test_unreadable_file_stops_naming_it_or_is_quarantined(tmp_path, make, name, why):
    write_hive(tmp_path, conversations(), name="part-0.parquet")
    bad = tmp_path / "transcripts" / f"date={DAY}" / name
    make(bad)
    with pytest.raises(RawInputError, match=f"{name}.*{why}"):
        load_transcripts_day(tmp_path, DAY)
    batch = load_transcripts_day(tmp_path, DAY, on_unreadable="quarantine")
    reconciles(batch)
    assert batch.counts["accepted"] == 12
    assert [u["file"] for u in batch.counts["unreadable_files"]] == [str(bad)]


def test_missing_required_column_names_file_and_column(tmp_path):
    path = write_hive(tmp_path, conversations().drop("channel"))
    with pytest.raises(RawInputError) as err:
        load_transcripts_day(tmp_path, DAY)
    assert str(path) in str(err.value) and "channel" in str(err.value)


def test_missing_optional_column_is_filled_and_reported(tmp_path):
    path = write_hive(tmp_path, conversations().drop("memory_items", "skill"))
    batch = load_transcripts_day(tmp_path, DAY)
    assert batch.counts["accepted"] == 12 and batch.accepted["memory_items"].null_count() == 12
    assert batch.counts["missing_optional_columns"] == {str(path): ["skill", "memory_items"]}


def test_missing_transcripts_dir_raises(tmp_path):
    with pytest.raises(RawInputError, match="transcripts"):
        list_transcript_days(tmp_path)


def test_bad_partition_name_raises(tmp_path):
    (tmp_path / "transcripts" / "date=2026-13-45").mkdir(parents=True)
    with pytest.raises(RawInputError, match="date=2026-13-45"):
        list_transcript_days(tmp_path)


# --------------------------------------------------------------------------- PII
def test_quarantine_raw_row_has_no_pii(tmp_path):
    df = conversations().with_columns(
        pl.concat_str(
            [pl.col("text"), pl.lit(" call +44 20 7946 0958 or (415) 555-0132, card 4111 1111 1111 1111")]
        ).alias("text")
    )
    df = df.with_columns(pl.lit("bot").alias("role"))  # everything quarantined
    write_hive(tmp_path, df)
    assert df.select(contains_pii(pl.col("text")).all()).item()
    batch = load_transcripts_day(tmp_path, DAY)
    reconciles(batch)
    assert batch.counts["quarantined"] == 12
    assert not batch.quarantine.select(contains_pii(pl.col("raw_row")).any()).item()
    row = json.loads(batch.quarantine["raw_row"][0])
    assert "[EMAIL]" in row["text"] and "[PHONE]" in row["text"] and "[CARD]" in row["text"]
    assert "platform_extra" not in row


# --------------------------------------------------------------------------- outcomes, customers
def test_outcomes_absent_gives_empty_typed_frame(tmp_path):
    batch = load_outcomes(tmp_path, None)
    assert batch.accepted.height == 0 and batch.accepted.schema["csat"] == pl.Int64
    assert batch.accepted.schema["resolved"] == pl.Boolean
    reconciles(batch)
    assert load_customers(tmp_path).accepted.columns == ["customer_id", "persona_segment", "source_file"]


def test_outcome_rules(tmp_path):
    df = pl.DataFrame(
        {
            "conversation_id": ["c0", "c1", "c1", "c2", "c2", "c3", None, "c5", "zz", "c6"],
            "resolved": ["true", "1", "1", "no", "yes", "maybe", "true", "false", "true", "TRUE"],
            "reopened_7d": [False] * 10,
            "escalated": [None] * 10,
            "csat": [5, 4, 4, 3, 2, 1, 2, 9, 3, None],
            "ticket_system": ["zendesk"] * 10,
        }
    )
    path = tmp_path / "outcomes.parquet"
    df.write_parquet(path)
    known = pl.Series(["c0", "c1", "c2", "c3", "c5", "c6"])
    batch = load_outcomes(tmp_path, known)
    reconciles(batch)
    reasons = dict(zip(batch.quarantine["raw_row"], batch.quarantine["reason"]))
    by = {json.loads(k)["conversation_id"]: [] for k in reasons}
    for k, v in reasons.items():
        by[json.loads(k)["conversation_id"]].append(v)
    assert by["c1"] == ["duplicate row: exact copy of conversation_id"]
    assert sorted(by["c2"]) == ["conflicting duplicate conversation_id"] * 2
    assert by["c3"] == ["wrong type: resolved cannot be cast to Boolean"]
    assert by[None] == ["null in required column: conversation_id"]
    assert by["c5"] == ["csat out of range 1..5"]
    assert by["zz"] == ["unknown conversation"]
    assert batch.accepted["conversation_id"].to_list() == ["c0", "c1", "c6"]
    assert batch.accepted["resolved"].to_list() == [True, True, True]
    assert set(batch.quarantine["source_file"]) == {str(path)}
    assert batch.quarantine["table"].unique().to_list() == ["outcomes"]


def test_outcomes_directory_form(tmp_path):
    d = tmp_path / "outcomes"
    d.mkdir()
    pl.DataFrame({"conversation_id": ["a"], "resolved": [True], "csat": [4]}).write_parquet(d / "p1.parquet")
    pl.DataFrame({"conversation_id": ["b"], "resolved": [False], "csat": [None]}).write_parquet(d / "p2.parquet")
    batch = load_outcomes(tmp_path, None)
    reconciles(batch)
    assert batch.accepted["conversation_id"].to_list() == ["a", "b"]
    assert batch.counts["missing_optional_columns"][str(d / "p1.parquet")] == ["reopened_7d", "escalated"]


def test_outcomes_missing_key_column(tmp_path):
    pl.DataFrame({"conv": ["a"], "csat": [4]}).write_parquet(tmp_path / "outcomes.parquet")
    with pytest.raises(RawInputError, match="outcomes.parquet.*conversation_id"):
        load_outcomes(tmp_path, None)


def test_customer_rules(tmp_path):
    pl.DataFrame(
        {
            "customer_id": ["u1", "u2", "u2", None, "u3", "u3"],
            "persona_segment": ["vip", "new", "new", "regular", "vip", "at_risk"],
            "email": ["a@b.com"] * 6,
        }
    ).write_parquet(tmp_path / "customers.parquet")
    batch = load_customers(tmp_path)
    reconciles(batch)
    assert batch.accepted["customer_id"].to_list() == ["u1", "u2"]
    assert sorted(batch.counts["quarantined_by_reason"].items()) == [
        ("conflicting duplicate customer_id", 2),
        ("duplicate row: exact copy of customer_id", 1),
        ("null in required column: customer_id", 1),
    ]
    assert batch.quarantine["conversation_id"].null_count() == 4


# --------------------------------------------------------------------------- size (speed figures: benchmarks/)
def test_one_day_of_50k_messages(tmp_path):
    n_conv, n_turns = 5_000, 10
    df = conversations(n_conv, n_turns, every=dt.timedelta(seconds=5))  # all start on DAY
    df = with_value(df, "role", "c7", 3, "bot")
    write_hive(tmp_path, df)
    batch = load_transcripts_day(tmp_path, DAY)
    reconciles(batch)
    assert batch.counts["raw_rows"] == 50_000 and batch.counts["quarantined"] == 1


@pytest.mark.slow
def test_eight_million_messages_day_by_day(tmp_path):
    """160 Hive days x 50k messages, processed one day at a time (bounded memory)."""
    template = conversations(5_000, 10, every=dt.timedelta(seconds=5)).drop("platform_extra")
    for k in range(160):
        day = DAY + dt.timedelta(days=k)
        write_hive(
            tmp_path,
            template.with_columns(
                pl.col("ts") + dt.timedelta(days=k), (pl.lit(f"d{k}-") + pl.col("conversation_id")).alias("conversation_id")
            ),
            day,
        )
    days = list_transcript_days(tmp_path)
    assert len(days) == 160
    total = accepted = 0
    for day in days:
        batch = load_transcripts_day(tmp_path, day)
        total += batch.counts["raw_rows"]
        accepted += batch.counts["accepted"]
    assert total == accepted == 8_000_000


def test_file_exported_twice_is_quarantined_as_copies(tmp_path):
    write_hive(tmp_path, conversations(), name="part-0.parquet")
    second = write_hive(tmp_path, conversations(), name="part-1-retry.parquet")
    batch = load_transcripts_day(tmp_path, DAY)
    reconciles(batch)
    assert batch.counts["accepted"] == 12 and batch.counts["quarantined"] == 12
    assert batch.quarantine["source_file"].unique().to_list() == [str(second)]
    assert batch.quarantine["reason"].unique().to_list() == ["duplicate message: exact copy of (conversation_id, turn)"]


def test_timestamps_in_other_zones_or_naive_are_utc(tmp_path):
    berlin = conversations(1, 4).with_columns(pl.col("ts").dt.convert_time_zone("Europe/Berlin"))
    naive = conversations(1, 4, prefix="n").with_columns(pl.col("ts").dt.replace_time_zone(None))
    write_hive(tmp_path, berlin, name="a.parquet")
    write_hive(tmp_path, naive, name="b.parquet")
    batch = load_transcripts_day(tmp_path, DAY)
    reconciles(batch)
    assert batch.accepted.schema["ts"] == pl.Datetime("us", "UTC")
    assert batch.accepted.group_by("conversation_id").agg(pl.col("ts").min())["ts"].to_list() == [T0, T0]


# --------------------------------------------------------------------------- emoji, days without data
def test_emoji_and_other_scripts_pass_through_untouched(tmp_path):
    """Valid UTF-8 beyond ASCII (emoji, combining marks, CJK, RTL) is data, not an error."""
    texts = ["thanks 👍🏽 so much", "naïve café — ok", "注文はどこですか", "שלום 🙂", "zero\u200bwidth"]
    df = conversations()
    for i, t in enumerate(texts):
        df = with_value(df, "text", f"c{i % 3}", i // 3 + 1, t)
    write_hive(tmp_path, df)
    batch = load_transcripts_day(tmp_path, DAY)
    reconciles(batch)
    assert batch.counts["quarantined"] == 0 and batch.counts["repaired"] == {}
    assert set(texts) <= set(batch.accepted["text"].to_list())


def test_day_without_files_is_an_empty_batch_not_an_error(tmp_path):
    write_hive(tmp_path, conversations())
    batch = load_transcripts_day(tmp_path, DAY + dt.timedelta(days=1))
    reconciles(batch)
    assert (batch.counts["files"], batch.counts["raw_rows"], batch.accepted.height) == (0, 0, 0)


def test_day_with_an_empty_file_is_an_empty_batch(tmp_path):
    write_hive(tmp_path, conversations().head(0))
    batch = load_transcripts_day(tmp_path, DAY)
    reconciles(batch)
    assert (batch.counts["files"], batch.counts["raw_rows"]) == (1, 0)


def test_day_with_no_data_in_a_run_is_reported_and_the_other_days_land(tmp_path):
    """The signals asset over a 3-day range whose middle day was never exported: two day
    parts are written, the run succeeds and its metadata and log name the missing day."""
    import dagster as dg

    from assets.signals import signals_day
    from convocausal.store import store_paths
    from pipelines.resources import ConvocausalSettings

    raw_dir = tmp_path / "raw"
    write_hive(raw_dir, conversations())
    write_hive(raw_dir, conversations(start=T0 + dt.timedelta(days=2), prefix="d"), day=DAY + dt.timedelta(days=2))
    store = tmp_path / "store.duckdb"
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [signals_day], instance=instance, resources={"settings": ConvocausalSettings(raw_dir=str(raw_dir), store=str(store))},
        tags={"dagster/asset_partition_range_start": DAY.isoformat(),
              "dagster/asset_partition_range_end": (DAY + dt.timedelta(days=2)).isoformat()},
    )
    assert result.success
    metas = {m.partition: m.metadata for m in result.asset_materializations_for_node("signals_day")}
    assert sorted(metas) == [(DAY + dt.timedelta(days=k)).isoformat() for k in range(3)]
    assert [metas[k]["days_without_data"].value for k in sorted(metas)] == [0, 1, 0]
    assert [metas[k]["conversations"].value for k in sorted(metas)] == [3, 0, 3]
    logged = [e.user_message for e in instance.all_logs(result.run_id)]
    assert any("no transcripts for 1 day(s): 2026-01-06" in m for m in logged)
    assert any("totals over 3 day(s): conversations=6," in m and "days_without_data=1" in m for m in logged)
    paths = store_paths(store)
    written = sorted(p.parent.name for p in (paths.parts / "signals").glob("*/*.parquet"))
    assert written == ["date=2026-01-05", "date=2026-01-07"]


def test_each_day_of_a_backfill_carries_its_own_metadata(tmp_path):
    """A 2-day range is one run (single-run backfill policy) but two materializations; each day's
    metadata is that day's own counts, read back from the instance, not the pair's total."""
    import dagster as dg

    from assets.signals import signals_day
    from pipelines.resources import ConvocausalSettings

    day2 = DAY + dt.timedelta(days=1)
    raw_dir = tmp_path / "raw"
    write_hive(raw_dir, with_value(conversations(n_conv=2), "role", "c1", 3, "robot"))
    write_hive(raw_dir, conversations(n_conv=5, start=T0 + dt.timedelta(days=1), prefix="d"), day=day2)
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [signals_day], instance=instance,
        resources={"settings": ConvocausalSettings(raw_dir=str(raw_dir), store=str(tmp_path / "s.duckdb"))},
        tags={"dagster/asset_partition_range_start": DAY.isoformat(),
              "dagster/asset_partition_range_end": day2.isoformat()},
    )
    assert result.success and len(result.get_step_success_events()) == 1  # one run, one step

    for day in (DAY, day2):
        stored = pl.read_parquet(raw_dir / "transcripts" / f"date={day.isoformat()}" / "*.parquet")
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("signals_day"), asset_partitions=[day.isoformat()]), limit=10
        ).records
        assert len(records) == 1
        meta = records[0].asset_materialization.metadata
        assert meta["conversations"].value == stored["conversation_id"].n_unique()
        robots = stored.filter(pl.col("role") == "robot").height
        assert meta["messages_quarantined"].value == robots
        assert meta["messages_accepted"].value == stored.height - robots
        assert meta["quarantined_by_reason"].value == (
            {"role not in {user, assistant, tool, system}": robots} if robots else {}
        )
        assert meta["days_without_data"].value == 0
    logged = "\n".join(e.user_message for e in instance.all_logs(result.run_id))
    assert "signals_day totals over 2 day(s): conversations=7, messages_accepted=27, messages_quarantined=1" in logged


def test_kept_but_imperfect_rows_are_reported_by_the_run(tmp_path):
    """Gaps in turns are kept (not quarantined), so the signals asset names them in its
    metadata and log, next to the quarantine counts by reason."""
    import dagster as dg

    from assets.signals import signals_day
    from pipelines.resources import ConvocausalSettings

    raw_dir = tmp_path / "raw"
    df = conversations().filter(~((pl.col("conversation_id") == "c1") & (pl.col("turn") == 2)))
    write_hive(raw_dir, with_value(df, "role", "c2", 3, "robot"))
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [signals_day], instance=instance, partition_key=DAY.isoformat(),
        resources={"settings": ConvocausalSettings(raw_dir=str(raw_dir), store=str(tmp_path / "s.duckdb"))},
    )
    meta = result.asset_materializations_for_node("signals_day")[0].metadata
    assert meta["conversations_with_turn_gaps"].value == 1
    assert meta["messages_quarantined"].value == 1
    assert meta["quarantined_by_reason"].value == {"role not in {user, assistant, tool, system}": 1}
    logged = "\n".join(e.user_message for e in instance.all_logs(result.run_id))
    assert "1 conversation(s) have gaps or out-of-order turns" in logged
    assert "1 message(s) quarantined (role not in" in logged



# --------------------------------------------------------------------------- column types (issue 19, item 7)
def test_decimal_memory_items_are_read_as_integers(tmp_path):
    """A database export's NUMERIC(10, 0) is an integer column, not a wrong type."""
    df = conversations().with_columns(pl.col("memory_items").cast(pl.Decimal(10, 0)))
    write_hive(tmp_path, df)
    batch = load_transcripts_day(tmp_path, DAY)
    reconciles(batch)
    assert batch.counts["quarantined"] == 0 and batch.accepted["memory_items"].to_list() == [0] * 12


def test_nested_value_in_a_scalar_column_is_a_cast_reason_not_a_crash(tmp_path):
    pl.DataFrame({"conversation_id": ["c0", "c1"], "csat": [[5], None], "resolved": [{"v": True}, {"v": None}]}
                 ).write_parquet(tmp_path / "outcomes.parquet")
    batch = load_outcomes(tmp_path, None)
    reconciles(batch)
    reasons = dict(zip(batch.quarantine["conversation_id"], batch.quarantine["reason"]))
    assert reasons == {
        "c0": "wrong type: resolved cannot be cast to Boolean; wrong type: csat cannot be cast to Int64",
        "c1": "wrong type: resolved cannot be cast to Boolean",
    }


def test_is_unique_is_exact_with_nulls_and_several_columns():
    import polars as pl

    from extract.raw_batch import is_unique

    assert is_unique(pl.DataFrame({"a": ["x", "y", None]}))
    assert not is_unique(pl.DataFrame({"a": ["x", None, None]}))  # nulls are equal to each other
    assert not is_unique(pl.DataFrame({"a": ["x", "y", "x"]}))
    assert is_unique(pl.DataFrame({"a": ["x", "x"], "b": [1, 2]}))
    assert not is_unique(pl.DataFrame({"a": ["x", "x"], "b": [1, 1]}))
    assert is_unique(pl.DataFrame({"a": []}, schema={"a": pl.String}))


def test_is_unique_of_a_column_in_order_agrees_with_the_distinct_count():
    """The sorted fast path (neighbours compared) gives the hashes' answer on random sorted and unsorted keys."""
    import numpy as np
    import polars as pl

    from extract.raw_batch import is_unique

    rng = np.random.default_rng(3)
    for trial in range(200):
        keys = pl.Series("k", [f"c{v}" for v in rng.integers(0, 60, size=int(rng.integers(2, 40)))])
        for frame in (pl.DataFrame(keys), pl.DataFrame(keys.sort())):
            assert is_unique(frame) == (frame["k"].n_unique() == frame.height), (trial, frame["k"].to_list())
    assert is_unique(pl.DataFrame({"k": [1, 2, 3]})) and not is_unique(pl.DataFrame({"k": [1, 2, 2]}))


def test_accepted_rows_come_back_sorted_by_key_whether_or_not_the_file_was():
    """The sort is skipped only for a key column already in order: both give the same rows in the same order."""
    import polars as pl

    from extract.raw_batch import in_order

    assert in_order(pl.DataFrame({"k": ["a", "b", "b", "c"]}), ["k"])
    assert not in_order(pl.DataFrame({"k": ["b", "a"]}), ["k"])
    assert not in_order(pl.DataFrame({"k": ["a", None]}), ["k"])  # nulls: the sort decides where they go
    assert not in_order(pl.DataFrame({"k": ["a"], "j": [1]}), ["k", "j"])


def test_is_member_is_exact_and_keeps_nulls():
    import numpy as np
    import polars as pl

    from extract.raw_batch import is_member

    got = is_member(pl.Series("x", ["a", None, "b", "c", "a", ""]), pl.Series(["a", "c", None, ""]))
    assert got.name == "x" and got.to_list() == [True, None, False, True, True, True]
    assert is_member(pl.Series("x", [], dtype=pl.String), pl.Series(["a"])).to_list() == []
    assert is_member(pl.Series("x", [1, 2]), pl.Series(["1"])).to_list() == [True, False]  # compared as text
    rng = np.random.default_rng(0)
    values = pl.Series("v", [f"id{v}" for v in rng.integers(0, 5000, 3000)])
    pool = pl.Series("p", [f"id{v}" for v in rng.integers(0, 5000, 3000)])
    assert is_member(values, pool).to_list() == values.is_in(pool.implode()).to_list()


def test_schema_uniqueness_is_still_enforced_on_the_accepted_rows():
    import polars as pl

    from extract.raw_batch import _validate_accepted
    from extract.schemas import CustomerSchema

    good = pl.DataFrame({"customer_id": ["c1", "c2"], "persona_segment": ["vip", None], "source_file": ["f", "f"]})
    _validate_accepted(CustomerSchema, good, "customers")
    with pytest.raises(RuntimeError, match="column 'customer_id' holds duplicate values"):
        _validate_accepted(CustomerSchema, good.with_columns(pl.lit("c1").alias("customer_id")), "customers")
    with pytest.raises(RuntimeError, match="fail CustomerSchema"):
        _validate_accepted(CustomerSchema, good.with_columns(pl.lit(None, pl.String).alias("customer_id")), "customers")


def test_transcript_key_uniqueness_checked_outside_pandera_gives_pandera_verdict():
    """The transcripts' (conversation_id, turn) uniqueness, taken out of pandera for speed, fails
    exactly where pandera's full schema fails: a repeated key, and not a repeated conversation
    or a repeated turn alone; the other checks (a channel that changes) stay pandera's."""
    from datetime import datetime, timezone

    import pandera.polars as pa
    import polars as pl

    from extract.raw_batch import _validate_accepted
    from extract.schemas import TRANSCRIPT_DTYPES, TranscriptSchema

    ts = datetime(2026, 1, 1, tzinfo=timezone.utc)
    rows = pl.DataFrame({"conversation_id": ["a", "a", "b"], "turn": [0, 1, 0], "ts": [ts] * 3,
                         "role": ["user", "assistant", "user"], "text": ["x"] * 3, "tool_name": [None] * 3,
                         "channel": ["web"] * 3, "agent_version": ["v1"] * 3, "customer_id": ["c"] * 3,
                         "skill": [None] * 3, "memory_items": [0] * 3},
                        schema=TRANSCRIPT_DTYPES)
    cases = {"ok": rows, "key twice": rows.with_columns(pl.Series("turn", [0, 0, 0])),
             "conversation twice, turns distinct": rows.with_columns(pl.Series("conversation_id", ["a", "a", "a"]).alias(
                 "conversation_id"), pl.Series("turn", [0, 1, 2])),
             "channel changes": rows.with_columns(pl.Series("channel", ["web", "chat", "web"]))}
    for name, frame in cases.items():
        try:
            TranscriptSchema.validate(frame, lazy=True)
            pandera_fails = False
        except (pa.errors.SchemaErrors, pa.errors.SchemaError):
            pandera_fails = True
        try:
            _validate_accepted(TranscriptSchema, frame, "transcripts")
            ours_fails = False
        except RuntimeError as exc:
            ours_fails = True
            if name == "key twice":
                assert "columns 'conversation_id' and 'turn' together hold duplicate values" in str(exc)
        assert ours_fails == pandera_fails == (name in ("key twice", "channel changes")), name


def _transcript_rows(conversations: list[tuple[str, int, str]]) -> pl.DataFrame:
    """Accepted-looking rows: one row per (conversation, turn, channel) given, in the order given."""
    t0 = dt.datetime(2026, 1, 5, tzinfo=dt.timezone.utc)
    return pl.DataFrame({
        "conversation_id": [c for c, _, _ in conversations],
        "turn": [t for _, t, _ in conversations],
        "ts": [t0 + dt.timedelta(seconds=i) for i in range(len(conversations))],
        "role": ["user" if t % 2 == 0 else "assistant" for _, t, _ in conversations],
        "text": ["hi"] * len(conversations),
        "tool_name": [None] * len(conversations),
        "channel": [ch for _, _, ch in conversations],
        "agent_version": ["v1"] * len(conversations),
        "customer_id": ["k"] * len(conversations),
        "skill": [None] * len(conversations),
        "memory_items": [0] * len(conversations),
        "source_file": ["f"] * len(conversations),
    }, schema_overrides={"turn": pl.Int64, "memory_items": pl.Int64, "tool_name": pl.String, "skill": pl.String,
                         "ts": pl.Datetime("us", "UTC")})


def _full_check_fails(rows: pl.DataFrame) -> bool:
    from extract.raw_batch import validate_accepted

    try:
        validate_accepted(TranscriptSchema, rows, "transcripts")
    except RuntimeError:
        return True
    return False


def test_conversation_runs_prove_the_transcript_keys_only_when_the_full_check_passes():
    """The one-pass proof of (conversation, turn) uniqueness and a constant channel never says yes where the
    hashing checks say no, and it says yes for rows in conversation order (so the fast path is taken)."""
    import numpy as np

    from extract.raw_batch import validate_accepted
    from extract.raw_transcripts import conversation_runs_hold_keys

    clean = [(f"c{c}", t, "chat" if c % 2 else "email") for c in range(6) for t in range(3)]
    assert conversation_runs_hold_keys(_transcript_rows(clean))
    broken = {
        "a conversation in two runs": clean[:3] + clean[6:9] + [("c0", 3, "email")],
        "a turn twice": clean[:2] + [clean[1]] + clean[3:],
        "turns going back": [clean[1], clean[0]] + clean[2:],
        "the channel changes": clean[:2] + [("c0", 2, "sms")] + clean[3:],
    }
    for why, rows in broken.items():
        assert not conversation_runs_hold_keys(_transcript_rows(rows)), why
    assert not conversation_runs_hold_keys(_transcript_rows([])[:0])
    rng = np.random.default_rng(11)
    proven = 0
    for trial in range(300):
        rows = [(f"c{rng.integers(0, 4)}", int(rng.integers(0, 4)), str(rng.choice(["chat", "chat", "sms"])))
                for _ in range(int(rng.integers(1, 10)))]
        if rng.random() < 0.5:  # the usual case: grouped and in turn order
            rows = sorted(set(rows), key=lambda r: (r[0], r[1]))
        frame = _transcript_rows(rows)
        fast = conversation_runs_hold_keys(frame)
        fails = _full_check_fails(frame)
        assert not (fast and fails), (trial, rows)
        proven += fast
        # the chunk check as _validate_chunk runs it raises exactly when the full check does
        try:
            validate_accepted(TranscriptSchema, frame, "transcripts", keys_proven=fast)
            raised = False
        except RuntimeError:
            raised = True
        assert raised == fails, (trial, rows)
    assert proven > 50


def test_columns_still_checked_when_the_keys_are_proven():
    from extract.raw_batch import validate_accepted

    rows = _transcript_rows([("c0", 0, "chat"), ("c0", 1, "chat")]).with_columns(pl.lit("robot").alias("role"))
    with pytest.raises(RuntimeError, match="role"):
        validate_accepted(TranscriptSchema, rows, "transcripts", keys_proven=True)


def test_shared_turns_equal_the_window_over_every_row():
    """``_shared_turns`` (the window only where a conversation is split, repeats or goes back) gives the
    plain window's answer on random frames: ids missing, rows with a reason, conversations split in runs."""
    import numpy as np

    from extract.raw_contract import REASON_COL
    from extract.raw_transcripts import _shared_turns

    rng = np.random.default_rng(5)
    ok = pl.col(REASON_COL).is_null()
    window = ok & (ok.cast(pl.UInt32).sum().over(["conversation_id", "turn"]) > 1)
    for trial in range(400):
        n = int(rng.integers(0, 14))
        ids = [None if rng.random() < 0.1 else f"c{rng.integers(0, 4)}" for _ in range(n)]
        turns = [None if rng.random() < 0.05 else int(rng.integers(0, 5)) for _ in range(n)]
        frame = pl.DataFrame({"conversation_id": ids, "turn": turns,
                              REASON_COL: [("bad" if rng.random() < 0.2 else None) for _ in range(n)]},
                             schema={"conversation_id": pl.String, "turn": pl.Int64, REASON_COL: pl.String})
        if rng.random() < 0.5:
            frame = frame.sort("conversation_id", "turn", nulls_last=True)
        got = _shared_turns(frame).to_list()
        assert got == frame.select(window).to_series().to_list(), (trial, frame.to_dicts())


def test_conversation_flags_equal_one_group_by_of_every_row():
    """``_conversation_flags`` (runs first, then conversations) against the plain definition: one group-by
    of every row by its id, on random frames with split conversations, missing ids and rows with a reason."""
    import numpy as np

    from extract.raw_contract import REASON_COL
    from extract.raw_transcripts import _conversation_flags

    rng = np.random.default_rng(8)
    ok = pl.col(REASON_COL).is_null()
    ch = pl.when(ok).then(pl.col("channel"))
    talk = ok & pl.col("role").is_in(["user", "assistant"])
    for trial in range(300):
        n = int(rng.integers(0, 16))
        frame = pl.DataFrame({
            "conversation_id": [None if rng.random() < 0.1 else f"c{rng.integers(0, 4)}" for _ in range(n)],
            "channel": [str(rng.choice(["chat", "sms", "email"])) if rng.random() < 0.9 else None for _ in range(n)],
            "role": [str(rng.choice(["user", "assistant", "tool", "system"])) for _ in range(n)],
            REASON_COL: [("bad" if rng.random() < 0.25 else None) for _ in range(n)],
            "c0": [bool(rng.random() < 0.1) for _ in range(n)],
        }, schema={"conversation_id": pl.String, "channel": pl.String, "role": pl.String, REASON_COL: pl.String,
                   "c0": pl.Boolean})
        if rng.random() < 0.5:
            frame = frame.sort("conversation_id", nulls_last=True)
        for conflicts in (False, True):
            plain = (frame.group_by("conversation_id")
                     .agg(*([pl.col("c0").any().alias("c1")] if conflicts else []),
                          (ch.n_unique() - ch.null_count().gt(0).cast(pl.UInt32) > 1).alias("c2"),
                          (~talk.any()).alias("c3"))
                     .filter(pl.col("conversation_id").is_not_null()
                             & pl.any_horizontal(pl.exclude("conversation_id"))))
            got = _conversation_flags(frame, with_conflicts=conflicts)
            key = "conversation_id"
            assert got.sort(key).to_dicts() == plain.select(got.columns).sort(key).to_dicts(), (trial, conflicts)


def test_a_days_files_read_on_threads_stop_at_the_first_unreadable_file_in_order(tmp_path, monkeypatch):
    """A day's files are read on several threads (``_read_owned``): with two unreadable files the run
    stops naming the first in reading order, even when the later one fails first; under quarantine both
    are reported, in that order, and the readable rows are those a single reader gets."""
    import time

    from data_fixtures.generator import generate
    from extract import raw_batch, raw_files, raw_index

    generate(tmp_path, n_conversations=300, seed=3)
    folder = sorted(p for p in (tmp_path / "transcripts").iterdir() if p.is_dir())[4]
    day = dt.date.fromisoformat(folder.name.removeprefix("date="))
    good = pl.read_parquet(folder / "part-0.parquet")
    good.head(5).with_columns((pl.col("conversation_id") + "-b").alias("conversation_id")).write_parquet(
        folder / "part-3.parquet")
    for name in ("part-1.parquet", "part-2.parquet"):
        (folder / name).write_bytes(b"not parquet")
    real = raw_files.read_file

    def slow_first(path, *args, **kwargs):
        if path.name == "part-1.parquet":
            time.sleep(0.2)  # the earlier file fails last
        return real(path, *args, **kwargs)

    monkeypatch.setattr(raw_batch, "read_file", slow_first)  # what read_or_skip reads with
    raw_index._build.cache_clear()
    with pytest.raises(raw.RawInputError, match="part-1.parquet"):
        raw.load_transcripts_days(tmp_path, [day], on_unreadable="stop")
    threaded = raw.load_transcripts_days(tmp_path, [day], on_unreadable="quarantine")[day]
    monkeypatch.setattr(raw_files, "READER_THREADS", 1)
    single = raw.load_transcripts_days(tmp_path, [day], on_unreadable="quarantine")[day]
    files = [f["file"] for f in threaded.counts["unreadable_files"]]
    assert [Path(f).name for f in files] == ["part-1.parquet", "part-2.parquet"]
    assert threaded.accepted.equals(single.accepted) and threaded.quarantine.equals(single.quarantine)
    assert threaded.accepted.height == good.height + 5

