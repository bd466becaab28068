"""Per-question assets, one dynamic partition per registered question.

One step computes the answer (the refuters, balance and diagnostics come out of the same fit)
and materializes four assets — estimate, refutations, balance, diagnostics — with the
estimate-level checks emitted from that same step (``check_specs``), so each partition's
checks belong to that partition. The report asset turns the stored rows into a decision memo.
"""


import json
from pathlib import Path

import dagster as dg

from checks.asset_checks import CHECKS, evaluate_checks
from configs.questions import load_questions, validate_against_catalog
from convocausal.report import decision_memo, plot_paths
from convocausal.store import (
    connect,
    open_signals,
    store_paths,
    write_file_atomic,
    write_refusal,
    write_result,
)
from methods.router import answer_question
from pipelines.partitions import questions
from pipelines.resources import ConvocausalSettings

GROUP = "questions"
ESTIMATE = dg.AssetKey("question_estimate")
SPECS = [
    dg.AssetSpec(ESTIMATE, deps=["analysis_store"], partitions_def=questions, group_name=GROUP, kinds={"duckdb"},
                 description="The causal estimate with its interval, p-value, naive difference and method.",
                 owners=["team:convocausal"]),
    dg.AssetSpec("question_refutations", partitions_def=questions, group_name=GROUP,
                 kinds={"duckdb"}, description="Refutation tests: placebo, random common cause, subsets, sensitivity."),
    dg.AssetSpec("question_balance", partitions_def=questions, group_name=GROUP,
                 kinds={"duckdb"}, description="Covariate balance (SMD before/after matching)."),
    dg.AssetSpec("question_diagnostics", partitions_def=questions, group_name=GROUP,
                 kinds={"duckdb"}, description="Pre-flight and method diagnostics with thresholds and messages."),
]
CHECK_SPECS = [
    dg.AssetCheckSpec(name, asset=ESTIMATE, description=desc, blocking=blocking)
    for name, _severity, blocking, desc, _methods in CHECKS
]


@dg.multi_asset(specs=SPECS, check_specs=CHECK_SPECS, partitions_def=questions, pool="duckdb_writer",
                name="question_results")
def question_results(context: dg.AssetExecutionContext, settings: ConvocausalSettings):
    qid = context.partition_key
    question = load_questions(settings.questions_config).by_id().get(qid)
    if question is None:
        raise dg.Failure(f"question `{qid}` is no longer in the questions config; remove its partition")
    paths = store_paths(settings.store)
    with connect(paths.db, read_only=True) as store_con:
        catalog = store_con.execute("SELECT * FROM signal_catalog").df().to_dict(orient="records")
    for warning in validate_against_catalog(question, catalog):
        context.log.warning(warning)
    con = open_signals(paths)
    try:
        answer = answer_question(con, question, catalog, seed=settings.seed)
    finally:
        con.close()
    truth = _truth(settings, qid)
    run_id = context.run_id
    if answer.result is None:
        write_refusal(paths.db, run_id, qid, answer.method, question.outcome, question.estimand,
                      answer.refusal or "refused", answer.preflight.diagnostics, true_effect=truth)
    else:
        write_result(paths.db, run_id, qid, answer.result, true_effect=truth,
                     extra_diagnostics=answer.preflight.diagnostics, message=_why(question, answer))
        plot_paths(paths, qid, answer.result.plots, write=True)
    r = answer.result
    estimate_meta = {
        "method": dg.MetadataValue.text(answer.method),
        "why_this_method": dg.MetadataValue.text(_why(question, answer)),
        "status": dg.MetadataValue.text("refused" if r is None else "ok"),
        "run_id": dg.MetadataValue.text(run_id),
    }
    if r is None:
        estimate_meta["refusal"] = dg.MetadataValue.text(answer.refusal or "")
    else:
        estimate_meta.update({
            "estimate": dg.MetadataValue.float(float(r.estimate)),
            "ci_low": dg.MetadataValue.float(float(r.ci_low)),
            "ci_high": dg.MetadataValue.float(float(r.ci_high)),
            "p_value": dg.MetadataValue.float(float(r.p_value)),
            "std_error": dg.MetadataValue.float(float(r.std_error)),
            "naive_estimate": dg.MetadataValue.float(float(r.naive_estimate)),
            "n_treated": dg.MetadataValue.int(int(r.n_treated)),
            "n_control": dg.MetadataValue.int(int(r.n_control)),
            "ci_method": dg.MetadataValue.text(r.ci_method),
        })
    if truth is not None:
        estimate_meta["true_effect (synthetic fixture)"] = dg.MetadataValue.float(float(truth))
    yield dg.MaterializeResult(asset_key=ESTIMATE, metadata=estimate_meta)
    yield dg.MaterializeResult(asset_key="question_refutations", metadata={
        "refuters": dg.MetadataValue.json([vars(x) for x in (r.refutations if r else [])])})
    yield dg.MaterializeResult(asset_key="question_balance", metadata={
        "rows": dg.MetadataValue.int(len(r.balance) if r else 0),
        "all_passed": dg.MetadataValue.bool(bool(r and r.balance and all(b.passed for b in r.balance)))})
    yield dg.MaterializeResult(asset_key="question_diagnostics", metadata={
        "diagnostics": dg.MetadataValue.json(json.loads(json.dumps(
            [vars(d) for d in answer.diagnostics], default=str)))})
    for check in evaluate_checks(answer):
        yield dg.AssetCheckResult(
            asset_key=ESTIMATE, check_name=check.name, passed=check.passed,
            severity=dg.AssetCheckSeverity.ERROR if check.severity == "ERROR" else dg.AssetCheckSeverity.WARN,
            description=check.message[:2000],
            metadata={"applicable": dg.MetadataValue.bool(check.applicable)},
        )


@dg.asset(
    # Not downstream of the estimate asset itself. A blocking check failure fails the whole
    # results step, so Dagster then skips this memo too; `convocausal run` materializes it in a
    # second run so the memo explaining the failure is always written.
    deps=["question_refutations", "question_balance", "question_diagnostics"],
    partitions_def=questions,
    group_name=GROUP,
    kinds={"markdown"},
    owners=["team:convocausal"],
    description="Decision memo: decision, intervention, estimand, design, result, main risks, decision rule.",
)
def question_report(context: dg.AssetExecutionContext, settings: ConvocausalSettings) -> dg.MaterializeResult:
    qid = context.partition_key
    question = load_questions(settings.questions_config).by_id()[qid]
    paths = store_paths(settings.store)
    memo = decision_memo(paths, question)
    out = paths.parts / "reports" / f"{qid}.md"
    write_file_atomic(out, memo.markdown_files.encode("utf-8"))
    return dg.MaterializeResult(metadata={
        "memo": dg.MetadataValue.md(memo.markdown_inline),
        "path": dg.MetadataValue.path(str(out)),
    })


def _why(question, answer) -> str:
    """Why this method, plus the design variant the method chose (e.g. synthetic control's prior weeks)."""
    detail = answer.info.get("design_reason")
    return question.why_method + (f" Design: {answer.info.get('design')} — {detail}" if detail else "")


def _truth(settings: ConvocausalSettings, qid: str) -> float | None:
    path = settings.truth_file or str(Path(settings.raw_dir) / "truth.json")
    try:
        return float(json.loads(Path(path).read_text())[qid])
    except (OSError, KeyError, ValueError, TypeError):
        return None
