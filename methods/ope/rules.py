"""A candidate policy as data: ordered rules, the first that matches wins, evaluated with numpy masks.

The policy is the plain form ``{"rules": [{"when": {col: {op: value}}, "action": a}], "default": d}``
(``configs/policy.py`` parses and validates a file into it). Operators ``gt ge lt le`` compare
numbers, ``eq`` a number or text, ``in`` a list; conditions in one ``when`` (and several operators
on one column) are joined by AND. A missing value satisfies no condition. Nothing is evaluated as
code.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from methods.result import MethodRefusal

ORDER_OPS = {"gt": np.greater, "ge": np.greater_equal, "lt": np.less, "le": np.less_equal}
OPS = (*ORDER_OPS, "eq", "in")


def _condition(col: pd.Series, name: str, op: str, value) -> np.ndarray:
    present = col.notna().to_numpy()
    if op in ORDER_OPS:
        num = pd.to_numeric(col, errors="coerce")
        if num.notna().sum() < col.notna().sum():
            raise MethodRefusal(f"policy: `{name}` {op} {value}: the column holds text; `{op}` compares numbers")
        return present & ORDER_OPS[op](num.to_numpy(dtype=float, na_value=np.nan), float(value))
    values = value if op == "in" else [value]
    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        nums = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        return present & np.isin(col.to_numpy(dtype=float, na_value=np.nan), nums)
    text = col.astype(str).to_numpy()
    wanted = [str(v).lower() if isinstance(v, bool) else str(v) for v in values]
    if pd.api.types.is_bool_dtype(col):
        text = np.char.lower(text.astype(str))
    return present & np.isin(text, wanted)


def choose_actions(df: pd.DataFrame, policy: dict) -> np.ndarray:
    """The candidate's action label (text) for every row of ``df``."""
    rules = policy.get("rules") or []
    n = len(df)
    out = np.full(n, str(policy["default"]), dtype=object)
    undecided = np.ones(n, dtype=bool)
    for i, rule in enumerate(rules):
        mask = np.ones(n, dtype=bool)
        for name, cond in rule["when"].items():
            if name not in df.columns:
                raise MethodRefusal(f"policy rule {i + 1}: no column `{name}` in the data; "
                                    f"available: {', '.join(map(str, df.columns))}")
            for op, value in cond.items():
                if op not in OPS:
                    raise MethodRefusal(f"policy rule {i + 1}: unknown operator `{op}` (known: {', '.join(OPS)})")
                mask &= _condition(df[name], name, op, value)
        hit = undecided & mask
        out[hit] = str(rule["action"])
        undecided &= ~mask
    return out
