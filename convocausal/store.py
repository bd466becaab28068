"""The analysis store: one DuckDB file plus a folder of per-day parquet parts.

Why two places: DuckDB allows a single writer process, but extraction of days should run in
parallel (several Dagster steps, several machines). So each day's signals and quarantine rows
go to their own parquet file, written atomically (temp file, then ``os.replace``; or one object in
an S3-compatible bucket, ``convocausal.part_store``), and one
short ``publish`` step brings the DuckDB tables in line with the parts in a single transaction.
Re-running a day replaces its file, so nothing is ever duplicated; a crash mid-write leaves
the previous file in place.

Why the publish is incremental (issue 20): a nightly run adds one day to months of parts, and
rebuilding the tables from every part made the nightly cost grow with the history (29 s at 10M
conversations). The store keeps, in the same transaction as the tables, a record of which part it
loaded for each day (``convocausal_parts``: day, fingerprint of the file, rows); a publish compares
the parts on disk with it and replaces only the changed days' rows (delete + insert, one
transaction). The tables stay plain DuckDB tables (not views over the parts), so any DuckDB client
reads the store file on its own, and a copy of the file is complete without its parts folder. Result tables are written per (run_id, question_id) in one
transaction that first deletes the same key, so re-running a question is idempotent too.

Store safety (issue 19):

* The file carries a marker, table ``convocausal_meta`` (key/value rows, ``format_version``
  first), written when this project first writes to it. Every write connection checks it, and
  runs check it before they start (``inspect_store``): a DuckDB file that has tables but no
  marker belongs to another program and is refused before anything is written, instead of having
  its own ``signals`` or ``estimates`` replaced. A store made before the marker existed (no
  marker, but only this project's tables with this project's columns) is adopted: the marker is
  added on its first write.
* The landing directory is the source of truth for which days exist: ``stale_days`` /
  ``remove_days`` drop the parts of days whose raw folder is gone (a deletion request), and
  ``publish`` then rebuilds the tables without them (an empty parts folder empties the tables).
* Opening the file fails with one line naming it (``StoreError``): a lock held past the wait,
  or a file DuckDB cannot read.
* One writer identity per store at a time is ``convocausal.store_lease``.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timezone
from functools import cached_property
from pathlib import Path

import duckdb
import polars as pl

from configs.questions import ConfigError
from convocausal.part_store import LocalParts, S3Parts, part_store
from methods.result import EstimateResult


class StoreError(ConfigError):
    """A store file that must not or cannot be used: one line naming the file and what to do.

    A ``ConfigError`` because the fix is the user's (another ``--store``, wait for the other run,
    restore a backup): the CLI exits 2 with the line, not 1 with a traceback."""


RESULT_TABLES_DDL = {
    "estimates": """
        CREATE TABLE IF NOT EXISTS estimates (
            run_id VARCHAR, question_id VARCHAR, method VARCHAR, estimand VARCHAR, outcome VARCHAR,
            estimate DOUBLE, std_error DOUBLE, ci_low DOUBLE, ci_high DOUBLE, p_value DOUBLE,
            n_treated BIGINT, n_control BIGINT, naive_estimate DOUBLE, computed_at TIMESTAMPTZ,
            ci_method VARCHAR, status VARCHAR, message VARCHAR, true_effect DOUBLE
        )""",
    "refutations": """
        CREATE TABLE IF NOT EXISTS refutations (
            run_id VARCHAR, question_id VARCHAR, refuter VARCHAR, estimate DOUBLE, new_effect DOUBLE,
            p_value DOUBLE, passed BOOLEAN, message VARCHAR
        )""",
    "balance": """
        CREATE TABLE IF NOT EXISTS balance (
            run_id VARCHAR, question_id VARCHAR, covariate VARCHAR, smd_before DOUBLE, smd_after DOUBLE,
            passed BOOLEAN, variance_ratio_before DOUBLE, variance_ratio_after DOUBLE
        )""",
    "diagnostics": """
        CREATE TABLE IF NOT EXISTS diagnostics (
            run_id VARCHAR, question_id VARCHAR, name VARCHAR, value DOUBLE, threshold DOUBLE,
            passed BOOLEAN, message VARCHAR, severity VARCHAR, check_name VARCHAR
        )""",
    "checks": """
        CREATE TABLE IF NOT EXISTS checks (
            run_id VARCHAR, question_id VARCHAR, check_name VARCHAR, state VARCHAR, severity VARCHAR,
            blocking BOOLEAN, description VARCHAR, message VARCHAR
        )""",
    # guardrails, net value and segment effects of a question (issue 16): kind guardrail | net_value |
    # segment | segment_heterogeneity (estimate = Cochran's Q) | segment_projection
    "question_outcomes": """
        CREATE TABLE IF NOT EXISTS question_outcomes (
            run_id VARCHAR, question_id VARCHAR, kind VARCHAR, name VARCHAR, estimate DOUBLE, std_error DOUBLE,
            ci_low DOUBLE, ci_high DOUBLE, p_value DOUBLE, n_treated BIGINT, n_control BIGINT, status VARCHAR,
            message VARCHAR
        )""",
}
OUTCOME_COLUMNS = ("kind", "name", "estimate", "std_error", "ci_low", "ci_high", "p_value", "n_treated", "n_control",
                   "status", "message")
# Columns added after a table's first release: stores written by an earlier version gain them on
# the next write instead of failing the insert.
ADDED_COLUMNS = {
    "diagnostics": {"check_name": "VARCHAR"},
    # nightly monitoring (issue 15): the anytime-valid interval, the run's q-value, the last signals day
    "estimates": {"cs_low": "DOUBLE", "cs_high": "DOUBLE", "q_value": "DOUBLE", "data_through": "DATE"},
}
ESTIMATE_COLUMNS = ("run_id", "question_id", "method", "estimand", "outcome", "estimate", "std_error", "ci_low",
                    "ci_high", "p_value", "n_treated", "n_control", "naive_estimate", "computed_at", "ci_method",
                    "status", "message", "true_effect", "cs_low", "cs_high", "data_through")

META_TABLE = "convocausal_meta"
# Bumped when a stored table changes incompatibly; a store with a larger number is refused.
FORMAT_VERSION = 1
# The day-part tables (``<store>.parts/<table>/date=D/part.parquet``).
PART_TABLES = ("signals", "quarantine")
# What a store written before the marker existed may hold: table → columns it must have. Result
# tables must in addition hold no column outside their DDL here; signals/quarantine/catalog
# columns follow the signals config, so only their key columns are checked.
_LEGACY_REQUIRED = {
    "signals": {"conversation_id", "date"},
    "quarantine": {"source_file", "reason"},
    "signal_catalog": {"name", "kind", "measured_at"},
    **{t: {"run_id", "question_id"} for t in RESULT_TABLES_DDL},
}


@dataclass(frozen=True)
class StorePaths:
    """Where the store lives: the DuckDB file, its sibling ``.parts`` folder (models, reports, and the day
    parts unless ``parts_url`` puts those in an S3-compatible bucket: ``convocausal.part_store``)."""

    db: Path
    parts_url: str | None = None

    @property
    def parts(self) -> Path:
        return self.db.with_name(self.db.name + ".parts")

    @cached_property
    def part_store(self) -> LocalParts | S3Parts:
        """Where the day parts live (checked on first use: a bad URL is a ``PartsUrlError``)."""
        return part_store(self.parts, self.parts_url)

    def day_part(self, table: str, day: date) -> Path | str:
        return self.part_store.day_part(table, day)

    def glob(self, table: str) -> str:
        return self.part_store.glob(table)

    def has_parts(self, table: str) -> bool:
        return self.part_store.has_parts(table)


def store_paths(db: str | os.PathLike, parts_url: str | None = None) -> StorePaths:
    paths = StorePaths(Path(db).resolve(), parts_url or None)
    _ = paths.part_store  # a bad parts URL fails here, before anything is read or written
    return paths


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


def write_parquet_atomic(df: pl.DataFrame, path: Path) -> None:
    """Write to a temp file in the same folder, then rename over the target (atomic on POSIX).

    The temp name is unique (``mkstemp``), so two runs writing the same day at once never
    write into each other's file: the last rename wins and both wrote the same rows."""
    _write_atomic(path, ".parquet", df.write_parquet)


