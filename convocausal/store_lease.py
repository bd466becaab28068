"""One writer identity per store: a lease file ``<store>.lock`` held for a whole run.

Why: two runs over *different* landing directories (or signals configs) on one store mixed
their day parts: the store ended with some conversations of one and all of the other, and one
attempt ended in a panic reading parts that were being replaced (issue 19). Runs over the *same*
landing directory and signals config write the same bytes to the same parts (every file is
written temp-then-rename), which is what lets a nightly run, a backfill and a manual re-run
overlap, a multi-run backfill spread days over workers, and the question runs of one deployment
run side by side (``tests/test_faults.py``, ``tests/test_multiprocess.py``). So the lease is
shared by holders with one *writer identity* (resolved raw directory + signals config) and
exclusive against any other: a run from another landing directory fails at once, with one line
naming the holder, before it writes anything.

How: an ``flock`` on ``<store>.lock``. Holders keep a shared lock for the whole run; the first one
takes it exclusively for a moment to write the identity and itself (pid, host, start, purpose)
into the file, then downgrades. A newcomer that cannot take it exclusively takes it shared and
reads the identity: the same joins, another fails (``StoreInUseError``). The kernel drops the
lock when a holder dies, however it dies, so a crashed run never blocks the next; its record is
still in the file, so the next run names it in a warning ("took over the lease of pid … which is
no longer running"). The last holder to leave empties the file. Works wherever ``flock`` is
honoured across the processes involved: one host, or NFS v4 (Linux maps ``flock`` to byte-range
locks there).

Within one process the lease is re-entrant (``convocausal run`` holds it across its several
``materialize`` calls; the Dagster resource takes it again for each); a forked child never
releases its parent's lock.
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import functools
import inspect
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from convocausal.store import StoreError, inspect_store, store_paths

log = logging.getLogger("convocausal.store")

# A holder has the exclusive lock only while it writes its record (microseconds); a newcomer that
# finds it taken retries for this long before calling the store busy.
_SHARED_WAIT_S = 5.0


class StoreInUseError(StoreError):
    """Another writer identity holds the store's lease: one line naming the holder and what to do."""


@dataclass
class Lease:
    """A held lease; ``release()`` (or leaving ``store_lease``) gives it back."""

    lock_path: Path
    identity: dict
    took_over: str | None = None  # the warning, when a dead holder's record was replaced
    _released: bool = field(default=False, repr=False)

    def release(self) -> None:
        if not self._released:
            self._released = True
            _release(self.lock_path)


@dataclass
class _Held:
    fd: int
    identity: dict
    count: int
    pid: int


_HELD: dict[str, _Held] = {}
_HELD_LOCK = threading.Lock()


def _release_all() -> None:
    """At a normal interpreter exit, leases still held are released cleanly (an empty file), so
    only a crash leaves a record for the next run to warn about."""
    for key in list(_HELD):
        held = _HELD.get(key)
        if held is not None and held.pid == os.getpid():
            held.count = 1
            _release(Path(key))


atexit.register(_release_all)


def lock_path_for(store: str | os.PathLike) -> Path:
    db = store_paths(store).db
    return db.with_name(db.name + ".lock")


def writer_identity(raw_dir: str | os.PathLike, signals_config: str | os.PathLike | None) -> dict:
    """What a run writes into the store from: two runs with equal identities write equal parts."""
    from configs.signals import default_config_path

    signals = Path(signals_config) if signals_config else default_config_path()
    return {"raw_dir": str(Path(raw_dir).resolve()), "signals_config": str(signals.resolve())}


def acquire_lease(store: str | os.PathLike, *, raw_dir: str | os.PathLike,
                  signals_config: str | os.PathLike | None = None, purpose: str = "convocausal run",
                  warn: Callable[[str], None] | None = None) -> Lease:
    """Take the store's lease for this writer identity, or raise ``StoreInUseError`` at once.

    The store file is checked first (``store.inspect_store``: another program's database, a
    newer format or a file DuckDB cannot open raise ``StoreError``), so a refused store does not
    even get a lock file beside it. ``warn`` receives the take-over warning (default: logging).
    """
    db = store_paths(store).db
    identity = writer_identity(raw_dir, signals_config)
    path = lock_path_for(db)
    key = str(path)
    with _HELD_LOCK:
        held = _HELD.get(key)
        if held is not None and held.pid == os.getpid():
            if held.identity != identity:
                raise _busy(db, _read(held.fd))
            held.count += 1
            return Lease(path, identity)
        inspect_store(db)
        fd, took_over = _acquire(db, path, identity, purpose)
        _HELD[key] = _Held(fd, identity, 1, os.getpid())
    if took_over:
        (warn or log.warning)(took_over)
    return Lease(path, identity, took_over)


@contextmanager
def store_lease(store: str | os.PathLike, *, raw_dir: str | os.PathLike,
                signals_config: str | os.PathLike | None = None, purpose: str = "convocausal run",
                warn: Callable[[str], None] | None = None) -> Iterator[Lease]:
    """``acquire_lease`` for a ``with`` block."""
    lease = acquire_lease(store, raw_dir=raw_dir, signals_config=signals_config, purpose=purpose, warn=warn)
    try:
        yield lease
    finally:
        lease.release()


