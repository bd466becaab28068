"""Helpers shared by the command-line tests (not a test module)."""

from __future__ import annotations

import re


def uncomment(text: str, key: str) -> str:
    """What a user does with a starter config: ``key: []`` becomes ``key:`` and the commented
    entries below it (lines ``# - …`` and their ``#   …`` continuations) lose their ``# ``."""
    out, inside = [], False
    for line in text.splitlines():
        if line.strip() == f"{key}: []":
            out.append(line.replace(": []", ":"))
            inside = True
            continue
        m = re.match(r"^(\s*)# (- .*|  .*)$", line)
        if inside and m:
            out.append(m.group(1) + m.group(2))
            continue
        if inside and line.strip() and not line.lstrip().startswith("#"):
            inside = False
        out.append(line)
    return "\n".join(out) + "\n"
