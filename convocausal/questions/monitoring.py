"""Between-run monitoring: did the population, the outcome or the extraction move under the estimates?

Why: every nightly run re-estimates on the store as it now is. The causal assumptions are about a
population (who gets treated, the covariate mix, the base rate) and about measurement (what the
extractor sees); when those drift, yesterday's design can be wrong today without any of the
estimate's own checks noticing. This module compares the days added since the last monitored run
(the *new window*) with everything before it (the *reference window*) and returns one row per
statistic, each tagged with the monitoring check it feeds.

Windows: ``since`` is the last day the previous monitored run saw (``monitor_windows`` in the
store). On a first run, or when nothing was recorded, the last ``recent_days`` days with data
are the new window. No new days: every check is ``not_run`` (nothing to compare).

Every query is one GROUP BY over the signals relation per column; names come from the signal
catalogue (validated identifiers) and values are bound as parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import duckdb

from configs.questions import Question
from convocausal.store import rollback
from methods.monitoring import drift

CHECKS = {
    "treated_share_drift": "The treated share of each question in the new days matches the days before "
                           "(sample-ratio chi-square, p < 0.001 flags).",
    "covariate_mix_drift": "The covariate mix in the new days matches the days before (PSI >= 0.25 with a "
                           "chi-square p < 0.001, or |SMD| > 0.1, flags).",
    "outcome_base_rate_drift": "Each outcome's base rate in the new days matches the days before (z-test "
                               "p < 0.001 and a move of 2 points or more flags).",
    "extraction_health_drift": "Default-intent share, behaviour match rates and tool-call rates in the new days "
                               "match the days before (z-test p < 0.001 and a move of 2 points or more flags).",
    "new_versions_or_tools": "No agent version, tool or intent appears in the new days that the days before "
                             "never had (a new version changes what the estimates average over).",
}
REFERENCE_DAYS = 14  # the reference window: this many days before the new days (two weeks: a slow trend
# over a quarter is not tonight's drift, a change since last week is)
MAX_LEVELS = 50  # a covariate with more levels than this is compared on its top levels plus "other"


@dataclass(frozen=True)
class Windows:
    since: date  # last day of the reference window
    until: date  # last day of the new window
    n_reference: int
    n_new: int
    ref_start: date | None = None  # the reference window holds the days after this one (None: all before)

    @property
    def comparable(self) -> bool:
        return self.n_reference > 0 and self.n_new > 0

    def relation(self, relation: str) -> str:
        """The signals relation cut to the two windows (a date object's ISO text: never user input)."""
        if self.ref_start is None:
            return relation
        return f"(SELECT * FROM {relation} WHERE date > DATE '{self.ref_start.isoformat()}')"


@dataclass(frozen=True)
class DriftRow:
    check: str
    subject: str  # the column or question the statistic is about
    stat: drift.DriftStat


def windows(con: duckdb.DuckDBPyConnection, since: date | None, relation: str = "signals",
            recent_days: int = 7, reference_days: int = REFERENCE_DAYS) -> Windows | None:
    """The reference and new windows; None when the relation holds no dated rows.

    The reference window is the ``reference_days`` before the new days, not all history: a
    population that moves slowly (a rollout months ago, a seasonal mix) is not drift tonight,
    and against all history every trend would flag.
    """
    lo, hi = con.execute(f"SELECT min(date), max(date) FROM {relation}").fetchone()
    if hi is None:
        return None
    if since is None or since < lo:
        since = max(lo, hi - timedelta(days=recent_days))
        if since == hi:  # a single day of data: no reference window
            since = hi - timedelta(days=1)
    ref_start = since - timedelta(days=reference_days)
    n_ref, n_new = con.execute(
        f"SELECT count(*) FILTER (WHERE date <= ? AND date > ?), count(*) FILTER (WHERE date > ?) FROM {relation}",
        [since, ref_start, since]).fetchone()
    return Windows(since, hi, int(n_ref), int(n_new), ref_start)


def drift_rows(con: duckdb.DuckDBPyConnection, catalog: list[dict], questions: list[Question],
               default_intent: str | None, win: Windows, relation: str = "signals") -> list[DriftRow]:
    """Every drift statistic between the two windows, tagged with the check it feeds."""
    by_name = {row["name"]: row for row in catalog}
    relation = win.relation(relation)
    rows: list[DriftRow] = []
    rows += _treated_shares(con, questions, by_name, win, relation)
    treatments = {q.treatment for q in questions if q.treatment}  # their rate is the treated share above
    for name, row in by_name.items():
        kind, dtype = row["kind"], str(row["dtype"])
        if kind == "covariate" and row["measured_at"] == "start":
            rows += _covariate(con, name, dtype, win, relation)
        elif kind == "outcome":
            rows += _rate_or_mean(con, name, dtype, win, relation, "outcome_base_rate_drift")
        elif (kind in ("behaviour", "tool") and not name.endswith("_turn") and dtype in ("Boolean", "Int8")
              and name not in treatments):
            rows += _rate_or_mean(con, name, dtype, win, relation, "extraction_health_drift")
    if "intent" in by_name and default_intent is not None:
        hits = con.execute(
            f"SELECT count(*) FILTER (WHERE date <= ? AND intent = ?), count(*) FILTER (WHERE date > ? AND intent = ?) "
            f"FROM {relation}", [win.since, default_intent, win.since, default_intent]).fetchone()
        stat = drift.proportion_shift(int(hits[0]), win.n_reference, int(hits[1]), win.n_new,
                                      name=f"default-intent share ('{default_intent}')")
        rows.append(DriftRow("extraction_health_drift", "intent", stat))
    for name in ("agent_version", "intent", "channel", "skill"):
        if name in by_name:
            rows.append(DriftRow("new_versions_or_tools", name, _new_levels(con, name, win, relation)))
    if "tools_used" in by_name:
        rows.append(DriftRow("new_versions_or_tools", "tools_used", _new_tools(con, win, relation)))
    return rows


def check_states(rows: list[DriftRow], win: Windows | None) -> dict[str, tuple[str, str]]:
    """check -> (state, message): failed when any of its statistics drifted."""
    out = {}
    for check in CHECKS:
        mine = [r for r in rows if r.check == check]
        if win is None or not win.comparable:
            out[check] = ("not_run", "no new days since the last monitored run" if win else "the store holds no rows")
        elif not mine:
            out[check] = ("not_applicable", "nothing of this kind in the signals")
        else:
            hits = [r for r in mine if r.stat.drifted]
            if hits:
                out[check] = ("failed", "; ".join(f"{r.subject}: {r.stat.message}" for r in hits[:5])
                              + (f" (+{len(hits) - 5} more)" if len(hits) > 5 else ""))
            else:
                out[check] = ("passed", f"{len(mine)} statistics compared, none moved beyond its threshold")
    return out


def _treated_shares(con, questions, by_name, win, relation) -> list[DriftRow]:
    rows = []
    for q in questions:
        if q.treatment and q.treatment in by_name:
            cond, params = f"{q.treatment} = 1", []
            if str(by_name[q.treatment]["dtype"]) == "Boolean":
                cond = f"{q.treatment}"
        elif q.treated and all(col in by_name for col in q.treated):
            parts = [f"{col} IN ({', '.join('?' for _ in vals)})" for col, vals in q.treated.items()]
            cond, params = " AND ".join(parts), [v for vals in q.treated.values() for v in vals]
        else:
            continue
        ref_t, new_t = con.execute(
            f"SELECT count(*) FILTER (WHERE date <= ? AND ({cond})), count(*) FILTER (WHERE date > ? AND ({cond})) "
            f"FROM {relation}", [win.since, *params, win.since, *params]).fetchone()
        stat = drift.sample_ratio(int(ref_t), win.n_reference, int(new_t), win.n_new)
        rows.append(DriftRow("treated_share_drift", q.id, stat))
    return rows


def _level_counts(con, expr: str, win, relation) -> tuple[dict, dict]:
    data = con.execute(
        f"SELECT date > ? AS new, CAST({expr} AS VARCHAR) AS level, count(*) FROM {relation} GROUP BY 1, 2",
        [win.since]).fetchall()
    ref = {str(lv): int(n) for new, lv, n in data if not new}
    fresh = {str(lv): int(n) for new, lv, n in data if new}
    if len(ref) > MAX_LEVELS:
        keep = set(sorted(ref, key=ref.get, reverse=True)[:MAX_LEVELS])
        ref = _fold(ref, keep)
        fresh = _fold(fresh, keep)
    return ref, fresh


def _fold(counts: dict, keep: set) -> dict:
    out = {k: v for k, v in counts.items() if k in keep}
    other = sum(v for k, v in counts.items() if k not in keep)
    if other:
        out["(other)"] = other
    return out


def _covariate(con, name, dtype, win, relation) -> list[DriftRow]:
    if dtype in ("String", "Boolean") or dtype.startswith("Int") and name in ("hour_of_day", "day_of_week"):
        ref, fresh = _level_counts(con, name, win, relation)
        return [DriftRow("covariate_mix_drift", name, drift.psi(ref, fresh))]
    if dtype.startswith(("Int", "UInt", "Float")):
        ref_v = _sample(con, name, "<=", win, relation)
        new_v = _sample(con, name, ">", win, relation)
        out = [DriftRow("covariate_mix_drift", name, drift.smd(ref_v, new_v))]
        if ref_v and new_v:
            r, q = drift.binned_counts(ref_v, new_v)
            out.append(DriftRow("covariate_mix_drift", name, drift.psi(r, q)))
        return out
    return []


def _rate_or_mean(con, name, dtype, win, relation, check) -> list[DriftRow]:
    if dtype in ("Boolean", "Int8"):
        cond = name if dtype == "Boolean" else f"{name} = 1"
        ref_h, ref_n, new_h, new_n = con.execute(
            f"SELECT count(*) FILTER (WHERE date <= ? AND {cond}), count({name}) FILTER (WHERE date <= ?), "
            f"count(*) FILTER (WHERE date > ? AND {cond}), count({name}) FILTER (WHERE date > ?) FROM {relation}",
            [win.since] * 4).fetchone()
        if not ref_n or not new_n:
            return []
        return [DriftRow(check, name, drift.proportion_shift(int(ref_h), int(ref_n), int(new_h), int(new_n), name=name))]
    if dtype.startswith(("Int", "Float")):
        ref_v = _sample(con, name, "<=", win, relation)
        new_v = _sample(con, name, ">", win, relation)
        if len(ref_v) < 2 or len(new_v) < 2:
            return []
        return [DriftRow(check, name, drift.smd(ref_v, new_v))]
    return []


def _sample(con, name, op: str, win, relation, n: int = 20_000) -> list:
    """Up to ``n`` non-null values of one window (a fixed-seed reservoir: SMD and deciles need no more).

    The filter runs in a subquery: DuckDB samples the FROM relation before a WHERE of the same query.
    """
    sql = (f"SELECT v FROM (SELECT {name} AS v FROM {relation} WHERE date {op} ? AND {name} IS NOT NULL) "
           f"USING SAMPLE {int(n)} ROWS (reservoir, 7)")
    return [r[0] for r in con.execute(sql, [win.since]).fetchall()]


def _new_levels(con, name, win, relation) -> drift.DriftStat:
    data = con.execute(f"SELECT DISTINCT date > ? AS new, CAST({name} AS VARCHAR) FROM {relation} "
                       f"WHERE {name} IS NOT NULL", [win.since]).fetchall()
    return drift.new_levels([v for new, v in data if not new], [v for new, v in data if new], name=name)


def _new_tools(con, win, relation) -> drift.DriftStat:
    data = con.execute(
        f"SELECT DISTINCT date > ? AS new, t FROM (SELECT date, unnest(tools_used) AS t FROM {relation})",
        [win.since]).fetchall()
    return drift.new_levels([t for new, t in data if not new], [t for new, t in data if new], name="tool")


MONITOR_DDL = """
    CREATE TABLE IF NOT EXISTS monitor_windows (
        run_id VARCHAR, since DATE, until DATE, n_reference BIGINT, n_new BIGINT, computed_at TIMESTAMPTZ,
        check_name VARCHAR, state VARCHAR, message VARCHAR
    )"""


@dataclass
class MonitorReport:
    """One monitoring run: the windows, every statistic, a state per check and a plot of daily rates."""

    windows: Windows | None
    rows: list[DriftRow]
    states: dict[str, tuple[str, str]]
    plot: bytes | None


def last_monitored_day(con: duckdb.DuckDBPyConnection) -> date | None:
    """The new window's last day of the latest recorded monitoring run (None before the first)."""
    exists = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'monitor_windows'"
                         ).fetchone()[0]
    if not exists:
        return None
    return con.execute("SELECT max(until) FROM monitor_windows").fetchone()[0]


