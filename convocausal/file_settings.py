"""Checks on the file settings of a run (raw_dir, store, signals/questions configs, truth file).

Why: these paths reach the pipeline from places a shell user does not control line by line — the
Dagster launchpad's run config, environment variables, a scheduler's YAML. A hostile or mistyped
value must stop the run with one line naming the setting, the value and the reason, before any
file is read or written. The rules:

* no NUL bytes or control characters (they truncate or disguise a path in logs and C APIs);
* no ``..`` component, checked on the text before resolving (classic traversal);
* no URL scheme (``file://``, ``s3://``, ...): these settings are local paths;
* configs end in ``.yaml``/``.yml`` and resolve (symlinks followed) to a regular file (their
  size limit is the loaders' own, ``configs.safe_yaml``, shared by ``configs.questions`` and
  ``configs.signals``); the truth file ends in ``.json``; an existing store is a DuckDB database
  (its header says so), so a mistyped or hostile store path never overwrites another file; raw_dir, where it
  exists, is a directory;
* with ``allowed_roots`` (or ``CONVOCAUSAL_ALLOWED_ROOTS``: absolute directories separated by
  ``os.pathsep``), every setting must resolve inside one of the roots, so an absolute path
  elsewhere or a symlink that escapes a root is refused (the store's ``.parts`` folder too).
  Without roots, absolute paths are accepted: a local CLI user may point anywhere they can read.
* the roots hold for every file below the settings too, not only for the settings themselves:
  the raw reader refuses a transcript whose final path (a symlink inside the landing directory)
  leaves them (``extract.allowed_roots``, checked in ``extract.raw_files.read_file``), and every
  writer of the store's parts, memos and plots calls :func:`check_write_target` on the final
  path before it creates a folder or a file, so a symlink such as ``<store>.parts/reports`` ->
  ``/elsewhere`` is refused instead of written through.

This module is pure (stdlib and ``extract.allowed_roots``, itself stdlib only) so the CLI runner
and the Dagster resource share it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from extract.allowed_roots import ALLOWED_ROOTS_ENV, allowed_roots_from_env, describe_roots, outside_roots

__all__ = ["ALLOWED_ROOTS_ENV", "FileSettingError", "allowed_roots_from_env", "check_config_file",
           "check_file_settings", "check_write_target"]

CONFIG_SUFFIXES = (".yaml", ".yml")

# `s3://bucket`, `file:///etc`, `http://host`; also `s3:/bucket` (what `pathlib.Path` makes of
# `s3://bucket`, e.g. through the CLI's argparse) and the bare `file:`/`data:` forms. A scheme has
# two or more characters, so a Windows drive letter (`C:`) is not mistaken for one.
_URL_RE = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.\-]+:/|(?:file|data):)", re.IGNORECASE)
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class FileSettingError(ValueError):
    """A file setting that must not be used: one line naming the setting, the value and the reason."""

    def __init__(self, setting: str, value: object, reason: str):
        # repr() keeps the message on one line whatever the value holds (newlines, control chars).
        super().__init__(f"{setting} {value!r}: {reason}")
        self.setting = setting
        self.value = value
        self.reason = reason


PathLike = str | os.PathLike


def check_file_settings(
    raw_dir: PathLike,
    store: PathLike,
    signals_config: PathLike | None = None,
    questions_config: PathLike | None = None,
    truth_file: PathLike | None = None,
    allowed_roots: Iterable[PathLike] | None = None,
) -> None:
    """Raise ``FileSettingError`` for the first setting that breaks a rule (see the module docstring).

    ``None`` for an optional setting means "use the packaged default" and is not checked.
    """
    roots = _allowed_roots(allowed_roots)
    _check_raw_dir(raw_dir, roots)
    _check_store(store, roots)
    for name, value in (("signals_config", signals_config), ("questions_config", questions_config)):
        if value is not None:
            _check_config(name, value, roots)
    if truth_file is not None:
        _check_truth(truth_file, roots)


def check_config_file(name: str, value: PathLike, allowed_roots: Iterable[PathLike] | None = None) -> None:
    """One config path on its own (the questions sensor reads its config outside any run)."""
    _check_config(name, value, _allowed_roots(allowed_roots))


def check_write_target(path: PathLike, setting: str = "store",
                       allowed_roots: Iterable[PathLike] | None = None) -> Path:
    """The final path of a file about to be written (a day part, a memo, a plot): every symlink on
    the way resolved, including folders that exist already (so call it before ``mkdir``). With
    allowed roots set (given, or ``CONVOCAUSAL_ALLOWED_ROOTS``) it must lie inside one of them,
    else ``FileSettingError`` names the setting, the path and where it leads."""
    roots = _allowed_roots(allowed_roots)
    final = outside_roots(path, roots)
    if final is not None:
        raise FileSettingError(setting, os.fspath(path), f"resolves to {str(final)!r}, outside the allowed roots "
                               f"({describe_roots(roots)}); a symlink below the store must not lead elsewhere")
    return Path(path).resolve()


def _allowed_roots(given: Iterable[PathLike] | None) -> list[Path] | None:
    roots = [Path(r) for r in given] if given is not None else allowed_roots_from_env()
    if roots is None:
        return None
    resolved = []
    for root in roots:
        text = _text(ALLOWED_ROOTS_ENV, root)
        if not Path(text).is_absolute():
            raise FileSettingError(ALLOWED_ROOTS_ENV, text, "an allowed root must be an absolute path")
        resolved.append(Path(text).resolve())
    if not resolved:
        raise FileSettingError(ALLOWED_ROOTS_ENV, [], "no allowed root given")
    return resolved


def _text(name: str, value: PathLike) -> str:
    """The value as text after the checks every path setting shares (no resolving, no I/O)."""
    try:
        text = os.fspath(value)
    except TypeError:
        raise FileSettingError(name, value, f"expected a path, got {type(value).__name__}") from None
    if isinstance(text, bytes):
        raise FileSettingError(name, text, "expected a text path, got bytes")
    if not text.strip():
        raise FileSettingError(name, text, "empty path")
    if "\x00" in text:
        raise FileSettingError(name, text, "NUL byte in path")
    if _CONTROL_RE.search(text):
        raise FileSettingError(name, text, "control character in path")
    if _URL_RE.match(text):
        raise FileSettingError(name, text, "URLs are not allowed here, give a local path")
    if ".." in re.split(r"[/\\]", text):
        raise FileSettingError(name, text, "`..` path components are not allowed")
    return text


def _inside(name: str, text: str, roots: list[Path] | None) -> Path:
    """Resolve (symlinks followed); with roots, the result must lie inside one of them."""
    try:
        resolved = Path(text).resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: symlink loop on older Pythons
        raise FileSettingError(name, text, f"cannot resolve the path ({exc})") from None
    if roots is not None and not any(resolved == r or resolved.is_relative_to(r) for r in roots):
        raise FileSettingError(name, text, f"resolves to {str(resolved)!r}, outside the allowed roots "
                               f"({describe_roots(roots)})")
    return resolved


def _check_raw_dir(value: PathLike, roots: list[Path] | None) -> None:
    text = _text("raw_dir", value)
    resolved = _inside("raw_dir", text, roots)
    # A missing landing directory is not refused here: a worker that only estimates questions
    # needs the store, not the raw files; extraction names a missing directory when it reads.
    if resolved.exists() and not resolved.is_dir():
        raise FileSettingError("raw_dir", text, "not a directory")


def _check_store(value: PathLike, roots: list[Path] | None) -> None:
    text = _text("store", value)
    resolved = _inside("store", text, roots)
    # The parts folder beside the store is written too; a symlink there must not escape either.
    _inside("store", text + ".parts", roots)
    if resolved.exists() and not resolved.is_file():
        raise FileSettingError("store", text, "exists and is not a regular file")
    if resolved.is_file() and resolved.stat().st_size > 0 and not _is_duckdb(resolved):
        raise FileSettingError("store", text, "exists and is not a DuckDB database; refusing to overwrite it")


def _is_duckdb(path: Path) -> bool:
    """DuckDB's file header: an 8-byte checksum, then the magic bytes ``DUCK``."""
    try:
        with path.open("rb") as fh:
            return fh.read(12)[8:12] == b"DUCK"
    except OSError:
        return False


def _check_config(name: str, value: PathLike, roots: list[Path] | None) -> None:
    text = _text(name, value)
    if not text.lower().endswith(CONFIG_SUFFIXES):
        raise FileSettingError(name, text, "a config must be a `.yaml` or `.yml` file")
    resolved = _inside(name, text, roots)
    if not resolved.exists():
        raise FileSettingError(name, text, "file not found")
    if not resolved.is_file():
        raise FileSettingError(name, text, "not a regular file")
    if not resolved.name.lower().endswith(CONFIG_SUFFIXES):  # a `x.yaml` symlink to a non-YAML file
        raise FileSettingError(name, text, f"resolves to {str(resolved)!r}, not a `.yaml`/`.yml` file")


def _check_truth(value: PathLike, roots: list[Path] | None) -> None:
    text = _text("truth_file", value)
    if not text.lower().endswith(".json"):
        raise FileSettingError("truth_file", text, "the truth file must be a `.json` file")
    resolved = _inside("truth_file", text, roots)
    if resolved.exists() and not resolved.is_file():
        raise FileSettingError("truth_file", text, "not a regular file")
