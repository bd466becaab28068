"""The analysis store: one DuckDB file plus a folder of per-day parquet parts.

Why two places: DuckDB allows a single writer process, but extraction of days should run in
parallel (several Dagster steps, several machines). So each day's signals and quarantine rows
go to their own parquet file, written atomically (temp file, then ``os.replace``), and one
short ``publish`` step rebuilds the DuckDB tables from the parts in a single transaction.
Re-running a day replaces its file, so nothing is ever duplicated; a crash mid-write leaves
the previous file in place. Result tables are written per (run_id, question_id) in one
transaction that first deletes the same key, so re-running a question is idempotent too.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path

import duckdb
import polars as pl

from methods.result import EstimateResult

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
}
# Columns added after a table's first release: stores written by an earlier version gain them on
# the next write instead of failing the insert.
ADDED_COLUMNS = {"diagnostics": {"check_name": "VARCHAR"}}


@dataclass(frozen=True)
class StorePaths:
    """Where the store lives: the DuckDB file and its sibling parts folder."""

    db: Path

    @property
    def parts(self) -> Path:
        return self.db.with_name(self.db.name + ".parts")

    def day_part(self, table: str, day: date) -> Path:
        return self.parts / table / f"date={day.isoformat()}" / "part.parquet"

    def glob(self, table: str) -> str:
        return str(self.parts / table / "date=*" / "part.parquet")

    def has_parts(self, table: str) -> bool:
        return any((self.parts / table).glob("date=*/part.parquet"))


def store_paths(db: str | os.PathLike) -> StorePaths:
    return StorePaths(Path(db).resolve())


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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_day(paths: StorePaths, day: date, signals: pl.DataFrame, quarantine: pl.DataFrame) -> None:
    """Replace one day's signals and quarantine parts (idempotent re-run of a day).

    The day lives in the Hive path (``date=…``), so a ``date`` column is dropped from the
    frames to keep one source of truth for it.
    """
    write_parquet_atomic(signals.drop("date", strict=False), paths.day_part("signals", day))
    write_parquet_atomic(quarantine.drop("date", strict=False), paths.day_part("quarantine", day))


@contextmanager
def connect(db: str | os.PathLike, read_only: bool = False, retries: int = 60) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the DuckDB file, waiting while another process holds the write lock.

    DuckDB lets one process write at a time; Dagster steps that write share the
    ``duckdb_writer`` pool, and this retry covers anything else (a reader during a publish).
    """
    last: Exception | None = None
    for attempt in range(retries):
        try:
            con = duckdb.connect(str(db), read_only=read_only)
            break
        except duckdb.IOException as exc:  # lock held by another process
            last = exc
            time.sleep(min(0.25 * (attempt + 1), 2.0))
    else:
        raise RuntimeError(f"could not open the store {db}: {last}") from last
    try:
        yield con
    finally:
        con.close()


def publish(paths: StorePaths, catalog: pl.DataFrame | None = None,
            extra_quarantine: pl.DataFrame | None = None) -> dict[str, int]:
    """Rebuild ``signals``, ``quarantine`` (and ``signal_catalog``) from the day parts.

    One transaction: readers see the old tables or the new ones, never half.
    ``extra_quarantine`` holds rows rejected outside any day (outcome or CRM rows).
    """
    paths.db.parent.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    with connect(paths.db) as con:
        con.execute("BEGIN TRANSACTION")
        try:
            if paths.has_parts("signals"):
                con.execute(
                    "CREATE OR REPLACE TABLE signals AS SELECT * EXCLUDE (date), CAST(date AS DATE) AS date "
                    "FROM read_parquet(?, hive_partitioning = true, union_by_name = true)",
                    [paths.glob("signals")],
                )
            sources = []
            if paths.has_parts("quarantine"):
                sources.append("SELECT * REPLACE (CAST(date AS VARCHAR) AS date) FROM read_parquet(?, "
                               "hive_partitioning = true, union_by_name = true)")
            if extra_quarantine is not None and extra_quarantine.height:
                con.register("_extra_quarantine", extra_quarantine.with_columns(
                    pl.col(c).cast(pl.String) for c in extra_quarantine.columns if c == "date").to_arrow())
                sources.append("SELECT * FROM _extra_quarantine")
            if sources:
                con.execute("CREATE OR REPLACE TABLE quarantine AS " + " UNION ALL BY NAME ".join(sources),
                            [paths.glob("quarantine")] if paths.has_parts("quarantine") else [])
            if catalog is not None:
                con.register("_catalog", catalog.to_arrow())
                con.execute("CREATE OR REPLACE TABLE signal_catalog AS SELECT * FROM _catalog")
            ensure_result_tables(con)
            for table in ("signals", "quarantine"):
                counts[table] = _count(con, table)
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
    return counts


def ensure_result_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create the result tables if missing, and add columns newer versions write."""
    for ddl in RESULT_TABLES_DDL.values():
        con.execute(ddl)
    for table, columns in ADDED_COLUMNS.items():
        for name, dtype in columns.items():
            con.execute(f'ALTER TABLE {table} ADD COLUMN IF NOT EXISTS "{name}" {dtype}')


def _count(con: duckdb.DuckDBPyConnection, table: str) -> int:
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]
    ).fetchone()[0]
    return int(con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]) if exists else 0


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
) -> None:
    """Write one question's estimate, refutations, balance, diagnostics and check states atomically.

    ``checks``: ``checks.verdict.CheckOutcome``-like objects (name, state, severity, blocking,
    description, message)."""
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
    )


def write_refusal(db, run_id: str, question_id: str, method: str, outcome: str, estimand: str,
                  reason: str, diagnostics: list, true_effect: float | None = None,
                  checks: list | None = None) -> None:
    """Record a refused question: an estimates row with status 'refused', NULL numbers, the reason."""
    row = [method, estimand, outcome, None, None, None, None, None, 0, 0, None]
    _replace_question_rows(db, run_id, question_id, row, "", "refused", reason, true_effect,
                           refutations=[], balance=[], diagnostics=diagnostics, checks=checks or [])


def _replace_question_rows(db, run_id, question_id, estimate_row, ci_method, status, message, true_effect,
                           *, refutations, balance, diagnostics, checks) -> None:
    """Delete then insert every row of (run_id, question_id) in one transaction: idempotent."""
    key = [run_id, question_id]
    with connect(db) as con:
        con.execute("BEGIN TRANSACTION")
        try:
            ensure_result_tables(con)
            for table in RESULT_TABLES_DDL:
                con.execute(f"DELETE FROM {table} WHERE run_id = ? AND question_id = ?", key)
            con.execute(
                "INSERT INTO estimates VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                key + estimate_row + [datetime.now(timezone.utc), ci_method, status, message, _f(true_effect)],
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
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise


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
    can run while another process writes the file (DuckDB's single-writer lock never bites),
    and pointing the parts folder at object storage is a path change, not a code change.
    """
    if not paths.has_parts("signals"):
        raise FileNotFoundError(f"no signals parts under {paths.parts}: run extraction first")
    con = duckdb.connect()
    con.execute(
        "CREATE VIEW signals AS SELECT * EXCLUDE (date), CAST(date AS DATE) AS date "
        f"FROM read_parquet('{_sql_literal(paths.glob('signals'))}', hive_partitioning = true, union_by_name = true)"
    )
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
