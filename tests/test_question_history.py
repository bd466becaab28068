"""Run history, the running anytime-valid interval and q-values, read back from an estimates table."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import duckdb
import pytest
from statsmodels.stats.multitest import multipletests

from convocausal.questions.history import anytime_interval, history, latest_q_values
from convocausal.store import ensure_result_tables


@pytest.fixture()
def con():
    c = duckdb.connect()
    ensure_result_tables(c)
    for col, typ in (("cs_low", "DOUBLE"), ("cs_high", "DOUBLE"), ("q_value", "DOUBLE"), ("data_through", "DATE")):
        c.execute(f"ALTER TABLE estimates ADD COLUMN IF NOT EXISTS {col} {typ}")
    return c


def _insert(con, run, qid, est, se, n, when, method="propensity_matching", p=0.01, cs=None):
    con.execute(
        "INSERT INTO estimates (run_id, question_id, method, estimand, outcome, estimate, std_error, ci_low, ci_high, "
        "p_value, n_treated, n_control, naive_estimate, computed_at, ci_method, status, message, cs_low, cs_high) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        [run, qid, method, "ATT", "resolved", est, se, est - 1.96 * se, est + 1.96 * se, p, n // 2, n // 2, est,
         when, "", "ok", "", *(cs or (None, None))])


T0 = datetime(2026, 6, 1, tzinfo=timezone.utc)


def test_first_run_sequence_is_wider_than_the_fixed_interval(con):
    a = anytime_interval(con, "q", "r1", "propensity_matching", "resolved", "ATT", 0.05, 0.01, 4000)
    assert a.looks == 1 and a.cs_low < 0.05 - 1.96 * 0.01 and a.cs_high > 0.05 + 1.96 * 0.01


def test_later_runs_intersect_with_the_stored_sequences(con):
    _insert(con, "r1", "q", 0.05, 0.02, 1000, T0, cs=(-0.01, 0.09))
    _insert(con, "r2", "q", 0.04, 0.015, 2000, T0 + timedelta(days=1), cs=(0.0, 0.085))
    a = anytime_interval(con, "q", "r3", "propensity_matching", "resolved", "ATT", 0.06, 0.01, 4000)
    assert a.looks == 3
    assert a.cs_low >= 0.0 and a.cs_high <= 0.085  # never wider than what the earlier runs allowed


def test_a_rerun_of_the_same_run_does_not_intersect_with_itself(con):
    _insert(con, "r1", "q", 0.05, 0.02, 1000, T0, cs=(0.049, 0.051))
    a = anytime_interval(con, "q", "r1", "propensity_matching", "resolved", "ATT", 0.0, 0.02, 1000)
    assert a.looks == 1 and a.cs_low < 0 < a.cs_high


def test_disjoint_history_restarts_the_sequence_and_says_why(con):
    _insert(con, "r1", "q", 0.3, 0.01, 4000, T0, cs=(0.27, 0.33))
    a = anytime_interval(con, "q", "r2", "propensity_matching", "resolved", "ATT", -0.2, 0.01, 4000)
    assert a.looks == 1 and a.cs_high < 0 and "do not overlap" in a.note


def test_another_outcome_or_method_starts_its_own_sequence(con):
    _insert(con, "r1", "q", 0.3, 0.01, 4000, T0, cs=(0.27, 0.33))
    a = anytime_interval(con, "q", "r2", "diff_in_diff", "resolved", "ATT", 0.0, 0.01, 4000)
    assert a.looks == 1


def test_synthetic_control_has_no_sequence_and_says_why(con):
    a = anytime_interval(con, "q", "r1", "synthetic_control", "resolved", "ATT", 0.05, 0.01, 4000)
    assert a.cs_low is None and "placebo rank" in a.note


def test_history_lists_runs_oldest_first_with_check_counts(con):
    _insert(con, "r1", "q", 0.05, 0.02, 1000, T0)
    _insert(con, "r2", "q", 0.04, 0.015, 2000, T0 + timedelta(days=1))
    con.execute("INSERT INTO checks VALUES ('r2','q','balance','failed','ERROR',true,'',''),"
                "('r2','q','placebo','passed','ERROR',true,'','')")
    rows = history(con, "q")
    assert [r["run_id"] for r in rows] == ["r1", "r2"]
    assert rows[1]["checks_failed"] == 1 and rows[1]["blocking_failed"] == 1 and rows[1]["failed_checks"] == "balance"
    assert rows[0]["checks_failed"] == 0


def test_q_values_use_the_latest_run_of_each_question_and_match_statsmodels(con):
    _insert(con, "r1", "a", 0.1, 0.01, 1000, T0, p=0.9)  # superseded by r2
    _insert(con, "r2", "a", 0.1, 0.01, 1000, T0 + timedelta(days=1), p=0.01)
    _insert(con, "r2", "b", 0.1, 0.01, 1000, T0 + timedelta(days=1), p=0.04)
    _insert(con, "r2", "c", 0.1, 0.01, 1000, T0 + timedelta(days=1), p=0.03)
    q = latest_q_values(con, ["a", "b", "c"])
    ref = multipletests([0.01, 0.04, 0.03], method="fdr_bh")[1]
    assert [q[k]["q_value"] for k in "abc"] == pytest.approx(list(ref))
    assert q["a"]["run_id"] == "r2"
    holm = latest_q_values(con, ["a", "b", "c"], method="holm")
    assert holm["a"]["q_value"] == pytest.approx(multipletests([0.01, 0.04, 0.03], method="holm")[1][0])
    assert not math.isnan(q["b"]["q_value"])
