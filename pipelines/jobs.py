"""Jobs: extraction (day partitions + store) and per-question estimation."""

import dagster as dg

from pipelines.partitions import questions, transcript_days

extraction_job = dg.define_asset_job(
    "extraction_job",
    selection=dg.AssetSelection.assets("signals_day", "analysis_store"),
    partitions_def=transcript_days,
    description="Extract one transcript day into signals and republish the analysis store.",
)

question_job = dg.define_asset_job(
    "question_job",
    selection=dg.AssetSelection.groups("questions"),
    partitions_def=questions,
    description="Estimate one registered question: estimate, refutations, balance, diagnostics, memo.",
)
