"""Extraction of many days in one pass gives the rows of a day-by-day pass (issue 20).

The run shares one conversation index, checks the accepted rows' schema once per chunk and builds
each row's quarantine reasons in one flat expression; none of that may change a signals row, a
quarantine row or a count. The landing directory here has bad rows of every kind the transcript
rules know, and a conversation whose later turns are filed in the next day's folder.
"""

from __future__ import annotations

import shutil
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from configs.signals import load_signals_config
from data_fixtures.generator import generate
from extract.day import extract_days
from extract.history import (
    CUSTOMER_HASH,
    FILE_STARTS_SCHEMA,
    HistoryCarry,
    HistoryKey,
    conversation_starts,
    history_window,
    load_history,
    read_raw_starts,
    read_starts,
    window,
)
from extract.raw import load_customers, load_outcomes, load_transcripts_day, load_transcripts_days
from extract.raw_cache import StartsCache
from extract.raw_cast import add_reason, add_reasons
from extract.raw_index import transcript_index


@pytest.fixture(scope="module")
def dirty_landing(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("batched")
    generate(out, n_conversations=1500, seed=3)
    folders = sorted((out / "transcripts").iterdir())
    first, second = folders[0] / "part-0.parquet", folders[1] / "part-0.parquet"
    df = pl.read_parquet(first)
    cids = df["conversation_id"].unique(maintain_order=True).to_list()
    one = df.filter(pl.col("conversation_id") == cids[0])
    two = df.filter(pl.col("conversation_id") == cids[1])
    three = df.filter(pl.col("conversation_id") == cids[2])
    bad = pl.concat([
        one.head(1),                                                              # exact copy
        two.head(1).with_columns(pl.lit("CONFLICT").alias("text")),               # conflicting turn
        three.head(1).with_columns(pl.lit("robot").alias("role"), pl.lit(99).alias("turn")),  # bad role
        three.head(1).with_columns(pl.lit(-1).alias("turn")),                     # negative turn
    ], how="vertical_relaxed")
    pl.concat([df, bad], how="vertical_relaxed").write_parquet(first)
    # the last turn of a conversation of day 0 filed in day 1's folder (a conversation over midnight)
    late = df.filter(pl.col("conversation_id") == cids[3]).tail(1).with_columns(
        (pl.col("turn") + 1).alias("turn"), (pl.col("ts") + timedelta(hours=1)).alias("ts"))
    nxt = pl.read_parquet(second)
    pl.concat([nxt, late.select(nxt.columns)], how="vertical_relaxed").write_parquet(second)
    return out


def _run(raw: Path, max_messages: int) -> list:
    cfg = load_signals_config()
    days = list(transcript_index(raw).days)[:6]
    return list(extract_days(raw, days, cfg, load_outcomes(raw, None, config=cfg), load_customers(raw),
                             max_messages=max_messages, first_day=days[0]))


def test_one_pass_equals_day_by_day(dirty_landing):
    together = _run(dirty_landing, max_messages=10_000_000)  # all days in one chunk
    alone = _run(dirty_landing, max_messages=1)  # every day its own chunk, as a nightly run of one day
    assert [r.day for r in together] == [r.day for r in alone]
    assert sum(r.quarantine.height for r in together) >= 4
    for a, b in zip(together, alone, strict=True):
        assert a.signals.equals(b.signals), a.day
        assert a.quarantine.equals(b.quarantine), a.day
        assert a.counts == b.counts, a.day
        assert a.requested == b.requested and a.warnings == b.warnings


def test_shared_index_and_deferred_check_give_the_same_batch(dirty_landing):
    index = transcript_index(dirty_landing)
    for day in index.days[:3]:
        plain = load_transcripts_day(dirty_landing, day)
        batched = load_transcripts_day(dirty_landing, day, index=index, validate=False)
        assert plain.accepted.equals(batched.accepted)
        assert plain.quarantine.equals(batched.quarantine)
        assert plain.counts == batched.counts


def test_flat_reasons_equal_nested_add_reason():
    n = 400
    df = pl.DataFrame({
        "r": pl.Series([None if i % 3 else f"old {i % 5}" for i in range(n)], dtype=pl.String),
        "a": [i % 2 == 0 for i in range(n)],
        "b": pl.Series([None if i % 7 == 0 else i % 5 == 0 for i in range(n)], dtype=pl.Boolean),
        "c": [i % 11 == 0 for i in range(n)],
        "t": [f"text {i % 4}" for i in range(n)],
    })
    rules = [(pl.col("a"), "A"), (pl.col("b"), "B"), (pl.col("c"), pl.lit("C: ") + pl.col("t"))]
    nested = pl.col("r")
    for cond, reason in rules:
        nested = add_reason(nested, cond, reason)
    out = df.select(nested.alias("nested"), add_reasons(pl.col("r"), rules).alias("flat"))
    assert out["nested"].equals(out["flat"])
    assert out["flat"].null_count() > 0 and out["flat"].str.count_matches("; ").max() >= 2


def test_empty_day_stays_an_empty_batch(dirty_landing):
    index = transcript_index(dirty_landing)
    batch = load_transcripts_day(dirty_landing, date(1999, 1, 1), index=index, validate=False)
    assert batch.accepted.height == 0 and batch.counts["files"] == 0


def _binary_text(df: pl.DataFrame, bad_rows: list[int]) -> pa.Table:
    """``df`` with ``text`` stored as bytes, invalid UTF-8 in ``bad_rows`` (repaired on read)."""
    values = [None if v is None else v.encode() for v in df["text"].to_list()]
    for i in bad_rows:
        values[i] = b"caf\xe9 " + values[i]
    table = df.to_arrow()
    return table.set_column(table.schema.get_field_index("text"), "text", pa.array(values, type=pa.binary()))


@pytest.fixture(scope="module")
def messy_landing(dirty_landing, tmp_path_factory) -> Path:
    """The dirty landing plus what a read of many days must keep apart per day: a flat file with
    rows of three days (one of them an exact copy of a Hive row), a file without optional
    columns, a file whose text holds invalid UTF-8, and a file that is not parquet."""
    out = tmp_path_factory.mktemp("messy")
    shutil.copytree(dirty_landing, out, dirs_exist_ok=True)
    folders = sorted((out / "transcripts").iterdir())
    third = pl.read_parquet(folders[2] / "part-0.parquet")
    cids = third["conversation_id"].unique(maintain_order=True).to_list()
    flat_rows = pl.concat([
        pl.read_parquet(f / "part-0.parquet").filter(pl.col("conversation_id").is_in(
            pl.read_parquet(f / "part-0.parquet")["conversation_id"].unique().head(3).implode()))
        for f in folders[3:6]
    ], how="vertical_relaxed")
    flat_rows = flat_rows.with_columns(pl.format("flat-{}", pl.col("conversation_id")).alias("conversation_id"))
    first, second = flat_rows["conversation_id"].unique(maintain_order=True).head(2).to_list()
    flat_rows = flat_rows.filter((pl.col("conversation_id") != first) | (pl.col("turn") != 1)).with_columns(  # a gap
        pl.when((pl.col("conversation_id") == second) & (pl.col("turn") == 2))  # a timestamp going back
        .then(pl.col("ts") - timedelta(seconds=1) - (pl.col("ts") - pl.col("ts").min().over("conversation_id")))
        .otherwise(pl.col("ts")).alias("ts"))
    flat_rows = pl.concat([flat_rows, third.head(1)], how="vertical_relaxed")  # a copy of a Hive row
    flat_rows.write_parquet(out / "transcripts" / "export.parquet")
    pq.write_table(_binary_text(third.filter(pl.col("conversation_id").is_in(cids[:5])), [0, 3]),
                   folders[2] / "part-1.parquet")
    fourth = pl.read_parquet(folders[3] / "part-0.parquet")
    fourth.head(0).write_parquet(folders[3] / "part-0.parquet")
    fourth.drop("skill", "memory_items").write_parquet(folders[3] / "part-1.parquet")
    (folders[4] / "part-1.parquet").write_bytes(b"not parquet")
    return out


def test_many_days_at_once_equal_each_day_alone(messy_landing):
    index = transcript_index(messy_landing)
    days = list(index.days)[:7]
    together = load_transcripts_days(messy_landing, days, on_unreadable="quarantine", index=index)
    counts = [together[d].counts for d in days]
    assert sum(c["duplicate_copies"] for c in counts) >= 2 and sum(len(c["unreadable_files"]) for c in counts) >= 1
    assert any(c["repaired"] for c in counts) and any(c["missing_optional_columns"] for c in counts)
    assert sum(c["conversations_with_turn_gaps"] for c in counts) >= 1
    assert sum(c["conversations_ts_not_monotonic"] for c in counts) >= 1
    for day in days:
        alone = load_transcripts_day(messy_landing, day, on_unreadable="quarantine")
        assert together[day].accepted.equals(alone.accepted), day
        assert together[day].quarantine.equals(alone.quarantine), day
        assert together[day].counts == alone.counts, day


def test_conversation_warnings_match_a_group_by(messy_landing):
    """The row-to-row tests of the sorted accepted rows against the plain definition."""
    index = transcript_index(messy_landing)
    accepted = pl.concat([b.accepted.with_columns(pl.lit(d).alias("__day"))
                          for d, b in load_transcripts_days(messy_landing, index.days, "quarantine", index).items()])
    per = accepted.group_by("__day", "conversation_id").agg(
        pl.len().alias("n"), pl.col("turn").min().alias("lo"), pl.col("turn").max().alias("hi"),
        (pl.col("ts").sort_by("turn").diff().dt.total_microseconds() < 0).any().alias("back"))
    gaps = per.filter((pl.col("lo") != 0) | (pl.col("hi") != pl.col("n") - 1)).height
    backs = per.filter(pl.col("back")).height
    batches = load_transcripts_days(messy_landing, index.days, "quarantine", index)
    assert sum(b.counts["conversations_with_turn_gaps"] for b in batches.values()) == gaps > 0
    assert sum(b.counts["conversations_ts_not_monotonic"] for b in batches.values()) == backs > 0
    assert sum(b.counts["conversations"] for b in batches.values()) == per.height


def _hashed(history: pl.DataFrame, key: HistoryKey) -> pl.DataFrame:
    """A raw-id history (``customer_id, started_at``) keyed as the extraction keys it."""
    return (history.select(key.hash(pl.col("customer_id")).alias(CUSTOMER_HASH), "started_at")
            .select(CUSTOMER_HASH, "started_at").sort("started_at", CUSTOMER_HASH))


@pytest.mark.parametrize("window_days", [2.5, 30])
@pytest.mark.parametrize("cache", ["none", "cold", "warm"])
def test_carried_history_equals_a_read_of_the_window(messy_landing, tmp_path, window_days, cache, monkeypatch):
    """The history a chunk gets from the starts of the days read before it (``HistoryCarry``)
    against :func:`load_history`, which reads the window's raw rows, with its customers hashed:
    for every day, in chunks of three days (some window days held, some not, held days dropped as
    the window moves on), with an unreadable file (its day is read from the files again) and a
    flat file spanning days; without the starts cache, with an empty one, and with one a run
    before has filled (every window day not held then comes from the kept per-file starts)."""
    from extract import raw_cache

    monkeypatch.setattr(raw_cache, "SETTLE_SECONDS", 0.0)  # the fixture's files are seconds old
    index = transcript_index(messy_landing)
    days = list(index.days)
    key = HistoryKey.from_salt("test salt")
    starts_cache = None if cache == "none" else StartsCache(tmp_path / "cache", FILE_STARTS_SCHEMA)
    if cache == "warm":
        for d in days:
            read_starts(window(d, window_days), index, key, starts_cache)
        assert len(list((tmp_path / "cache" / "starts").glob("*.parquet"))) > 0
    carry = HistoryCarry(window_days, index, key, starts_cache)
    seen = 0
    for k in range(0, len(days), 3):
        chunk = days[k:k + 3]
        want = _hashed(load_history(messy_landing, chunk[0], window_days, index=index), key)
        assert carry.history(chunk[0]).equals(want), chunk[0]
        seen += want.height
        batches = load_transcripts_days(messy_landing, chunk, "quarantine", index, validate=False, starts=True)
        for d in chunk:
            if batches[d].counts["unreadable_files"]:
                assert batches[d].starts is None
            carry.add(d, batches[d].starts)
    assert seen > 0
    assert any(b.starts is None for b in load_transcripts_days(
        messy_landing, days, "quarantine", index, starts=True).values())


def test_memory_from_the_keyed_history_equals_the_memory_from_raw_ids(messy_landing):
    """``prior_session`` (the memory signal) with the keyed history (customers matched on their hash)
    equals the flag with the raw-id history of :func:`load_history`, on the days of the messy landing
    where the history changes the flag (asserted: without it, some flags differ)."""
    from extract.signals_steps import prior_session

    cfg = load_signals_config()
    index = transcript_index(messy_landing)
    salt = cfg.customer_key.salt
    key = HistoryKey.from_salt(salt)
    batches = load_transcripts_days(messy_landing, index.days, "quarantine", index, validate=False)
    raw_starts = read_raw_starts(index.days, index)  # every day's starts read once: each window is a filter
    keyed_starts = read_starts(index.days, index, key)
    moved = 0
    for day in index.days:
        rows = batches[day].accepted
        base = (rows.group_by("conversation_id").agg(pl.col("customer_id").sort_by("turn").first(),
                                                      pl.col("ts").min().alias("started_at"))
                .sort("conversation_id").with_row_index("__gid"))
        raw = prior_session(base, history_window(raw_starts, day, 30), 30)
        hashed = prior_session(base, history_window(keyed_starts, day, 30), 30, salt)
        assert hashed.equals(raw), day
        moved += int((raw != prior_session(base, None, 30)).sum())
    assert moved > 0


def test_kept_starts_are_read_back_and_pruned_and_hold_no_raw_id(messy_landing, tmp_path, monkeypatch):
    """A second read of a window comes from the kept per-file starts (the files are not opened), gives
    the same starts, and the entries hold no string at all; a changed file's entry is pruned."""
    from extract import history, raw_cache

    monkeypatch.setattr(raw_cache, "SETTLE_SECONDS", 0.0)
    index = transcript_index(messy_landing)
    key = HistoryKey.from_salt("test salt")
    starts_cache = StartsCache(tmp_path / "cache", FILE_STARTS_SCHEMA)
    days = set(index.days)  # every file, the unreadable one and the flat one too
    first = read_starts(days, index, key, starts_cache)
    entries = sorted((tmp_path / "cache" / "starts").glob("*.parquet"))
    assert entries and first.height
    for e in entries:
        assert all(not dtype.is_(pl.String) for dtype in pl.read_parquet_schema(e).values())
    opened = []
    real = history.read_file
    monkeypatch.setattr(history, "read_file", lambda *a, **k: opened.append(a[0]) or real(*a, **k))
    again = read_starts(days, index, key, starts_cache)
    assert again.sort(list(again.columns)).equals(first.sort(list(first.columns)))
    unreadable = []
    for f in index.files_for(days):
        try:
            real(f, {}, ())
        except history.Unreadable:
            unreadable.append(f)
    assert unreadable and sorted(opened) == sorted(unreadable)  # only the file that cannot be read, again
    index.files_for(days)[0].touch()  # a new version: its entry is of no further use
    starts_cache.prune(index.files, key)
    assert len(list((tmp_path / "cache" / "starts").glob("*.parquet"))) == len(entries) - 1
    other = read_starts(days, index, HistoryKey.from_salt("another salt"), starts_cache)  # no entry of it is read
    assert other.height == first.height and not other[CUSTOMER_HASH].is_in(first[CUSTOMER_HASH].implode()).any()


def test_conversation_starts_merge_a_conversation_owned_by_two_days():
    """A file changed after the index was built gives a conversation rows owned by two days: the
    history merges them as a read of the whole window does (first turn's customer, first time)."""
    ts = [datetime(2026, 1, 1, 10, tzinfo=timezone.utc), datetime(2026, 1, 2, 9, tzinfo=timezone.utc)]
    rows = pl.DataFrame({"conversation_id": ["c", "c"], "turn": [3, 0], "ts": ts, "customer_id": ["late", "first"],
                         "__day": [date(2026, 1, 1), date(2026, 1, 2)]})
    got = history_window(conversation_starts(rows), date(2026, 1, 3), 5)
    assert got.to_dicts() == [{"customer_id": "first", "started_at": ts[0]}]


def test_side_tables_narrowed_to_a_chunk_give_the_signals_of_the_whole_tables(dirty_landing):
    """A chunk's outcomes and customers are only the rows whose key its messages hold (on 64-bit
    hashes); the signals equal those from the whole tables, also when a key repeats (inside and
    outside the chunk: the first row wins either way), and when every hash collides."""
    from extract.signals import extract_signals
    from extract.signals_inputs import rows_for_keys

    cfg = load_signals_config()
    index = transcript_index(dirty_landing)
    day = index.days[2]
    messages = load_transcripts_day(dirty_landing, day, index=index).accepted
    outcomes = pl.read_parquet(dirty_landing / "outcomes.parquet")
    inside = messages["conversation_id"][0]
    outside = outcomes.filter(~pl.col("conversation_id").is_in(messages["conversation_id"].implode()))["conversation_id"][0]
    repeats = outcomes.filter(pl.col("conversation_id").is_in([inside, outside])).with_columns(
        ~pl.col("resolved").fill_null(False).alias("resolved"))
    outcomes = pl.concat([outcomes, repeats], how="vertical_relaxed")
    customers = pl.read_parquet(dirty_landing / "customers.parquet")
    whole = extract_signals(messages, outcomes=outcomes, customers=customers, config=cfg)
    for hashes in ("real", "colliding"):
        def narrowed_side(frame, key, how=hashes):
            real = frame[key].hash()
            if how == "colliding":  # every row's hash equals that of a key the messages hold
                real = pl.repeat(messages[key].drop_nulls().hash()[0], frame.height, dtype=pl.UInt64, eager=True)
            return rows_for_keys(frame, key, messages[key], real)
        few_outcomes = narrowed_side(outcomes, "conversation_id")
        few_customers = narrowed_side(customers, "customer_id")
        if hashes == "real":
            assert few_outcomes.height < outcomes.height / 10 and few_customers.height < customers.height
        else:
            assert few_outcomes.height == outcomes.height and few_customers.height == customers.height
        narrowed = extract_signals(messages, outcomes=few_outcomes, customers=few_customers, config=cfg)
        assert narrowed.equals(whole), hashes
    assert whole.filter(pl.col("conversation_id") == inside)["resolved"].item() == outcomes.filter(
        pl.col("conversation_id") == inside)["resolved"][0]
