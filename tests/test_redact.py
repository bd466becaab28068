"""PII redaction: emails, phone numbers (international and US), card-like numbers."""

from __future__ import annotations

import polars as pl
import pytest

from extract.redact import contains_pii, redact_frame, redact_text


def _redact(s: str | None) -> str | None:
    return pl.DataFrame({"t": [s]}, schema={"t": pl.String}).select(redact_text(pl.col("t"))).item()


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("my email is jane.doe+orders@example.co.uk, thanks", "my email is [EMAIL], thanks"),
        ("JOHN_SMITH99@Mail-Server.com", "[EMAIL]"),
        ("call me on +44 20 7946 0958 today", "call me on [PHONE] today"),
        ("+4915112345678", "[PHONE]"),
        ("+33 1 23 45 67 89", "[PHONE]"),
        ("+1 (415) 555-0132", "[PHONE]"),
        ("(415) 555-0132", "[PHONE]"),
        ("415-555-0132 or 415.555.0132 or 415 555 0132", "[PHONE] or [PHONE] or [PHONE]"),
        ("1-800-555-0199", "[PHONE]"),
        ("card 4111 1111 1111 1111 exp 12/28", "card [CARD] exp 12/28"),
        ("4111-1111-1111-1111", "[CARD]"),
        ("378282246310005", "[CARD]"),  # 15-digit Amex
        ("6011000990139424123", "[CARD]"),  # 19 digits
    ],
)
def test_pii_is_replaced(raw, expected):
    assert _redact(raw) == expected


@pytest.mark.parametrize(
    "text",
    [
        "order 12345678 is on its way",
        "order A-10293, refund of 19.99 on 2026-01-05 10:00:00",
        "card ends in 4242",
        "ticket 123456789012",  # 12 digits: too short for a card, no phone shape
        "agent build v2.0, 3 items in memory",
        None,
    ],
)
def test_non_pii_is_untouched(text):
    assert _redact(text) == text
    assert not pl.DataFrame({"t": [text]}, schema={"t": pl.String}).select(contains_pii(pl.col("t"))).item()


def test_contains_pii_before_and_after():
    df = pl.DataFrame({"t": ["reach me at a@b.io", "+44 20 7946 0958", "4111111111111111", "hello"]})
    before = df.select(contains_pii(pl.col("t"))).to_series().to_list()
    after = df.select(contains_pii(redact_text(pl.col("t")))).to_series().to_list()
    assert before == [True, True, True, False]
    assert after == [False, False, False, False]


def test_redact_frame_only_touches_string_columns():
    df = pl.DataFrame({"text": ["a@b.io"], "who": ["x@y.org"], "n": [4111111111111111]})
    out = redact_frame(df)
    assert out.row(0) == ("[EMAIL]", "[EMAIL]", 4111111111111111)
    assert redact_frame(df, columns=["text"]).row(0) == ("[EMAIL]", "x@y.org", 4111111111111111)


def test_redaction_is_one_expression_over_a_column():
    """An expression, not a Python function per row: 200k rows in one select."""
    n = 200_000
    df = pl.DataFrame({"t": ["Hi, it's jane.roe@example.com or +44 20 7946 0958, order 12345"] * n})
    out = df.select(redact_text(pl.col("t")))
    assert out.height == n and out["t"].n_unique() == 1
    assert out.item(0, 0) == "Hi, it's [EMAIL] or [PHONE], order 12345"


# --------------------------------------------------------------------------- issue 19, item 10
@pytest.mark.parametrize(
    "raw, expected",
    [
        ("schreib an jöhn.döe@exämple.de bitte", "schreib an [EMAIL] bitte"),
        ("john dot doe at gmail dot com", "[EMAIL]"),
        ("mail jane.roe [at] example [dot] org today", "mail [EMAIL] today"),
        ("jane (at) example.org", "[EMAIL]"),
        ("JANE.ROE {AT} EXAMPLE {DOT} CO {DOT} UK", "[EMAIL]"),
        ("jane @ example dot org", "[EMAIL]"),
        ("call 4155550132 now", "call [PHONE] now"),
        ("or 14155550132", "or [PHONE]"),
        ("card 4111.1111.1111.1111", "card [CARD]"),
        ("card 4111  1111  1111  1111", "card [CARD]"),
        ("IBAN DE89 3704 0044 0532 0130 00 please", "IBAN [IBAN] please"),
        ("GB29NWBK60161331926819", "[IBAN]"),
        ("my ssn is 123-45-6789", "my ssn is [SSN]"),
        ("SSN: 123456789", "[SSN]"),
        ("social security number 123 45 6789", "social security number [SSN]"),
        ("ship to 742 Evergreen Terrace, Springfield", "ship to [ADDRESS], Springfield"),
        ("221B Baker Street", "[ADDRESS]"),
        ("1600 Amphitheatre Pkwy.", "[ADDRESS]"),
        ("Hauptstraße 5, Berlin", "[ADDRESS], Berlin"),
        ("+4915112345678", "[PHONE]"),
        ("(+44 20 7946 0958)", "([PHONE])"),
    ],
)
def test_more_pii_formats_are_replaced(raw, expected):
    assert _redact(raw) == expected
    assert not pl.DataFrame({"t": [expected]}).select(contains_pii(pl.col("t"))).item()


