"""The raw cache on disk (extract/raw_cache.py, issue 20) changes no result, only what is read.

A nightly process reads back the conversation index's per-file summaries and the validated
outcomes and customers instead of reading the whole history again. Every result must equal the
uncached one — the index's days and files, the accepted and quarantine frames (same reasons, same
order) and the counts, also with the known-conversation check and the salt on top — and a changed,
deleted, fresh, unreadable or corrupt input must be handled as without the cache.
"""

from __future__ import annotations

import os
import re
import time
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest

from configs.signals import load_signals_config
from data_fixtures.generator import generate
from extract import raw, raw_batch, raw_cache, raw_files, raw_index
from extract.raw_batch import finish, key_duplicates, read_many
from extract.raw_cast import add_reason
from extract.raw_contract import REASON_COL, REASON_CSAT, REASON_UNKNOWN_CONVERSATION, RawInputError
from extract.raw_files import optional_table_files
from extract.redact import pseudonymize_ids
from extract.schemas import OUTCOME_REQUIRED, OutcomeSchema

CONFIG = load_signals_config()
SALT = CONFIG.customer_key.salt
EMAIL_ID = "jane.roe@example.org"


@pytest.fixture(scope="module")
def landing(tmp_path_factory) -> Path:
    """A small generated landing directory with bad outcome and customer rows, a second outcomes
    file, a flat transcript file, a conversation over midnight and an unreadable flat file."""
    out = tmp_path_factory.mktemp("raw_cache")
    generate(out, n_conversations=600, seed=5)
    folders = sorted((out / "transcripts").iterdir())
    second = folders[1] / "part-0.parquet"
    first = pl.read_parquet(folders[0] / "part-0.parquet")
    cids = first["conversation_id"].unique(maintain_order=True).to_list()
    late = first.filter(pl.col("conversation_id") == cids[0]).tail(1).with_columns(
        (pl.col("turn") + 1).alias("turn"), (pl.col("ts") + timedelta(hours=1)).alias("ts"))
    nxt = pl.read_parquet(second)
    pl.concat([nxt, late.select(nxt.columns)], how="vertical_relaxed").write_parquet(second)
    flat = pl.read_parquet(folders[2] / "part-0.parquet").head(30).with_columns(
        (pl.col("conversation_id") + "-flat").alias("conversation_id"))
    flat.write_parquet(out / "transcripts" / "flat-0.parquet")
    (out / "transcripts" / "broken.parquet").write_bytes(b"not parquet at all")

    outcomes = pl.read_parquet(out / "outcomes.parquet")
    rows = outcomes.head(4)
    bad = pl.concat([
        rows.head(1),                                                              # exact copy
        rows.slice(1, 1).with_columns(pl.lit(9, dtype=outcomes.schema["csat"]).alias("csat")),  # bad csat
        rows.slice(2, 1).with_columns(pl.lit(not rows["resolved"][2]).alias("resolved")),      # conflicting
        rows.head(1).with_columns(pl.lit("ghost-1").alias("conversation_id")),     # unknown conversation
        rows.head(1).with_columns(pl.lit(EMAIL_ID).alias("conversation_id")),      # PII id, unknown
    ], how="vertical_relaxed")
    pl.concat([outcomes, bad], how="vertical_relaxed").write_parquet(out / "outcomes.parquet")
    (out / "outcomes").mkdir()
    rows.slice(3, 1).with_columns(pl.lit("ghost-2").alias("conversation_id")).write_parquet(
        out / "outcomes" / "late.parquet")

    customers = pl.read_parquet(out / "customers.parquet")
    dup = pl.concat([customers.head(1), customers.slice(1, 1).with_columns(pl.lit("other").alias("persona_segment"))])
    pl.concat([customers, dup], how="vertical_relaxed").write_parquet(out / "customers.parquet")
    return out


