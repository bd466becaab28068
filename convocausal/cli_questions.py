"""``convocausal questions``: the registered questions and what the store last said about each.

Why: after a nightly run a user asks "which questions do I have, and which can I act on?" without
opening DuckDB. The registry (``--questions``) says which questions exist; the store's
``estimates`` table (docs/STORE.md) holds one row per question per run, and its ``checks`` table
the state of every check of that run. For each registered question this shows the newest row:
its estimate and interval, when it ran, and a state a user can act on:

* ``ok`` — an estimate and no blocking check failed (WARN checks may have: see the memo);
* ``blocked`` — a blocking ERROR check failed: do not act on the number;
* ``refused`` — the method refused (too few conversations, no donors, …): no number at all;
* ``not run`` — the store has no row for the question yet (new, or never run on this store).

Read-only: the store is opened ``read_only`` and never created.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from convocausal.cli_common import UsageError, common_options, store_option

STATES = ("ok", "blocked", "refused", "not run")
# Every row of `--json` has these keys (null when the question has not run), so scripts need no guards.
RESULT_KEYS = ("run_id", "computed_at", "estimand", "estimate", "ci_low", "ci_high", "p_value", "n_treated",
               "n_control", "status", "message", "state", "checks_failed", "blocking_failed")


def add_questions_parser(sub) -> None:
    p = sub.add_parser("questions", parents=[common_options()],
                       help="list the registered questions with their last estimate and state",
                       description="List the registered questions with the newest estimate, run date and state "
                                   "(ok | blocked | refused | not run) from the store's estimates table.")
    store_option(p, "analysis store to read the last results from")
    p.add_argument("--questions", type=Path, default=None, metavar="FILE",
                   help="questions config (default: the packaged configs/questions.yaml)")
    p.add_argument("--json", action="store_true",
                   help="print a JSON list, one object per question, instead of the table")
    p.set_defaults(func=cmd_questions)


def cmd_questions(args) -> int:
    from convocausal.file_settings import FileSettingError, check_config_file
    from convocausal.questions.registry import load_registry, spec_for

    if args.questions is not None:
        try:
            check_config_file("questions_config", args.questions)
        except FileSettingError as exc:
            raise UsageError(f"--questions: {exc}") from exc
    qset = load_registry(args.questions)
    last = last_results(args.store, [q.id for q in qset.questions])
    rows = []
    for q in qset.questions:
        never = {k: None for k in RESULT_KEYS} | {"state": "not run", "checks_failed": [], "blocking_failed": []}
        row = {"question_id": q.id, "method": spec_for(q).name, "design": q.design, "outcome": q.outcome,
               **last.get(q.id, never)}
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    else:
        print(format_questions(rows))
        if not args.store.is_file():
            print(f"convocausal: no store at {args.store} yet: `convocausal run --store {args.store}` fills it",
                  file=sys.stderr)
    return 0


def last_results(store: Path, question_ids: list[str]) -> dict[str, dict]:
    """question_id → newest estimate row (run_id, computed_at, numbers, status, state, checks_failed)."""
    if not store.is_file() or not question_ids:
        return {}
    import duckdb

    try:
        con = duckdb.connect(str(store), read_only=True)
    except duckdb.Error as exc:
        raise UsageError(f"--store {store}: cannot open it as a DuckDB store "
                         f"({str(exc).strip().splitlines()[0]})") from exc
    try:
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        if "estimates" not in tables:
            return {}
        con.execute("CREATE TEMP TABLE _wanted (question_id VARCHAR)")
        con.executemany("INSERT INTO _wanted VALUES (?)", [[q] for q in question_ids])
        latest = con.execute(
            "SELECT e.question_id, e.run_id, e.computed_at, e.estimand, e.estimate, e.ci_low, e.ci_high, "
            "e.p_value, e.n_treated, e.n_control, e.status, e.message FROM estimates e "
            "JOIN _wanted USING (question_id) "
            "QUALIFY row_number() OVER (PARTITION BY e.question_id ORDER BY e.computed_at DESC) = 1").df()
        failed: dict[str, list[tuple[str, bool]]] = {}
        if "checks" in tables and len(latest):
            con.register("_latest", latest[["question_id", "run_id"]])
            for qid, name, blocking in con.execute(
                    "SELECT c.question_id, c.check_name, coalesce(c.blocking, false) FROM checks c "
                    "JOIN _latest l USING (question_id, run_id) WHERE c.state = 'failed' ORDER BY 1, 2").fetchall():
                failed.setdefault(qid, []).append((name, bool(blocking)))
    finally:
        con.close()
    out = {}
    for rec in latest.to_dict("records"):
        rec = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in rec.items()}
        checks = failed.get(rec["question_id"], [])
        blocking = [n for n, b in checks if b]
        state = "refused" if rec.get("status") == "refused" else "blocked" if blocking else "ok"
        rec.update(state=state, checks_failed=[n for n, _ in checks], blocking_failed=blocking)
        if rec.get("computed_at") is not None:
            rec["computed_at"] = rec["computed_at"].isoformat()
        out[rec.pop("question_id")] = rec
    return out


def _num(v, fmt="{:+.4f}") -> str:
    return "—" if v is None else fmt.format(v)


def format_questions(rows: list[dict]) -> str:
    head = (f"{'question':<24} {'method':<20} {'last run':<16} {'estimate':>9} {'95% CI':>21} "
            f"{'state':<8}  checks failed")
    lines = [head, "-" * len(head)]
    for r in rows:
        ran = (r.get("computed_at") or "")[:16].replace("T", " ") or "—"
        ci = f"[{_num(r.get('ci_low'))}, {_num(r.get('ci_high'))}]" if r["state"] != "not run" else ""
        failed = ", ".join(r.get("checks_failed") or []) or ("none" if r["state"] != "not run" else "")
        lines.append(f"{r['question_id']:<24} {r['method']:<20} {ran:<16} {_num(r.get('estimate')):>9} {ci:>21} "
                     f"{r['state']:<8}  {failed}".rstrip())
    if not rows:
        lines.append("(no questions registered)")
    return "\n".join(lines)
