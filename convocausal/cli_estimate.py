"""``convocausal estimate <method>``: one method on any table, with its columns checked first.

Why the columns are checked here and not left to the method: the methods (``methods/``) are
numerics that assume well-typed input and say so with a ``ValueError`` deep in pandas or
DuckDB ("could not convert string to float"), which is a traceback to a user who only picked
the wrong column. Every column an option names is checked against ``--data`` before the method
runs, and each problem is one line naming the file, the option, the column (the CSV line of a
bad value when there is one) and what to do.

What each option must hold is read from the option's name, the same for every method in the
registry (``convocausal/questions/registry.py``): a treatment or group indicator (``--treatment``,
``--post``, and ``--treated`` when the entry lists it among its column arguments) must be 0/1 or
true/false; ``--outcome`` and ``--weight`` must be numeric or true/false; a unit-by-period panel
(an entry with ``--unit`` and ``--time`` columns) needs one row per pair and its ``--treated``
values must be units of ``--unit``. A new method whose options use these names gets the checks
without code here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from convocausal.cli_common import UsageError, common_options
from convocausal.questions.cli_values import ValueTypeError, coerce_like, split_list

INDICATOR_ARGS = ("treatment", "post", "treated")
NUMERIC_ARGS = ("outcome", "weight")
CATEGORY_ARGS = ("covariates",)  # matched on as numbers or, for text, as categories
MAX_LEVELS = 1000  # distinct text values a covariate may have before it is an id, not a category
SHOWN_VALUES = 6

# Help for the method options whose registry entry gives none: a user reads `--help` before the code.
_OPTION_HELP = {
    "treatment": "0/1 (or true/false) column: 1 = the row got the treatment",
    "outcome": "numeric or true/false column whose difference is estimated",
    "covariates": "comma-separated columns known before the treatment, e.g. intent,channel,hour_of_day "
                  "(text columns are used as categories)",
    "estimand": "ATT: the effect on the treated (default); ATE: the effect on everyone",
    "unit": "column naming each row's unit (cohort), e.g. channel",
    "time": "period column (date, week or number); with did, give it with --launch instead of --post",
    "treated": "0/1 (or true/false) column: 1 = the rows of the group the change reached",
    "post": "0/1 (or true/false) column: 1 = the rows after the launch (or give --time and --launch)",
    "launch": "first period with the change, written as the --time column's values are, e.g. 2026-03-30",
    "fixed_effects": "comma-separated columns absorbed as fixed effects, e.g. intent,hour_of_day",
    "cluster": "column to cluster standard errors by, e.g. skill (few clusters get placebo inference)",
    "weight": "optional numeric column weighting each unit-period (e.g. its conversation count)",
}

_OPTION_METAVAR = {"treatment": "COL", "outcome": "COL", "covariates": "COL,COL…", "unit": "COL", "time": "COL",
                   "treated": "COL|UNIT,…", "post": "COL", "launch": "VALUE", "fixed_effects": "COL,COL…",
                   "cluster": "COL", "weight": "COL"}


def add_estimate_parser(sub) -> None:
    """One ``estimate`` subcommand per registry entry, its options from the entry."""
    from convocausal.questions.registry import REGISTRY

    e = sub.add_parser("estimate", help="run one method on any table (outside the conversation pipeline)",
                       description="Run one method on a .parquet or .csv table and print its estimate, "
                                   "checks and refutations (CONTRACT §3 in docs/CONTRACT.md).")
    esub = e.add_subparsers(dest="method", required=True, metavar="METHOD")
    for spec in REGISTRY.values():
        m = esub.add_parser(spec.cli_name, help=spec.cli_help, description=spec.cli_help,
                            parents=[common_options()], aliases=list(spec.cli_aliases))
        m.add_argument("--data", required=True, type=Path, metavar="FILE",
                       help="the table: .parquet or .csv with a header row")
        m.add_argument("--json", action="store_true",
                       help="print JSON: estimate, interval, p-value, refutations, balance, diagnostics, checks")
        m.add_argument("--seed", type=int, default=0, help="random seed of bootstraps and placebos (default 0)")
        spec.add_cli_arguments(m)
        if "unit" not in spec.cli_column_args:  # row-level tables: one row per conversation (not a panel)
            m.add_argument("--segments", default=None, metavar="COL",
                           help="also estimate the effect within each level of COL (a column known before the "
                                "treatment), with Cochran's Q over the levels (`segments` in the JSON)")
        for action in m._actions:
            if not action.help and action.dest in _OPTION_HELP:
                action.help = _OPTION_HELP[action.dest]
            if action.metavar is None and action.option_strings and action.dest in _OPTION_METAVAR:
                action.metavar = _OPTION_METAVAR[action.dest]
        m.set_defaults(func=cmd_estimate, method_spec=spec.name,
                       required_args=tuple(a.dest for a in m._actions if a.required))


def cmd_estimate(args) -> int:
    from checks.verdict import states
    from convocausal.questions.answer import result_checks
    from convocausal.questions.registry import REGISTRY

    df = read_table(args.data)
    check_columns(df, args, REGISTRY[args.method_spec].cli_column_args)
    result = REGISTRY[args.method_spec].estimate_from_args(df, args)
    checks = result_checks(result)
    segments = segment_estimates(df, args) if getattr(args, "segments", None) else None
    if args.json:
        out = result.to_json()
        out["checks"] = states(checks)
        if segments is not None:
            out["segments"] = segments
        print(json.dumps(out, indent=2, default=str))
    else:
        from convocausal.report import format_result

        treatment = getattr(args, "treatment", None) or getattr(args, "treated", None) or getattr(args, "assignment", None)
        print(format_result(result, checks, treatment=treatment))
        if segments is not None:
            print(_segments_text(segments))
    return 0


def segment_estimates(df: pd.DataFrame, args: argparse.Namespace) -> dict:
    """``--segments COL``: the method within each level of COL (a level with fewer than
    ``MIN_SEGMENT_ARM`` rows in either group is refused with the reason), then Cochran's Q and I²."""
    from convocausal.questions.outcomes import MIN_SEGMENT_ARM
    from convocausal.questions.registry import REGISTRY
    from methods.heterogeneity import cochran_q
    from methods.result import MethodRefusal

    col = args.segments
    if col not in df.columns:
        raise UsageError(f"--data {args.data}: --segments {col}: no such column; available: "
                         f"{', '.join(map(str, df.columns))}")
    arm_col = next((getattr(args, a) for a in ("treatment", "treated", "assignment", "instrument")
                    if getattr(args, a, None) in df.columns), None)
    sub_args = argparse.Namespace(**vars(args))
    for attr in ("covariates", "fixed_effects"):  # constant within a level
        if getattr(args, attr, None):
            setattr(sub_args, attr, ",".join(c for c in split_list(getattr(args, attr)) if c != col))
    spec = REGISTRY[args.method_spec]
    rows = []
    for level, part in df.groupby(col, dropna=False, sort=True):
        level = None if pd.isna(level) else level
        if arm_col is not None:  # 0/1 (or true/false): 0 is the control; arm names: the most frequent arm
            vals = part[arm_col].dropna()
            num = pd.to_numeric(vals.map(lambda v: int(v) if isinstance(v, bool) else v), errors="coerce")
            n_c = int((num == 0).sum()) if num.notna().all() else int(vals.value_counts().iloc[0]) if len(vals) else 0
            n_t = len(vals) - n_c
        else:
            n_t = n_c = len(part)
        row = {"level": level, "n_treated": n_t, "n_control": n_c, "status": "ok"}
        if n_t < MIN_SEGMENT_ARM or n_c < MIN_SEGMENT_ARM:
            row.update(status="refused", message=f"too small: {n_t:,} treated and {n_c:,} control rows "
                                                 f"(at least {MIN_SEGMENT_ARM} of each needed)")
        else:
            try:
                r = spec.estimate_from_args(part.reset_index(drop=True), sub_args)
                row.update({k: getattr(r, k) for k in ("estimate", "std_error", "ci_low", "ci_high", "p_value")})
            except (MethodRefusal, ValueError) as exc:
                row.update(status="refused", message=str(exc))
        rows.append(row)
    ok = [r for r in rows if r["status"] == "ok" and r.get("std_error") and r["std_error"] > 0]
    out = {"column": col, "rows": rows, "heterogeneity": None}
    if len(ok) >= 2:
        h = cochran_q([r["estimate"] for r in ok], [r["std_error"] for r in ok])
        out["heterogeneity"] = {"cochran_q": h.q, "df": h.df, "p_value": h.p_value, "i2": h.i2,
                                "pooled": h.pooled, "pooled_se": h.pooled_se}
    return out


