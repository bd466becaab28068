"""PII redaction for raw transcript text and labels, as vectorized polars expressions.

Raw exports carry customer emails, phone numbers and, now and then, a pasted card number, an
IBAN, a US social security number or a street address. Nothing that leaves the extract step
(the quarantine table, logs, the signals store and everything drawn from it) may hold them, so
every string that is written out passes through :func:`redact_text`. The patterns are Rust-regex
(polars) patterns applied with ``str.replace_all``: no Python per-row work.

Order matters: emails first — plain, non-ASCII (``jöhn.döe@exämple.de``) and obfuscated
(``john dot doe at gmail dot com``, ``jane.roe [at] example [dot] org``; a plain `` at `` counts
only with a spelled-out dot, so "bought it at amazon.com" stays) — because they may contain
digits; then IBANs (their digits would otherwise look like a card); then ``+``-prefixed
international phone numbers (8–16 digits, not glued to a word or a dot, so the build suffix of a
version — ``v2.1+001``, ``1.4.0+20260105`` — is left alone and distinct versions stay distinct);
then card numbers (13–19 digits, optionally grouped by spaces, dots or dashes, up to two at a
time); then US social security numbers; then US-format phone numbers, with separators or as a
bare 10-digit number of the North American shape (area code and exchange not starting with 0/1);
then street addresses (number + capitalised name + street type, or ``Hauptstraße 5``). Other
bare digit runs are *not* touched: order and ticket numbers look like that.

Identifiers are not redacted (they are join keys) but a conversation id that itself looks like
PII is replaced by a salted hash, :func:`pseudonymize_ids`, in the signals and the quarantine.
"""

from __future__ import annotations

import threading

import duckdb
import polars as pl

# The salt shipped in configs/signals.yaml: with it, anyone can rebuild a customer_key (or a
# pseudonymized id) by hashing a guessed email, so a run that uses it is warned.
SHIPPED_SALT = "convocausal-default-salt-change-me"
PSEUDONYM_PREFIX = "pii-"
ALLOW_DEFAULT_SALT_ENV = "CONVOCAUSAL_ALLOW_DEFAULT_SALT"


class DefaultSaltError(ValueError):
    """The shipped salt on data that is not a generated fixture: the run stops before extraction."""


def check_salt(salt: str, raw_dir, environ=None) -> None:
    """Refuse the shipped salt outside the demo.

    With the salt everyone has, a ``customer_key`` is reversed by hashing a guessed email. A landing
    directory written by ``convocausal fixtures`` (it holds ``_truth/labels.parquet`` and
    ``truth.json``) is synthetic, so the demo runs as shipped (with a warning); anything else needs a
    salt of its own, or ``CONVOCAUSAL_ALLOW_DEFAULT_SALT=1`` to accept the risk knowingly.
    """
    import os
    from pathlib import Path

    env = os.environ if environ is None else environ
    if salt != SHIPPED_SALT or env.get(ALLOW_DEFAULT_SALT_ENV) == "1":
        return
    raw = Path(raw_dir)
    if (raw / "_truth" / "labels.parquet").is_file() and (raw / "truth.json").is_file():
        return
    raise DefaultSaltError(
        f"signals config customer_key.salt is the shipped default and {raw} is not a generated fixture: set a "
        f"secret salt of your own (`customer_key: {{salt: …}}`; `convocausal init` writes one), or set "
        f"{ALLOW_DEFAULT_SALT_ENV}=1 to accept that customer keys can be reversed")

EMAIL_TOKEN = "[EMAIL]"
PHONE_TOKEN = "[PHONE]"
CARD_TOKEN = "[CARD]"
IBAN_TOKEN = "[IBAN]"
SSN_TOKEN = "[SSN]"
ADDRESS_TOKEN = "[ADDRESS]"

_W = r"[\p{L}\p{N}_%+\-]+"  # one dot-free piece of an address, any script
_SPELLED_DOT = r"(?:\s*[\[({<]\s*dot\s*[\])}>]\s*|\s+dot\s+)"
_ANY_DOT = rf"(?:{_SPELLED_DOT}|\.)"
_TLD = (r"(?:com|org|net|edu|gov|mil|int|info|biz|io|co|me|us|uk|de|fr|es|it|nl|be|ch|at|se|no|dk|fi|pl|"
        r"pt|ie|cz|eu|ca|au|nz|jp|cn|in|br|ru|mx|za|ai|app|dev)")

