"""The decision memo renders as Markdown (issue 18): parsed with markdown-it (CommonMark + tables,
what pandoc and Dagster's viewer also accept), its checks table is one table with one row per
applicable check and the columns check, state, severity, value, threshold, note; a note too long
for a cell is below the table in full; counts say what they count; p-values below 0.001 read
``< 0.001``; the files are group-readable.
"""

from __future__ import annotations

import os
import stat

import pytest
from markdown_it import MarkdownIt

from checks.catalog import CATALOG
from convocausal.report import NOTE_CELL_MAX, decision_memo, format_result, format_run_table, write_memo
from tests.memo_cases import LONG_OVERLAP, checks_of, matching_result, stored_case

COLUMNS = ["check", "state", "severity", "value", "threshold", "note"]


def _parse(md: str):
    return MarkdownIt("commonmark").enable("table").parse(md)


def _section(tokens, title: str, level: str = "h2"):
    """Tokens from the heading ``title`` to the next heading of the same level."""
    start = next(i for i, t in enumerate(tokens) if t.type == "heading_open" and t.tag == level
                 and tokens[i + 1].content == title)
    end = next((i for i in range(start + 1, len(tokens))
                if tokens[i].type == "heading_open" and tokens[i].tag == level), len(tokens))
    return tokens[start:end]


def _tables(tokens) -> list[dict]:
    """Every table: its header cells and its body rows (lists of cell texts)."""
    out, cur, row, in_head = [], None, None, False
    for i, t in enumerate(tokens):
        if t.type == "table_open":
            cur = {"head": [], "rows": []}
        elif t.type == "thead_open":
            in_head = True
        elif t.type == "thead_close":
            in_head = False
        elif t.type == "tr_open":
            row = []
        elif t.type in ("th_open", "td_open"):
            row.append(tokens[i + 1].content)
        elif t.type == "tr_close":
            (cur["head"].extend(row) if in_head else cur["rows"].append(row))
        elif t.type == "table_close":
            out.append(cur)
    return out


def _text(tokens) -> str:
    return " ".join(t.content for t in tokens if t.type == "inline")


@pytest.fixture()
def memo(tmp_path):
    paths, question, result, checks = stored_case(tmp_path)
    return decision_memo(paths, question), paths, question, result, checks


def test_checks_table_has_one_row_per_applicable_check(memo):
    m, _, _, _, checks = memo
    tokens = _parse(m.markdown_files)
    tables = _tables(_section(tokens, "Checks"))
    assert len(tables) == 1
    table = tables[0]
    assert table["head"] == COLUMNS
    applicable = [c for c in checks if c.state != "not_applicable"]
    assert [r[0] for r in table["rows"]] == [c.name for c in applicable]  # one row each, in catalogue order
    for row, c in zip(table["rows"], applicable):
        assert row[1].strip("*") == c.state and row[2] == CATALOG[c.name].severity
    # `sample_size` is fed by two diagnostics with different counts: still one row, its own count in it
    sample = next(r for r in table["rows"] if r[0] == "sample_size")
    assert sample[3] == "5,542" and sample[4] == "50"
    # no table row fell out of the table as a loose paragraph (the blank-line bug)
    assert not [t.content for t in tokens if t.type == "inline" and t.content.lstrip().startswith("|")]


def test_not_applicable_checks_are_named_not_tabled(memo):
    m, _, _, result, checks = memo
    na = [c.name for c in checks if c.state == "not_applicable"]
    assert na, "a matching result carries no pre_trend or pre_period_fit"
    text = _text(_section(_parse(m.markdown_files), "Checks"))
    assert f"Not applicable to {result.method}: " + ", ".join(na) + "." in text


def test_long_note_below_the_table_in_full_never_cut(memo):
    m, *_ = memo
    checks_tokens = _section(_parse(m.markdown_files), "Checks")
    row = next(r for r in _tables(checks_tokens)[0]["rows"] if r[0] == "overlap")
    assert len(LONG_OVERLAP) > NOTE_CELL_MAX and "zanzibar" not in row[5]
    number = int(row[5].split("see note ")[1].split()[0])
    notes = _section(checks_tokens, "Notes on the checks", "h3")
    items, depth, cur = [], 0, None  # top-level items of the ordered list, with their nested text
    for t in notes:
        if t.type == "ordered_list_open":
            depth += 1
        elif t.type == "ordered_list_close":
            depth -= 1
        elif t.type == "list_item_open" and depth == 1 and t.level == 1:
            cur = []
            items.append(cur)
        elif t.type == "inline" and cur is not None:
            cur.append(t.content)
    note = " ".join(items[number - 1])
    assert note.startswith("**overlap**")
    assert " ".join(LONG_OVERLAP.split()) in note  # the whole message, to its last word
    assert "AUC 0.81; pass if at most 0.9." in note  # and the other measurement feeding the check


def test_counts_say_what_they_count(memo):
    m, *_ = memo
    tokens = _parse(m.markdown_files)
    result = _text(_section(tokens, "Result"))
    assert "3,400 treated conversations matched to 3,366 distinct control conversations" in result
    notes = _text(_section(_section(tokens, "Checks"), "Notes on the checks", "h3"))
    # the two control counts under sample_size each carry the name of what they measure
    assert "`sample_size` = 5,542" in notes and "`effective_sample_size_control` = 3,366" in notes


def test_p_below_floor_and_rule_names_the_severity_column(memo):
    m, *_ = memo
    tokens = _parse(m.markdown_files)
    assert "p < 0.001" in _text(_section(tokens, "Result")) and "p = 0.000" not in m.markdown_files
    rule = _text(_section(tokens, "Decision rule"))
    assert "severity ERROR in the checks table" in rule and "ERROR-severity" not in rule


