"""Raw reader, a persistent cache on local disk: what the raw reader computed from each file version.

Why: a nightly run adds one day to a landing directory holding the whole history, but the
conversation index (:mod:`extract.raw_index`: ids and timestamps of every transcript file) and
the validation of ``outcomes`` and ``customers`` (every row of the history) were computed again
in every process. With a cache folder (``cache_dir``; ``None`` = no cache), each result is kept
under the version of the files it came from, and a later process reads it back instead:

* ``index/<digest>.parquet``: one transcript file's summary (id hash, filed day, first ts), the
  ``parts`` entry of the index build; only new or changed files are read.
* ``starts/<digest>.parquet``: one transcript file's conversation starts for the memory history
  (:func:`extract.history.read_starts`): per conversation a keyed 64-bit hash of its id and of its
  first-turn customer (seeded from the ``customer_key`` salt, whose hash is part of the key), its
  first turn and first timestamp, and the index's id hash. A nightly run reads its 30-day window
  from these instead of ≈ 10M transcript rows.
* ``<table>-<digest>.json`` + ``.accepted.parquet`` + ``.quarantine.parquet``: the validated
  ``outcomes`` / ``customers`` batch (accepted rows, quarantine rows, counts) *before* the
  known-conversation check, which is applied on top (:func:`extract.raw.apply_known_conversations`).

What the pipeline uses: the index entries (``signals_day``, ``analysis_store``, the extraction
report, ``convocausal run``), which hold 64-bit hashes of the ids and timestamps, no raw value, and
the starts entries (``signals_day``), which hold keyed hashes, turns and timestamps, no raw value. The
table entries hold the accepted rows as they came in (a customer's persona with a card number in it,
an outcome's conversation id that is an e-mail address: ``tests/test_privacy.py`` found the first in
``customers-*.accepted.parquet``), and no raw PII goes into the store, so the assets validate
``outcomes`` and ``customers`` whole each night and pass no ``cache_dir`` for them. The table cache
stays for a caller whose cache folder is as private as the landing directory (``bench_raw_cache.py``
measures it); storing it without raw values (row numbers and reasons, re-applied to a fresh read) is
not done. Within one process the validated batch is handed from ``signals_day`` to
``analysis_store`` in memory instead (:class:`HeldTable`, never written).

A file version is (resolved path, size, mtime_ns, ctime_ns, inode) — a rewrite, a replacement or
a ``touch`` gives a new key. Keys also hold :data:`CACHE_VERSION` (bump it when a rule that
shapes a cached result changes: hashing, casting, the table rules), the polars and pyarrow
versions (``Expr.hash`` is not stable across polars releases) and, for a table, the dtypes read
and the listed paths (``source_file``). Nothing is cached that must be reported again: a file
that is unreadable, raises, changed while it was read, or was modified in the last
:data:`SETTLE_SECONDS` (its mtime could still move within the file system's clock tick). Every
entry is written atomically (temp file + ``os.replace``); one that cannot be read, or whose
schema or row count does not match its manifest, is ignored and rebuilt; a folder that cannot be
written (or lies outside ``CONVOCAUSAL_ALLOWED_ROOTS``) just means no cache. Entries of files no
longer present are pruned after each index build; a table keeps only its newest entry.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from datetime import date
from pathlib import Path

import polars as pl
import pyarrow

from extract.allowed_roots import outside_roots, resolved_roots
from extract.raw_contract import RawBatch

CACHE_VERSION = 1
SETTLE_SECONDS = 2.0  # a file modified this recently is read but not cached
_TMP_PREFIX = ".tmp-"
_STALE_TMP_SECONDS = 24 * 3600


def raw_cache_dir(store: str | os.PathLike) -> Path:
    """The raw cache of a store: ``<store>.parts/cache/raw`` beside the local DuckDB file, kept
    local whatever holds the day parts."""
    s = Path(store).resolve()
    return s.with_name(s.name + ".parts") / "cache" / "raw"


def file_version(path: str | os.PathLike) -> tuple | None:
    """(resolved path, size, mtime_ns, ctime_ns, inode) of the file ``path`` leads to; None when
    it cannot be stat'ed."""
    try:
        st = os.stat(path)
        real = str(Path(path).resolve())
    except (OSError, RuntimeError):
        return None
    return (real, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def _settled(version: tuple, started_ns: int) -> bool:
    """True when the file's last change is older than the read by :data:`SETTLE_SECONDS`."""
    return max(version[2], version[3]) < started_ns - int(SETTLE_SECONDS * 1e9)


def _digest(parts: list) -> str:
    text = json.dumps([CACHE_VERSION, pl.__version__, pyarrow.__version__, *parts], default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:40]


def _write_atomic(path: Path, write: Callable[[str], None]) -> bool:
    """Write through a temp file in the same folder, then rename; False (nothing left behind)
    on any failure — a cache that cannot be written is only a slower run."""
    tmp = None
    try:
        if outside_roots(path, resolved_roots()) is not None:
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, suffix=path.suffix, dir=path.parent)
        os.close(fd)
        write(tmp)
        os.replace(tmp, path)
        return True
    except Exception:  # noqa: BLE001 - never an error, see the module doc
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        return False


