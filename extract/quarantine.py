"""Raw reader, stage 3: the quarantine rows, each with the redacted JSON of its stored row.

Why a module of its own: this is the one place where raw content leaves the reader for the store,
so it is where privacy is enforced — every text-like column of ``raw_row`` goes through
``redact_text`` (the conversation id too: an ordinary id passes unchanged and stays the join key,
an id that is itself an email or a phone number does not reach the store), and values are taken
from the row *as stored*, before casting, so a user can see what was actually wrong.
"""

from __future__ import annotations

from collections.abc import Iterable

import polars as pl

from extract.raw_cast import utf8_lossy
from extract.raw_contract import DAY_COL, QUARANTINE_SCHEMA, REASON_COL, ROW_COL
from extract.redact import redact_text


# ============================================================================ raw_row JSON
def _json_safe(df: pl.DataFrame, keep_plain: Iterable[str] = ()) -> pl.DataFrame:
    """Make stored columns JSON-encodable and redact PII in every text-like column."""
    keep = set(keep_plain)
    exprs = []
    for col, dt in df.schema.items():
        c = pl.col(col)
        if dt == pl.Binary:
            e = utf8_lossy(c)
            e = e if col in keep else redact_text(e)
        elif dt == pl.String:
            e = c if col in keep else redact_text(c)
        elif dt.is_numeric() or dt.is_nested() or dt in (pl.Boolean, pl.Null):
            e = c
        else:
            e = c.cast(pl.String, strict=False)
            e = e if col in keep else redact_text(e)
        exprs.append(e.alias(col))
    return df.select(exprs)


def _raw_rows(originals: dict[str, pl.DataFrame], bad: pl.DataFrame) -> pl.DataFrame:
    """Attach ``raw_row`` (redacted JSON of the stored row) to quarantined rows, file by file."""
    parts = []
    for src in bad["source_file"].unique(maintain_order=True).to_list():
        sub = bad.filter(pl.col("source_file") == src)
        orig = originals[src]
        rows = orig.select(pl.int_range(pl.len(), dtype=pl.Int64).alias(ROW_COL), pl.all())
        rows = sub.select(ROW_COL).join(rows, on=ROW_COL, how="left", maintain_order="left")
        payload = _json_safe(rows.drop(ROW_COL))
        if payload.width:
            raw = payload.select(pl.struct(pl.all()).struct.json_encode().alias("raw_row"))["raw_row"]
        else:
            raw = pl.Series("raw_row", ["{}"] * sub.height, dtype=pl.String)
        parts.append(sub.with_columns(raw.alias("raw_row")))
    if not parts:
        return bad.with_columns(pl.lit(None, dtype=pl.String).alias("raw_row"))
    return pl.concat(parts, how="vertical")


def quarantine_frame(bad: pl.DataFrame, originals: dict[str, pl.DataFrame], table: str,
                     keep: Iterable[str] = ()) -> pl.DataFrame:
    """The quarantine rows of ``bad`` (QUARANTINE_SCHEMA), plus its columns ``keep`` at the end."""
    keep = list(keep)
    if bad.height == 0:
        return pl.DataFrame(schema={**QUARANTINE_SCHEMA, **{c: bad.schema[c] for c in keep}})
    with_raw = _raw_rows(originals, bad)
    cid = pl.col("conversation_id") if "conversation_id" in with_raw.columns else pl.lit(None, pl.String)
    day = pl.col(DAY_COL) if DAY_COL in with_raw.columns else pl.lit(None, pl.Date)
    return with_raw.select(
        pl.col("source_file"),
        cid.cast(pl.String).alias("conversation_id"),
        pl.col(REASON_COL).alias("reason"),
        pl.col("raw_row"),
        pl.lit(table).alias("table"),
        day.cast(pl.Date).alias("date"),
        *keep,
    )
