"""Command-line values for one method run: comma lists, and text parsed to a column's type.

A value that does not parse is a user error (``ValueTypeError``, exit 2): its message names the
value, the column and its type, and gives an example of a value that would parse, taken from
the column itself, so the user sees the expected spelling rather than a Python exception.
"""

from __future__ import annotations

import pandas as pd

_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no")


class ValueTypeError(ValueError):
    """A command-line value that does not parse as the type of the column it is compared with."""


def split_list(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def coerce_like(series: pd.Series, values: list[str]) -> list:
    """Parse command-line values to the dtype of the column they are compared with."""
    out = []
    for v in values:
        try:
            if pd.api.types.is_bool_dtype(series):
                if v.lower() not in _TRUE + _FALSE:
                    raise ValueError(v)
                out.append(v.lower() in _TRUE)
            elif pd.api.types.is_integer_dtype(series):
                out.append(int(v))
            elif pd.api.types.is_float_dtype(series):
                out.append(float(v))
            elif pd.api.types.is_datetime64_any_dtype(series):
                ts = pd.Timestamp(v)
                tz = getattr(series.dt, "tz", None)
                out.append(ts.tz_localize(tz) if tz is not None and ts.tzinfo is None else ts)
            elif len(series) and hasattr(series.iloc[0], "isoformat") and not isinstance(series.iloc[0], str):
                out.append(pd.Timestamp(v).date())
            else:
                out.append(v)
        except ValueError as exc:
            raise ValueTypeError(f"value {v!r} does not match the type of column {series.name!r} "
                                 f"({_kind(series)}){_example(series)}") from exc
    return out


def _kind(series: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(series):
        return "true/false"
    if pd.api.types.is_integer_dtype(series):
        return "whole numbers"
    if pd.api.types.is_float_dtype(series):
        return "numbers"
    if pd.api.types.is_datetime64_any_dtype(series):
        return "timestamps"
    return "dates" if len(series) and hasattr(series.iloc[0], "isoformat") else "text"


def _example(series: pd.Series) -> str:
    first = series.dropna()
    if not len(first):
        return ""
    value = first.iloc[0]
    text = value.isoformat() if hasattr(value, "isoformat") else str(value)
    return f"; give a value like {text[:40]!r}"