def _remove(paths: Iterable[Path]) -> None:
    for p in paths:
        with contextlib.suppress(OSError):
            p.unlink()


def _stale_tmp(folder: Path) -> list[Path]:
    """Temp files of writers that died (older than a day; a live writer's are seconds old)."""
    now = time.time()
    out = []
    for p in folder.glob(_TMP_PREFIX + "*"):
        with contextlib.suppress(OSError):
            if now - p.stat().st_mtime > _STALE_TMP_SECONDS:
                out.append(p)
    return out


# ============================================================================ per transcript file
class _PerFileCache:
    """One parquet entry per transcript-file version (and whatever else the key holds): what the
    index summaries and the conversation starts are both kept as."""

    def __init__(self, cache_dir: str | os.PathLike, kind: str, schema: dict[str, pl.DataType]):
        self.dir = Path(cache_dir) / kind
        self.kind = kind
        self.schema = schema

    def _name(self, version: tuple, extra) -> str:
        return _digest([self.kind, *version, extra]) + ".parquet"

    def lookup(self, path: Path, extra) -> tuple[str | None, tuple | None, pl.DataFrame | None]:
        """(entry name, file version, kept frame or None); (None, None, None) when ``path`` cannot be
        stat'ed."""
        version = file_version(path)
        if version is None:
            return None, None, None
        name = self._name(version, extra)
        try:
            frame = pl.read_parquet(self.dir / name)
        except Exception:  # noqa: BLE001 - absent or corrupt: computed again
            return name, version, None
        return name, version, frame if dict(frame.schema) == self.schema else None

    def store(self, name: str | None, version: tuple | None, path: Path, started_ns: int,
              frame: pl.DataFrame) -> None:
        """Keep ``frame`` unless the file changed while it was read or is too recent."""
        if name is None or version is None or file_version(path) != version or not _settled(version, started_ns):
            return
        if dict(frame.schema) != self.schema:  # a lookup would ignore it
            return
        _write_atomic(self.dir / name, frame.write_parquet)

    def _prune_to(self, keep: set[str]) -> None:
        if not self.dir.is_dir():
            return
        with contextlib.suppress(OSError):
            _remove([p for p in self.dir.glob("*.parquet") if p.name not in keep and
                     not p.name.startswith(_TMP_PREFIX)])
            _remove(_stale_tmp(self.dir))


class IndexCache(_PerFileCache):
    """Per-file summaries of the conversation index (keyed by file version and folder day)."""

    def __init__(self, cache_dir: str | os.PathLike, schema: dict[str, pl.DataType]):
        super().__init__(cache_dir, "index", schema)
        self.used: set[str] = set()

    def lookup(self, path: Path, folder_day: date | None):
        name, version, frame = super().lookup(path, folder_day)
        if name is not None:
            self.used.add(name)
        return name, version, frame

    def prune(self) -> None:
        """Remove the summaries of file versions this build did not use."""
        self._prune_to(self.used)


class StartsCache(_PerFileCache):
    """Per-file conversation starts for the memory history, keyed by file version and history key."""

    def __init__(self, cache_dir: str | os.PathLike, schema: dict[str, pl.DataType]):
        super().__init__(cache_dir, "starts", schema)

    def prune(self, files: Iterable[Path], key) -> None:
        """Remove every entry but those of the current versions of ``files`` under ``key`` (entries of
        files removed or changed, or of another salt), and stale temp files."""
        if self.dir.is_dir():
            self._prune_to({self._name(v, key.digest) for v in map(file_version, files) if v is not None})


# ============================================================================ outcomes, customers
class _TableVersions:
    """One optional table's files, their versions when first looked at, and the key they give
    (with the dtypes read): what both keepers of a validated batch are keyed by."""

    def __init__(self, table: str, files: list[Path], dtypes: dict[str, pl.DataType], required: Iterable[str]):
        self.table = table
        self.files = files
        self.versions = [file_version(f) for f in files]
        self.name = f"{table}-" + _digest(["table", table, [str(f) for f in files], self.versions,
                                           [(c, str(t)) for c, t in dtypes.items()], list(required)])

    def unchanged(self) -> bool:
        """The files still have the versions this entry is keyed by."""
        return [file_version(f) for f in self.files] == self.versions

    def keyed(self) -> bool:
        """Every file could be stat'ed (else there is no key to look up or keep under)."""
        return all(v is not None for v in self.versions)

    def keepable(self, started_ns: int) -> bool:
        """A batch validated from a read started at ``started_ns`` may be kept: no file changed
        since the versions were taken, and none changed within :data:`SETTLE_SECONDS` of the read."""
        return self.keyed() and self.unchanged() and all(_settled(v, started_ns) for v in self.versions)


