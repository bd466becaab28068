"""Vectorized text helpers: fake PII values and template filling for whole columns.

The generator fills one template slot for every conversation at once; looping over
conversations in Python would make 1M conversations take minutes. Fake values use reserved
ranges (``example.com`` domains, ``555-01xx`` phone numbers) so no real person is named.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl

FIRST_NAMES: tuple[str, ...] = (
    "jane",
    "john",
    "maria",
    "ahmed",
    "li",
    "sofia",
    "lucas",
    "emma",
    "noah",
    "olivia",
    "liam",
    "ava",
    "mateo",
    "mia",
    "yuki",
    "fatima",
    "omar",
    "chloe",
    "ivan",
    "zoe",
    "arjun",
    "lena",
    "diego",
    "nora",
    "sam",
    "kai",
    "elena",
    "tom",
    "grace",
    "leo",
)
LAST_NAMES: tuple[str, ...] = (
    "doe",
    "smith",
    "garcia",
    "khan",
    "wang",
    "rossi",
    "silva",
    "brown",
    "mueller",
    "kim",
    "nguyen",
    "lopez",
    "patel",
    "cohen",
    "martin",
    "novak",
    "ito",
    "jones",
    "dubois",
    "berg",
)
EMAIL_DOMAINS: tuple[str, ...] = ("example.com", "example.org", "mail.example.net")
AREA_CODES: tuple[str, ...] = ("415", "212", "312", "646", "202", "617", "305", "206", "512", "303")


def pick(values: Sequence[str], idx: np.ndarray) -> pl.Series:
    """Gather ``values[idx]`` as a polars String column (no Python loop over rows)."""
    return pl.Series(values=list(values), dtype=pl.String).gather(pl.Series(idx.astype(np.uint32)))


def _zfill(ints: np.ndarray, width: int) -> pl.Series:
    return pl.Series(ints.astype(np.int64)).cast(pl.String).str.zfill(width)


def fake_emails(rng: np.random.Generator, n: int) -> pl.Series:
    """Emails like ``jane.doe42@example.com``."""
    first = pick(FIRST_NAMES, rng.integers(0, len(FIRST_NAMES), n))
    last = pick(LAST_NAMES, rng.integers(0, len(LAST_NAMES), n))
    num = pl.Series(rng.integers(1, 100, n)).cast(pl.String)
    dom = pick(EMAIL_DOMAINS, rng.integers(0, len(EMAIL_DOMAINS), n))
    df = pl.DataFrame({"f": first, "l": last, "n": num, "d": dom})
    return df.select(
        pl.concat_str([pl.col("f"), pl.lit("."), pl.col("l"), pl.col("n"), pl.lit("@"), pl.col("d")])
    )[:, 0].alias("email")


def fake_phones(rng: np.random.Generator, n: int) -> pl.Series:
    """Phone numbers like ``+1 415-555-0134`` (the 555-01xx block is reserved for fiction)."""
    area = pick(AREA_CODES, rng.integers(0, len(AREA_CODES), n))
    tail = _zfill(rng.integers(100, 200, n), 4)
    df = pl.DataFrame({"a": area, "t": tail})
    return df.select(pl.concat_str([pl.lit("+1 "), pl.col("a"), pl.lit("-555-"), pl.col("t")]))[:, 0].alias(
        "phone"
    )


def fake_order_numbers(rng: np.random.Generator, n: int) -> pl.Series:
    """Order numbers like ``ORD-482913``."""
    df = pl.DataFrame({"x": rng.integers(100_000, 1_000_000, n)})
    return df.select(pl.concat_str([pl.lit("ORD-"), pl.col("x").cast(pl.String)]))[:, 0].alias("order")


def fake_card4(rng: np.random.Generator, n: int) -> pl.Series:
    """Last four card digits."""
    return _zfill(rng.integers(0, 10_000, n), 4).alias("card4")


def template_fields(template: str) -> list[str]:
    """Names of the ``{field}`` placeholders of a template, in order."""
    return [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]


def _template_expr(template: str) -> pl.Expr:
    parts: list[pl.Expr] = []
    for literal, field, _, _ in string.Formatter().parse(template):
        if literal:
            parts.append(pl.lit(literal))
        if field is not None:
            parts.append(pl.col(field))
    if not parts:
        return pl.lit("")
    return pl.concat_str(parts) if len(parts) > 1 else parts[0].cast(pl.String)


def fill_templates(
    templates: Sequence[str],
    choice: np.ndarray,
    fields: Mapping[str, pl.Series] | None = None,
    strip: bool = True,
) -> pl.Series:
    """Row ``i`` gets ``templates[choice[i]]`` with ``{name}`` replaced by ``fields[name][i]``.

    Each template is formatted only on the rows that chose it (a loop over the handful of
    templates, not over rows), then the pieces are put back into row order. Rows with a
    negative choice are skipped: the result has one entry per row with ``choice >= 0``, in
    row order. Field values must be non-null strings; an empty value leaves no double
    space when ``strip``.
    """
    n = len(choice)
    choice = np.asarray(choice)
    fields = dict(fields or {})
    base = (
        pl.DataFrame({k: v for k, v in fields.items()})
        if fields
        else pl.DataFrame({"_": np.zeros(n, np.int8)})
    )
    pieces: list[pl.Series] = []
    idx_pieces: list[np.ndarray] = []
    for k, tpl in enumerate(templates):
        rows = np.flatnonzero(choice == k)
        if rows.size == 0:
            continue
        names = template_fields(tpl)
        if names:
            sub = base.select(names)[rows] if rows.size < n else base.select(names)
            col = sub.select(_template_expr(tpl).alias("t"))["t"]
        else:
            col = pl.Series("t", [tpl], dtype=pl.String).gather(pl.Series(np.zeros(rows.size, np.uint32)))
        pieces.append(col)
        idx_pieces.append(rows)
    if not pieces:
        return pl.Series("text", [], dtype=pl.String)
    # Put pieces back into row order with one gather (cheaper than sorting strings).
    order = np.concatenate(idx_pieces)
    rank = np.cumsum(choice >= 0) - 1
    perm = np.empty(order.size, dtype=np.uint32)
    perm[rank[order]] = np.arange(order.size, dtype=np.uint32)
    merged = pl.concat(pieces).gather(pl.Series(perm))
    if strip:
        merged = merged.str.replace_all("  ", " ", literal=True).str.strip_chars()
    return merged.alias("text")
