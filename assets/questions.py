"""Per-question assets, one dynamic partition per registered question.

One step answers the question (refuters, balance and diagnostics come out of the same fit) and
materializes five assets: the estimate, then refutations, balance and diagnostics downstream of
it, then the decision memo downstream of those three. The checks of the estimate are emitted
from the same step, per question partition, after the memo is written: a failed blocking check
stops consumers downstream of the question, but never leaves the memo that explains it stale.
"""

import json
from pathlib import Path

import dagster as dg

from checks.catalog import CATALOG, NOT_APPLICABLE, NOT_RUN, PASSED
from configs.questions import validate_against_catalog
from convocausal.questions.answer import answer_question
from convocausal.questions.extraction_sensitivity import register_compare_intents
from convocausal.questions.history import anytime_interval
from convocausal.questions.registry import question_columns
from convocausal.report import decision_memo, plot_paths, write_memo
from convocausal.store import connect, open_signals, refresh_q_values, write_refusal, write_result
from extract.intent import models_dir
from extract.report import compare_intents_from_raw
from pipelines.partitions import questions
from pipelines.resources import ConvocausalSettings

GROUP = "questions"
ESTIMATE = dg.AssetKey("question_estimate")
REFUTATIONS, BALANCE, DIAGNOSTICS = (dg.AssetKey(k) for k in
                                     ("question_refutations", "question_balance", "question_diagnostics"))
REPORT = dg.AssetKey("question_report")
SPECS = [
    dg.AssetSpec(ESTIMATE, deps=["analysis_store"], partitions_def=questions, group_name=GROUP, kinds={"duckdb"},
                 description="The causal estimate with its interval, p-value, naive difference and method.",
                 owners=["team:convocausal"]),
    dg.AssetSpec(REFUTATIONS, deps=[ESTIMATE], partitions_def=questions, group_name=GROUP, kinds={"duckdb"},
                 description="Refutation tests: placebo, random common cause, subsets, sensitivity."),
    dg.AssetSpec(BALANCE, deps=[ESTIMATE], partitions_def=questions, group_name=GROUP, kinds={"duckdb"},
                 description="Covariate balance (SMD before/after matching)."),
    dg.AssetSpec(DIAGNOSTICS, deps=[ESTIMATE], partitions_def=questions, group_name=GROUP, kinds={"duckdb"},
                 description="Pre-flight and method diagnostics with thresholds and messages."),
    dg.AssetSpec(REPORT, deps=[REFUTATIONS, BALANCE, DIAGNOSTICS], partitions_def=questions, group_name=GROUP,
                 kinds={"markdown"}, owners=["team:convocausal"],
                 description="Decision memo: decision, intervention, estimand, design, result, main risks, "
                             "decision rule."),
]
CHECK_SPECS = [
    dg.AssetCheckSpec(spec.name, asset=ESTIMATE, description=spec.description, blocking=spec.blocking,
                      partitions_def=questions)
    for spec in CATALOG.values()
]


@dg.multi_asset(specs=SPECS, check_specs=CHECK_SPECS, partitions_def=questions, pool="duckdb_writer",
                name="question_results")