@pytest.mark.parametrize(
    "text",
    [
        "v2.1+001", "v2.1+002", "1.4.0+20260105", "prompt-v2.0+build.7",  # version build suffixes
        "I bought it at amazon.com", "look at this dot", "a 2 way street", "IP 192.168.100.200",
        "tier2-3", "lookup_order", "order 0012345678",
    ],
)
def test_versions_and_ordinary_text_are_not_mangled(text):
    assert _redact(text) == text


def test_distinct_versions_stay_distinct():
    versions = pl.DataFrame({"v": ["v2.1+001", "v2.1+002", "v2.1+003"]})
    assert versions.select(redact_text(pl.col("v")))["v"].n_unique() == 3


def test_pii_looking_ids_are_hashed_with_the_salt_and_others_kept():
    from extract.redact import PSEUDONYM_PREFIX, pseudonymize_ids

    ids = pl.Series("conversation_id", ["c-1", "jane.roe@example.org", None, "c-2", "jane.roe@example.org"])
    a = pseudonymize_ids(ids, "salt-a")
    b = pseudonymize_ids(ids, "salt-b")
    assert a[0] == "c-1" and a[3] == "c-2" and a[2] is None
    assert a[1].startswith(PSEUDONYM_PREFIX) and a[1] == a[4] and a[1] != b[1]
    assert not a.str.contains("@").any()


def test_one_alternation_finds_what_each_pattern_finds(tmp_path):
    """``contains_pii`` runs every pattern as one alternation; on every text of this file and on real
    dialogue turns (SGD, with PII planted in some) it flags exactly what the patterns one by one flag."""
    from pathlib import Path

    from extract.redact import PII_PATTERNS

    here = Path(__file__).read_text().splitlines()
    texts = [line.strip() for line in here if line.strip()]
    # the SGD dialogue turns copied into the repository (data/sgd_dialogues, see tests/test_sgd_example.py)
    messages = Path(__file__).resolve().parents[1] / "data" / "sgd_dialogues" / "messages.parquet"
    sgd = pl.read_parquet(messages)["text"].drop_nulls().head(8_000).to_list()
    assert len(sgd) == 8_000
    texts += sgd
    planted = ["ask a.b@c.io", "+44 20 7946 0958", "SSN: 123456789", "221B Baker Street", "GB29NWBK60161331926819"]
    texts += [f"{t} {p}" for t, p in zip(texts[:2_000], planted * 400)]
    s = pl.Series("t", texts, dtype=pl.String)
    one_by_one = pl.select(pl.any_horizontal(pl.lit(s).str.contains(p).fill_null(False)
                                             for p in PII_PATTERNS.values())).to_series()
    combined = pl.select(contains_pii(pl.lit(s))).to_series()
    assert one_by_one.sum() >= 2_000
    assert (one_by_one == combined).all()


def test_labels_redacted_on_distinct_values_equal_the_column_redacted():
    """``redact_labels`` redacts each distinct value once and rewrites only what changes: against
    ``redact_text`` over every row, on label columns with PII (an email as a queue name, a phone
    number logged in a tool name), nulls, and lists (null lists, empty lists, null elements)."""
    from extract.redact import redact_labels

    values = ["web", "queue-jane.doe@example.com", None, "v2.1+001", "lookup_order +44 20 7946 0958", "chat"]
    s = pl.Series("label", [values[i % len(values)] for i in range(3_000)], dtype=pl.String)
    assert redact_labels(s).equals(pl.select(redact_text(pl.lit(s))).to_series().alias("label"))
    assert "[EMAIL]" in redact_labels(s).to_list()[1]
    clean = s.filter(~s.str.contains("@|\\+44").fill_null(False))
    assert redact_labels(clean) is clean  # nothing to change: the column as it is
    lists = pl.Series("tools", [[values[i % 6], values[(i + 1) % 6]] if i % 5 else ([] if i % 2 else None)
                                for i in range(3_000)], dtype=pl.List(pl.String))
    want = lists.to_frame().select(pl.col("tools").list.eval(redact_text(pl.element()))).to_series()
    assert redact_labels(lists).equals(want)
    assert redact_labels(pl.Series("e", [], dtype=pl.String)).len() == 0