def write_file_atomic(path: Path, data: bytes) -> None:
    """Bytes (a memo, a plot) written like a parquet part: temp file, then rename."""
    _write_atomic(path, path.suffix, lambda tmp: Path(tmp).write_bytes(data))


def _write_atomic(path: Path, suffix: str, write) -> None:
    """Temp file, then rename, with the mode ``open()`` would give (0644 under umask 022): readers see
    the old file or the new one, never a half-written or a 0600 one. A symlink on the way that
    leads outside the allowed roots is refused before anything is created."""
    from convocausal.file_settings import check_write_target

    check_write_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=path.parent)
    try:  # mkstemp makes 0600; parts, memos and plots are for the group too (the umask decides)
        os.fchmod(fd, 0o666 & ~_umask())
    finally:
        os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    """The process umask, read without changing it where Linux shows it (``os.umask`` sets it, and
    another thread creating a file in that instant would get the wrong mode)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_day(paths: StorePaths, day: date, signals: pl.DataFrame, quarantine: pl.DataFrame) -> None:
    """Replace one day's signals and quarantine parts (idempotent re-run of a day).

    The day lives in the Hive path (``date=…``), so a ``date`` column is dropped from the
    frames to keep one source of truth for it.
    """
    paths.part_store.write("signals", day, signals.drop("date", strict=False))
    paths.part_store.write("quarantine", day, quarantine.drop("date", strict=False))


@contextmanager
def connect(db: str | os.PathLike, read_only: bool = False, retries: int = 60) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the DuckDB file, waiting while another process holds the write lock.

    DuckDB lets one process write at a time; Dagster steps that write share the
    ``duckdb_writer`` pool, and this retry covers anything else (a reader during a publish).
    A write connection first checks the store's marker (``claim_store``), so nothing is written
    into another program's database. A lock still held after the retries, or a file DuckDB cannot
    open (corrupt, truncated, another format), raises ``StoreError`` naming the file.
    """
    con = _open(db, read_only, retries)
    try:
        if not read_only:
            claim_store(con, db)
        yield con
    finally:
        con.close()


