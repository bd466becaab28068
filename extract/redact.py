"""PII redaction for raw transcript text, as vectorized polars expressions.

Raw exports carry customer emails, phone numbers and, now and then, a pasted card number.
Nothing that leaves the extract step (the quarantine table, logs, the signals store) may hold
them, so every string that is written out passes through :func:`redact_text`. The patterns
are Rust-regex (polars) patterns applied with ``str.replace_all``: no Python per-row work.

Order matters: emails first (they may contain digits), then ``+``-prefixed international
phone numbers (``+4915112345678`` has 13 digits and would otherwise look like a card), then
card numbers (13–19 digits, optionally grouped by spaces or dashes — before the US phone
pattern, which would otherwise eat part of them), then US-format phone numbers. Bare digit runs of 7–12 digits without a ``+`` prefix
or separators are *not* treated as phone numbers: order and ticket numbers look like that.
"""

from __future__ import annotations

import polars as pl

EMAIL_TOKEN = "[EMAIL]"
PHONE_TOKEN = "[PHONE]"
CARD_TOKEN = "[CARD]"

EMAIL_PATTERN = r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}"
# 13-19 digits, single spaces or dashes allowed between digits (4111 1111 1111 1111).
CARD_PATTERN = r"\b\d(?:[ \-]?\d){12,18}\b"
# International: +CC then 6-14 more digits in groups, e.g. +44 20 7946 0958, +4915112345678,
# +1 (415) 555-0132.
INTL_PHONE_PATTERN = r"\+\d{1,3}(?:[ .\-]?\(?\d{1,5}\)?){2,6}"
# North American: (415) 555-0132, 415-555-0132, 415.555.0132, 415 555 0132, 1-800-555-0199.
US_PHONE_PATTERN = r"(?:\b1[ .\-])?(?:\(\d{3}\)[ .\-]?|\b\d{3}[ .\-])\d{3}[ .\-]\d{4}\b"

PII_PATTERNS: dict[str, str] = {
    EMAIL_TOKEN: EMAIL_PATTERN,
    CARD_TOKEN: CARD_PATTERN,
    PHONE_TOKEN: INTL_PHONE_PATTERN,
    "[PHONE] (US)": US_PHONE_PATTERN,
}


def redact_text(expr: pl.Expr) -> pl.Expr:
    """Replace emails, card-like numbers and phone numbers in a string expression by tokens.

    Nulls stay null. Tokens are fixed strings so downstream rules can still see *that* the
    customer gave an email (``[EMAIL]``) without seeing which one.
    """
    return (
        expr.str.replace_all(EMAIL_PATTERN, EMAIL_TOKEN)
        .str.replace_all(INTL_PHONE_PATTERN, PHONE_TOKEN)
        .str.replace_all(CARD_PATTERN, CARD_TOKEN)
        .str.replace_all(US_PHONE_PATTERN, PHONE_TOKEN)
    )


def contains_pii(expr: pl.Expr) -> pl.Expr:
    """Boolean expression: does the string hold anything :func:`redact_text` would replace?

    Used by tests and by scans of output tables (e.g. assert no quarantine row leaks PII).
    Null input gives false.
    """
    hit = pl.lit(False)
    for pattern in PII_PATTERNS.values():
        hit = hit | expr.str.contains(pattern).fill_null(False)
    return hit


def redact_frame(df: pl.DataFrame, columns: list[str] | None = None) -> pl.DataFrame:
    """Redact every string column of ``df`` (or only ``columns``); other columns are untouched."""
    targets = columns if columns is not None else [c for c, t in df.schema.items() if t == pl.String]
    return df.with_columns([redact_text(pl.col(c)).alias(c) for c in targets])
