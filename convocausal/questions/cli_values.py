"""Command-line values for one method run: comma lists, and text parsed to a column's type."""

from __future__ import annotations

import pandas as pd


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
                out.append(v.lower() in ("1", "true", "yes"))
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
            raise ValueTypeError(f"value {v!r} does not match the type of column {series.name!r}") from exc
    return out
