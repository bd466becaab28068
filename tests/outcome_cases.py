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


ROLLOUT_EFFECTS = {"resolved": 0.08, "escalated": 0.02, "handle_minutes": -0.5}


def rollout_signals(n: int = 6000, seed: int = 0, effects: dict | None = None) -> pd.DataFrame:
    """A partial rollout to skills a1..a4 on 2026-03-30, eight weeks either side, 12 skills.

    ``effects``: outcome -> the rollout's true effect (``ROLLOUT_EFFECTS`` by default); handle time does
    not depend on resolution here, so each outcome's effect is exactly its entry."""
    e = {**ROLLOUT_EFFECTS, **(effects or {})}
    rng = np.random.default_rng(seed)
    skills = np.array([f"{g}{i}" for g in "abc" for i in range(1, 5)])
    skill = rng.choice(skills, n)
    day0 = date(2026, 2, 2)
    offs = rng.integers(0, 112, n)
    days = [day0 + timedelta(days=int(d)) for d in offs]
    post = np.array([d >= date(2026, 3, 30) for d in days])
    treated = np.char.startswith(skill.astype(str), "a")
    channel = rng.choice(np.array(["chat", "voice"]), n)
    resolved = (rng.random(n) < 0.5 + e["resolved"] * (treated & post)).astype(float)
    escalated = (rng.random(n) < 0.1 + e["escalated"] * (treated & post)).astype(float)
    handle = 8.0 + e["handle_minutes"] * (treated & post) + rng.normal(0, 2.0, n)
    return pd.DataFrame({"skill": skill, "channel": channel, "resolved": resolved, "escalated": escalated,
                         "handle_minutes": handle, "date": pd.to_datetime(days).date,
                         "week": pd.to_datetime([d - timedelta(days=d.weekday()) for d in days]).date})


SHIPPED_LAUNCH = date(2026, 4, 27)  # Monday of week 13 of 18


def shipped_signals(n: int = 24000, seed: int = 0, effects: dict | None = None) -> pd.DataFrame:
    """A change shipped to channel chat on ``SHIPPED_LAUNCH``: cohorts channel × skill (4 × 12), 18 weeks.

    Every cohort shares the weekly seasonality (so the donors track chat before the launch); each has
    its own level. ``effects``: outcome -> true effect on chat after the launch (``ROLLOUT_EFFECTS``)."""
    e = {**ROLLOUT_EFFECTS, **(effects or {})}
    rng = np.random.default_rng(seed)
    skills = np.array([f"{g}{i}" for g in "abc" for i in range(1, 5)])
    channels = np.array(["chat", "email", "sms", "voice"])
    skill, channel = rng.choice(skills, n), rng.choice(channels, n)
    day0 = date(2026, 2, 2)
    offs = rng.integers(0, 18 * 7, n)
    week = offs // 7
    days = [day0 + timedelta(days=int(d)) for d in offs]
    post = np.array([d >= SHIPPED_LAUNCH for d in days])
    on = (channel == "chat") & post
    season = 0.04 * np.sin(week / 2.5)
    level = {f"{c}|{s}": v for (c, s), v in zip(
        [(c, s) for c in channels for s in skills], np.random.default_rng(99).normal(0, 0.03, 48))}
    lvl = np.array([level[f"{c}|{s}"] for c, s in zip(channel, skill)])
    resolved = (rng.random(n) < 0.5 + lvl + season + e["resolved"] * on).astype(float)
    escalated = (rng.random(n) < 0.1 + lvl / 3 + season / 2 + e["escalated"] * on).astype(float)
    handle = 8.0 + 10 * lvl + 5 * season + e["handle_minutes"] * on + rng.normal(0, 2.0, n)
    return pd.DataFrame({"skill": skill, "channel": channel, "resolved": resolved, "escalated": escalated,
                         "handle_minutes": handle, "date": pd.to_datetime(days).date,
                         "week": pd.to_datetime([d - timedelta(days=d.weekday()) for d in days]).date})