def _open(db: str | os.PathLike, read_only: bool, retries: int) -> duckdb.DuckDBPyConnection:
    waited, last = 0.0, None
    for attempt in range(retries):
        try:
            return duckdb.connect(str(db), read_only=read_only)
        except duckdb.Error as exc:
            if not _is_lock_conflict(exc):
                raise StoreError(
                    f"store {db}: DuckDB cannot open it ({_first_line(exc)}); restore it from a backup, "
                    "or give --store (CONVOCAUSAL_STORE) a new file name") from exc
            last = exc
            pause = min(0.25 * (attempt + 1), 2.0)
            time.sleep(pause)
            waited += pause
    raise StoreError(
        f"store {db}: still locked by another process after {waited:.0f} s ({_first_line(last)}); "
        "wait for that program to finish or close it, then re-run") from last


def _is_lock_conflict(exc: Exception) -> bool:
    """DuckDB's "Could not set lock on file …: Conflicting lock is held in … (PID n)"."""
    text = str(exc)
    return isinstance(exc, duckdb.IOException) and ("Could not set lock" in text or "Conflicting lock" in text)


def _first_line(exc: BaseException | None) -> str:
    if exc is None:
        return "no attempt made"
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def inspect_store(db: str | os.PathLike) -> str:
    """What the file at ``db`` is, without writing to it: ``new`` (missing or empty), ``ours``
    (has the marker), ``legacy`` (an earlier version's store, adopted on first write).

    Raises ``StoreError`` for another program's database, a newer store format, or a file
    DuckDB cannot open. Runs call it before they start, so a refused store costs nothing."""
    path = Path(db)
    if not path.exists() or (path.is_file() and path.stat().st_size == 0):
        return "new"
    con = _open(path, read_only=True, retries=60)
    try:
        return _classify(con, path)
    finally:
        con.close()


def claim_store(con: duckdb.DuckDBPyConnection, db: str | os.PathLike) -> None:
    """Before the first write: refuse a database that is not ours, and add the marker where it
    is missing (a new file, or an earlier version's store). Idempotent, cheap once marked."""
    kind = _classify(con, Path(db))
    if kind == "ours":
        return
    created_by = "convocausal " + _version()
    origin = "created" if kind == "new" else "adopted: written before the store carried this marker"
    con.execute(f"CREATE TABLE IF NOT EXISTS {META_TABLE} (key VARCHAR PRIMARY KEY, value VARCHAR)")
    con.executemany(
        f"INSERT OR REPLACE INTO {META_TABLE} VALUES (?, ?)",
        [["format_version", str(FORMAT_VERSION)], ["created_at", datetime.now(timezone.utc).isoformat()],
         ["created_by", created_by], ["origin", origin]],
    )