def _segments_text(seg: dict) -> str:
    lines = [f"Segments by {seg['column']}:"]
    for r in seg["rows"]:
        if r["status"] == "ok":
            lines.append(f"  {r['level']!s:<20} {r['estimate']:+.4f}  [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]  "
                         f"n = {r['n_treated']:,} / {r['n_control']:,}")
        else:
            lines.append(f"  {r['level']!s:<20} refused: {r['message']}")
    h = seg["heterogeneity"]
    if h:
        lines.append(f"  Cochran's Q = {h['cochran_q']:.3f} on {h['df']} df, p = {h['p_value']:.3g}, "
                     f"I² = {100 * h['i2']:.0f}%")
    return "\n".join(lines)


def read_table(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise UsageError(f"--data {path}: file not found")
    if path.suffix.lower() not in (".parquet", ".csv"):
        raise UsageError(f"--data {path}: expected a .parquet or .csv file")
    try:
        if path.suffix.lower() == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except Exception as exc:  # any reader failure is the file's, said in one line
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"--data {path}: cannot read it as {path.suffix.lower()[1:]} ({reason})") from exc


def check_columns(df: pd.DataFrame, args: argparse.Namespace, column_args: tuple[str, ...]) -> None:
    """Every option naming columns names existing ones of the right kind (module doc); else UsageError."""
    where = f"--data {args.data}"
    named: dict[str, list[str]] = {}
    for attr in column_args:
        value = getattr(args, attr, None)
        if value is None:
            continue
        names = split_list(value)
        if not names and attr in getattr(args, "required_args", ()):
            raise UsageError(f"{_opt(attr)}: give at least one column name of --data, e.g. {_opt(attr)} A,B")
        named[attr] = names
    missing = [n for names in named.values() for n in names if n not in df.columns]
    if missing:
        raise UsageError(f"{where}: no column {', '.join(missing)}; available: {', '.join(map(str, df.columns))}")
    for attr, names in named.items():
        for col in names:
            if attr in INDICATOR_ARGS:
                _check_indicator(df, where, attr, col)
            elif attr in NUMERIC_ARGS:
                _check_numeric(df, where, attr, col, args.data)
            elif attr in CATEGORY_ARGS:
                _check_category(df, where, attr, col)
    if "unit" in named and "time" in named:
        _check_panel(df, where, args, column_args)
    if getattr(args, "launch", None) is not None and getattr(args, "time", None) in df.columns:
        try:
            coerce_like(df[args.time], [args.launch])
        except ValueTypeError as exc:
            raise UsageError(f"{where}: --launch {args.launch}: {exc}") from exc