def holding_store_lease(purpose: str):
    """Decorate a function taking ``raw_dir``, ``store`` and ``signals_config`` (and optionally
    ``questions_config``, ``truth_file``) to hold the lease for its whole call.

    For ``run_pipeline``: it materializes several times in one process, and the lease must not be
    free between them (another identity could slip in between extraction and publish). The file
    settings are checked first; when one is bad the function is called without a lease, so it
    reports the setting in its own words before anything (not even a lock file) is written.
    """
    from convocausal.file_settings import FileSettingError, check_file_settings

    def decorate(fn):
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            a = signature.bind(*args, **kwargs).arguments
            try:
                check_file_settings(a["raw_dir"], a["store"], signals_config=a.get("signals_config"),
                                    questions_config=a.get("questions_config"), truth_file=a.get("truth_file"))
            except FileSettingError:
                return fn(*args, **kwargs)
            with store_lease(a["store"], raw_dir=a["raw_dir"], signals_config=a.get("signals_config"),
                             purpose=purpose):
                return fn(*args, **kwargs)

        return wrapper

    return decorate


def read_holder(store: str | os.PathLike) -> dict | None:
    """The record in the store's lock file (``None`` when empty or missing), for messages and tests."""
    try:
        text = lock_path_for(store).read_text()
    except OSError:
        return None
    return _parse(text)


# ----------------------------------------------------------------------------------- internals

def _acquire(db: Path, path: Path, identity: dict, purpose: str) -> tuple[int, str | None]:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_NOFOLLOW: a symlink planted as `<store>.lock` must not make us truncate its target.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        why = "it is a symlink" if path.is_symlink() else (exc.strerror or str(exc))
        raise StoreError(f"store {db}: cannot open its lock file {path} ({why}); remove that file or make "
                         "its folder writable, then re-run") from exc
    try:
        deadline = time.monotonic() + _SHARED_WAIT_S
        while True:
            if _try(fd, fcntl.LOCK_EX):
                previous = _read(fd)
                _write(fd, {"writer": identity, "holder": _me(purpose)})
                fcntl.flock(fd, fcntl.LOCK_SH)  # downgrade; another may take EX in between, so re-read
                current = _read(fd)
                if current is None or current.get("writer") != identity:
                    raise _busy(db, current)
                return fd, _take_over_message(db, previous)
            if _try(fd, fcntl.LOCK_SH):
                current = _read(fd)
                if current is None:  # the last holder was emptying the file as we arrived: start over
                    fcntl.flock(fd, fcntl.LOCK_UN)
                elif current.get("writer") == identity:
                    return fd, None
                else:
                    raise _busy(db, current)
            if time.monotonic() > deadline:
                raise _busy(db, _read(fd))
            time.sleep(0.02)
    except BaseException:
        os.close(fd)
        raise


def _release(path: Path) -> None:
    with _HELD_LOCK:
        held = _HELD.get(str(path))
        if held is None or held.pid != os.getpid():
            return  # a forked child never releases the parent's lock
        held.count -= 1
        if held.count > 0:
            return
        del _HELD[str(path)]
        try:
            if _try(held.fd, fcntl.LOCK_EX):  # the last holder: leave an empty file (a clean release)
                os.ftruncate(held.fd, 0)
        finally:
            os.close(held.fd)  # closing drops whatever lock is left


def _try(fd: int, kind: int) -> bool:
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
        return True
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise


def _read(fd: int) -> dict | None:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return _parse(b"".join(chunks).decode("utf-8", "replace"))


def _parse(text: str) -> dict | None:
    if not text.strip():
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return {"writer": {}, "holder": {"purpose": "unreadable lock record"}}
    return record if isinstance(record, dict) else None


def _write(fd: int, record: dict) -> None:
    data = (json.dumps(record, sort_keys=True) + "\n").encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def _me(purpose: str) -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "purpose": purpose,
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _describe(record: dict | None) -> str:
    holder = (record or {}).get("holder") or {}
    return (f"{holder.get('purpose', 'a run')} (pid {holder.get('pid', '?')} on {holder.get('host', '?')}, "
            f"since {holder.get('started', '?')})")


def _busy(db: Path, record: dict | None) -> StoreInUseError:
    raw = ((record or {}).get("writer") or {}).get("raw_dir", "another landing directory")
    return StoreInUseError(
        f"store {db}: in use by a run writing from {raw} (lease taken by {_describe(record)}); wait for it "
        "to finish, or give this run another --store (CONVOCAUSAL_STORE)")


def _take_over_message(db: Path, previous: dict | None) -> str | None:
    """The warning for a record left by a holder that died without releasing (None if clean)."""
    holder = (previous or {}).get("holder") or {}
    if not holder:
        return None
    pid, host = holder.get("pid"), holder.get("host")
    if host == socket.gethostname() and isinstance(pid, int) and _alive(pid):
        return None  # it is between writing its record and downgrading: not stale, just early
    why = ("which is no longer running" if host == socket.gethostname()
           else "whose lock was free (that host can no longer hold it)")
    return f"store {db}: took over the lease of {_describe(previous)}, {why}; its run did not finish"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
