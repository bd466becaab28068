"""Extraction assets: raw transcript days → per-day signals parts → the DuckDB analysis store."""


from datetime import date

import dagster as dg
import polars as pl

from configs.signals import load_signals_config
from convocausal.store import publish, remove_days, stale_days, write_day
from extract.catalog import build_catalog
from extract.day import ExtractionTotals, extract_days
from extract.intent import extractor_from_config, models_dir
from extract.overlap import InBackground
from extract.raw import list_transcript_days, load_customers, load_outcomes, raw_cache_dir
from extract.redact import check_salt
from pipelines.partitions import days_backfill_policy, transcript_days
from pipelines.resources import ConvocausalSettings


@dg.asset(
    partitions_def=transcript_days,
    backfill_policy=days_backfill_policy(),
    group_name="extraction",
    kinds={"polars", "parquet"},
    owners=["team:convocausal"],
    description=(
        "One row per conversation for each transcript day: intent, behaviours, tools, memory, outcomes. "
        "Bad rows go to quarantine with a reason. Each day is written atomically to its own parquet "
        "part, so re-running a day replaces it and days can run in parallel."
    ),
)
def signals_day(context: dg.AssetExecutionContext, settings: ConvocausalSettings) -> dg.MaterializeResult:
    """Extract the run's day partitions; each day's materialization carries that day's own counts.

    A backfill is one run over many days (``days_backfill_policy``), but Dagster records one
    materialization per partition. Metadata on the returned ``MaterializeResult`` would be copied
    onto every one of them, so a 2-day backfill would show the pair's total on both days. Instead
    each day's counts are attached to its own partition with
    ``context.add_asset_metadata(..., partition_key=day)``; the run's totals go to the log.
    """
    config = load_signals_config(settings.signals_config)
    check_salt(config.customer_key.salt, settings.raw_path)
    paths = settings.store_paths()
    # The conversation index by file version (ids as 64-bit hashes, timestamps): a night re-reads only the
    # new day's files. Outcomes and customers are validated whole, not cached on disk: their entries would
    # hold raw values (a customer's persona, an id that is an e-mail), and no raw PII goes into the store;
    # in one process, analysis_store takes the validated batches from memory (extract.raw_cache.HeldTable).
    cache = raw_cache_dir(settings.store)
    present = set(list_transcript_days(settings.raw_path, settings.on_unreadable, cache_dir=cache))
    outcomes = load_outcomes(settings.raw_path, None, config=config)
    customers = load_customers(settings.raw_path)
    totals = ExtractionTotals()
    empty_days: list[str] = []
    days = []
    for key in context.partition_keys:
        (days if date.fromisoformat(key) in present else empty_days).append(date.fromisoformat(key))
    for day in empty_days:
        context.add_asset_metadata(_metadata(ExtractionTotals(), days_without_data=1), partition_key=day.isoformat())
    # Extracting a day that has no raw data leaves no part: a deleted day folder leaves the store.
    removed = remove_days(paths, empty_days)
    if removed:
        context.log.warning(_removed_line(removed))
    results = extract_days(settings.raw_path, days, config, outcomes, customers,
                           intent_extractor=extractor_from_config(config, models_dir(paths.parts)),
                           on_unreadable=settings.on_unreadable,
                           first_day=context.assets_def.partitions_def.start.date(), cache_dir=cache)
    with InBackground(name="write-parts") as writes:  # a day's parts written while the next chunk is extracted
        for result in results:
            writes.submit(write_day, paths, result.day, result.signals, result.quarantine)
            totals.add(result)
            if not result.requested:  # a day re-extracted to merge a conversation that continues into this run
                continue  # its part is rewritten; Dagster takes metadata only for the partitions the run targets
            day_totals = ExtractionTotals()
            day_totals.add(result)
            context.add_asset_metadata(_metadata(day_totals, days_without_data=0), partition_key=result.day.isoformat())
    for line in totals.warnings():
        context.log.warning(line)
    if empty_days:
        shown = ", ".join(d.isoformat() for d in empty_days[:10])
        context.log.warning(f"no transcripts for {len(empty_days)} day(s): {shown}")
    context.log.info(
        f"signals_day totals over {len(context.partition_keys)} day(s): "
        + ", ".join(f"{k}={v.value}" for k, v in _metadata(totals, days_without_data=len(empty_days)).items())
    )
    return dg.MaterializeResult()