def _opt(attr: str) -> str:
    return "--" + attr.replace("_", "-")


def _values(series: pd.Series) -> str:
    uniq = pd.Series(series.dropna().unique())
    try:
        uniq = uniq.sort_values()
    except TypeError:
        pass
    shown = ", ".join(_show(v) for v in uniq.iloc[:SHOWN_VALUES])
    return shown + (f", … ({len(uniq)} distinct)" if len(uniq) > SHOWN_VALUES else "")


def _show(v) -> str:
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    text = str(v)
    return text if len(text) <= 30 else text[:29] + "…"


def _check_indicator(df: pd.DataFrame, where: str, attr: str, col: str) -> None:
    s = df[col]
    if s.notna().sum() == 0:
        raise UsageError(f"{where}: {_opt(attr)} {col}: the column has no values")
    if pd.api.types.is_bool_dtype(s):
        return
    if not pd.api.types.is_numeric_dtype(s):
        raise UsageError(
            f"{where}: {_opt(attr)} {col}: a text column (values {_values(s)}); {_opt(attr)} must be 0/1 "
            f"(or true/false): add a column that is 1 for the treated value (e.g. {col} == "
            f"{_show(s.dropna().iloc[0])!r}) and 0 otherwise")
    bad = sorted(set(pd.unique(s.dropna())) - {0, 1})
    if bad:
        raise UsageError(
            f"{where}: {_opt(attr)} {col}: must be 0/1 (or true/false), found values {_values(s)}; "
            f"pick a binary column or recode it (e.g. 1 where {col} >= {_show(bad[len(bad) // 2])}, else 0)")