def _classify(con: duckdb.DuckDBPyConnection, db: Path) -> str:
    tables = con.execute(
        "SELECT schema_name, table_name FROM duckdb_tables() "
        "WHERE database_name = current_database() AND NOT temporary AND NOT internal").fetchall()
    names = {t for s, t in tables if s == "main"}
    if META_TABLE in names:
        row = next(iter(con.execute(f"SELECT value FROM {META_TABLE} WHERE key = 'format_version'").fetchall()), None)
        version = int(row[0]) if row and str(row[0]).isdigit() else None
        if version is None:
            raise StoreError(f"store {db}: its {META_TABLE} table has no valid format_version; "
                             "give --store (CONVOCAUSAL_STORE) a new file name")
        if version > FORMAT_VERSION:
            raise StoreError(f"store {db}: written by a newer convocausal (store format {version}, this "
                             f"version writes {FORMAT_VERSION}); upgrade convocausal or use another store")
        return "ours"
    views = con.execute(
        "SELECT schema_name, view_name FROM duckdb_views() "
        "WHERE database_name = current_database() AND NOT temporary AND NOT internal").fetchall()
    if not tables and not views:
        return "new"
    foreign = sorted({f"{s}.{t}" if s != "main" else t for s, t in tables if s != "main" or t not in _LEGACY_REQUIRED}
                     | {f"view {s}.{t}" if s != "main" else f"view {t}" for s, t in views})  # we make no views
    columns: dict[str, set[str]] = {}
    for table, column in con.execute(
            "SELECT table_name, column_name FROM duckdb_columns() "
            "WHERE database_name = current_database() AND schema_name = 'main'").fetchall():
        columns.setdefault(table, set()).add(column)
    allowed = _result_columns()
    for table in sorted(names & set(_LEGACY_REQUIRED)):
        cols = columns.get(table, set())
        if not _LEGACY_REQUIRED[table] <= cols or (table in allowed and not cols <= allowed[table]):
            foreign.append(f"{table} (other columns)")
    if foreign:
        shown = ", ".join(foreign[:8]) + (", …" if len(foreign) > 8 else "")
        raise StoreError(
            f"store {db}: a DuckDB database convocausal did not create (no {META_TABLE} marker; "
            f"not ours: {shown}); refusing to write into it: give --store (CONVOCAUSAL_STORE) a new file "
            "name, or move this file away")
    return "legacy"


_RESULT_COLUMNS: dict[str, set[str]] = {}


def _result_columns() -> dict[str, set[str]]:
    """Each result table's columns, read from its DDL by DuckDB itself (one source of truth)."""
    if not _RESULT_COLUMNS:
        con = duckdb.connect()
        try:
            for table, ddl in RESULT_TABLES_DDL.items():
                con.execute(ddl)
                _RESULT_COLUMNS[table] = {r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()}
        finally:
            con.close()
    return _RESULT_COLUMNS


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("convocausal")
    except PackageNotFoundError:
        return "unknown"


def part_days(paths: StorePaths) -> set[date]:
    """Days that have a signals or quarantine part in the store."""
    days: set[date] = set()
    for table in PART_TABLES:
        days |= paths.part_store.days(table)
    return days


def stale_days(paths: StorePaths, present: Iterable[date]) -> list[date]:
    """Days with parts in the store but no data in the landing directory (``present``), sorted."""
    return sorted(part_days(paths) - set(present))


def remove_days(paths: StorePaths, days: Iterable[date]) -> list[date]:
    """Delete the signals and quarantine parts of ``days``; returns the days that had a part.

    Why: a day whose raw folder was deleted (a deletion request) must leave the store, not stay
    in every estimate. Each day folder is first renamed out of the ``date=*`` pattern (atomic),
    so a reader globbing the parts sees the day whole or not at all, then deleted. The DuckDB
    tables still hold the rows until the next ``publish``.
    """
    removed = []
    for day in sorted(set(days)):
        had = False
        for table in PART_TABLES:
            had = paths.part_store.remove(table, day) or had
        if had:
            removed.append(day)
    return removed


# Which part each published day came from: table → day → (fingerprint, rows). Written in the
# publish transaction, so it always describes exactly what ``signals`` and ``quarantine`` hold.
PARTS_MANIFEST = "convocausal_parts"
_MANIFEST_DDL = (f"CREATE TABLE IF NOT EXISTS {PARTS_MANIFEST} (part_table VARCHAR, day DATE, fingerprint VARCHAR, "
                 "n_rows BIGINT, published_at TIMESTAMPTZ)")
# How each part table is read from its parts: the day comes from the Hive path (one source of truth).
_PART_SELECT = {
    "signals": "SELECT * EXCLUDE (date), CAST(date AS DATE) AS date FROM read_parquet(?, hive_partitioning = true, "
               "union_by_name = true)",
    "quarantine": "SELECT * REPLACE (CAST(date AS VARCHAR) AS date) FROM read_parquet(?, hive_partitioning = true, "
                  "union_by_name = true)",
}
# More changed days than this share of all days: one rebuild is cheaper than delete + insert.
_REBUILD_SHARE = 0.5


