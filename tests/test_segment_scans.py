"""One grouped scan per segment column (``convocausal.questions.segment_scans``) gives every segment level
exactly what its own view's reads return: the diff-in-diff cells, the rollout pre-flight and the
extraction-sensitivity count, and so the same segment rows, against the reference that reads each
level's view on its own (the path taken before the scans were shared)."""

from __future__ import annotations

import contextlib
import math

import numpy as np
import pandas as pd
import pytest

import convocausal.questions.answer as answer_module
import convocausal.questions.segment_scans as ss
from configs.questions import Question
from convocausal.questions import registry
from convocausal.questions.answer import answer_question
from convocausal.questions.preflight import rollout_preflight
from convocausal.questions.registry import _run_did
from methods.did.compress import compress, compress_from, compress_sets
from methods.result import MethodRefusal
from tests.outcome_cases import CATALOG, connection, rollout_signals

LEVELS = ["chat", "voice", "it's", None]  # a quote in a level, and the null level


def _signals(n: int = 6000, seed: int = 5) -> pd.DataFrame:
    df = rollout_signals(n=n, seed=seed)
    rng = np.random.default_rng(seed)
    df["channel"] = pd.Series(rng.choice(np.array(LEVELS, dtype=object), n, p=[0.4, 0.4, 0.12, 0.08]), dtype=object)
    df["intent"] = rng.choice(np.array(["billing", "login", "order"]), n)
    df["intent_confidence"] = np.where(rng.random(n) < 0.05, 0.2, 1.0)  # 5% low: the rerun runs too
    df.loc[rng.random(n) < 0.03, "resolved"] = np.nan  # outcome missing here and there
    df.loc[rng.random(n) < 0.02, "intent"] = None  # a null fixed effect: those rows leave the cells
    return df


def _question(outcome: str = "resolved") -> Question:
    return Question(id="d", design="partial_rollout", outcome=outcome, treated={"skill": ["a1", "a2", "a3", "a4"]},
                    launch="2026-03-30", fixed_effects=["intent"], cluster="skill", time_bucket="week",
                    segments=["channel"])


def _sorted(cells: pd.DataFrame) -> pd.DataFrame:
    keys = [c for c in cells.columns if c not in ("n", "sum_y", "sum_y2")]
    return cells.sort_values(keys).reset_index(drop=True)


@pytest.mark.parametrize("outcome", ["resolved", "handle_minutes"])
def test_each_level_gets_the_cells_of_its_own_view(outcome, monkeypatch):
    """The grouped read's slice of a level equals ``compress`` on that level's own view (as a temp table of
    the rows ``_run_did`` reads): same cells, same counts; sums equal (exactly for a 0/1 outcome)."""
    con = connection(_signals())
    q = _question(outcome)
    got = {}

    def spy(grouped, level):
        out = ss.level_rows(grouped, level)
        got[level] = out.copy()  # the method adds columns to its cells
        return out

    monkeypatch.setattr(registry, "level_rows", spy)
    try:
        with ss.shared_segment_scans():
            for level in [*LEVELS, "sms"]:  # "sms": a level with no rows at all
                with ss.segment_view(con, "signals", "channel", level) as view:
                    with contextlib.suppress(MethodRefusal):  # the empty level is refused
                        _run_did(con, q, view, seed=0)
                    con.execute(f"CREATE OR REPLACE TEMP TABLE _own AS SELECT CAST({outcome} AS DOUBLE) AS y, "
                                "CAST(coalesce(skill IN ('a1', 'a2', 'a3', 'a4'), FALSE) AS INTEGER) AS _treated, "
                                f"week AS _period, intent, skill FROM {view} WHERE {outcome} IS NOT NULL")
                    own = compress(con, "_own", "y", {"treated": "_treated", "time": "_period", "fe0": "intent",
                                                      "cluster": "skill"})
                    shared = got[None if level is None else str(level)]
                    assert len(shared) == len(own) and list(shared.columns) == list(own.columns)
                    if len(own) == 0:
                        assert level == "sms"
                        continue
                    a, b = _sorted(shared), _sorted(own)
                    pd.testing.assert_frame_equal(a.drop(columns=["sum_y", "sum_y2"]), b.drop(columns=["sum_y", "sum_y2"]))
                    tol = 0 if outcome == "resolved" else 1e-12
                    np.testing.assert_allclose(a[["sum_y", "sum_y2"]], b[["sum_y", "sum_y2"]], rtol=tol, atol=0)
    finally:
        con.close()


def test_each_level_gets_the_preflight_of_its_own_view():
    con = connection(_signals())
    q = _question()
    try:
        with ss.shared_segment_scans():
            for level in [*LEVELS, "sms"]:
                with ss.segment_view(con, "signals", "channel", level) as view:
                    shared = rollout_preflight(con, q, {}, view)
                    assert ss.segment_of(view) is not None
                ss_views = ss._VIEWS.get()
                ss._VIEWS.set(None)  # the view read on its own
                try:
                    with ss.segment_view(con, "signals", "channel", level) as view:
                        own = rollout_preflight(con, q, {}, view)
                finally:
                    ss._VIEWS.set(ss_views)
                assert shared == own, level
    finally:
        con.close()


def _rows(answer) -> list[tuple]:
    return [tuple(r.as_dict().values()) for r in answer.info["outcomes"]]


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return a == b