def monitor(con: duckdb.DuckDBPyConnection, catalog: list[dict], questions: list[Question],
            default_intent: str | None, since: date | None, relation: str = "signals",
            with_plot: bool = True) -> MonitorReport:
    """Compare the new days with the days before and give each monitoring check a state."""
    win = windows(con, since, relation)
    rows = drift_rows(con, catalog, questions, default_intent, win, relation) if win and win.comparable else []
    plot = _daily_plot(con, catalog, questions, default_intent, win, relation) if with_plot and win else None
    return MonitorReport(win, rows, check_states(rows, win), plot)


def record(con: duckdb.DuckDBPyConnection, run_id: str, report: MonitorReport, now) -> None:
    """Write the run's windows and check states (a re-run of the same run id replaces its rows)."""
    con.execute(MONITOR_DDL)
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute("DELETE FROM monitor_windows WHERE run_id = ?", [run_id])
        w = report.windows
        if w is not None:
            con.executemany("INSERT INTO monitor_windows VALUES (?,?,?,?,?,?,?,?,?)",
                            [[run_id, w.since, w.until, w.n_reference, w.n_new, now, check, state, message]
                             for check, (state, message) in report.states.items()])
        con.execute("COMMIT")
    except Exception:
        rollback(con)
        raise


def _daily_plot(con, catalog, questions, default_intent, win, relation) -> bytes | None:
    from methods.monitoring.plots import daily_rates_plot

    names = {row["name"]: str(row["dtype"]) for row in catalog}
    exprs: dict[str, str] = {}
    params: list = []
    for q in questions:
        if q.treatment and q.treatment in names and len(exprs) < 4:
            cond = q.treatment if names[q.treatment] == "Boolean" else f"{q.treatment} = 1"
            exprs[f"treated share: {q.id}"] = f"avg(CASE WHEN {cond} THEN 1.0 ELSE 0.0 END)"
    if "intent" in names and default_intent is not None:
        exprs["default-intent share"] = "avg(CASE WHEN intent = ? THEN 1.0 ELSE 0.0 END)"
        params.append(default_intent)
    for outcome in ("resolved", "escalated"):
        if names.get(outcome) == "Boolean":
            exprs[f"{outcome} rate"] = f"avg(CAST({outcome} AS DOUBLE))"
    if not exprs:
        return None
    data = con.execute(f"SELECT date, {', '.join(exprs.values())} FROM {relation} GROUP BY date ORDER BY date",
                       params).fetchall()
    days = [r[0] for r in data]
    series = {label: [r[i + 1] for r in data] for i, label in enumerate(exprs)}
    return daily_rates_plot(days, series, win.since)
