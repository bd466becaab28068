"""The ``convocausal`` command line (CONTRACT §3).

Exit status: 0 when the run finished (checks may have failed; they are reported), 2 for a
usage or input error with one line naming what to fix, 1 for an internal failure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
import warnings
from pathlib import Path


class UsageError(Exception):
    """Bad arguments or bad input: exit 2 with a one-line message."""


def main(argv: list[str] | None = None) -> int:
    # Dagster flags the backfill policy API as beta on every import; it is noise for a user.
    warnings.filterwarnings("ignore", message=".*is currently in beta.*")
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        print(f"convocausal: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - classify known input errors, else internal
        if _is_input_error(exc):
            print(f"convocausal: error: {str(exc).splitlines()[0]}", file=sys.stderr)
            return 2
        traceback.print_exc()
        print(f"convocausal: internal error: {exc}", file=sys.stderr)
        return 1


def _is_input_error(exc: Exception) -> bool:
    from configs.questions import ConfigError
    from methods.result import MethodRefusal

    names = {type(e).__name__ for e in _chain(exc)}
    return isinstance(exc, (ConfigError, MethodRefusal, FileNotFoundError)) or bool(
        names & {"RawInputError", "ConfigError", "SignalsConfigError", "ColumnError", "MethodRefusal",
                 "FileSettingError"}
    )


def _chain(exc: BaseException):
    while exc is not None:
        yield exc
        exc = exc.__cause__


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="convocausal", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    f = sub.add_parser("fixtures", help="write a synthetic landing directory with known true effects")
    f.add_argument("--out", required=True, type=Path)
    f.add_argument("--conversations", type=int, default=50_000)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--variant", choices=["standard", "null", "diverging"], default="standard")
    f.set_defaults(func=_cmd_fixtures)

    r = sub.add_parser("run", help="materialize the whole Dagster asset graph in-process")
    r.add_argument("--raw", required=True, type=Path)
    r.add_argument("--store", type=Path, default=Path("convocausal.duckdb"))
    r.add_argument("--signals", type=Path, default=None, help="signals config (default configs/signals.yaml)")
    r.add_argument("--questions", type=Path, default=None, help="questions config (default configs/questions.yaml)")
    r.add_argument("--truth", type=Path, default=None, help="truth.json to print beside the estimates")
    r.add_argument("--json", action="store_true")
    r.add_argument("--on-unreadable", choices=["stop", "quarantine"], default="stop",
                   help="a transcript file that is not readable parquet: stop the run (default), or "
                        "quarantine it with a warning and estimate from the readable files")
    r.set_defaults(func=_cmd_run)

    e = sub.add_parser("estimate", help="run one method on any table")
    esub = e.add_subparsers(dest="method", required=True)
    for name in ("psm", "sc", "did"):
        m = esub.add_parser(name)
        m.add_argument("--data", required=True, type=Path)
        m.add_argument("--json", action="store_true")
        m.add_argument("--seed", type=int, default=0)
        m.set_defaults(func=_cmd_estimate)
    psm = esub.choices["psm"]
    psm.add_argument("--treatment", required=True)
    psm.add_argument("--outcome", required=True)
    psm.add_argument("--covariates", required=True)
    psm.add_argument("--estimand", choices=["ATT", "ATE"], default="ATT")
    sc = esub.choices["sc"]
    sc.add_argument("--unit", required=True)
    sc.add_argument("--time", required=True)
    sc.add_argument("--outcome", required=True)
    sc.add_argument("--treated", required=True, help="treated unit(s), comma-separated")
    sc.add_argument("--launch", required=True)
    sc.add_argument("--weight", default=None, help="optional volume column")
    did = esub.choices["did"]
    did.add_argument("--outcome", required=True)
    did.add_argument("--treated", required=True)
    did.add_argument("--post", default=None)
    did.add_argument("--time", default=None)
    did.add_argument("--launch", default=None)
    did.add_argument("--fixed-effects", default="")
    did.add_argument("--cluster", default=None)
    return p


def _cmd_fixtures(args) -> int:
    from data_fixtures.generator import generate

    if args.conversations < 100:
        raise UsageError("--conversations must be at least 100")
    generate(args.out, n_conversations=args.conversations, seed=args.seed, variant=args.variant)
    truth = json.loads((Path(args.out) / "truth.json").read_text())
    print(f"wrote {args.out} ({args.conversations} conversations, seed {args.seed}, variant {args.variant})")
    for qid, effect in truth.items():
        print(f"  true effect {qid}: {effect:+.4f}")
    return 0


def _cmd_run(args) -> int:
    from convocausal.report import format_run_table
    from convocausal.runner import run_pipeline
    from convocausal.store import unreadable_files

    if not args.raw.is_dir():
        raise UsageError(f"--raw {args.raw}: not a directory")
    # Paths typed at the shell are the user's own: made absolute here (so `--raw ../exports`
    # works), then checked like every file setting (allowed roots, suffixes, sizes).
    for name in ("raw", "store", "signals", "questions", "truth"):
        if getattr(args, name) is not None:
            setattr(args, name, Path(os.path.abspath(getattr(args, name))))
    rows = run_pipeline(args.raw, args.store, signals_config=args.signals, questions_config=args.questions,
                        truth_file=args.truth, on_unreadable=args.on_unreadable)
    for path, reason in unreadable_files(args.store):
        print(f"convocausal: warning: {path}: {reason} (quarantined; its rows are not in the estimates)",
              file=sys.stderr)
    truth_path = args.truth or (args.raw / "truth.json")
    truth = json.loads(truth_path.read_text()) if truth_path.is_file() else {}
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    else:
        print(format_run_table(rows, truth))
    return 0


def _cmd_estimate(args) -> int:
    df = _read_table(args.data)
    _require_columns(df, args)
    if args.method == "psm":
        from methods.psm import estimate_psm

        result = estimate_psm(
            df, treatment=args.treatment, outcome=args.outcome,
            covariates=_split(args.covariates), estimand=args.estimand, seed=args.seed,
        )
    elif args.method == "sc":
        from methods.synthetic_control import estimate_sc

        treated = _coerce_like(df[args.unit], _split(args.treated))
        launch = _coerce_like(df[args.time], [args.launch])[0]
        result = estimate_sc(df, unit=args.unit, time=args.time, outcome=args.outcome,
                             treated_units=treated, launch=launch, weight=args.weight)
    else:
        if not args.post and not (args.time and args.launch is not None):
            raise UsageError("did needs --post COL, or --time COL with --launch VALUE")
        from methods.did import estimate_did

        launch = _coerce_like(df[args.time], [args.launch])[0] if args.time and args.launch is not None else None
        result = estimate_did(df, outcome=args.outcome, treated=args.treated, post=args.post, time=args.time,
                              launch=launch, fixed_effects=_split(args.fixed_effects), cluster=args.cluster,
                              seed=args.seed)
    if args.json:
        print(json.dumps(result.to_json(), indent=2, default=str))
    else:
        from convocausal.report import format_result

        print(format_result(result))
    return 0


def _read_table(path: Path):
    import pandas as pd

    if not path.exists():
        raise UsageError(f"--data {path}: file not found")
    try:
        if path.suffix.lower() == ".parquet":
            return pd.read_parquet(path)
        if path.suffix.lower() == ".csv":
            return pd.read_csv(path)
    except Exception as exc:
        raise UsageError(f"--data {path}: cannot read it ({type(exc).__name__}: {exc})") from exc
    raise UsageError(f"--data {path}: expected a .parquet or .csv file")


def _require_columns(df, args) -> None:
    names = []
    for attr in ("treatment", "outcome", "unit", "time", "post", "cluster", "weight"):
        if getattr(args, attr, None):
            names.append(getattr(args, attr))
    if args.method == "did":
        names.append(args.treated)
    for attr in ("covariates", "fixed_effects"):
        names.extend(_split(getattr(args, attr, "") or ""))
    missing = [n for n in names if n not in df.columns]
    if missing:
        raise UsageError(
            f"--data {args.data}: no column {', '.join(missing)}; available: {', '.join(map(str, df.columns))}"
        )


def _split(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _coerce_like(series, values: list[str]) -> list:
    """Parse command-line values to the dtype of the column they are compared with."""
    import pandas as pd

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
            raise UsageError(f"value {v!r} does not match the type of column {series.name!r}") from exc
    return out


if __name__ == "__main__":
    sys.exit(main())
