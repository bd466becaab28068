"""Small simulated signals tables for the guardrail, net-value and segment tests (issue 16)."""

from __future__ import annotations

from datetime import date, timedelta

import duckdb
import numpy as np
import pandas as pd

CATALOG = [
    {"name": "arm", "kind": "covariate", "measured_at": "start", "source": "routing", "agent_controlled": False,
     "dtype": "int", "turn_column": None},
    {"name": "channel", "kind": "covariate", "measured_at": "start", "source": "crm", "agent_controlled": False,
     "dtype": "str", "turn_column": None},
    {"name": "skill", "kind": "covariate", "measured_at": "start", "source": "routing", "agent_controlled": False,
     "dtype": "str", "turn_column": None},
    {"name": "week", "kind": "time", "measured_at": "start", "source": "clock", "agent_controlled": False,
     "dtype": "date", "turn_column": None},
    {"name": "date", "kind": "time", "measured_at": "start", "source": "clock", "agent_controlled": False,
     "dtype": "date", "turn_column": None},
    {"name": "n_turns", "kind": "covariate", "measured_at": "end", "source": "transcript", "agent_controlled": True,
     "dtype": "int", "turn_column": None},
    *({"name": o, "kind": "outcome", "measured_at": "end", "source": "outcomes.parquet", "agent_controlled": False,
       "dtype": "double", "turn_column": None} for o in ("resolved", "escalated", "handle_minutes")),
]


def randomized_signals(n: int = 4000, seed: int = 0, effects: dict | None = None,
                       segment_effects: dict | None = None, small_level: int = 0) -> pd.DataFrame:
    """A randomized rollout: ``arm`` drawn 50/50; ``effects`` outcome -> effect of arm 1;
    ``segment_effects`` channel -> effect on ``resolved`` (continuous, so each segment has its own truth)."""
    rng = np.random.default_rng(seed)
    effects = {"resolved": 0.10, "escalated": 0.0, "handle_minutes": -1.0, **(effects or {})}
    channels = np.array(list(segment_effects or {"chat": 0, "voice": 0}))
    channel = rng.choice(channels, n)
    if small_level:
        channel = np.concatenate([channel, np.full(small_level, "sms")])
        n += small_level
    arm = rng.integers(0, 2, n)
    tau = (np.array([segment_effects.get(c, 0.0) for c in channel]) if segment_effects
           else np.full(n, effects["resolved"]))
    resolved = (rng.random(n) < 0.5 + tau * arm).astype(float) if not segment_effects else \
        0.5 + tau * arm + rng.normal(0, 0.5, n)
    escalated = (rng.random(n) < 0.1 + effects["escalated"] * arm).astype(float)
    handle = 8.0 + effects["handle_minutes"] * arm - 2.0 * resolved + rng.normal(0, 2.0, n)
    day0 = date(2026, 3, 2)
    days = [day0 + timedelta(days=int(d)) for d in rng.integers(0, 28, n)]
    return pd.DataFrame({"arm": arm, "channel": channel, "resolved": resolved, "escalated": escalated,
                         "handle_minutes": handle, "date": pd.to_datetime(days).date,
                         "week": pd.to_datetime([d - timedelta(days=d.weekday()) for d in days]).date})


def rollout_signals(n: int = 6000, seed: int = 0) -> pd.DataFrame:
    """A partial rollout to skills a1..a4 on 2026-03-30, eight weeks either side, 12 skills."""
    rng = np.random.default_rng(seed)
    skills = np.array([f"{g}{i}" for g in "abc" for i in range(1, 5)])
    skill = rng.choice(skills, n)
    day0 = date(2026, 2, 2)
    offs = rng.integers(0, 112, n)
    days = [day0 + timedelta(days=int(d)) for d in offs]
    post = np.array([d >= date(2026, 3, 30) for d in days])
    treated = np.char.startswith(skill.astype(str), "a")
    channel = rng.choice(np.array(["chat", "voice"]), n)
    resolved = (rng.random(n) < 0.5 + 0.08 * (treated & post)).astype(float)
    escalated = (rng.random(n) < 0.1 + 0.02 * (treated & post)).astype(float)
    handle = 8.0 - 0.5 * (treated & post) + rng.normal(0, 2.0, n)
    return pd.DataFrame({"skill": skill, "channel": channel, "resolved": resolved, "escalated": escalated,
                         "handle_minutes": handle, "date": pd.to_datetime(days).date,
                         "week": pd.to_datetime([d - timedelta(days=d.weekday()) for d in days]).date})


def connection(df: pd.DataFrame) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.register("_frame", df)
    con.execute("CREATE TABLE signals AS SELECT * REPLACE (CAST(date AS DATE) AS date, CAST(week AS DATE) AS week) "
                "FROM _frame")
    con.unregister("_frame")
    return con