@dataclass
class PartListing:
    """The parts of one table as found before anything is read: day → (file, fingerprint)."""

    files: dict[date, tuple[str, str]]
    store: LocalParts | S3Parts | None = None  # where they are (reads their footers)

    @property
    def days(self) -> list[date]:
        return sorted(self.files)

    def paths_of(self, days: Iterable[date]) -> list[str]:
        return [self.files[d][0] for d in sorted(days)]

    def paths_of_all(self) -> list[str]:
        return self.paths_of(self.files)


def list_parts(paths: StorePaths, table: str) -> PartListing:
    """Every ``date=D/part.parquet`` of ``table`` with a fingerprint (local: inode, size, mtime in ns;
    in a bucket: size and modification time, see ``convocausal.part_store``).

    Why a fingerprint, not a list kept by the extraction step: a part is only ever replaced whole
    (a new file renamed over the old one: a new inode and mtime), by whichever step wrote it (a
    requested day, a day extracted again because its conversations continue, a re-run, a crash
    before publish). Comparing what is on disk with what the last publish loaded finds every one
    of them without any step having to report what it wrote."""
    return PartListing(paths.part_store.list(table), paths.part_store)


def publish(paths: StorePaths, catalog: pl.DataFrame | None = None,
            extra_quarantine: pl.DataFrame | None = None, report: dict | None = None) -> dict[str, int]:
    """Bring ``signals`` and ``quarantine`` (and ``signal_catalog``) in line with the day parts.

    One transaction: readers see the old tables or the new ones, never half. Only the days whose
    part changed since the last publish (new, re-extracted, re-run: see :func:`list_parts`) are
    replaced: ``DELETE … WHERE date IN (changed days)`` then an insert of those days' parts, so a
    nightly publish costs one day, not the history. The tables are rebuilt from every part
    instead when one is missing, the store has no record of what it loaded (a store from before
    the record), a day was removed, a changed part's columns differ from the table's (the
    signals config changed), most days changed, or the row counts do not add up afterwards.
    ``extra_quarantine`` holds rows rejected outside any day (outcome or CRM rows); they are
    replaced at every publish. ``report``, when given, receives per table how it was published
    (``mode``: ``incremental``, ``rebuild``, ``unchanged`` or ``empty``; ``reason``; ``days``
    replaced).
    """
    paths.db.parent.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    with connect(paths.db) as con:  # may wait for the write lock: list the parts after it
        paths.part_store.attach(con)  # parts in a bucket: read_parquet('s3://…') goes through it
        con.execute("BEGIN TRANSACTION")
        try:
            # Listed (and fingerprinted) before any part is read: a part replaced in between is recorded
            # with its old fingerprint, so the next publish loads it again; never the other way round.
            listings = {table: list_parts(paths, table) for table in PART_TABLES}
            con.execute(_MANIFEST_DDL)
            extra = None
            if extra_quarantine is not None and extra_quarantine.height:
                con.register("_extra_quarantine", extra_quarantine.with_columns(
                    pl.col(c).cast(pl.String) for c in extra_quarantine.columns if c == "date").to_arrow())
                extra = "SELECT * FROM _extra_quarantine"
            for table in PART_TABLES:
                info = _publish_table(con, table, listings[table], extra if table == "quarantine" else None)
                if report is not None:
                    report[table] = info
            if catalog is not None:
                con.register("_catalog", catalog.to_arrow())
                con.execute("CREATE OR REPLACE TABLE signal_catalog AS SELECT * FROM _catalog")
            ensure_result_tables(con)
            for table in PART_TABLES:
                counts[table] = _count(con, table)
            con.execute("COMMIT")
        except Exception:
            rollback(con)
            raise
    return counts