EMAIL_PATTERN = r"[\p{L}\p{N}._%+\-]+@[\p{L}\p{N}\-]+(?:\.[\p{L}\p{N}\-]+)*\.\p{L}{2,}"
# `jane.roe [at] example [dot] org`, `jane (at) example.org`, `jane @ example dot org`
OBFUSCATED_EMAIL_PATTERN = (
    rf"(?i)\b{_W}(?:{_ANY_DOT}{_W})*(?:\s*[\[({{<]\s*at\s*[\])}}>]\s*|\s+@\s*|\s*@\s+)"
    rf"{_W}(?:{_ANY_DOT}{_W})*{_ANY_DOT}{_TLD}\b"
)
# `john dot doe at gmail dot com`: a plain ` at ` only with a spelled-out dot in the domain
SPELLED_EMAIL_PATTERN = rf"(?i)\b{_W}(?:{_ANY_DOT}{_W})*\s+at\s+{_W}(?:{_SPELLED_DOT}{_W})*{_SPELLED_DOT}{_TLD}\b"
# DE89 3704 0044 0532 0130 00, GB29NWBK60161331926819
IBAN_PATTERN = r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b"
# International: + then 8-16 digits, separators allowed, e.g. +44 20 7946 0958, +4915112345678,
# +1 (415) 555-0132. Group 1 keeps the character before it (not a word character or a dot).
INTL_PHONE_PATTERN = r"(^|[^\w.+])\+\d(?:[ .\-()]{0,3}\d){7,15}"
# 13-19 digits, one or two spaces, dots or dashes allowed between digits (4111 1111 1111 1111).
CARD_PATTERN = r"\b\d(?:[ .\-]{0,2}\d){12,18}\b"
SSN_PATTERN = r"(?i)\b\d{3}-\d{2}-\d{4}\b|\b\d{3} \d{2} \d{4}\b|\b(?:ssn|social security(?: number)?)\W{0,3}\d{9}\b"
# North American: (415) 555-0132, 415-555-0132, 415.555.0132, 415 555 0132, 1-800-555-0199,
# and the bare 4155550132 / 14155550132.
US_PHONE_PATTERN = (
    r"(?:\b1[ .\-])?(?:\(\d{3}\)[ .\-]?|\b\d{3}[ .\-])\d{3}[ .\-]\d{4}\b|\b1?[2-9]\d{2}[2-9]\d{6}\b"
)
_STREET = (r"(?i:street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|drive|dr|court|ct|way|place|pl|terrace|"
           r"parkway|pkwy|highway|hwy|circle|cir|square|sq)")
ADDRESS_PATTERN = (
    rf"\b\d{{1,6}}[A-Za-z]?\s+(?:\p{{Lu}}[\p{{L}}'\-]*\s+){{1,3}}{_STREET}\b\.?"
    r"|\b\p{Lu}[\p{L}\-]*(?i:straße|strasse|weg|gasse|platz|allee)\s+\d{1,5}[a-z]?\b"
)

# token → pattern, in the order they are applied
PII_PATTERNS: dict[str, str] = {
    EMAIL_TOKEN: EMAIL_PATTERN,
    "[EMAIL] (obfuscated)": OBFUSCATED_EMAIL_PATTERN,
    "[EMAIL] (spelled)": SPELLED_EMAIL_PATTERN,
    IBAN_TOKEN: IBAN_PATTERN,
    PHONE_TOKEN: INTL_PHONE_PATTERN,
    CARD_TOKEN: CARD_PATTERN,
    SSN_TOKEN: SSN_PATTERN,
    "[PHONE] (US)": US_PHONE_PATTERN,
    ADDRESS_TOKEN: ADDRESS_PATTERN,
}
_REPLACEMENTS: tuple[tuple[str, str], ...] = (
    (EMAIL_PATTERN, EMAIL_TOKEN),
    (OBFUSCATED_EMAIL_PATTERN, EMAIL_TOKEN),
    (SPELLED_EMAIL_PATTERN, EMAIL_TOKEN),
    (IBAN_PATTERN, IBAN_TOKEN),
    (INTL_PHONE_PATTERN, "${1}" + PHONE_TOKEN),
    (CARD_PATTERN, CARD_TOKEN),
    (SSN_PATTERN, SSN_TOKEN),
    (US_PHONE_PATTERN, PHONE_TOKEN),
    (ADDRESS_PATTERN, ADDRESS_TOKEN),
)


