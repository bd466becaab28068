"""Store monitoring: one asset per run comparing the new days with the days before, with a check per drift.

Downstream of the analysis store, beside the questions: a drifted population is a reason to
distrust tonight's estimates, so the checks are WARN (they never block the questions) and the
memo of each question points here. The comparison logic is ``convocausal.questions.monitoring``.
"""

import math
from datetime import datetime, timezone

import dagster as dg

from convocausal.questions.monitoring import CHECKS, last_monitored_day, monitor, record
from convocausal.store import connect, open_signals, write_file_atomic
from pipelines.resources import ConvocausalSettings

MONITORING = dg.AssetKey("store_monitoring")


@dg.asset(
    key=MONITORING,
    deps=["analysis_store"],
    group_name="monitoring",
    kinds={"duckdb"},
    owners=["team:convocausal"],
    pool="duckdb_writer",
    description="Drift between the days added since the last monitored run and the days before: treated share, "
                "covariate mix, outcome base rates, extraction health, new agent versions or tools.",
    check_specs=[dg.AssetCheckSpec(name, asset=MONITORING, description=text, blocking=False)
                 for name, text in CHECKS.items()],
)
def store_monitoring(context: dg.AssetExecutionContext, settings: ConvocausalSettings):
    paths = settings.store_paths()
    with connect(paths.db, read_only=True) as con:
        catalog = con.execute("SELECT * FROM signal_catalog").df().to_dict(orient="records")
        since = last_monitored_day(con)
    sig = open_signals(paths)
    try:
        report = monitor(sig, catalog, settings.questions().questions, settings.signals().intent.default, since)
    finally:
        sig.close()
    with connect(paths.db) as con:
        record(con, context.run_id, report, datetime.now(timezone.utc))
    meta = {"reference_through": dg.MetadataValue.text(str(report.windows.since) if report.windows else "-"),
            "new_through": dg.MetadataValue.text(str(report.windows.until) if report.windows else "-"),
            "n_new": dg.MetadataValue.int(report.windows.n_new if report.windows else 0),
            "statistics": dg.MetadataValue.json([
                {"check": r.check, "subject": r.subject, "stat": r.stat.name, "value": _finite(r.stat.value),
                 "p_value": _finite(r.stat.p_value), "drifted": r.stat.drifted, "message": r.stat.message}
                for r in report.rows])}
    if report.plot:
        out = paths.parts / "reports" / "monitoring_daily_rates.png"
        write_file_atomic(out, report.plot)
        meta["plot"] = dg.MetadataValue.path(str(out))
    yield dg.MaterializeResult(asset_key=MONITORING, metadata=meta)
    for name, (state, message) in report.states.items():
        yield dg.AssetCheckResult(asset_key=MONITORING, check_name=name, passed=state != "failed",
                                  severity=dg.AssetCheckSeverity.WARN, description=message,
                                  metadata={"state": dg.MetadataValue.text(state)})


def _finite(v):
    """JSON metadata refuses NaN: a statistic that could not be computed is null."""
    return None if v is None or not math.isfinite(v) else float(v)