@pytest.fixture(autouse=True)
def _settled(monkeypatch):
    """Files written a moment ago are never cached (their mtime may still move); the test files
    are, unless a test puts the guard back."""
    monkeypatch.setattr(raw_cache, "SETTLE_SECONDS", 0.0)
    raw_index._build.cache_clear()
    yield
    raw_index._build.cache_clear()


def _new_process():
    """What a new process starts with: no in-process index."""
    raw_index._build.cache_clear()


def _known(landing: Path) -> pl.Series:
    ids = pl.read_parquet(landing / "outcomes.parquet")["conversation_id"].unique()
    return ids.filter(~ids.is_in(["ghost-1", EMAIL_ID])).sort()


def _single_pass_outcomes(raw_dir, known, salt, config) -> raw.RawBatch:
    """``load_outcomes`` as it was before the cache: the known-conversation check inside the one pass."""
    dtypes = raw.outcome_dtypes(config)
    df, originals, info = read_many(optional_table_files(raw_dir, "outcomes"), dtypes, OUTCOME_REQUIRED, "stop")
    df = df.with_columns(add_reason(pl.col(REASON_COL), ~pl.col("csat").is_between(1, 5), REASON_CSAT).alias(REASON_COL))
    df = key_duplicates(df, ["conversation_id"], list(dtypes), "conversation_id")
    if known is not None:
        ids = df["conversation_id"] if salt is None else pseudonymize_ids(df["conversation_id"], salt)
        df = df.with_columns(add_reason(pl.col(REASON_COL), pl.col(REASON_COL).is_null()
                                        & ~pl.lit(ids).is_in(known.cast(pl.String).implode()),
                                        REASON_UNKNOWN_CONVERSATION).alias(REASON_COL))
    batch = finish(df, originals, info, dtypes, OutcomeSchema, "outcomes", ["conversation_id"])
    if salt is not None and batch.quarantine.height:
        batch.quarantine = batch.quarantine.with_columns(pseudonymize_ids(batch.quarantine["conversation_id"], salt))
    return batch


def _same_batch(a: raw.RawBatch, b: raw.RawBatch) -> None:
    assert a.accepted.equals(b.accepted)
    assert a.quarantine.equals(b.quarantine)
    assert a.counts == b.counts


def _same_index(a, b) -> None:
    assert a.files == b.files and a.folder_day == b.folder_day and a.days == b.days
    assert a.fallback == b.fallback and a._unreadable_flat == b._unreadable_flat
    assert a._files_by_day == b._files_by_day
    assert a._filed_owner.sort(pl.all()).equals(b._filed_owner.sort(pl.all()))
    assert a._file_owners.keys() == b._file_owners.keys()
    for path, table in a._file_owners.items():
        assert table.sort(pl.all()).equals(b._file_owners[path].sort(pl.all())), path


