"""Jobs: extraction (day partitions + store), per-question estimation, and question registration.

The asset jobs take their partitions from the selected assets (Dagster infers them; passing
``partitions_def`` as well is deprecated and warned about on every load).

``register_questions`` adds a ``questions`` partition for every question in the config without
running anything: what ``question_registry_sensor`` does on its tick, for a deployment driven from
the command line (no daemon), where ``dagster asset materialize --partition <question>`` needs the
partition to exist first.
"""

import os

import dagster as dg

from convocausal.file_settings import check_config_file
from convocausal.questions.registry import load_registry
from pipelines.partitions import questions

extraction_job = dg.define_asset_job(
    "extraction_job",
    selection=dg.AssetSelection.assets("signals_day", "analysis_store", "store_monitoring", "extraction_report"),
    description="Extract one transcript day into signals, republish the analysis store, and compare the new "
                "days with the days before (drift checks).",
)

question_job = dg.define_asset_job(
    "question_job",
    selection=dg.AssetSelection.groups("questions"),
    description="Estimate one registered question: estimate, refutations, balance, diagnostics, memo.",
)


class RegisterQuestionsConfig(dg.Config):
    """Which questions config to register (default: ``CONVOCAUSAL_QUESTIONS_CONFIG``, else the packaged one)."""

    questions_config: str | None = None


@dg.op(description="Add a `questions` partition for every question in the questions config.")
def register_question_partitions(context: dg.OpExecutionContext, config: RegisterQuestionsConfig) -> list[str]:
    path = config.questions_config or os.environ.get("CONVOCAUSAL_QUESTIONS_CONFIG") or None
    if path is not None:
        check_config_file("questions_config", path)
    ids = [q.id for q in load_registry(path).questions]
    existing = set(context.instance.get_dynamic_partitions(questions.name))
    new = [qid for qid in ids if qid not in existing]
    if new:
        context.instance.add_dynamic_partitions(questions.name, new)
    context.log.info(f"questions partitions: added {new or 'none'}; already registered "
                     f"{sorted(existing & set(ids)) or 'none'}")
    return new


@dg.job(name="register_questions",
        description="Register every question of the config as a `questions` partition (no estimate is run).")
def register_questions():
    register_question_partitions()