def multi_arm_signals(n: int = 9000, seed: int = 0, effects: dict | None = None,
                      escalation: dict | None = None) -> pd.DataFrame:
    """A randomized rollout of three arms, ``arm`` 0 (baseline), 1, 2 drawn equally.

    ``effects``: arm -> (effect on the resolution probability, direct effect on handle minutes).
    Handle time also falls 2 minutes with resolution, so an arm's total effect on ``handle_minutes``
    is its direct effect − 2 × its resolution effect (``multi_arm_truth``). ``escalation``: arm -> effect
    on the escalation probability (0 by default)."""
    effects = effects or MULTI_ARM_EFFECTS
    escalation = escalation or {}
    rng = np.random.default_rng(seed)
    arm = rng.integers(0, 3, n)
    channel = rng.choice(np.array(["chat", "voice"]), n)
    tau = np.array([effects.get(a, (0.0, 0.0))[0] for a in range(3)])[arm]
    direct = np.array([effects.get(a, (0.0, 0.0))[1] for a in range(3)])[arm]
    esc = np.array([escalation.get(a, 0.0) for a in range(3)])[arm]
    resolved = (rng.random(n) < 0.5 + tau).astype(float)
    escalated = (rng.random(n) < 0.1 + esc).astype(float)
    handle = 9.0 + direct - 2.0 * resolved + rng.normal(0, 2.0, n)
    day0 = date(2026, 3, 2)
    days = [day0 + timedelta(days=int(d)) for d in rng.integers(0, 28, n)]
    return pd.DataFrame({"arm": arm, "channel": channel, "resolved": resolved, "escalated": escalated,
                         "handle_minutes": handle, "date": pd.to_datetime(days).date,
                         "week": pd.to_datetime([d - timedelta(days=d.weekday()) for d in days]).date})


MULTI_ARM_EFFECTS = {1: (0.04, 1.0), 2: (0.10, -1.5)}  # arm -> (resolution, direct handle minutes)


def multi_arm_truth(weights: dict, effects: dict | None = None) -> dict:
    """arm label -> {outcome: true effect against arm 0, "net_value": Σ weight × effect}."""
    out = {}
    for a, (tau, direct) in (effects or MULTI_ARM_EFFECTS).items():
        t = {"resolved": tau, "handle_minutes": direct - 2.0 * tau}
        t["net_value"] = sum(w * t[o] for o, w in weights.items())
        out[str(a)] = t
    return out


def connection(df: pd.DataFrame) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.register("_frame", df)
    con.execute("CREATE TABLE signals AS SELECT * REPLACE (CAST(date AS DATE) AS date, CAST(week AS DATE) AS week) "
                "FROM _frame")
    con.unregister("_frame")
    return con


MATCHING_CATALOG = [c for c in CATALOG if c["name"] not in ("arm", "skill")] + [
    {"name": "asked_email_first", "kind": "behaviour", "measured_at": "turn", "source": "transcript",
     "agent_controlled": True, "dtype": "int", "turn_column": "asked_email_first_turn"},
    {"name": "asked_email_first_turn", "kind": "behaviour", "measured_at": "turn", "source": "transcript",
     "agent_controlled": True, "dtype": "int", "turn_column": None},
]
MATCHING_EFFECTS = (0.06, -0.6)  # (effect on the resolution probability, direct effect on handle minutes)


def matching_signals(n: int = 3000, seed: int = 0, effects: tuple = MATCHING_EFFECTS) -> pd.DataFrame:
    """Two coexisting behaviours (email asked early = 1, late = 0), confounded by ``channel``: chat both asks
    early more often and resolves more, so the naive difference is biased and matching on channel removes it.
    Effects are constant, so the ATT of resolution is ``effects[0]`` and of handle minutes
    ``effects[1] − 2 × effects[0]`` (handle time falls 2 minutes with resolution; ``matching_truth``)."""
    tau, direct = effects
    rng = np.random.default_rng(seed)
    channel = rng.choice(np.array(["chat", "voice"]), n)
    chat = (channel == "chat").astype(float)
    t = (rng.random(n) < 0.3 + 0.4 * chat).astype(int)
    resolved = (rng.random(n) < 0.4 + 0.15 * chat + tau * t).astype(float)
    handle = 9.0 - 1.0 * chat + direct * t - 2.0 * resolved + rng.normal(0, 2.0, n)
    day0 = date(2026, 3, 2)
    days = [day0 + timedelta(days=int(d)) for d in rng.integers(0, 28, n)]
    return pd.DataFrame({"asked_email_first": t, "asked_email_first_turn": np.where(t == 1, 2, 9),
                         "channel": channel, "resolved": resolved, "handle_minutes": handle,
                         "escalated": (rng.random(n) < 0.1).astype(float), "date": pd.to_datetime(days).date,
                         "week": pd.to_datetime([d - timedelta(days=d.weekday()) for d in days]).date})


def matching_truth(weights: dict, effects: tuple = MATCHING_EFFECTS) -> dict:
    tau, direct = effects
    t = {"resolved": tau, "handle_minutes": direct - 2.0 * tau}
    return {**t, "net_value": sum(w * t[o] for o, w in weights.items())}