def _publish_table(con: duckdb.DuckDBPyConnection, table: str, listing: PartListing, extra: str | None) -> dict:
    """One part table inside the publish transaction; returns how (see :func:`publish`)."""
    published = {day: (fp, int(n)) for day, fp, n in con.execute(
        f"SELECT day, fingerprint, n_rows FROM {PARTS_MANIFEST} WHERE part_table = ?", [table]).fetchall()}
    exists = _exists(con, table)
    if not listing.files and extra is None:
        if exists:  # every day removed: no row may outlive its part
            con.execute(f"DELETE FROM {table}")
        con.execute(f"DELETE FROM {PARTS_MANIFEST} WHERE part_table = ?", [table])
        return {"mode": "empty", "reason": "no parts", "days": []}
    changed = [d for d in listing.days if published.get(d, (None, 0))[0] != listing.files[d][1]]
    removed = sorted(set(published) - set(listing.files))
    reason = None
    if not exists:
        reason = "table missing"
    elif not published and listing.files:
        reason = "no record of the published parts"
    elif removed:
        reason = f"{len(removed)} day(s) removed"
    elif len(changed) > _REBUILD_SHARE * len(listing.files) and len(changed) > 1:
        reason = f"{len(changed)} of {len(listing.files)} days changed"
    else:
        reason = _schema_difference(con, table, listing.paths_of(changed), extra)
    if reason is None and not changed and extra is None and _count(con, table) == sum(
            n for _, n in published.values()):
        return {"mode": "unchanged", "reason": "", "days": []}
    rows = {d: published[d][1] for d in listing.days if d not in changed}
    rows.update(_part_rows(listing, changed))
    if reason is None:
        _replace_days(con, table, listing, changed, set(published), extra)
        n_extra = _scalar(con, f"SELECT count(*) FROM ({extra})") if extra else 0
        if _count(con, table) != sum(rows.values()) + n_extra:
            reason = "row counts did not add up after the incremental replace"
    if reason is not None:
        _rebuild(con, table, listing, extra)
        rows = _part_rows(listing, listing.days)
    con.execute(f"DELETE FROM {PARTS_MANIFEST} WHERE part_table = ?", [table])
    now = datetime.now(timezone.utc)
    con.executemany(f"INSERT INTO {PARTS_MANIFEST} VALUES (?, ?, ?, ?, ?)",
                    [[table, d, listing.files[d][1], rows[d], now] for d in listing.days])
    if reason is not None:
        return {"mode": "rebuild", "reason": reason, "days": listing.days}
    return {"mode": "incremental", "reason": "", "days": changed}


def _rebuild(con: duckdb.DuckDBPyConnection, table: str, listing: PartListing, extra: str | None) -> None:
    sources, params = [], []
    if listing.files:
        sources.append(_PART_SELECT[table])
        params.append(listing.paths_of(listing.days))
    if extra is not None:
        sources.append(extra)
    con.execute(f"CREATE OR REPLACE TABLE {table} AS " + " UNION ALL BY NAME ".join(sources), params)


def _replace_days(con: duckdb.DuckDBPyConnection, table: str, listing: PartListing, changed: list[date],
                  published: set[date], extra: str | None) -> None:
    """Delete the changed days' rows (and the extra rows, which carry no part day) and insert them anew."""
    key = [d.isoformat() for d in changed] if table == "quarantine" else changed
    if table == "quarantine":
        # rows of a part carry its day; anything else (outcome and CRM rows, null date) is the extra rows
        con.execute("DELETE FROM quarantine WHERE date IS NULL OR list_contains(?::VARCHAR[], date) "
                    "OR NOT list_contains(?::VARCHAR[], date)", [key, [d.isoformat() for d in published]])
    elif changed:
        con.execute(f"DELETE FROM {table} WHERE list_contains(?::DATE[], date)", [key])
    if changed:
        con.execute(f"INSERT INTO {table} BY NAME {_PART_SELECT[table]}", [listing.paths_of(changed)])
    if extra is not None:
        con.execute(f"INSERT INTO {table} BY NAME {extra}")


def _schema_difference(con: duckdb.DuckDBPyConnection, table: str, files: list[str], extra: str | None) -> str | None:
    """Why the changed parts (or the extra rows) cannot go into ``table`` as it is: a column or a type
    that differs from the table's, which a rebuild would give the table instead. ``None`` if none."""
    have = [(n, t) for n, t, *_ in con.execute(f"DESCRIBE {table}").fetchall()]
    for file in files:
        got = [(n, t) for n, t, *_ in con.execute(f"DESCRIBE {_PART_SELECT[table]}", [[file]]).fetchall()]
        if got != have:
            return f"columns changed ({Path(file).parent.name})"
    if extra is not None:
        got = {n: t for n, t, *_ in con.execute(f"DESCRIBE {extra}").fetchall()}
        if not all(dict(have).get(n) == t for n, t in got.items()):
            return "columns of the outcome/CRM quarantine rows changed"
    return None


def _part_rows(listing: PartListing, days: Iterable[date]) -> dict[date, int]:
    """Rows per part from the parquet footers (no data read)."""
    import pyarrow.parquet as pq

    if listing.store is None:
        return {d: pq.read_metadata(listing.files[d][0]).num_rows for d in days}
    return {d: listing.store.num_rows(listing.files[d][0]) for d in days}


