"""The ``convocausal`` command line: the entry point above every layer (docs/CLI.md, docs/CONTRACT.md §3).

Exit status: 0 when the command finished (a run's checks may have failed; they are reported),
2 for a usage or input error with one line naming what to fix, 3 for ``run --fail-on-blocking``
when a blocking check failed, 1 for an internal failure (with its traceback).

Why errors are one line: a user who typed a wrong column, a YAML typo or a corrupt export needs
the file, the spot and the fix, not the stack of the library that noticed; ``--verbose`` prints
the traceback too. Why the subcommands live in ``cli_*`` modules: each is a page of its own
(``cli_init``, ``cli_estimate``, ``cli_questions``), and they sit in the ``convocausal`` layer
without Dagster; only ``run`` (here) reaches the Dagster runner.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import time
import traceback
import warnings
from contextlib import contextmanager
from pathlib import Path

from convocausal.cli_common import DOCS, UsageError, common_options, store_option

__all__ = ["UsageError", "main", "package_version"]

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_BLOCKING = 0, 1, 2, 3
# Exceptions (by class name, anywhere in the cause chain) that mean "your input", not "our bug".
INPUT_ERRORS = frozenset({"RawInputError", "ConfigError", "SignalsConfigError", "YamlConfigError", "ColumnError",
                          "MethodRefusal", "FileSettingError", "ValueTypeError", "UsageError", "StoreError",
                          "StoreInUseError", "DefaultSaltError", "PartsUrlError"})
# The machine, not the user's input and not a bug: said in one line with what to do (exit 2).
ENVIRONMENT_ERRNOS = {errno.ENOSPC: "no space left on the device", errno.EROFS: "read-only file system",
                      errno.EACCES: "permission denied", errno.EDQUOT: "disk quota exceeded"}
ENVIRONMENT_MARKERS = {"No space left on device": errno.ENOSPC, "Read-only file system": errno.EROFS,
                       "Permission denied": errno.EACCES, "Disk quota exceeded": errno.EDQUOT}


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    verbose = bool(getattr(args, "verbose", False))
    try:
        with _library_warnings(verbose):
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("convocausal: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - classify: input errors are one line, the rest internal
        env = environment_error(exc)
        if env is not None:
            if verbose:
                traceback.print_exception(exc)
            print(f"convocausal: error: {env}", file=sys.stderr)
            return EXIT_USAGE
        if isinstance(exc, UsageError) or _is_input_error(exc):
            if verbose:
                traceback.print_exception(exc)
            print(f"convocausal: error: {_one_line(exc)}", file=sys.stderr)
            return EXIT_USAGE
        traceback.print_exception(exc)
        if getattr(exc, "detail", ""):
            print(exc.detail, file=sys.stderr)
        print(f"convocausal: internal error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_INTERNAL


@contextmanager
def _library_warnings(verbose: bool):
    """Library warnings (Dagster's beta notices, pandas/statsmodels deprecations) are for developers:
    hidden unless ``--verbose``, and restored afterwards (``main`` also runs inside test processes)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore" if not verbose else "default")
        warnings.filterwarnings("ignore", message=".*is currently in (beta|preview).*")
        yield


def _one_line(exc: BaseException) -> str:
    """The first line of the input error's own message where the chain holds one (a lease refused
    inside Dagster's resource setup arrives wrapped in "Error executing resource_fn …")."""
    cur: BaseException | None = exc
    while cur is not None:
        if type(cur).__name__ in INPUT_ERRORS and str(cur).strip():
            exc = cur
            break
        cur = cur.__cause__
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def environment_error(exc: BaseException) -> str | None:
    """One line for a full disk, a read-only file system, a permission or quota error, found
    anywhere in the chain (``__cause__`` and ``__context__``) or in a Dagster step's message text;
    None for anything else."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        code = cur.errno if isinstance(cur, OSError) and cur.errno in ENVIRONMENT_ERRNOS else None
        if code is None:
            text = f"{cur} {getattr(cur, 'detail', '')}"
            code = next((c for marker, c in ENVIRONMENT_MARKERS.items() if marker in text), None)
        if code is not None:
            where = getattr(cur, "filename", None)
            return (f"{where + ': ' if where else ''}{ENVIRONMENT_ERRNOS[code]} — free space or fix the "
                    "permissions, then run again (a re-run replaces what this run wrote)")
        cur = cur.__cause__ or cur.__context__
    return None


def _is_input_error(exc: BaseException) -> bool:
    """An input error anywhere in the ``raise … from`` chain: by type (subclasses too, e.g. a store
    error is a ConfigError) or by class name (a Dagster step reports its chain as names)."""
    from configs.questions import ConfigError
    from convocausal.questions.cli_values import ValueTypeError
    from methods.result import MethodRefusal

    if isinstance(exc, FileNotFoundError):
        return True
    cur: BaseException | None = exc
    while cur is not None:
        if isinstance(cur, (ConfigError, MethodRefusal, ValueTypeError, UsageError)):
            return True
        if {type(cur).__name__, *getattr(cur, "error_classes", ())} & INPUT_ERRORS:  # runner.StepFailure
            return True
        cur = cur.__cause__
    return False


def package_version() -> str:
    """The installed distribution's version (pyproject.toml's, once `pip install -e .` has run)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("convocausal")
    except PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: the message and where to look, not the whole usage block."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _parser() -> argparse.ArgumentParser:
    from checks.catalog import CATALOG
    from convocausal.cli_estimate import add_estimate_parser
    from convocausal.cli_history import add_history_parser
    from convocausal.cli_init import add_init_parser
    from convocausal.cli_questions import add_questions_parser
    from convocausal.cli_signals import add_signals_parser

    p = _Parser(
        prog="convocausal", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Causal answers from AI-agent transcripts: per-conversation signals, registered questions "
                    "estimated with the method that fits them, and a decision memo per question.",
        epilog=("Start: convocausal init --raw DIR, then convocausal run --raw DIR --signals signals.yaml "
                "--questions questions.yaml.\n"
                f"Reference: {DOCS}; the landing directory (§1), the store (§2) and the command line (§3) "
                "in docs/CONTRACT.md.\n"
                "Exit status: 0 finished (checks may have failed), 2 usage or input error, 3 a blocking check "
                "failed (run --fail-on-blocking), 1 internal error."),
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    add_init_parser(sub)

    f = sub.add_parser("fixtures", parents=[common_options()],
                       help="write a synthetic landing directory with known true effects",
                       description="Write a synthetic landing directory (docs/CONTRACT.md §1) plus DIR/truth.json, "
                                   "with confounding built in so that naive comparisons are wrong.")
    f.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder to write (created if missing)")
    f.add_argument("--conversations", type=int, default=50_000, metavar="N",
                   help="conversations to generate, at least 100 (default 50000)")
    f.add_argument("--seed", type=int, default=0, help="random seed; the same seed writes the same files (default 0)")
    f.add_argument("--variant", choices=["standard", "null", "diverging"], default="standard",
                   help="standard: known non-zero effects; null: every true effect 0; diverging: tier2 drifts "
                        "before the rollout, so diff-in-diff's pre-trend check must fail (default standard)")
    f.set_defaults(func=_cmd_fixtures)

    blocking = ", ".join(c.name for c in CATALOG.values() if c.blocking)
    r = sub.add_parser("run", parents=[common_options()], help="extract, publish the store and answer every question",
                       description="Materialize the whole Dagster asset graph in-process: extract the transcript days "
                                   "found in --raw, publish the store, estimate every registered question and write "
                                   "its decision memo; print one row per question.")
    r.add_argument("--raw", required=True, type=Path, metavar="DIR",
                   help="landing directory: DIR/transcripts/ (parquet, flat or date=YYYY-MM-DD/), optional "
                        "DIR/outcomes.parquet and DIR/customers.parquet (docs/CONTRACT.md §1); its days set the run's "
                        "calendar")
    store_option(r, "analysis store to write (DuckDB; created if missing)")
    r.add_argument("--parts-url", default=os.environ.get("CONVOCAUSAL_PARTS_URL") or None, metavar="URL",
                   help="keep the day parts in an S3-compatible bucket instead of FILE.parts/: "
                        "s3://bucket/prefix[?endpoint_override=host:port&scheme=http&region=R]; credentials from "
                        "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (default: $CONVOCAUSAL_PARTS_URL)")
    r.add_argument("--signals", type=Path, default=None, metavar="FILE",
                   help="signals config (default: the packaged configs/signals.yaml; `convocausal init` writes one)")
    r.add_argument("--questions", type=Path, default=None, metavar="FILE",
                   help="questions config (default: the packaged configs/questions.yaml)")
    r.add_argument("--truth", type=Path, default=None, metavar="FILE",
                   help="truth.json to print beside the estimates (default: DIR/truth.json when it exists)")
    r.add_argument("--json", action="store_true",
                   help="print JSON (the estimates columns plus checks: name -> state) instead of the table; "
                        "no stage lines on stderr unless --progress")
    r.add_argument("--on-unreadable", choices=["stop", "quarantine"], default="stop",
                   help="a transcript file that is not readable parquet: stop the run (default), or "
                        "quarantine it with a warning and estimate from the readable files")
    r.add_argument("--progress", action="store_true", help="print stage lines on stderr also with --json")
    r.add_argument("-q", "--quiet", action="store_true", help="no stage lines or warnings on stderr (errors still)")
    r.add_argument("--fail-on-blocking", action="store_true",
                   help=f"exit with status 3 when a blocking check ({blocking}) failed, after printing the results "
                        "(for cron and CI)")
    r.set_defaults(func=_cmd_run)

    add_estimate_parser(sub)
    add_questions_parser(sub)
    add_history_parser(sub)
    add_signals_parser(sub)
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
    from checks.catalog import CATALOG
    from convocausal.progress import Progress, elapsed
    from convocausal.report import format_run_table
    from convocausal.store import store_paths
    from pipelines.runner import run_pipeline

    started = time.perf_counter()
    if not args.raw.is_dir():
        raise UsageError(f"--raw {args.raw}: not a directory")
    # Paths typed at the shell are the user's own: made absolute here (so `--raw ../exports`
    # works), then checked like every file setting (allowed roots, suffixes, sizes).
    for name in ("raw", "store", "signals", "questions", "truth"):
        if getattr(args, name) is not None:
            setattr(args, name, Path(os.path.abspath(getattr(args, name))))
    progress = Progress(enabled=not args.quiet and (args.progress or not args.json), warnings=not args.quiet,
                        bar=False if args.verbose else None)  # Dagster's own log lines would tear a bar
    rows = run_pipeline(args.raw, args.store, signals_config=args.signals, questions_config=args.questions,
                        truth_file=args.truth, on_unreadable=args.on_unreadable, progress=progress,
                        log_level="INFO" if args.verbose else "CRITICAL", parts_url=args.parts_url)
    truth_path = args.truth or (args.raw / "truth.json")
    truth = json.loads(truth_path.read_text()) if truth_path.is_file() else {}
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    elif rows:
        print(format_run_table(rows, truth))
    else:
        print(f"no question registered in {args.questions or 'the packaged configs/questions.yaml'}: the signals are "
              f"in {args.store}; add a question (questions.yaml has commented examples) and run again")
    progress.line(f"done in {elapsed(time.perf_counter() - started)}"
                  + (f"; decision memos in {store_paths(args.store).parts / 'reports'}" if rows else ""))
    blocked = {r["question_id"]: [k for k, v in (r.get("checks") or {}).items()
                                  if v == "failed" and k in CATALOG and CATALOG[k].blocking] for r in rows}
    blocked = {q: names for q, names in blocked.items() if names}
    if args.fail_on_blocking and blocked:  # said even under --quiet: it is why the status is 3
        shown = "; ".join(f"{q} ({', '.join(n)})" for q, n in blocked.items())
        print(f"convocausal: blocking check failed: {shown}; exit status 3 (--fail-on-blocking)", file=sys.stderr)
        return EXIT_BLOCKING
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
