"""The ``convocausal`` command line (docs/CONTRACT.md §3).

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
    warnings.filterwarnings("ignore", message=".*is currently in (beta|preview).*")
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
    from convocausal.questions.cli_values import ValueTypeError
    from methods.result import MethodRefusal

    names = {type(e).__name__ for e in _chain(exc)}
    return isinstance(exc, (ConfigError, MethodRefusal, FileNotFoundError, ValueTypeError)) or bool(
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

    from convocausal.questions.registry import REGISTRY

    e = sub.add_parser("estimate", help="run one method on any table")
    esub = e.add_subparsers(dest="method", required=True)
    for spec in REGISTRY.values():  # one subcommand per registered method, its arguments from its entry
        m = esub.add_parser(spec.cli_name, help=spec.cli_help)
        m.add_argument("--data", required=True, type=Path)
        m.add_argument("--json", action="store_true")
        m.add_argument("--seed", type=int, default=0)
        spec.add_cli_arguments(m)
        m.set_defaults(func=_cmd_estimate, method_spec=spec.name)
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
    from convocausal.store import unreadable_files
    from pipelines.runner import run_pipeline

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
    from checks.verdict import states
    from convocausal.questions.answer import result_checks
    from convocausal.questions.registry import REGISTRY

    df = _read_table(args.data)
    _require_columns(df, args)
    result = REGISTRY[args.method_spec].estimate_from_args(df, args)
    checks = result_checks(result)
    if args.json:
        out = result.to_json()
        out["checks"] = states(checks)
        print(json.dumps(out, indent=2, default=str))
    else:
        from convocausal.report import format_result

        print(format_result(result))
        print("  checks: " + ", ".join(f"{c.name} {c.state}" for c in checks if c.state != "not_applicable"))
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
    """Every argument the method's registry entry marks as naming columns must name one."""
    from convocausal.questions.registry import REGISTRY

    names = []
    for attr in REGISTRY[args.method_spec].cli_column_args:
        names.extend(_split(getattr(args, attr, None) or ""))  # a single name or a comma list
    missing = [n for n in names if n not in df.columns]
    if missing:
        raise UsageError(
            f"--data {args.data}: no column {', '.join(missing)}; available: {', '.join(map(str, df.columns))}"
        )


def _split(text: str) -> list[str]:
    from convocausal.questions.cli_values import split_list

    return split_list(text)


if __name__ == "__main__":
    sys.exit(main())