class TableCache(_TableVersions):
    """The validated batch of one optional table (accepted, quarantine, counts) for one set of
    file versions and dtypes."""

    def __init__(self, cache_dir: str | os.PathLike, table: str, files: list[Path],
                 dtypes: dict[str, pl.DataType], required: Iterable[str]):
        super().__init__(table, files, dtypes, required)
        self.dir = Path(cache_dir)

    def _paths(self) -> tuple[Path, Path, Path]:
        base = self.dir / self.name
        return (base.with_name(self.name + ".json"), base.with_name(self.name + ".accepted.parquet"),
                base.with_name(self.name + ".quarantine.parquet"))

    def get(self) -> RawBatch | None:
        if not self.keyed():
            return None
        manifest, acc_path, q_path = self._paths()
        try:
            meta = json.loads(manifest.read_text())
            accepted = pl.read_parquet(acc_path)
            quarantine = pl.read_parquet(q_path)
            ok = (meta["name"] == self.name
                  and _schema_text(accepted) == meta["accepted_schema"] and accepted.height == meta["accepted_rows"]
                  and _schema_text(quarantine) == meta["quarantine_schema"]
                  and quarantine.height == meta["quarantine_rows"] and isinstance(meta["counts"], dict))
        except Exception:  # noqa: BLE001 - absent or corrupt: validated again
            return None
        return RawBatch(accepted, quarantine, meta["counts"]) if ok else None

    def store(self, batch: RawBatch, started_ns: int) -> None:
        """Keep ``batch`` (validated, no unreadable file) unless a file changed while it was read
        or is too recent, or its counts do not survive JSON unchanged."""
        if not self.keepable(started_ns):
            return
        try:
            counts_text = json.dumps(batch.counts)
            if json.loads(counts_text) != batch.counts:
                return
        except (TypeError, ValueError):
            return
        manifest, acc_path, q_path = self._paths()
        meta = {"name": self.name, "table": self.table, "counts": batch.counts,
                "accepted_schema": _schema_text(batch.accepted), "accepted_rows": batch.accepted.height,
                "quarantine_schema": _schema_text(batch.quarantine), "quarantine_rows": batch.quarantine.height}
        if not (_write_atomic(acc_path, batch.accepted.write_parquet)
                and _write_atomic(q_path, batch.quarantine.write_parquet)
                and _write_atomic(manifest, lambda tmp: Path(tmp).write_text(json.dumps(meta)))):
            return
        with contextlib.suppress(OSError):  # the table's older entries
            _remove([p for p in self.dir.glob(f"{self.table}-*") if not p.name.startswith(self.name + ".")])
            _remove(_stale_tmp(self.dir))


_HELD: dict[str, tuple[str, RawBatch]] = {}
_HELD_LOCK = threading.Lock()


class HeldTable(_TableVersions):
    """The validated batch of one optional table kept in this process's memory, from the asset
    that validates it to the next one that needs it, for the same file versions and dtypes.

    Why: a nightly run validates ``outcomes`` and ``customers`` whole in ``signals_day`` and again
    in ``analysis_store`` (for their quarantine rows), ≈ 3.5 s each time at 10M conversations;
    in one process (``convocausal run``, the in-process executor) the second validation is the
    first's result. Held in memory only — nothing with raw values is written — and handed out
    once: ``get`` takes the entry, so it is freed by the asset that uses it. Kept under the same
    rules as :class:`TableCache` (every file read, none changed while read or settling); an
    executor with a process per step simply validates in each, as before.
    """

    def get(self) -> RawBatch | None:
        if not self.keyed():
            return None
        with _HELD_LOCK:
            entry = _HELD.pop(self.table, None)
        if entry is None or entry[0] != self.name:
            return None
        batch = entry[1]
        return RawBatch(batch.accepted, batch.quarantine, copy.deepcopy(batch.counts))

    def store(self, batch: RawBatch, started_ns: int) -> None:
        if not self.keepable(started_ns):
            return
        with _HELD_LOCK:
            _HELD[self.table] = (self.name, RawBatch(batch.accepted, batch.quarantine, copy.deepcopy(batch.counts)))


def release_held() -> None:
    """Drop every batch held by :class:`HeldTable`: the next asset to need a table validates it again.

    For a process that ran steps outside a run and then starts one that should pay for its own
    validation, as a fresh nightly process does (``benchmarks/bench_increment.py --reuse``: the set-up
    publish leaves its batches held, and the increment's extraction would take them for free)."""
    with _HELD_LOCK:
        _HELD.clear()


def _schema_text(df: pl.DataFrame) -> list[list[str]]:
    return [[c, str(t)] for c, t in df.schema.items()]
