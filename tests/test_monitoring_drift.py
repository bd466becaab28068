"""Monitoring checks on a signals table with drift injected on purpose, and quiet on stable data.

The world: 30 days of 400 conversations a day; the new window is the last 7 days. Each drift
world changes one thing in the new window only; the matching check must fail and the others
stay passed. Stable worlds over 20 seeds must leave every check passed.
"""

from __future__ import annotations

from datetime import date, timedelta

import duckdb
import numpy as np
import polars as pl
import pytest

from configs.questions import Question
from convocausal.questions.monitoring import CHECKS, REFERENCE_DAYS, check_states, drift_rows, windows

DAYS, PER_DAY, START = 30, 400, date(2026, 3, 1)
CATALOG = [
    {"name": "date", "kind": "time", "measured_at": "start", "dtype": "Date"},
    {"name": "channel", "kind": "covariate", "measured_at": "start", "dtype": "String"},
    {"name": "agent_version", "kind": "covariate", "measured_at": "start", "dtype": "String"},
    {"name": "intent", "kind": "covariate", "measured_at": "start", "dtype": "String"},
    {"name": "memory_items", "kind": "covariate", "measured_at": "start", "dtype": "Int32"},
    {"name": "tools_used", "kind": "tool", "measured_at": "end", "dtype": "List(String)"},
    {"name": "tool_lookup_order", "kind": "tool", "measured_at": "turn", "dtype": "Boolean"},
    {"name": "asked_email_first", "kind": "behaviour", "measured_at": "turn", "dtype": "Int8"},
    {"name": "resolved", "kind": "outcome", "measured_at": "end", "dtype": "Boolean"},
]
QUESTIONS = [Question(id="email", design="coexisting_variants", outcome="resolved", treatment="asked_email_first",
                      covariates=["intent", "channel"])]
INTENTS = ["billing", "refund", "password", "order", "other"]
INTENT_P = [0.3, 0.2, 0.2, 0.2, 0.1]


def _world(seed: int, drift: str | None = None, days: int = DAYS, rollout_age: int = 40) -> duckdb.DuckDBPyConnection:
    rng = np.random.default_rng(seed)
    n = days * PER_DAY
    day = np.repeat(np.arange(days), PER_DAY)
    new = day >= days - 7
    intent = rng.choice(INTENTS, n, p=INTENT_P)
    if drift == "default_intent":  # the extractor starts missing: 25% more fall to "other"
        intent = np.where(new & (rng.uniform(size=n) < 0.25), "other", intent)
    if drift == "new_intent":
        intent = np.where(new & (rng.uniform(size=n) < 0.15), "cancel_subscription", intent)
    version = np.where(rng.uniform(size=n) < 0.5, "v1.0", "v1.1")
    if drift == "old_rollout":  # v1.1 replaced v1.0 `rollout_age` days before the end
        version = np.where(day >= days - rollout_age, "v1.1", "v1.0")
    if drift == "new_version":
        version = np.where(new & (rng.uniform(size=n) < 0.3), "v2.0", version)
    treated_p = np.where(new & (drift == "treated_share"), 0.5, 0.3)
    lookup = rng.uniform(size=n) < 0.2
    df = pl.DataFrame({
        "date": [START + timedelta(days=int(d)) for d in day],
        "channel": rng.choice(["chat", "voice", "email"], n, p=[0.6, 0.3, 0.1]),
        "agent_version": version,
        "intent": intent,
        "memory_items": rng.poisson(3, n).astype(np.int32),
        "tool_lookup_order": lookup,
        "tools_used": [["lookup_order"] if x else [] for x in lookup],
        "asked_email_first": (rng.uniform(size=n) < treated_p).astype(np.int8),
        "resolved": rng.uniform(size=n) < 0.6,
    })
    con = duckdb.connect()
    con.register("_df", df.to_arrow())
    con.execute("CREATE TABLE signals AS SELECT * FROM _df")
    return con


def _states(con, since=None):
    win = windows(con, since)
    rows = drift_rows(con, CATALOG, QUESTIONS, "other", win)
    return {k: v[0] for k, v in check_states(rows, win).items()}


@pytest.mark.parametrize("seed", range(20))
def test_stable_data_leaves_every_check_passed(seed):
    assert _states(_world(seed)) == dict.fromkeys(CHECKS, "passed")


@pytest.mark.parametrize("drift,check", [
    ("treated_share", "treated_share_drift"),
    ("default_intent", "extraction_health_drift"),
    ("new_intent", "new_versions_or_tools"),
    ("new_version", "new_versions_or_tools"),
])
@pytest.mark.parametrize("seed", range(3))
def test_injected_drift_fails_its_check(drift, check, seed):
    states = _states(_world(seed, drift))
    assert states[check] == "failed"
    if drift == "treated_share":  # one thing moved: the others stay quiet
        assert {k for k, v in states.items() if v == "failed"} == {check}


def test_the_new_window_starts_after_the_last_monitored_day():
    con = _world(0, "new_version")
    last = START + timedelta(days=DAYS - 1)
    win = windows(con, last)
    assert win.n_new == 0 and not win.comparable
    assert set(_states(con, since=last).values()) == {"not_run"}
    win = windows(con, START + timedelta(days=DAYS - 8))
    assert win.n_new == 7 * PER_DAY and win.n_reference == REFERENCE_DAYS * PER_DAY  # not all history


def test_a_new_intent_is_named_in_the_message():
    con = _world(1, "new_intent")
    win = windows(con, None)
    msg = check_states(drift_rows(con, CATALOG, QUESTIONS, "other", win), win)["new_versions_or_tools"][1]
    assert "cancel_subscription" in msg


def test_a_rollout_older_than_the_reference_window_is_not_drift():
    # forty days ago: before the 14-day reference window, so history, not drift tonight
    assert _states(_world(0, "old_rollout", days=60)) == dict.fromkeys(CHECKS, "passed")
    # twenty days ago: the reference window mixes both versions, the new days hold only v1.1
    assert _states(_world(0, "old_rollout", days=60, rollout_age=20))["covariate_mix_drift"] == "failed"