def _scalar(con: duckdb.DuckDBPyConnection, sql: str, params=None):
    return con.execute(sql, params or []).fetchall()[0][0]  # fetchall: DuckDB 2 refuses register() after a partial fetch


def ensure_result_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create the result tables if missing, and add columns newer versions write."""
    for ddl in RESULT_TABLES_DDL.values():
        con.execute(ddl)
    for table, columns in ADDED_COLUMNS.items():
        for name, dtype in columns.items():
            con.execute(f'ALTER TABLE {table} ADD COLUMN IF NOT EXISTS "{name}" {dtype}')


def _exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    return bool(con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]).fetchall()[0][0])


def _count(con: duckdb.DuckDBPyConnection, table: str) -> int:
    return int(_scalar(con, f"SELECT count(*) FROM {table}")) if _exists(con, table) else 0


def write_result(
    db: str | os.PathLike,
    run_id: str,
    question_id: str,
    result: EstimateResult,
    *,
    status: str = "ok",
    message: str = "",
    true_effect: float | None = None,
    extra_diagnostics: list | None = None,
    checks: list | None = None,
    sequence: tuple[float | None, float | None] = (None, None),
    data_through: date | None = None,
    outcomes: list | None = None,
) -> None:
    """Write one question's estimate, refutations, balance, diagnostics and check states atomically.

    ``checks``: ``checks.verdict.CheckOutcome``-like objects (name, state, severity, blocking,
    description, message). ``sequence``: the anytime-valid interval (cs_low, cs_high) where the
    method has one; ``data_through``: the last signals day the estimate saw; ``outcomes``: its guardrail,
    net-value and segment rows (``convocausal.questions.outcomes.OutcomeRow``-like), same transaction."""
    r = result
    row = [r.method, r.estimand, r.outcome, _f(r.estimate), _f(r.std_error), _f(r.ci_low), _f(r.ci_high),
           _f(r.p_value), int(r.n_treated), int(r.n_control), _f(r.naive_estimate)]
    _replace_question_rows(
        db, run_id, question_id, row, r.ci_method, status, message, true_effect,
        refutations=[[x.refuter, _f(x.estimate), _f(x.new_effect), _f(x.p_value), bool(x.passed), x.message]
                     for x in r.refutations],
        balance=[[b.covariate, _f(b.smd_before), _f(b.smd_after), bool(b.passed),
                  _f(b.variance_ratio_before), _f(b.variance_ratio_after)] for b in r.balance],
        diagnostics=list(extra_diagnostics or []) + list(r.diagnostics), checks=checks or [],
        monitoring=[_f(sequence[0]), _f(sequence[1]), data_through], outcomes=outcomes or [],
    )


def write_refusal(db, run_id: str, question_id: str, method: str, outcome: str, estimand: str,
                  reason: str, diagnostics: list, true_effect: float | None = None,
                  checks: list | None = None, data_through: date | None = None) -> None:
    """Record a refused question: an estimates row with status 'refused', NULL numbers, the reason."""
    row = [method, estimand, outcome, None, None, None, None, None, 0, 0, None]
    _replace_question_rows(db, run_id, question_id, row, "", "refused", reason, true_effect,
                           refutations=[], balance=[], diagnostics=diagnostics, checks=checks or [],
                           monitoring=[None, None, data_through])


def _replace_question_rows(db, run_id, question_id, estimate_row, ci_method, status, message, true_effect,
                           *, refutations, balance, diagnostics, checks, monitoring, outcomes=()) -> None:
    """Delete then insert every row of (run_id, question_id) in one transaction: idempotent."""
    key = [run_id, question_id]
    with connect(db) as con:
        con.execute("BEGIN TRANSACTION")
        try:
            ensure_result_tables(con)
            for table in RESULT_TABLES_DDL:
                con.execute(f"DELETE FROM {table} WHERE run_id = ? AND question_id = ?", key)
            con.execute(
                f"INSERT INTO estimates ({', '.join(ESTIMATE_COLUMNS)}) VALUES ({', '.join('?' * len(ESTIMATE_COLUMNS))})",
                key + estimate_row + [datetime.now(timezone.utc), ci_method, status, message, _f(true_effect)]
                + monitoring,
            )
            if refutations:
                con.executemany("INSERT INTO refutations VALUES (?,?,?,?,?,?,?,?)", [key + r for r in refutations])
            if balance:
                con.executemany("INSERT INTO balance VALUES (?,?,?,?,?,?,?,?)", [key + b for b in balance])
            if diagnostics:
                con.executemany(
                    "INSERT INTO diagnostics (run_id, question_id, name, value, threshold, passed, message, severity, "
                    "check_name) VALUES (?,?,?,?,?,?,?,?,?)",
                    [key + [d.name, _f(d.value), _f(d.threshold), bool(d.passed), d.message, d.severity,
                            getattr(d, "check", None)] for d in diagnostics],
                )
            if checks:
                con.executemany(
                    "INSERT INTO checks VALUES (?,?,?,?,?,?,?,?)",
                    [key + [c.name, c.state, c.severity, bool(c.blocking), c.description, c.message] for c in checks],
                )
            if outcomes:
                con.executemany(
                    f"INSERT INTO question_outcomes (run_id, question_id, {', '.join(OUTCOME_COLUMNS)}) "
                    f"VALUES ({', '.join('?' * (2 + len(OUTCOME_COLUMNS)))})",
                    [key + [o.kind, o.name, _f(o.estimate), _f(o.std_error), _f(o.ci_low), _f(o.ci_high),
                            _f(o.p_value), int(o.n_treated or 0), int(o.n_control or 0), o.status, o.message]
                     for o in outcomes])
            con.execute("COMMIT")
        except Exception:
            rollback(con)
            raise


def refresh_q_values(db: str | os.PathLike, question_ids: list[str], method: str = "bh") -> dict:
    """Set ``q_value`` on the latest estimate of every listed question (the run's family); return them.

    Called after each question is written, so the last question of a run leaves every q-value
    computed over the whole family; a question still running keeps its previous row in the family.
    """
    from convocausal.questions.history import latest_q_values

    with connect(db) as con:
        ensure_result_tables(con)
        qs = latest_q_values(con, question_ids, method)
        con.execute("BEGIN TRANSACTION")
        try:
            for qid, row in qs.items():
                con.execute("UPDATE estimates SET q_value = ? WHERE question_id = ? AND run_id = ?",
                            [row["q_value"], qid, row["run_id"]])
            con.execute("COMMIT")
        except Exception:
            rollback(con)
            raise
    return qs


def rollback(con: duckdb.DuckDBPyConnection) -> None:
    """Roll back after a failed write without hiding why it failed.

    A ROLLBACK can fail itself (the disk that filled up during the write is still full); raising
    that would replace the real cause ("No space left on device") with "cannot rollback". The
    caller re-raises the original exception; this one is dropped."""
    try:
        con.execute("ROLLBACK")
    except duckdb.Error:
        pass


def _f(v) -> float | None:
    if v is None:
        return None
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def open_signals(paths: StorePaths) -> duckdb.DuckDBPyConnection:
    """An in-memory connection with a ``signals`` view over the day parts.

    Question steps read through this view instead of the DuckDB file, so any number of them
    can run while another process writes the file (DuckDB's single-writer lock never bites).
    With the parts in a bucket (``parts_url``) ``signals`` is instead a table in the connection's
    memory, read once from the objects through the registered filesystem.
    """
    if not paths.has_parts("signals"):
        raise FileNotFoundError(f"no signals parts under {paths.part_store}: run extraction first")
    con = duckdb.connect()
    if isinstance(paths.part_store, LocalParts):
        con.execute(
            "CREATE VIEW signals AS SELECT * EXCLUDE (date), CAST(date AS DATE) AS date "
            f"FROM read_parquet('{_sql_literal(paths.glob('signals'))}', hive_partitioning = true, union_by_name = true)"
        )
        return con
    # In a bucket: read once into this connection's memory (a step queries the signals many times, and
    # every query of a view would fetch every object again); the same files in the same order as the view.
    paths.part_store.attach(con)
    con.execute(f"CREATE TABLE signals AS {_PART_SELECT['signals']}", [list_parts(paths, "signals").paths_of_all()])
    return con


def unreadable_files(db: str | os.PathLike) -> list[tuple[str, str]]:
    """(file, reason) of every transcript file quarantined whole because it could not be read."""
    from extract.raw import REASON_UNREADABLE_FILE

    with connect(db, read_only=True) as con:
        return con.execute(
            "SELECT DISTINCT source_file, reason FROM quarantine WHERE starts_with(reason, ?) ORDER BY 1",
            [REASON_UNREADABLE_FILE]).fetchall()


def _sql_literal(text: str) -> str:
    """Quote a path for a DDL statement (views cannot take parameters)."""
    return text.replace("'", "''")