def redact_text(expr: pl.Expr) -> pl.Expr:
    """Replace emails, IBANs, phone, card and social security numbers and street addresses in a
    string expression by tokens.

    Nulls stay null. Tokens are fixed strings so downstream rules can still see *that* the
    customer gave an email (``[EMAIL]``) without seeing which one.
    """
    for pattern, token in _REPLACEMENTS:
        expr = expr.str.replace_all(pattern, token)
    return expr


def redact_labels(values: pl.Series) -> pl.Series:
    """:func:`redact_text` of a label column (strings, or lists of strings), the same values.

    Why not ``redact_text`` on the column: a label column takes a handful of distinct values
    over hundreds of thousands of rows (channel, version, tool names), and eight regex passes
    over every row were 0.47 s per 280k conversations. Redaction is a function of the value
    alone, so the distinct values are redacted and only the rows holding one that changes are
    rewritten; a column none of whose values changes is returned as it is."""
    strings = values.explode() if values.dtype == pl.List(pl.String) else values
    distinct = strings.unique().drop_nulls()
    clean = distinct.to_frame("v").select(redact_text(pl.col("v"))).to_series()
    changed = distinct != clean
    if not changed.any():
        return values
    old, new = distinct.filter(changed), clean.filter(changed)
    if values.dtype == pl.List(pl.String):
        return values.to_frame().select(pl.col(values.name).list.eval(pl.element().replace(old, new))).to_series()
    return values.replace(old, new)


def contains_pii(expr: pl.Expr) -> pl.Expr:
    """Boolean expression: does the string hold anything :func:`redact_text` would replace?

    Used by tests and by scans of output tables (e.g. assert no quarantine row leaks PII).
    Null input gives false.
    """
    return expr.str.contains(_ANY_PII).fill_null(False)


# Every pattern in one alternation, each in its own group (an inline flag such as ``(?i)`` then
# stays inside its group): one pass over the text instead of one per pattern — 0.32 s against
# 3.5 s for 10M conversation ids, the same answers (tests/test_redact_*.py compares them).
_ANY_PII = "|".join(f"(?:{pattern})" for pattern in PII_PATTERNS.values())


def redact_frame(df: pl.DataFrame, columns: list[str] | None = None) -> pl.DataFrame:
    """Redact every string column of ``df`` (or only ``columns``); other columns are untouched."""
    targets = columns if columns is not None else [c for c, t in df.schema.items() if t == pl.String]
    return df.with_columns([redact_text(pl.col(c)).alias(c) for c in targets])


_DUCK: duckdb.DuckDBPyConnection | None = None
_DUCK_LOCK = threading.Lock()


def pseudonymize_ids(ids: pl.Series, salt: str) -> pl.Series:
    """Ids that look like PII (an email or phone number used as a conversation id) become
    ``pii-`` + hex sha256(salt + id), like ``customer_key``; every other id is kept as it is, so
    joins on ordinary ids are unchanged. The hash runs in DuckDB on the distinct PII-looking ids
    only (usually none)."""
    flagged = pl.select(contains_pii(pl.lit(ids))).to_series()
    if not flagged.any():
        return ids
    distinct = pl.DataFrame({"id": ids.filter(flagged).unique()}, schema={"id": pl.String})
    global _DUCK
    with _DUCK_LOCK:
        if _DUCK is None:
            _DUCK = duckdb.connect(":memory:")
        con = _DUCK.cursor()
    try:
        con.register("ids", distinct)
        rel = con.sql("SELECT id, $prefix || sha256($salt || id) AS pseudo FROM ids",
                      params={"salt": salt, "prefix": PSEUDONYM_PREFIX})
        mapping = pl.DataFrame(rel.to_arrow_table())
    finally:
        con.unregister("ids")
        con.close()
    frame = pl.DataFrame({"id": ids}, schema={"id": pl.String})
    joined = frame.join(mapping, on="id", how="left", maintain_order="left")
    return joined.select(pl.coalesce("pseudo", "id")).to_series().alias(ids.name)