@pytest.mark.parametrize("outcome", ["resolved", "handle_minutes"])
def test_segment_rows_equal_the_per_view_reference(outcome, monkeypatch):
    """Every segment row (estimate, interval, p-value, counts, status, message), every segment's diagnostics
    and check states, with the shared scans and with each level's view read on its own."""
    df = _signals()
    seen: dict[str, list] = {"shared": [], "own": []}
    orig = answer_question.__globals__["_answer"]

    def run(kind):
        con = connection(df)
        try:
            def spy(*a, **k):
                out = orig(*a, **k)
                seen[kind].append(out)
                return out
            monkeypatch.setitem(answer_question.__globals__, "_answer", spy)
            return answer_question(con, _question(outcome), CATALOG, seed=3)
        finally:
            monkeypatch.setitem(answer_question.__globals__, "_answer", orig)
            con.close()

    shared = run("shared")
    # no shared block: the question and every level read their own relation (the path before the sharing)
    monkeypatch.setattr(answer_module, "shared_segment_scans", contextlib.nullcontext)
    own = run("own")
    assert len(seen["shared"]) == len(seen["own"]) == 1 + len(LEVELS)
    assert [r[1] for r in _rows(shared)] == [r[1] for r in _rows(own)]
    assert any(r[0] == "segment" and r[9] in ("ok", "blocked") for r in _rows(shared))
    # to rounding, not bit for bit: a level's cells can come back from DuckDB in another order (as between
    # any two runs of a GROUP BY), and the sums over them then round differently (seen: 1 ulp of a std error)
    tol = 1e-12
    for ra, rb in zip(_rows(shared), _rows(own)):
        for x, y in zip(ra, rb):
            if isinstance(x, float) and isinstance(y, float):
                assert x == pytest.approx(y, rel=1e-12, abs=0) or _same(x, y), (ra, rb)
            elif outcome != "resolved" and isinstance(x, str):
                continue  # messages print the estimate to 4 digits; the numbers are compared above
            else:
                assert _same(x, y), (ra, rb)
    for a, b in zip(seen["shared"], seen["own"]):
        assert (a.result is None) == (b.result is None) and a.refusal == b.refusal
        assert [(d.name, d.passed, d.severity) for d in a.diagnostics] == [(d.name, d.passed, d.severity)
                                                                          for d in b.diagnostics]
        assert [(c.name, c.state) for c in a.checks] == [(c.name, c.state) for c in b.checks]
        if outcome == "resolved":
            assert [d.message for d in a.diagnostics] == [d.message for d in b.diagnostics]
            for da, db in zip(a.diagnostics, b.diagnostics):
                assert _same(da.value, db.value) or da.value == pytest.approx(db.value, rel=tol, abs=0), da.name
        if a.result is not None:
            for f in ("estimate", "std_error", "ci_low", "ci_high", "p_value", "naive_estimate"):
                x, y = getattr(a.result, f), getattr(b.result, f)
                assert x == pytest.approx(y, rel=tol, abs=0) if tol else _same(x, y), f
            assert (a.result.n_treated, a.result.n_control) == (b.result.n_treated, b.result.n_control)
            pd.testing.assert_frame_equal(a.result.extras["event_study"], b.result.extras["event_study"],
                                          check_exact=not tol, rtol=tol or 1e-5, atol=0)


@pytest.mark.parametrize("outcome", ["resolved", "handle_minutes"])
def test_grouping_sets_give_each_query_its_own_cells(outcome):
    """``compress_sets``: the keys' cells and each extra column's cells from one scan equal
    ``compress_from`` run for each on its own."""
    con = connection(_signals())
    try:
        src = "(SELECT *, CAST(channel AS VARCHAR) AS lvl, CAST(intent AS VARCHAR) AS lvl2 FROM signals) AS s"
        keys = {"treated": "skill", "time": "week", "fe0": "intent"}
        own, per = compress_sets(con, src, outcome, keys, ["lvl", "lvl2"], level_role="L")
        refs = [compress_from(con, src, outcome, keys),
                compress_from(con, src, outcome, {**keys, "L": "lvl"}, nullable=["L"]),
                compress_from(con, src, outcome, {**keys, "L": "lvl2"}, nullable=["L"])]
        for got, ref in zip([own, *per], refs):
            assert list(got.columns) == list(ref.columns) and list(got.dtypes) == list(ref.dtypes)
            a, b = _sorted(got.fillna({"L": "<null>"}) if "L" in got else got), \
                _sorted(ref.fillna({"L": "<null>"}) if "L" in ref else ref)
            pd.testing.assert_frame_equal(a, b, check_exact=outcome == "resolved", rtol=1e-12, atol=0)
        assert per[0]["L"].isna().any() and len(per[0]) > len(own)
    finally:
        con.close()


def test_scan_with_levels_gives_each_query_its_own_row():
    con = connection(_signals())
    try:
        select = "count(*), count(DISTINCT date) FILTER (WHERE date < ?), avg(CASE WHEN resolved IS NULL THEN 1 ELSE 0 END)"
        params = [pd.Timestamp("2026-03-30").date()]
        own, (by_channel,) = ss.scan_with_levels(con, select, "signals", "TRUE", params, [ss.level_sql("channel")])
        assert own == con.execute(f"SELECT {select} FROM signals", params).fetchone()
        for level in LEVELS:
            ref = con.execute(f"SELECT {select} FROM signals WHERE {ss.level_filter('channel', level)}",
                              params).fetchone()
            assert by_channel[level] == ref
    finally:
        con.close()