def _count(monkeypatch, module, name="read_file") -> list[Path]:
    calls: list[Path] = []
    real = getattr(module, name)

    def counting(path, *args, **kwargs):
        calls.append(Path(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(module, name, counting)
    return calls


# ============================================================================ transcript index
def test_index_from_cache_equals_index_read(landing, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    plain = raw_index.transcript_index(landing)
    _new_process()
    cold = raw_index.transcript_index(landing, cache)
    _same_index(plain, cold)
    assert len(plain.days) > 5 and plain._unreadable_flat == [landing / "transcripts" / "broken.parquet"]
    entries = sorted((cache / "index").iterdir())
    assert len(entries) == len(plain.files) - 1  # the unreadable file is not cached

    _new_process()
    calls = _count(monkeypatch, raw_index)
    warm = raw_index.transcript_index(landing, cache)
    _same_index(plain, warm)
    assert calls == [landing / "transcripts" / "broken.parquet"]  # reported by its day each time
    assert sorted((cache / "index").iterdir()) == entries
    assert raw.list_transcript_days(landing, cache_dir=cache) == plain.days
    some = plain.days[:2]
    assert raw.continued_days(landing, some, cache_dir=cache) == raw.continued_days(landing, some)


def test_index_read_on_threads_equals_the_index_read_file_by_file(landing, monkeypatch):
    """The files are summarized on ``READER_THREADS`` threads: the index is the one a single reader builds
    (files, days and each day's files alike; the owner tables the same rows), and a failing file stops the build with the error of the first
    failing file in reading order, whichever thread failed first."""
    _new_process()
    threaded = raw_index.transcript_index(landing)
    monkeypatch.setattr(raw_files, "READER_THREADS", 1)
    _new_process()
    single = raw_index.transcript_index(landing)
    assert raw_files.READER_THREADS == 1
    assert threaded.files == single.files and threaded.days == single.days
    assert threaded._files_by_day == single._files_by_day and threaded._unreadable_flat == single._unreadable_flat
    assert threaded._filed_owner.sort(pl.all()).equals(single._filed_owner.sort(pl.all()))  # a set: unique()
    assert threaded._file_owners.keys() == single._file_owners.keys()
    # a flat file's owners come through unique(), in no fixed order, by one reader as by several
    assert all(threaded._file_owners[p].sort(pl.all()).equals(single._file_owners[p].sort(pl.all()))
               for p in single._file_owners)

    monkeypatch.setattr(raw_files, "READER_THREADS", 4)
    files = single.files
    failing = {files[3]: 0.2, files[7]: 0.0}  # the later file fails at once, the earlier one after a while
    real = raw_index.read_file

    def read(path, *args, **kwargs):
        if path in failing:
            time.sleep(failing[path])
            raise RawInputError(f"{path}: refused")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(raw_index, "read_file", read)
    _new_process()
    with pytest.raises(RawInputError, match=re.escape(f"{files[3]}: refused")):
        raw_index.transcript_index(landing)
    _new_process()


def test_changed_and_deleted_transcript_files(landing, tmp_path, monkeypatch):
    work = tmp_path / "landing"
    _copy_transcripts(landing, work)
    cache = tmp_path / "cache"
    raw_index.transcript_index(work, cache)
    before = {p.name for p in (cache / "index").iterdir()}
    folders = sorted(p for p in (work / "transcripts").iterdir() if p.is_dir())
    changed = folders[3] / "part-0.parquet"
    df = pl.read_parquet(changed)
    df.with_columns((pl.col("ts") - timedelta(days=2)).alias("ts")).write_parquet(changed)  # new owner days
    for f in (folders[4]).iterdir():
        f.unlink()
    folders[4].rmdir()

    _new_process()
    calls = _count(monkeypatch, raw_index)
    warm = raw_index.transcript_index(work, cache)
    assert sorted(calls) == sorted([changed, work / "transcripts" / "broken.parquet"])
    monkeypatch.undo()
    _new_process()
    _same_index(raw_index.transcript_index(work), warm)
    after = {p.name for p in (cache / "index").iterdir()}
    assert len(after) == len(before) - 1  # the deleted file's entry is pruned, the changed one replaced
    assert len(before - after) == 2 and len(after - before) == 1


def _copy_transcripts(src: Path, dst: Path) -> None:
    for path in sorted(src.rglob("*")):
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif "_truth" not in path.parts:
            target.write_bytes(path.read_bytes())


def test_corrupt_index_entries_are_ignored_and_rebuilt(landing, tmp_path):
    cache = tmp_path / "cache"
    plain = raw_index.transcript_index(landing)
    _new_process()
    raw_index.transcript_index(landing, cache)
    entries = sorted((cache / "index").iterdir())
    entries[0].write_bytes(b"garbage")
    entries[1].write_bytes(b"")
    pl.DataFrame({"x": [1]}).write_parquet(entries[2])  # a parquet file of another shape
    _new_process()
    _same_index(plain, raw_index.transcript_index(landing, cache))
    for entry in entries[:3]:
        assert pl.read_parquet(entry).columns == [raw_index.H, raw_index.FILED, raw_index.MIN_TS]


# ============================================================================ outcomes, customers
@pytest.mark.parametrize("salt", [None, SALT])
def test_outcomes_from_cache_equal_a_single_pass(landing, tmp_path, monkeypatch, salt):
    cache = tmp_path / "cache"
    known = _known(landing)
    reference = _single_pass_outcomes(landing, known, salt, CONFIG)
    without_known = _single_pass_outcomes(landing, None, None, CONFIG)
    reasons = reference.counts["quarantined_by_reason"]
    assert reasons[REASON_UNKNOWN_CONVERSATION] == 3 and reasons[REASON_CSAT] == 1
    assert reasons["conflicting duplicate conversation_id"] == 2
    assert reasons["duplicate row: exact copy of conversation_id"] == 1
    assert (EMAIL_ID in reference.quarantine["conversation_id"].to_list()) == (salt is None)

    _same_batch(raw.load_outcomes(landing, known, salt=salt, config=CONFIG), reference)
    _same_batch(raw.load_outcomes(landing, known, salt=salt, config=CONFIG, cache_dir=cache), reference)  # cold
    read = _count(monkeypatch, raw_batch)
    reread = _count(monkeypatch, raw)
    warm = raw.load_outcomes(landing, known, salt=salt, config=CONFIG, cache_dir=cache)
    _same_batch(warm, reference)
    assert read == []  # nothing validated again
    assert sorted(reread) == [landing / "outcomes" / "late.parquet", landing / "outcomes.parquet"]  # raw_row only
    _same_batch(raw.load_outcomes(landing, None, config=CONFIG, cache_dir=cache), without_known)
    assert read == [] and len(reread) == 2  # no unknown rows to quarantine: no file read
    assert len(list(cache.glob("outcomes-*.json"))) == 1


def test_customers_from_cache(landing, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    plain = raw.load_customers(landing)
    assert plain.counts["quarantined"] == 3
    _same_batch(raw.load_customers(landing, cache_dir=cache), plain)
    read = _count(monkeypatch, raw_batch)
    _same_batch(raw.load_customers(landing, cache_dir=cache), plain)
    assert read == []


def test_changed_table_is_validated_again(tmp_path, landing):
    work = tmp_path / "landing"
    work.mkdir()
    (work / "outcomes.parquet").write_bytes((landing / "outcomes.parquet").read_bytes())
    cache = tmp_path / "cache"
    first = raw.load_outcomes(work, None, cache_dir=cache)
    df = pl.read_parquet(work / "outcomes.parquet")
    df.with_columns(pl.lit(1, dtype=df.schema["csat"]).alias("csat")).write_parquet(work / "outcomes.parquet")
    second = raw.load_outcomes(work, None, cache_dir=cache)
    _same_batch(second, raw.load_outcomes(work, None))
    assert not second.accepted.equals(first.accepted)
    assert len(list(cache.glob("outcomes-*"))) == 3  # the old entry pruned: one manifest, two frames
    os.utime(work / "outcomes.parquet")  # touched: validated again, same rows
    _same_batch(raw.load_outcomes(work, None, cache_dir=cache), second)


def test_corrupt_table_entries_are_ignored(landing, tmp_path):
    cache = tmp_path / "cache"
    plain = raw.load_customers(landing)
    raw.load_customers(landing, cache_dir=cache)
    (manifest,) = cache.glob("customers-*.json")
    for bad in (b"{", b'{"name": "x"}'):
        manifest.write_bytes(bad)
        _same_batch(raw.load_customers(landing, cache_dir=cache), plain)
    (accepted,) = cache.glob("customers-*.accepted.parquet")
    accepted.write_bytes(b"garbage")
    _same_batch(raw.load_customers(landing, cache_dir=cache), plain)
    plain.accepted.head(3).write_parquet(accepted)  # readable, but not the rows of the manifest
    _same_batch(raw.load_customers(landing, cache_dir=cache), plain)


def test_bad_input_is_reported_as_without_cache(tmp_path):
    work = tmp_path / "landing"
    work.mkdir()
    cache = tmp_path / "cache"
    (work / "outcomes.parquet").write_bytes(b"not parquet")
    for _ in range(2):
        with pytest.raises(RawInputError, match="cannot be read as parquet"):
            raw.load_outcomes(work, None, cache_dir=cache)
        q = raw.load_outcomes(work, None, on_unreadable="quarantine", cache_dir=cache)
        assert q.counts == raw.load_outcomes(work, None, on_unreadable="quarantine").counts
        assert len(q.counts["unreadable_files"]) == 1
    pl.DataFrame({"conv": ["a"], "csat": [4]}).write_parquet(work / "outcomes.parquet")
    for _ in range(2):
        with pytest.raises(RawInputError, match="conversation_id"):
            raw.load_outcomes(work, None, cache_dir=cache)
    assert not list(cache.glob("outcomes-*"))


def test_cached_files_are_still_checked_against_the_allowed_roots(landing, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    raw.load_customers(landing, cache_dir=cache)
    raw_index.transcript_index(landing, cache)
    monkeypatch.setenv("CONVOCAUSAL_ALLOWED_ROOTS", str(tmp_path / "elsewhere"))
    with pytest.raises(RawInputError, match="outside CONVOCAUSAL_ALLOWED_ROOTS"):
        raw.load_customers(landing, cache_dir=cache)
    _new_process()
    with pytest.raises(RawInputError, match="outside CONVOCAUSAL_ALLOWED_ROOTS"):
        raw_index.transcript_index(landing, cache)


def test_files_modified_a_moment_ago_are_not_cached(landing, tmp_path, monkeypatch):
    monkeypatch.setattr(raw_cache, "SETTLE_SECONDS", 3600.0)
    cache = tmp_path / "cache"
    _same_batch(raw.load_customers(landing, cache_dir=cache), raw.load_customers(landing))
    raw_index.transcript_index(landing, cache)
    assert not list(cache.glob("customers-*")) and not list((cache / "index").glob("*"))


def test_raw_cache_dir_sits_beside_the_store(tmp_path):
    store = tmp_path / "a" / "store.duckdb"
    assert raw.raw_cache_dir(store) == tmp_path / "a" / "store.duckdb.parts" / "cache" / "raw"


def test_validated_tables_are_handed_on_in_memory_once(landing, tmp_path, monkeypatch):
    """Without a cache folder, a validated outcomes/customers batch is kept in this process for
    the next load (signals_day → analysis_store), equal to a single pass, taken once, never
    written anywhere, and validated again when a file changed."""
    raw_cache._HELD.clear()
    monkeypatch.setattr(raw_cache, "SETTLE_SECONDS", 0.0)  # the fixture's files may be seconds old
    known = _known(landing)
    reference = _single_pass_outcomes(landing, known, SALT, CONFIG)
    first = raw.load_outcomes(landing, None, config=CONFIG)  # as signals_day loads it
    first.counts["accepted"] = -1  # a caller's change to its counts is its own
    read = _count(monkeypatch, raw_batch)
    _same_batch(raw.load_outcomes(landing, known, salt=SALT, config=CONFIG), reference)  # as analysis_store
    assert read == []
    _same_batch(raw.load_outcomes(landing, known, salt=SALT, config=CONFIG), reference)  # taken: validated again
    assert len(read) == 2
    work = tmp_path / "landing"
    work.mkdir()
    (work / "customers.parquet").write_bytes((landing / "customers.parquet").read_bytes())
    raw.load_customers(work)
    df = pl.read_parquet(work / "customers.parquet")
    df.head(df.height - 1).write_parquet(work / "customers.parquet")  # changed before the next load
    read.clear()
    changed = raw.load_customers(work)
    assert len(read) == 1 and changed.counts["raw_rows"] == df.height - 1  # the new file validated
    raw_cache._HELD.clear()
    _same_batch(changed, raw.load_customers(work))
    assert not list(tmp_path.rglob("*.parquet.*")) and sorted(p.name for p in work.iterdir()) == ["customers.parquet"]