def _metadata(totals: ExtractionTotals, days_without_data: int) -> dict[str, dg.MetadataValue]:
    """The materialization metadata of one day (or, for the log line, of the whole run)."""
    return {
        **{k: dg.MetadataValue.int(getattr(totals, k)) for k in (
            "conversations", "messages_accepted", "messages_quarantined", "conversations_with_turn_gaps",
            "conversations_ts_not_monotonic", "texts_repaired")},
        "quarantined_by_reason": dg.MetadataValue.json(totals.quarantined_by_reason),
        "days_without_data": dg.MetadataValue.int(days_without_data),
        "unreadable_files": dg.MetadataValue.int(len(totals.unreadable_files)),
    }


@dg.asset(
    deps=[signals_day],
    group_name="extraction",
    kinds={"duckdb"},
    owners=["team:convocausal"],
    pool="duckdb_writer",
    description=(
        "The DuckDB analysis store: `signals`, `quarantine` and `signal_catalog` brought in line with the day "
        "parts in one transaction (only the days whose part changed are replaced), plus quarantine of outcome "
        "and CRM rows that match nothing."
    ),
)
def analysis_store(context: dg.AssetExecutionContext, settings: ConvocausalSettings) -> dg.MaterializeResult:
    """Publish the day parts; first drop the parts of days the landing directory no longer has.

    The landing directory is the source of truth: a day folder deleted there (a deletion request)
    must leave the store and every estimate, also when the day lies outside the days this run
    extracted (the last day, before a shortened range). ``list_transcript_days`` raises when no
    transcripts are found at all, so an unmounted landing directory never empties the store.
    """
    config = load_signals_config(settings.signals_config)
    paths = settings.store_paths()
    cache = raw_cache_dir(settings.store)
    removed = remove_days(paths, stale_days(paths, list_transcript_days(settings.raw_path, settings.on_unreadable,
                                                                        cache_dir=cache)))
    if removed:
        context.log.warning(_removed_line(removed))
    known = _known_conversations(paths)
    extra_quarantine = pl.concat(
        [load_outcomes(settings.raw_path, known, salt=config.customer_key.salt, config=config).quarantine,
         load_customers(settings.raw_path).quarantine],
        how="diagonal_relaxed",
    )
    how: dict = {}
    counts = publish(paths, catalog=build_catalog(config), extra_quarantine=extra_quarantine, report=how)
    context.log.info(f"published store {paths.db}: {counts}; " + "; ".join(
        f"{t} {h['mode']} ({len(h['days'])} day(s){', ' + h['reason'] if h['reason'] else ''})" for t, h in how.items()))
    return dg.MaterializeResult(
        metadata={
            "signals_rows": dg.MetadataValue.int(counts.get("signals", 0)),
            "quarantine_rows": dg.MetadataValue.int(counts.get("quarantine", 0)),
            "store": dg.MetadataValue.path(str(paths.db)),
            "days_removed": dg.MetadataValue.int(len(removed)),
            # per table: incremental (only the changed days replaced) or rebuild, with the reason and day count
            "publish_mode": dg.MetadataValue.json({t: {"mode": h["mode"], "reason": h["reason"], "days": len(h["days"])}
                                                   for t, h in how.items()}),
        }
    )


def _removed_line(days) -> str:
    shown = ", ".join(d.isoformat() for d in days[:20]) + (", …" if len(days) > 20 else "")
    return (f"removed {len(days)} day(s) from the store whose transcripts are no longer in the landing "
            f"directory: {shown}")


def _known_conversations(paths) -> pl.Series | None:
    if not paths.has_parts("signals"):
        return None
    return paths.part_store.read_column("signals", "conversation_id")
