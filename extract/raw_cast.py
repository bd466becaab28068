"""Raw reader, stage 2: cast stored columns to the contract dtypes and attach per-row reasons.

Why a module of its own: casting is where "what the platform wrote" meets "what the contract
says", and every lenient-but-safe rule (integers stored as floats, timestamps as strings in a few
formats, booleans as yes/no, invalid UTF-8 repaired in ``text`` but refused in ids) lives here as
polars expressions over whole columns. A failed cast never raises: it becomes a reason string on
the row, so the row can be quarantined with the rest.
"""

from __future__ import annotations

from collections.abc import Iterable

import polars as pl

from extract.raw_contract import REASON_CAST, REASON_COL, REASON_NULL, REASON_TS, REASON_UTF8, ROW_COL

# UTF-8 validity as a regex over the lowercase hex encoding of the bytes (W3C byte pattern):
# one alternative per well-formed code point; anchoring keeps byte pairs aligned.
_C = "[89ab][0-9a-f]"
_UTF8_CHAR_HEX = (
    f"[0-7][0-9a-f]|c[2-9a-f]{_C}|d[0-9a-f]{_C}|e0[ab][0-9a-f]{_C}|e[1-9a-cef]{_C}{_C}"
    f"|ed[89][0-9a-f]{_C}|f0[9ab][0-9a-f]{_C}{_C}|f[1-3]{_C}{_C}{_C}|f48[0-9a-f]{_C}{_C}"
)

_TS_FORMATS = (
    "%Y-%m-%dT%H:%M:%S%.fZ",
    "%Y-%m-%dT%H:%M:%S%.f%z",
    "%Y-%m-%d %H:%M:%S%.f%z",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%d",
)
_TRUE = ["true", "t", "yes", "y", "1"]
_FALSE = ["false", "f", "no", "n", "0"]


# ============================================================================ casting
def utf8_valid(expr: pl.Expr) -> pl.Expr:
    return expr.bin.encode("hex").str.contains(f"^(?:{_UTF8_CHAR_HEX})*$")


def utf8_lossy(expr: pl.Expr) -> pl.Expr:
    """Decode Binary to String, replacing each invalid byte by U+FFFD (vectorized via hex)."""
    marked = expr.bin.encode("hex").str.replace_all(f"({_UTF8_CHAR_HEX})|([0-9a-f]{{2}})", "${1}<${2}>")
    fixed = marked.str.replace_all("<>", "", literal=True).str.replace_all("<[0-9a-f]{2}>", "efbfbd")
    return fixed.str.decode("hex").cast(pl.String)


def _cast_expr(col: str, src: pl.DataType, target: pl.DataType) -> tuple[pl.Expr, pl.Expr | None]:
    """(value, failure_reason) for casting stored column ``col`` to ``target``.

    Binary columns bound for String were already decoded by :func:`_decode_binary`.

    ``failure_reason`` is a String expression, null where the value is fine or the source null.
    """
    c = pl.col(col)
    cast_reason = REASON_CAST.format(col=col, dtype=target)
    if src == pl.Null:
        return pl.lit(None, dtype=target).alias(col), None
    if src.is_nested() or src == pl.Object:
        # A list, struct or array where the contract has a scalar (``text`` exported as a list of
        # chunks): no value is usable, and polars refuses the cast outright ("cannot cast List
        # type"), which stopped the whole run. Every non-null row gets the cast reason instead.
        return pl.lit(None, dtype=target).alias(col), pl.when(c.is_not_null()).then(pl.lit(cast_reason))
    if isinstance(src, pl.Decimal):  # e.g. NUMERIC(10, 0) from a database export: as a float
        c = c.cast(pl.Float64, strict=False)
        src = pl.Float64()
    if target == pl.String:
        if src == pl.String:
            value = c
        else:
            value = c.cast(pl.String, strict=False)
    elif target == pl.Int64:
        if src.is_integer():
            value = c.cast(pl.Int64, strict=False)
        elif src.is_float():
            value = pl.when(c.is_finite() & (c == c.floor())).then(c.cast(pl.Int64, strict=False))
        elif src == pl.String:
            value = c.str.strip_chars().str.to_integer(strict=False).cast(pl.Int64, strict=False)
        else:
            value = pl.lit(None, dtype=pl.Int64)
    elif isinstance(target, pl.Datetime):
        cast_reason = REASON_TS.format(col=col)
        if isinstance(src, pl.Datetime):
            value = (c.dt.convert_time_zone("UTC") if src.time_zone else c.dt.replace_time_zone("UTC")).cast(
                target
            )
        elif src == pl.Date:
            value = c.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
        elif src == pl.String:
            s = c.str.strip_chars()
            value = pl.coalesce(
                [s.str.to_datetime(f, strict=False, time_unit="us", time_zone="UTC") for f in _TS_FORMATS]
            )
        else:
            value = pl.lit(None, dtype=target)
    elif target == pl.Boolean:
        if src == pl.Boolean:
            value = c
        elif src.is_numeric():
            value = pl.when(c == 1).then(True).when(c == 0).then(False).otherwise(None)
        elif src == pl.String:
            s = c.str.strip_chars().str.to_lowercase()
            value = pl.when(s.is_in(_TRUE)).then(True).when(s.is_in(_FALSE)).then(False).otherwise(None)
        else:
            value = pl.lit(None, dtype=pl.Boolean)
    else:  # pragma: no cover - contract has no other target types
        value = c.cast(target, strict=False)
    value = value.cast(target, strict=False)
    reason = pl.when(c.is_not_null() & value.is_null()).then(pl.lit(cast_reason))
    return value.alias(col), reason