def question_results(context: dg.AssetExecutionContext, settings: ConvocausalSettings):
    qid = context.partition_key
    question = settings.question(qid)
    if question is None:
        raise dg.Failure(f"question `{qid}` is no longer in the questions config; remove its partition")
    paths = settings.store_paths()
    with connect(paths.db, read_only=True) as store_con:
        catalog = store_con.execute("SELECT * FROM signal_catalog").df().to_dict(orient="records")
    for warning in validate_against_catalog(question, catalog, question_columns(question)):
        context.log.warning(warning)
    con = open_signals(paths)
    # issue 14: a second extractor's labels for the extraction_sensitivity check (nothing unless
    # intent.compare_with is set; it re-reads the transcripts, so it is opt-in)
    register_compare_intents(con, compare_intents_from_raw(settings.raw_path, settings.signals(),
                                                           models_dir(paths.parts), settings.on_unreadable))
    try:
        answer = answer_question(con, question, catalog, seed=settings.seed)
        data_through = con.execute("SELECT max(date) FROM signals").fetchone()[0]
    finally:
        con.close()
    truth = _truth(settings, qid)
    run_id = context.run_id
    r = answer.result
    seq = None
    if r is None:
        write_refusal(paths.db, run_id, qid, answer.method, question.outcome, question.estimand,
                      answer.refusal or "refused", answer.diagnostics, true_effect=truth, checks=answer.checks,
                      data_through=data_through)
    else:
        with connect(paths.db, read_only=True) as store_con:  # the earlier runs' sequences of this question
            seq = anytime_interval(store_con, qid, run_id, r.method, r.outcome, r.estimand, r.estimate,
                                   r.std_error, int(r.n_treated) + int(r.n_control))
        write_result(paths.db, run_id, qid, r, true_effect=truth, extra_diagnostics=answer.preflight.diagnostics,
                     message=answer.why, checks=answer.checks, sequence=(seq.cs_low, seq.cs_high),
                     data_through=data_through, outcomes=answer.info.get("outcomes"))
        plot_paths(paths, qid, r.plots, write=True)
    # q-values over the latest estimate of every registered question: the last question of a run
    # leaves the whole family consistent
    refresh_q_values(paths.db, [q.id for q in settings.questions().questions])
    meta = _estimate_metadata(answer, run_id, truth)
    if seq is not None:
        meta["anytime_valid_interval"] = dg.MetadataValue.text(
            "none" if seq.cs_low is None else f"[{seq.cs_low:+.4f}, {seq.cs_high:+.4f}]")
        meta["anytime_valid_note"] = dg.MetadataValue.text(seq.note)
    yield dg.MaterializeResult(asset_key=ESTIMATE, metadata=meta)
    yield dg.MaterializeResult(asset_key=REFUTATIONS, metadata={
        "refuters": dg.MetadataValue.json([vars(x) for x in (r.refutations if r else [])])})
    yield dg.MaterializeResult(asset_key=BALANCE, metadata={
        "rows": dg.MetadataValue.int(len(r.balance) if r else 0),
        "all_passed": dg.MetadataValue.bool(bool(r and r.balance and all(b.passed for b in r.balance)))})
    yield dg.MaterializeResult(asset_key=DIAGNOSTICS, metadata={
        "diagnostics": dg.MetadataValue.json(json.loads(json.dumps(
            [vars(d) for d in answer.diagnostics], default=str)))})
    memo = decision_memo(paths, question)
    out = write_memo(paths, qid, memo)  # <store>.parts/reports/<question>.md and .html, group-readable
    yield dg.MaterializeResult(asset_key=REPORT, metadata={
        "memo": dg.MetadataValue.md(memo.markdown_inline), "path": dg.MetadataValue.path(str(out["md"])),
        "html": dg.MetadataValue.path(str(out["html"]))})
    for check in answer.checks:
        # Dagster knows passed/failed only; the four states travel in the metadata. A check that does
        # not apply, or did not run, is never an ERROR (so it cannot block): its state says why.
        yield dg.AssetCheckResult(
            asset_key=ESTIMATE, check_name=check.name, passed=check.state in (PASSED, NOT_APPLICABLE),
            severity=(dg.AssetCheckSeverity.ERROR if check.severity == "ERROR" and check.state not in
                      (NOT_APPLICABLE, NOT_RUN) else dg.AssetCheckSeverity.WARN),
            description=check.message, metadata={"state": dg.MetadataValue.text(check.state)},
        )


def _estimate_metadata(answer, run_id: str, truth: float | None) -> dict:
    r = answer.result
    meta = {
        "method": dg.MetadataValue.text(answer.method),
        "why_this_method": dg.MetadataValue.text(answer.why),
        "status": dg.MetadataValue.text("refused" if r is None else "ok"),
        "run_id": dg.MetadataValue.text(run_id),
    }
    if r is None:
        meta["refusal"] = dg.MetadataValue.text(answer.refusal or "")
    else:
        meta.update({k: dg.MetadataValue.float(float(getattr(r, k))) for k in
                     ("estimate", "ci_low", "ci_high", "p_value", "std_error", "naive_estimate")})
        meta.update({k: dg.MetadataValue.int(int(getattr(r, k))) for k in ("n_treated", "n_control")})
        meta["ci_method"] = dg.MetadataValue.text(r.ci_method)
        if answer.info.get("outcomes"):  # guardrails, net value, segments (issue 16)
            meta["guardrails_and_segments"] = dg.MetadataValue.json(
                [o.as_dict() for o in answer.info["outcomes"]])
    if truth is not None:
        meta["true_effect (synthetic fixture)"] = dg.MetadataValue.float(float(truth))
    return meta


def _truth(settings: ConvocausalSettings, qid: str) -> float | None:
    path = settings.truth_file or str(Path(settings.raw_dir) / "truth.json")
    try:
        return float(json.loads(Path(path).read_text())[qid])
    except (OSError, KeyError, ValueError, TypeError):
        return None
