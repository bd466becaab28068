"""Raw reader, transcripts: the message and conversation rules, and one day's files as a batch.

Why a module of its own: transcripts are the one table with rules beyond a single row (exact
copies, conflicting turns, a channel that changes, conversations with nobody talking), and a
day's batch gathers its conversations' rows from every file that holds them
(:mod:`extract.raw_index` decides which day owns a conversation), so copies and conflicts are
found across files and folders too; :mod:`extract.raw` composes these into its public loaders
and documents the decisions they implement.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import polars as pl

from extract.history import HISTORY_COLUMNS, STARTS_SCHEMA, conversation_starts
from extract.quarantine import quarantine_frame
from extract.raw_batch import empty_batch, is_unique, read_or_skip, validate_accepted
from extract.raw_cast import REPAIRED_COL, add_reason, add_reasons, normalize
from extract.raw_contract import (
    DAY_COL,
    INT32_MAX,
    QUARANTINE_SCHEMA,
    REASON_CHANNEL,
    REASON_COL,
    REASON_CONFLICT_FILES,
    REASON_CONFLICTING_TURN,
    REASON_DUPLICATE_COPY,
    REASON_EMPTY,
    REASON_MEMORY_ITEMS,
    REASON_NEGATIVE_TURN,
    REASON_ROLE,
    REASON_TURN_RANGE,
    REPAIR_TEXT_UTF8,
    ROW_COL,
    OnUnreadable,
    RawBatch,
)
from extract.raw_files import each_file
from extract.schemas import ROLES, TRANSCRIPT_DTYPES, TRANSCRIPT_REQUIRED, TranscriptSchema

CID = "conversation_id"
CONTENT = list(TRANSCRIPT_DTYPES)  # what makes two rows the same message (source_file is not content)


def _run_start() -> pl.Expr:
    """True on the first row of each run of rows of one conversation: its id differs from the row
    before's, or there is no row before, or either id is missing (a row without an id is a run of
    its own). Four rules below read the rows as such runs, so they share this one definition."""
    cid = pl.col(CID)
    return (cid != cid.shift(1)).fill_null(True)


# ============================================================================ rules
def _row_rules(df: pl.DataFrame) -> pl.DataFrame:
    mem = pl.col("memory_items")
    r = add_reasons(pl.col(REASON_COL), [
        (pl.col("role").is_not_null() & ~pl.col("role").is_in(list(ROLES)), REASON_ROLE),
        (pl.col("turn") < 0, REASON_NEGATIVE_TURN),
        (pl.col("turn") > INT32_MAX, REASON_TURN_RANGE),
        ((mem < 0) | (mem > INT32_MAX), REASON_MEMORY_ITEMS),
    ])
    return df.with_columns(r.alias(REASON_COL))


def _shared_turns(df: pl.DataFrame) -> pl.Series:
    """Per row: ok (no reason yet) and its (conversation, turn) held by another ok row too — exactly
    ``ok & (ok.sum().over([conversation_id, turn]) > 1)``, with the window run only where it can be true.

    Why: the window hashes every row's (string, turn) pair (≈ 0.25 s of a 1.8M-message chunk), while
    an export's rows come conversation by conversation in turn order. A conversation whose rows form
    one run with strictly increasing turns holds each turn once, so none of its rows is shared; the
    window runs only on the rest: conversations split over several runs (over midnight: rows in two
    days' files), with a turn repeated or going back, and rows without an id."""
    ok = pl.col(REASON_COL).is_null()
    window = ok & (ok.cast(pl.UInt32).sum().over([CID, "turn"]) > 1)
    cid, turn = pl.col(CID), pl.col("turn")
    start = _run_start()
    flags = df.select(start.alias("start"), (~start & ~(turn > turn.shift(1)).fill_null(False)).alias("out_of_order"))
    heads = df.select(CID).filter(flags["start"])
    doubtful = pl.concat([
        heads.filter(pl.col(CID).is_duplicated()),
        df.select(CID).filter(flags["out_of_order"]),
    ]).unique()
    slow = df.select(cid.is_in(doubtful[CID].implode()) | cid.is_null()).to_series()
    shared = pl.repeat(False, df.height, dtype=pl.Boolean, eager=True)
    if slow.any():
        shared = shared.scatter(slow.arg_true(), df.filter(slow).select(window).to_series())
    return shared


def _conflict_files(df: pl.DataFrame) -> pl.DataFrame | None:
    """Per conversation whose conflicting rows (``c0``) sit in more than one file — a file
    re-exported with other content — the conflict reason naming those files; None if none."""
    if not df["c0"].any():
        return None
    files = pl.col("__f")
    n = files.list.len()
    shown = files.list.head(3).list.join(" and ") + pl.when(n > 3).then(
        pl.lit(" and ") + (n - 3).cast(pl.String) + pl.lit(" more file(s)")).otherwise(pl.lit(""))
    before, after = REASON_CONFLICT_FILES.split("{files}")
    return (
        df.filter(pl.col("c0"))
        .group_by(CID)
        .agg(pl.col("source_file").unique().sort().alias("__f"))
        .filter(n > 1)
        .select(CID, (pl.lit(REASON_CONFLICTING_TURN + before) + shown + pl.lit(after)).alias("__conflict_reason"))
    )


def _copy_report(df: pl.DataFrame) -> dict[date, tuple[int, list[dict]]]:
    """Per owner day (``DAY_COL``): how many rows were dropped as exact copies, and, for copies
    of a row in another file, which file repeats which (``{"file", "copy_of", "rows"}``): a file
    exported twice. Days without copies are absent."""
    if not df["__copy"].any():
        return {}
    n_by_day = dict(df.filter(pl.col("__copy")).group_by(DAY_COL).len().iter_rows())
    keys = df.filter(pl.col("__copy")).select(CID, "turn").unique()
    sub = df.join(keys, on=[CID, "turn"], how="semi")
    kept = pl.col("source_file").filter(pl.col("__ok0")).first().over(pl.struct(CONTENT))
    pairs = (
        sub.with_columns(kept.alias("__kept"))
        .filter(pl.col("__copy"))
        .group_by(DAY_COL, "source_file", "__kept")
        .len()
        .sort(DAY_COL, "source_file", "__kept")
    )
    out = {d: (int(n), []) for d, n in n_by_day.items()}
    for d, f, k, c in pairs.iter_rows():
        if f != k:
            out[d][1].append({"file": f, "copy_of": k, "rows": int(c)})
    return out


def _conversation_flags(df: pl.DataFrame, with_conflicts: bool) -> pl.DataFrame:
    """The conversations a conversation-level rule hits, with one flag per rule: ``c1`` a turn held by two ok
    rows (``c0`` on some row; only ``with_conflicts``), ``c2`` more than one channel among the ok rows,
    ``c3`` no ok user or assistant row. Rows without an id belong to no conversation.

    One aggregation of the conversations, and only those a rule hits are returned to be joined back (a clean
    export has none): a window per rule over every row took 2.5 times as long. In two steps: first per run
    of rows of one conversation (an integer key in order: no hashing of the ids), then the runs per
    conversation (a conversation over midnight is two runs) — a group-by of every row by its string id
    took 0.22 s of a 1.8M-message chunk."""
    ok = pl.col(REASON_COL).is_null()
    # channel codes, not strings: a min and max of strings per conversation took twice as long
    ch = pl.when(ok).then(pl.col("channel").cast(pl.Categorical).to_physical())
    talk = ok & pl.col("role").is_in(["user", "assistant"])
    run_parts = [ch.min().alias("__ch_min"), ch.max().alias("__ch_max"), talk.any().alias("__talk")]
    joins = [pl.col("__ch_min").min(), pl.col("__ch_max").max(), pl.col("__talk").any()]
    if with_conflicts:
        run_parts.append(pl.col("c0").any().alias("c1"))
        joins.append(pl.col("c1").any())
    start = _run_start()
    return (
        df.lazy()
        .with_columns(start.cum_sum().set_sorted().alias("__run"))
        .group_by("__run").agg(pl.col(CID).first(), *run_parts)
        .group_by(CID).agg(joins)
        .select(CID, *(["c1"] if with_conflicts else []),
                (pl.col("__ch_min") != pl.col("__ch_max")).fill_null(False).alias("c2"), (~pl.col("__talk")).alias("c3"))
        .filter(pl.col(CID).is_not_null() & pl.any_horizontal(pl.exclude(CID)))
        .collect()
    )


def transcript_rules(df: pl.DataFrame) -> tuple[pl.DataFrame, dict[date, dict]]:
    """Row rules, then duplicate and conversation-level rules, as reasons in ``__reason``.

    ``df`` may hold the rows of many days (``DAY_COL``, each row's owner day): every rule beyond
    a row is one over a conversation (or its turns), and a conversation has one owner day, so a
    frame of many days gives each row the reasons it gets in a frame of its day alone. Returns
    the frame and, per day with copies, the exact-copy counts (``duplicate_copies``,
    ``duplicate_files``).
    """
    df = _row_rules(df)
    ok = pl.col(REASON_COL).is_null()
    # Only ok rows whose (conversation, turn) another ok row holds too can be exact copies or
    # conflicting turns; in a clean export there are none, and the two rules over whole rows (a
    # distinct over every column, text included) are skipped, or run on those rows alone.
    df = df.with_columns(ok.alias("__ok0"), _shared_turns(df).alias("__shared"))
    shared = df["__shared"]
    copy = pl.repeat(False, df.height, dtype=pl.Boolean, eager=True).alias("__copy")
    if shared.any():  # the first of equal rows is kept: a distinct among the shared rows is one among all ok rows
        repeated = ~df.filter(shared).select(pl.struct(CONTENT).is_first_distinct()).to_series()
        copy = copy.scatter(shared.arg_true(), repeated)
    df = df.with_columns(copy)
    if copy.any():
        df = df.with_columns(add_reason(pl.col(REASON_COL), pl.col("__copy"), REASON_DUPLICATE_COPY).alias(REASON_COL))
    copies = {d: {"duplicate_copies": n, "duplicate_files": files} for d, (n, files) in _copy_report(df).items()}
    # conversation-level rules over the rows still ok after row rules and exact copies
    ok = pl.col(REASON_COL).is_null()
    conflict_reason: str | pl.Expr = REASON_CONFLICTING_TURN
    conflicts = False
    if shared.any():  # else no two ok rows share a turn (row rules never make a row ok): no conflict
        # Two windows in two steps: polars evaluates a window nested in another window ~20x slower.
        df = df.with_columns((ok & (ok.cast(pl.UInt32).sum().over([CID, "turn"]) > 1)).alias("c0"))
        per_conv = _conflict_files(df)
        if per_conv is not None and per_conv.height:
            df = df.join(per_conv, on=CID, how="left", maintain_order="left")
            conflict_reason = pl.coalesce(pl.col("__conflict_reason"), pl.lit(REASON_CONFLICTING_TURN))
        conflicts = True
    hit = _conversation_flags(df, with_conflicts=conflicts)
    if hit.height:
        df = df.join(hit, on=CID, how="left", maintain_order="left").with_columns(
            pl.col(c).fill_null(False) for c in hit.columns if c != CID)
        keep_ok = pl.col(REASON_COL).is_null()
        rules = [(keep_ok & pl.col("c1"), conflict_reason)] if "c1" in hit.columns else []
        rules += [(keep_ok & pl.col("c2"), REASON_CHANNEL), (keep_ok & pl.col("c3"), REASON_EMPTY)]
        df = df.with_columns(add_reasons(pl.col(REASON_COL), rules).alias(REASON_COL))
    out = df.drop("c0", "c1", "c2", "c3", "__ok0", "__copy", "__shared", "__conflict_reason", strict=False)
    return out, copies


_NO_COPIES = {"duplicate_copies": 0, "duplicate_files": []}
_DAY_EXTRAS = ("conversations", "conversations_with_turn_gaps", "conversations_ts_not_monotonic",
               "quarantined_conversations")


def conversation_warnings(accepted: pl.DataFrame) -> dict[date, dict]:
    """Per owner day (``DAY_COL``) of the accepted rows: conversations, and the kept-but-imperfect
    ones among them (turn gaps, timestamps going back). Days without accepted rows are absent.

    ``accepted`` is sorted by day, conversation and turn, and its turns are distinct within a
    conversation (copies and conflicting turns are quarantined), so each test compares a row with
    the one before it: a group-by of every conversation with a sort inside took 0.7 s of a 1.5M-row
    backfill. Turns are exactly 0..n-1 when the first is 0 and each is the one before plus 1."""
    if accepted.height == 0:
        return {}
    turn, ts = pl.col("turn"), pl.col("ts")
    start = _run_start()
    gap = pl.when(start).then(turn != 0).otherwise(turn != turn.shift(1) + 1)
    back = ~start & (ts < ts.shift(1))
    flags = accepted.select(DAY_COL, CID, start.alias("start"), gap.alias("gap"), back.alias("back"))
    out = {d: {"conversations": int(n), "conversations_with_turn_gaps": 0, "conversations_ts_not_monotonic": 0}
           for d, n in flags.group_by(DAY_COL).agg(pl.col("start").sum()).iter_rows()}
    for flag, key in (("gap", "conversations_with_turn_gaps"), ("back", "conversations_ts_not_monotonic")):
        hit = flags.filter(pl.col(flag)).select(DAY_COL, CID).unique().group_by(DAY_COL).len()
        for d, n in hit.iter_rows():
            out[d][key] = int(n)
    return out


def _read_owned(files: list[Path], files_by_day: dict[date, list[Path]], owner_of, on_unreadable: OnUnreadable):
    """Read and cast every file once, narrowed to the rows owned by a day that lists the file
    (``DAY_COL`` set to each row's owner day), as a read of each day alone narrows them. Returns
    the rows in reading order (or None), the stored rows per file, and per file its missing
    optional columns or its unreadable error."""
    frames, originals, per_file = [], {}, {}
    days_of: dict[Path, list[date]] = {}
    for d, paths in files_by_day.items():
        for path in paths:
            days_of.setdefault(path, []).append(d)

    def read_owned(path: Path):
        stored, optional_missing, error = read_or_skip(path, TRANSCRIPT_DTYPES, TRANSCRIPT_REQUIRED, on_unreadable)
        if error is not None:
            return None, None, None, error
        owner = owner_of(path, stored)
        keep = owner.is_in(pl.Series(sorted(days_of.get(path, [])), dtype=pl.Date)).fill_null(False)
        return stored.filter(keep), owner.filter(keep), optional_missing, None

    read = each_file(read_owned, files)  # on reader threads, in file order (a 1M-conversation loop: 10.2 → 9.6 s)
    run: list[tuple[str, pl.DataFrame, pl.Series]] = []
    for path, (stored, owner, optional_missing, error) in zip(files, read):
        if error is not None:
            per_file[path] = {"error": error}
            continue
        per_file[path] = {"missing": optional_missing}
        originals[str(path)] = stored
        if run and run[-1][1].schema != stored.schema:
            frames.append(_normalized(run))
            run = []
        run.append((str(path), stored, owner))
    if run:
        frames.append(_normalized(run))
    rows = pl.concat(frames, how="vertical") if frames else None
    return rows, originals, per_file


def _normalized(run: list[tuple[str, pl.DataFrame, pl.Series]]) -> pl.DataFrame:
    """Consecutive files stored with the same schema, cast in one call: casting is row by row, so
    one call over their rows gives each file's rows, and a call per file cost 0.56 of 0.64 s at
    1.5M rows (182 files). Then each row gets its own file's name and row number back."""
    stored = pl.concat([s for _, s, _ in run], how="vertical")
    norm, _ = normalize(stored, TRANSCRIPT_DTYPES, TRANSCRIPT_REQUIRED, "", keep_repaired=True)
    sizes = np.array([s.height for _, s, _ in run], dtype=np.int64)
    offsets = np.repeat(np.cumsum(sizes) - sizes, sizes)
    names = pl.Series("source_file", [src for src, _, _ in run], dtype=pl.String).gather(
        np.repeat(np.arange(len(run)), sizes))
    return norm.with_columns(
        names,
        pl.Series(ROW_COL, np.arange(stored.height, dtype=np.int64) - offsets),
        pl.concat([o for _, _, o in run]).alias(DAY_COL),
    )


def _in_key_order(accepted: pl.DataFrame) -> bool:
    """Whether the rows already run in (day, conversation, turn) order, each key after the one
    before: then the sort would return them as they are (the accepted keys are distinct), and an
    export written in conversation order (the usual one) skips a sort that took 0.4 s at 1.6M rows."""
    d, c, t = pl.col(DAY_COL), pl.col(CID), pl.col("turn")
    after = (d > d.shift(1)) | ((d == d.shift(1)) & ((c > c.shift(1)) | ((c == c.shift(1)) & (t > t.shift(1)))))
    return bool(accepted.select(after.fill_null(True).all()).item())


def conversation_runs_hold_keys(accepted: pl.DataFrame) -> bool:
    """Whether the rows show, by themselves, ``TranscriptSchema``'s keys: each conversation in one run of
    rows, its turns strictly increasing along the run and one channel throughout it. Then
    (conversation_id, turn) is unique and the channel constant within each conversation.

    Why: those two checks hash every row (a distinct count of the key pairs and a channel count per
    conversation: 0.34 s of a 1.8M-message chunk's 0.49 s schema check), where the rows of an export
    come conversation by conversation in turn order (``load_transcript_days`` keeps them so), and one
    comparison with the row before plus a distinct count of the run heads decides. False proves
    nothing: the full check runs then (``extract.raw_batch.validate_accepted``)."""
    if accepted.height == 0:
        return False
    turn, channel = pl.col("turn"), pl.col("channel")
    start = _run_start()
    same_run = ((turn > turn.shift(1)) & channel.eq_missing(channel.shift(1))).fill_null(False)
    if not accepted.select((start | same_run).all()).item():
        return False
    return is_unique(accepted.filter(start).select(CID))


def _wholly_quarantined(quarantine: pl.DataFrame, accepted: pl.DataFrame) -> dict[date, int]:
    """Per day, the conversations with quarantined rows and no accepted row (none without a
    quarantined row with an id: a clean chunk skips the distinct over its accepted keys)."""
    keys = quarantine.filter(pl.col("conversation_id").is_not_null()).select("date", "conversation_id").unique()
    if keys.height == 0:
        return {}
    lost = (
        keys.join(accepted.select(pl.col(DAY_COL).alias("date"), "conversation_id").unique(),
                  on=["date", "conversation_id"], how="anti")
        .group_by("date").len()
    )
    return dict(lost.iter_rows())


def _day_slices(accepted: pl.DataFrame) -> dict[tuple[date], pl.DataFrame]:
    """``accepted.partition_by(DAY_COL, as_dict=True, include_key=False)`` for rows sorted by day:
    each day's rows are one run, so each part is a zero-copy slice (the partition copied every
    column of 2M rows, 0.1 s a chunk)."""
    runs = accepted[DAY_COL].rle()
    rows = accepted.drop(DAY_COL)
    out, start = {}, 0
    for n, d in runs.struct.unnest().iter_rows():
        out[(d,)] = rows.slice(start, n)
        start += n
    return out


def _day_info(day_files: list[Path], per_file: dict) -> dict:
    """What read_many reports for one day, from the per-file results of a read of many days."""
    info = {"files": 0, "unreadable_files": [], "missing_optional_columns": {}, "repaired": 0}
    for path in day_files:
        got = per_file.get(path)
        if got is None:
            continue
        if "error" in got:
            info["unreadable_files"].append({"file": str(path), "error": got["error"]})
            continue
        info["files"] += 1
        if got["missing"]:
            info["missing_optional_columns"][str(path)] = got["missing"]
    return info


def _empty_day(info: dict, day: date) -> RawBatch:
    batch = empty_batch(TRANSCRIPT_DTYPES, "transcripts", **{k: 0 for k in _DAY_EXTRAS}, **_NO_COPIES)
    batch.counts.update(files=info["files"], unreadable_files=info["unreadable_files"])
    batch.counts["days"] = [day.isoformat()]
    return batch


def load_transcript_days(files: list[Path], files_by_day: dict[date, list[Path]], owner_of,
                         on_unreadable: OnUnreadable, validate: bool = True,
                         starts: bool = False) -> dict[date, RawBatch]:
    """One batch per day of ``files_by_day``: the rows of its conversations, validated.

    ``files``: every file of those days, in reading order, each read once (a file can hold rows
    of several days: a flat file, a conversation over midnight); ``files_by_day``: the files
    each day's own batch counts as read; ``owner_of(path, stored)``: each stored row's owner day.
    Every rule runs once over all the days' rows (see :func:`transcript_rules`), so the fixed
    cost of a frame operation is paid once per call, not once per day; each day's batch holds
    exactly the rows, reasons and counts that a call for that day alone gives.
    ``validate=False``: the caller runs the accepted rows' schema check itself, once over
    several days (see :func:`extract.raw_batch.finish`). ``starts=True``: each batch carries
    its conversation starts (``RawBatch.starts``) for the memory history of later days.
    """
    days = sorted(files_by_day)
    df, originals, per_file = _read_owned(files, files_by_day, owner_of, on_unreadable)
    infos = {d: _day_info(files_by_day[d], per_file) for d in days}
    if df is None:
        out = {d: _empty_day(infos[d], d) for d in days}
        return _with_starts(out, infos, None) if starts else out
    day_starts = conversation_starts(df.select(*HISTORY_COLUMNS, DAY_COL)) if starts else None
    df, copies = transcript_rules(df)
    good = df.filter(pl.col(REASON_COL).is_null())
    bad = df.filter(pl.col(REASON_COL).is_not_null())
    accepted = good.select(*TRANSCRIPT_DTYPES, "source_file", DAY_COL)
    if not _in_key_order(accepted):
        accepted = accepted.sort(DAY_COL, CID, "turn", maintain_order=True)
    if validate:
        rows = accepted.drop(DAY_COL)
        validate_accepted(TranscriptSchema, rows, "transcripts", keys_proven=conversation_runs_hold_keys(rows))
    quarantine = quarantine_frame(bad, originals, "transcripts")
    del originals
    warnings = conversation_warnings(accepted)
    per_day = df.group_by(DAY_COL).agg(pl.len().alias("raw"), pl.col(REPAIRED_COL).sum().alias("repaired"))
    raw_rows = {d: (int(n), int(r)) for d, n, r in per_day.iter_rows()}
    by_reason: dict[date, dict] = {}
    for d, reason, n in bad.group_by(DAY_COL, REASON_COL).len().sort(
            [DAY_COL, "len", REASON_COL], descending=[False, True, False]).iter_rows():
        by_reason.setdefault(d, {})[reason] = n
    lost_by_day = _wholly_quarantined(quarantine, accepted)
    acc_parts = _day_slices(accepted)
    q_parts = quarantine.partition_by("date", as_dict=True, maintain_order=True) if quarantine.height else {}
    out = {}
    for d in days:
        info = infos[d]
        if not info["files"]:
            out[d] = _empty_day(info, d)
            continue
        acc = acc_parts.get((d,), accepted.clear().drop(DAY_COL))
        q = q_parts.get((d,), pl.DataFrame(schema=QUARANTINE_SCHEMA))
        n_raw, n_repaired = raw_rows.get(d, (0, 0))
        counts = {
            "table": "transcripts",
            "files": info["files"],
            "raw_rows": n_raw,
            "accepted": acc.height,
            "quarantined": q.height,
            "quarantined_by_reason": by_reason.get(d, {}),
            "unreadable_files": info["unreadable_files"],
            "missing_optional_columns": info["missing_optional_columns"],
            "repaired": {REPAIR_TEXT_UTF8: n_repaired} if n_repaired else {},
            **copies.get(d, _NO_COPIES),
            **warnings.get(d, {"conversations": 0, "conversations_with_turn_gaps": 0,
                               "conversations_ts_not_monotonic": 0}),
            "quarantined_conversations": int(lost_by_day.get(d, 0)),
            "days": [d.isoformat()],
        }
        if counts["raw_rows"] != counts["accepted"] + counts["quarantined"]:  # invariant of CONTRACT §1
            raise RuntimeError(f"internal error: transcripts rows do not reconcile: {counts}")
        out[d] = RawBatch(acc, q, counts)
    return _with_starts(out, infos, day_starts) if starts else out


def _with_starts(out: dict[date, RawBatch], infos: dict[date, dict], starts: pl.DataFrame | None) -> dict[date, RawBatch]:
    """Each day's share of the conversation starts; None for a day with a file that could not be
    read (its rows are unknown: the history reads that day from its files, as it always did)."""
    parts = starts.partition_by(DAY_COL, as_dict=True, maintain_order=True) if starts is not None and starts.height else {}
    empty = pl.DataFrame(schema=STARTS_SCHEMA)
    for d, batch in out.items():
        batch.starts = None if infos[d]["unreadable_files"] else parts.get((d,), empty)
    return out