def _decode_binary(s: pl.Series, lossy: bool) -> tuple[pl.Series, pl.Series]:
    """Binary → String for one stored column; returns (strings, invalid_mask).

    Valid values are cast directly (fast); only the invalid ones go through the slower lossy
    hex path (or become null when ``lossy`` is false). Eager on purpose: a lazy
    ``when(valid).then(col).cast(String)`` gets the cast pushed into the branch and raises on
    the first invalid byte of the whole column.
    """
    valid = pl.select(utf8_valid(pl.lit(s)) | pl.lit(s).is_null()).to_series()
    out = pl.Series(s.name, [None] * s.len(), dtype=pl.String)
    if valid.any():
        out = out.scatter(valid.arg_true(), s.filter(valid).cast(pl.String))
    invalid = ~valid
    if lossy and invalid.any():
        fixed = pl.select(utf8_lossy(pl.lit(s.filter(invalid)))).to_series()
        out = out.scatter(invalid.arg_true(), fixed)
    return out, invalid


REPAIRED_COL = "__repaired"  # per-row flag of normalize(keep_repaired=True): text had invalid UTF-8


def normalize(
    df: pl.DataFrame, dtypes: dict[str, pl.DataType], required: Iterable[str], source_file: str,
    keep_repaired: bool = False,
) -> tuple[pl.DataFrame, int]:
    """Cast the stored columns to contract dtypes; attach per-row cast/null reasons.

    Returns the frame (contract columns, source_file, __row, __reason) and the number of
    repaired rows (invalid UTF-8 in text). ``keep_repaired``: the frame keeps the per-row flag
    (``REPAIRED_COL``, last), for a caller that counts repairs per day of a file's rows.
    """
    values, reasons, repairs = [], [], []
    decoded = {}
    for col, target in dtypes.items():
        if col in df.columns and target == pl.String and df.schema[col] == pl.Binary:
            strings, invalid = _decode_binary(df[col], lossy=(col == "text"))
            decoded[col] = strings
            flag = f"__utf8_invalid_{col}"
            decoded[flag] = invalid.alias(flag)
            if col == "text":
                repairs.append(pl.col(flag))
            else:
                reasons.append(pl.when(pl.col(flag)).then(pl.lit(REASON_UTF8.format(col=col))))
    if decoded:
        df = df.with_columns(list(decoded.values()))
    for col, target in dtypes.items():
        if col not in df.columns:
            values.append(pl.lit(None, dtype=target).alias(col))
            if col in required:  # cannot happen: raw_files.read_file raises first
                reasons.append(pl.lit(REASON_NULL.format(col=col)))
            continue
        value, reason = _cast_expr(col, df.schema[col], target)
        values.append(value)
        if col in required:
            is_null = pl.col(col).is_null()
            if f"__utf8_invalid_{col}" in df.columns:  # null because undecodable, not missing
                is_null = is_null & ~pl.col(f"__utf8_invalid_{col}")
            reasons.append(pl.when(is_null).then(pl.lit(REASON_NULL.format(col=col))))
        if reason is not None:
            reasons.append(reason)
    reason_expr = pl.concat_str(reasons, separator="; ", ignore_nulls=True) if reasons else pl.lit("")
    out = df.select(
        *values,
        pl.lit(source_file).alias("source_file"),
        pl.int_range(pl.len(), dtype=pl.Int64).alias(ROW_COL),
        pl.when(reason_expr != "").then(reason_expr).alias(REASON_COL),
        (pl.any_horizontal(repairs) if repairs else pl.lit(False)).alias(REPAIRED_COL),
    )
    n_repaired = int(out[REPAIRED_COL].sum())
    return (out if keep_repaired else out.drop(REPAIRED_COL)), n_repaired


def add_reason(current: pl.Expr, cond: pl.Expr, reason: str | pl.Expr) -> pl.Expr:
    """Append ``reason`` (a string, or a String expression for a per-row text) where ``cond`` holds."""
    new = pl.when(cond.fill_null(False)).then(reason if isinstance(reason, pl.Expr) else pl.lit(reason))
    return pl.when(current.is_null()).then(new).otherwise(
        pl.when(new.is_null()).then(current).otherwise(current + pl.lit("; ") + new)
    )


def add_reasons(current: pl.Expr, rules: list[tuple[pl.Expr, str | pl.Expr]]) -> pl.Expr:
    """``add_reason`` applied for each ``(cond, reason)`` in turn, as one flat expression.

    Nesting ``add_reason`` repeats the inner expression in both branches at every level (2^k
    copies for k rules); this joins the reasons that hold with one ``concat_str`` instead, same
    text, same order, null when none holds."""
    parts = [current] + [
        pl.when(cond.fill_null(False)).then(reason if isinstance(reason, pl.Expr) else pl.lit(reason))
        for cond, reason in rules
    ]
    joined = pl.concat_str(parts, separator="; ", ignore_nulls=True)
    return pl.when(joined.str.len_bytes() == 0).then(pl.lit(None, pl.String)).otherwise(joined)
