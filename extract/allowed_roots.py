"""``CONVOCAUSAL_ALLOWED_ROOTS``: the directories a shared deployment may read and write, checked
on the final path of every file (symlinks followed), not only on the top-level settings.

Why a module of its own, below everything: the raw reader (``extract``) must refuse a transcript
reached through a symlink that leaves the roots, and the store and memo writers
(``convocausal``) must refuse a part or a memo written through one; both layers import this
module (stdlib only), so the rule and the wording exist once. ``convocausal.file_settings``
validates the roots themselves (absolute, no traversal) before a run.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

ALLOWED_ROOTS_ENV = "CONVOCAUSAL_ALLOWED_ROOTS"


def allowed_roots_from_env(environ: Mapping[str, str] | None = None) -> list[Path] | None:
    """The roots in ``CONVOCAUSAL_ALLOWED_ROOTS`` (``os.pathsep``-separated), or ``None`` when unset."""
    raw = (os.environ if environ is None else environ).get(ALLOWED_ROOTS_ENV, "")
    parts = [p for p in raw.split(os.pathsep) if p.strip()]
    return [Path(p) for p in parts] or None


def resolved_roots(roots: Iterable[str | os.PathLike] | None = None) -> list[Path] | None:
    """Given roots (or the environment's), resolved; relative ones are dropped (the file-settings
    check refuses them before a run, with the setting named)."""
    given = [Path(r) for r in roots] if roots is not None else allowed_roots_from_env()
    if not given:
        return None
    return [r.resolve() for r in given if r.is_absolute()] or None


def outside_roots(path: str | os.PathLike, roots: list[Path] | None) -> Path | None:
    """The final path of ``path`` (every symlink on the way resolved) when it lies outside every
    root; ``None`` when it is inside one, or when no roots are set. A path that does not exist
    yet (a file about to be written) is resolved through its existing parents."""
    if roots is None:
        return None
    try:
        final = Path(path).resolve()
    except (OSError, RuntimeError):  # a symlink loop: it leads nowhere inside a root either
        return Path(path)
    if any(final == r or final.is_relative_to(r) for r in roots):
        return None
    return final


def describe_roots(roots: list[Path]) -> str:
    return os.pathsep.join(str(r) for r in roots)
