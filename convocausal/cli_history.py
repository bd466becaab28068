"""``convocausal history QUESTION``: every run's estimate of one question, oldest first.

Why: the schedule re-estimates every night, and a number is only trustworthy if it is stable
across nights. This lists each run's estimate, fixed 95% interval, anytime-valid interval (the
one to act on under nightly looks), q-value, sample sizes and failed checks from the store's
``estimates`` and ``checks`` tables. Read-only: the store is opened ``read_only``.
"""

from __future__ import annotations

import json
import math

from convocausal.cli_common import UsageError, common_options, store_option

KEYS = ("run_id", "computed_at", "method", "outcome", "estimate", "ci_low", "ci_high", "cs_low", "cs_high",
        "q_value", "p_value", "n_treated", "n_control", "status", "checks_failed", "blocking_failed",
        "failed_checks", "data_through")


def add_history_parser(sub) -> None:
    p = sub.add_parser("history", parents=[common_options()],
                       help="every run's estimate of one question (estimate, intervals, sizes, checks)",
                       description="List every stored run of QUESTION, oldest first: estimate, fixed 95%% interval, "
                                   "anytime-valid interval, q-value, sample sizes and failed checks.")
    p.add_argument("question", metavar="QUESTION", help="a question id, as in the questions config")
    store_option(p, "analysis store to read the runs from")
    p.add_argument("--json", action="store_true", help="print a JSON list, one object per run")
    p.set_defaults(func=cmd_history)


def cmd_history(args) -> int:
    import duckdb

    from convocausal.questions.history import history

    if not args.store.is_file():
        raise UsageError(f"--store {args.store}: no store there yet; `convocausal run --store {args.store}` makes it")
    try:
        con = duckdb.connect(str(args.store), read_only=True)
    except duckdb.Error as exc:
        raise UsageError(f"--store {args.store}: cannot open it read-only ({str(exc).splitlines()[0]})") from exc
    try:
        runs = history(con, args.question)
    finally:
        con.close()
    if not runs:
        raise UsageError(f"question `{args.question}` has no run in {args.store}; `convocausal questions "
                         f"--store {args.store}` lists what it holds")
    rows = [{k: r.get(k) for k in KEYS} for r in runs]
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    else:
        print(format_history(args.question, rows))
    return 0


def _n(v, fmt="{:+.4f}") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)


def format_history(question_id: str, rows: list[dict]) -> str:
    head = (f"{'run at (UTC)':<17} {'estimate':>9} {'95% CI':>21} {'anytime-valid':>21} {'q':>7} "
            f"{'n treated':>9} {'n control':>9}  failed checks")
    lines = [f"{question_id}: {len(rows)} run(s)", head, "-" * len(head)]
    for r in rows:
        when = str(r["computed_at"])[:16]
        if r["status"] != "ok":
            lines.append(f"{when:<17} {'refused':>9}")
            continue
        ci = f"[{_n(r['ci_low'])}, {_n(r['ci_high'])}]"
        cs = f"[{_n(r['cs_low'])}, {_n(r['cs_high'])}]" if r.get("cs_low") is not None else "-"
        q = r.get("q_value")
        qs = "-" if q is None else ("<0.001" if q < 0.001 else f"{q:.3f}")
        lines.append(f"{when:<17} {_n(r['estimate']):>9} {ci:>21} {cs:>21} {qs:>7} {int(r['n_treated']):>9,} "
                     f"{int(r['n_control']):>9,}  {r.get('failed_checks') or 'none'}")
    return "\n".join(lines)
