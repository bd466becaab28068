"""The extraction report as an asset: how intent extraction did on the store, with a WARN check on the default share.

Downstream of the analysis store, beside the questions and the monitoring: a rule set that
stopped matching shows up here before it shows up as a moved estimate. The logic is
``extract/report.py``; this file reads the store's signals (through the day parts, never the
DuckDB file) and, for the rule hits and redacted unmatched openers, the newest day's transcripts
from the landing directory (read on demand, never stored: bounded to one day so a nightly run
does not re-read months of text). The report goes to ``<store>.parts/reports/extraction_report.json``.
"""

import json
import math

import dagster as dg

from convocausal.store import open_signals, write_file_atomic
from extract.raw import load_transcripts_day, raw_cache_dir
from extract.raw_index import transcript_index
from extract.report import DEFAULT_SHARE_THRESHOLD, extraction_report_from, newest_day, signal_counts
from extract.signals import opening_texts
from pipelines.resources import ConvocausalSettings

EXTRACTION_REPORT = dg.AssetKey("extraction_report")
DEFAULT_INTENT_SHARE = "default_intent_share"


class ExtractionReportConfig(dg.Config):
    """Launchpad settings of the report (run config ``ops: {extraction_report: {config: …}}``)."""

    default_share_threshold: float = DEFAULT_SHARE_THRESHOLD  # the check warns above this default-intent share


@dg.asset(
    key=EXTRACTION_REPORT,
    deps=["analysis_store"],
    group_name="monitoring",
    kinds={"duckdb"},
    owners=["team:convocausal"],
    description="Intent extraction on the store: conversations per intent, the share falling to the default, "
                "the intent_confidence histogram, rule hits and redacted unmatched openers of the newest day.",
    check_specs=[dg.AssetCheckSpec(DEFAULT_INTENT_SHARE, asset=EXTRACTION_REPORT, blocking=False,
                                   description="The default-intent share stays under its threshold (20%) and no day "
                                               "jumps from the 7 before it (p < 0.001 and >= 5 points)")],
)
def extraction_report_asset(context: dg.AssetExecutionContext, config: ExtractionReportConfig,
                            settings: ConvocausalSettings):
    if not 0.0 <= config.default_share_threshold <= 1.0:
        raise dg.Failure(f"default_share_threshold {config.default_share_threshold}: give a share between 0 and 1")
    paths = settings.store_paths()
    signals_config = settings.signals()
    con = open_signals(paths)
    try:
        # counts per (day, intent, confidence bin), not every conversation's row (0.6 s of pull at 10M)
        counts = signal_counts(con)
        openings = None
        newest = newest_day(counts)
        if newest is not None:
            # the index from the store's raw cache: built from scratch it reads every transcript file (10 s at 10M)
            index = transcript_index(settings.raw_path, raw_cache_dir(settings.store))
            day = load_transcripts_day(settings.raw_path, newest, on_unreadable=settings.on_unreadable, index=index)
            openings = opening_texts(day.accepted, signals_config.intent.opening_user_turns)
        report = extraction_report_from(con, signals_config, openings=openings,
                                        threshold=config.default_share_threshold, counts=counts)
    finally:
        con.close()
    report["openings_day"] = str(newest) if newest is not None else None
    out = paths.parts / "reports" / "extraction_report.json"
    write_file_atomic(out, json.dumps(report, indent=2, sort_keys=True, default=str).encode())
    check = report["default_share_check"]
    yield dg.MaterializeResult(asset_key=EXTRACTION_REPORT, metadata={
        "n_conversations": dg.MetadataValue.int(report["n_conversations"]),
        "default_share": dg.MetadataValue.float(_finite(report["default_share"])),
        "class_counts": dg.MetadataValue.json(report["class_counts"]),
        "confidence_histogram": dg.MetadataValue.json(report["confidence_histogram"]),
        "rule_hits": dg.MetadataValue.json(report["rule_hits"] or []),
        "openings_day": dg.MetadataValue.text(report["openings_day"] or "-"),
        "report": dg.MetadataValue.path(str(out)),
    })
    yield dg.AssetCheckResult(
        asset_key=EXTRACTION_REPORT, check_name=DEFAULT_INTENT_SHARE, passed=check["passed"],
        severity=dg.AssetCheckSeverity.WARN, description=check["message"],
        metadata={"state": dg.MetadataValue.text("passed" if check["passed"] else "failed"),
                  "default_share": dg.MetadataValue.float(_finite(check["overall_share"])),
                  "threshold": dg.MetadataValue.float(check["threshold"]),
                  "jump_days": dg.MetadataValue.json(check["jump_days"])},
    )


def _finite(v) -> float:
    """Float metadata refuses None and NaN: a share that could not be computed is 0 (n is 0 then)."""
    return 0.0 if v is None or not math.isfinite(v) else float(v)