def _check_numeric(df: pd.DataFrame, where: str, attr: str, col: str, path: Path) -> None:
    s = df[col]
    if s.notna().sum() == 0:
        raise UsageError(f"{where}: {_opt(attr)} {col}: the column has no values")
    if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
        return
    parsed = pd.to_numeric(s, errors="coerce")
    bad = s.notna() & parsed.isna()
    if parsed.notna().sum() > bad.sum():  # mostly numbers: point at the first value that is not one
        i = int(bad.to_numpy().argmax())
        at = f"line {i + 2}" if path.suffix.lower() == ".csv" else f"row {i}"  # line 1 is the header
        raise UsageError(f"{where}: {at}, column {col}: {_show(s.iloc[i])!r} is not a number; {_opt(attr)} "
                         "must be numeric or true/false: fix or remove that row")
    raise UsageError(
        f"{where}: {_opt(attr)} {col}: a text column (values {_values(s)}); {_opt(attr)} must be numeric or "
        "true/false: pick another column, or add a 0/1 column for the value you care about")


def _check_category(df: pd.DataFrame, where: str, attr: str, col: str) -> None:
    """A covariate is a number or a category; a timestamp or an id-like text column is neither."""
    s = df[col]
    if pd.api.types.is_datetime64_any_dtype(s):
        raise UsageError(f"{where}: {_opt(attr)} {col}: a timestamp column; adjust for a coarser signal known at "
                         "the start instead (e.g. hour_of_day, day_of_week, week)")
    if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
        return
    try:
        levels = int(s.nunique(dropna=True))
    except TypeError:  # list or dict cells: not hashable, not a category
        raise UsageError(f"{where}: {_opt(attr)} {col}: holds lists or mappings, not one value per row; "
                         "add a 0/1 or text column derived from it") from None
    if levels > MAX_LEVELS or (levels > 50 and levels > 0.5 * s.notna().sum()):
        raise UsageError(f"{where}: {_opt(attr)} {col}: {levels:,} distinct text values in {len(s):,} rows, an id "
                         "rather than a category; drop it or group it into a few levels")


def _check_panel(df: pd.DataFrame, where: str, args, column_args: tuple[str, ...]) -> None:
    dup = df.duplicated(subset=[args.unit, args.time], keep=False)
    if dup.any():
        first = df.loc[dup].iloc[0]
        raise UsageError(
            f"{where}: {int(dup.sum()):,} rows share a (--unit {args.unit}, --time {args.time}) pair, e.g. "
            f"({_show(first[args.unit])}, {_show(first[args.time])}); the panel needs one row per unit and "
            "period: aggregate first (e.g. the mean outcome per unit and period)")
    if "treated" not in column_args and getattr(args, "treated", None):  # --treated names units
        try:
            wanted = coerce_like(df[args.unit], split_list(args.treated))
        except ValueTypeError as exc:
            raise UsageError(f"{where}: --treated {args.treated}: {exc}") from exc
        known = set(pd.unique(df[args.unit].dropna()))
        absent = [str(v) for v in wanted if v not in known]
        if absent:
            raise UsageError(f"{where}: --treated {', '.join(absent)}: no such unit in --unit {args.unit} "
                             f"(units: {_values(df[args.unit])})")