def test_figures_are_images_in_both_renderings(memo):
    m, paths, question, result, _ = memo
    def srcs(md):
        return [c.attrs["src"] for t in _parse(md) if t.type == "inline" for c in (t.children or [])
                if c.type == "image"]
    assert sorted(srcs(m.markdown_files)) == sorted(f"{question.id}/{n}.png" for n in result.plots)
    inline = srcs(m.markdown_inline)
    assert len(inline) == len(result.plots) and all(s.startswith("data:image/png;base64,") for s in inline)
    for rel in srcs(m.markdown_files):  # the file links resolve next to the memo
        assert (paths.parts / "reports" / rel).is_file()


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_memo_html_and_plots_are_group_readable(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        paths, question, result, _ = stored_case(tmp_path)
        out = write_memo(paths, question.id, decision_memo(paths, question))
    finally:
        os.umask(old)
    files = [out["md"], out["html"], *(paths.parts / "reports" / question.id).glob("*.png")]
    assert len(files) == 2 + len(result.plots)
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == mode, f
    assert not list((paths.parts / "reports").rglob(".tmp-*"))  # no temp file left behind


def test_summary_text_is_a_statsmodels_style_block():
    result = matching_result()
    checks = checks_of(result)
    text = format_result(result, checks, treatment="asked_email_first")
    lines = text.splitlines()
    head = next(i for i, line in enumerate(lines) if line.split()[:2] == ["coef", "std"])
    assert lines[head].split() == ["coef", "std", "err", "z", "P>|z|", "[0.025", "0.975]"]
    effect = lines[head + 2].split()
    assert effect[0] == "effect"
    coef, se, z = float(effect[1]), float(effect[2]), float(effect[3])
    assert coef == pytest.approx(result.estimate, abs=5e-5) and se == pytest.approx(result.std_error, abs=5e-5)
    assert z == pytest.approx(result.estimate / result.std_error, abs=5e-4)
    assert effect[4:6] == ["<", "0.001"]
    assert float(effect[6]) == pytest.approx(result.ci_low, abs=5e-5)
    assert float(effect[7]) == pytest.approx(result.ci_high, abs=5e-5)
    for label, value in (("Method:", result.method), ("Outcome:", result.outcome),
                         ("Treatment:", "asked_email_first"), ("No. treated:", "3,400"), ("No. control:", "3,366")):
        assert any(label in line and value in line for line in lines), label
    shown = [c for c in checks if c.state != "not_applicable"]
    for c in shown:  # every applicable check once, with its severity and state
        assert sum(1 for line in lines if line.split()[:1] == [c.name]) == 1
        assert next(line for line in lines if line.split()[:1] == [c.name]).split()[1:] == [c.severity, c.state]
    assert "Interval and p-value: " + result.ci_method in " ".join(text.split())


def test_summary_prints_no_statistic_for_a_non_sampling_std_error():
    result = matching_result()
    result.method = "synthetic_control"
    result.diagnostics, result.balance, result.refutations = [], [], []
    lines = format_result(result).splitlines()
    head = next(i for i, line in enumerate(lines) if line.split()[:2] == ["coef", "std"])
    assert lines[head].split()[3:5] == ["stat", "P"] and lines[head + 2].split()[3] == "—"


def _row(qid, lo, hi, p, ci_method="normal"):
    return {"question_id": qid, "method": "synthetic_control", "estimate": (lo + hi) / 2, "ci_low": lo,
            "ci_high": hi, "p_value": p, "naive_estimate": 0.1, "ci_method": ci_method, "checks": {}}


def test_run_table_floor_and_footnote_on_disagreement():
    rows = [_row("agree", 0.02, 0.05, 2e-5),
            _row("hull", 0.01, 0.09, 0.056, "conformal test inversion; accepted set not convex, its hull reported"),
            _row("null", -0.02, 0.03, 0.4)]
    text = format_run_table(rows, {})
    lines = {line.split()[0]: line for line in text.splitlines() if line.split()}
    assert "< 0.001" in lines["agree"] and "0.000" not in lines["agree"]
    assert "0.056*" in lines["hull"] and "*" not in lines["agree"] and "*" not in lines["null"]
    foot = [line for line in text.splitlines() if line.startswith("* ")]
    assert len(foot) == 1 and foot[0].startswith("* hull: interval excludes 0 but p ≥ 0.05") and "hull" in foot[0][8:]


def test_refused_question_memo_still_renders_its_checks(tmp_path):
    from checks.verdict import evaluate_checks
    from convocausal.questions.registry import REGISTRY
    from convocausal.store import store_paths, write_refusal
    from tests.memo_cases import matching_question

    question = matching_question()
    spec = REGISTRY["propensity_matching"]
    reason = "too few conversations to compare: 12 treated and 30 control with an outcome"
    checks = evaluate_checks(spec.checks, [], None, None, spec.name, refusal=reason)
    paths = store_paths(tmp_path / "store.duckdb")
    write_refusal(paths.db, "run-1", question.id, spec.name, question.outcome, "ATT", reason, [], checks=checks)
    m = decision_memo(paths, question)
    tokens = _parse(m.markdown_files)
    assert _text(_section(tokens, "Decision")).startswith("Decision **No decision yet.**")
    rows = _tables(_section(tokens, "Checks"))[0]["rows"]
    applicable = [c for c in checks if c.state != "not_applicable"]
    assert [r[0] for r in rows] == [c.name for c in applicable] and {r[1] for r in rows} == {"not_run"}
    assert reason in _text(_section(_section(tokens, "Checks"), "Notes on the checks", "h3"))
    assert not [t for t in tokens if t.type == "inline" for c in (t.children or []) if c.type == "image"]
