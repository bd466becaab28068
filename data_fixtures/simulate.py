"""Conversation-level simulation: who talks, when, about what, what the agent does, and
what would have happened under each treatment.

Everything is drawn as numpy arrays with one entry per conversation (vectorized; no loop
over conversations). Outcomes share one uniform ``u`` per conversation, so potential
outcomes are ``Y(d) = u < p(d)``: the true effect on *this* sample is an exact average of
``Y(1) - Y(0)`` rather than a population number, which lets tests demand tight coverage.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import polars as pl

from data_fixtures import design as D
from data_fixtures import text

US_PER_DAY = 86_400_000_000
US_PER_HOUR = 3_600_000_000
EPOCH = dt.date(1970, 1, 1)

# Relative conversation volume per UTC hour (a daytime peak).
HOUR_WEIGHTS = np.array(
    [
        0.2,
        0.15,
        0.1,
        0.1,
        0.1,
        0.15,
        0.3,
        0.6,
        0.9,
        1.0,
        1.0,
        1.0,
        0.95,
        0.95,
        1.0,
        1.0,
        0.95,
        0.9,
        0.85,
        0.8,
        0.7,
        0.6,
        0.45,
        0.3,
    ]
)


@dataclass
class Simulation:
    """One simulated sample: per-conversation arrays, the CRM table and the true effects."""

    conv: dict[str, np.ndarray]
    customers: pl.DataFrame
    customer_email: pl.Series  # indexed by customer pool index (``conv["cust"]``)
    customer_ids: pl.Series  # indexed by customer pool index
    truth: dict[str, float | None]


def _day_index(d: dt.date) -> int:
    return (d - D.START_DATE).days


def _categorical(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One draw per row from row-specific category probabilities (inverse CDF)."""
    cdf = np.cumsum(probs, axis=1)
    cdf[:, -1] = 1.0
    u = rng.random(probs.shape[0])[:, None]
    return (u > cdf).sum(axis=1).astype(np.int64)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _lookup(mapping: dict[str, float], names: tuple[str, ...], idx: np.ndarray) -> np.ndarray:
    return np.array([mapping[n] for n in names])[idx]


def _calendar(rng: np.random.Generator, n: int) -> np.ndarray:
    """Sorted, strictly increasing start times (µs since epoch, UTC)."""
    days = np.arange(D.N_DAYS)
    dow = days % 7  # START_DATE is a Monday
    w = np.where(dow < 5, 1.0, np.where(dow == 5, 0.6, 0.5)) * (1.0 + 0.3 * days / D.N_DAYS)
    day = rng.choice(D.N_DAYS, size=n, p=w / w.sum())
    hour = rng.choice(24, size=n, p=HOUR_WEIGHTS / HOUR_WEIGHTS.sum())
    within = rng.integers(0, US_PER_HOUR, size=n)
    start0 = (D.START_DATE - EPOCH).days * US_PER_DAY
    ts = np.sort(start0 + day * US_PER_DAY + hour * US_PER_HOUR + within)
    # Unique start times make "prior conversation within 30 days" unambiguous.
    ts = ts + np.arange(n, dtype=np.int64)
    last = start0 + D.N_DAYS * US_PER_DAY - 1
    return np.minimum(ts, last - (n - 1 - np.arange(n, dtype=np.int64)))


def _customers(rng: np.random.Generator, n: int) -> tuple[dict[str, np.ndarray], pl.DataFrame, pl.Series]:
    """Customer pool with heavy-tailed activity, CRM personas, and who is missing from CRM."""
    n_cust = max(1, int(D.CUSTOMERS_PER_CONVERSATION * n))
    activity = rng.gamma(0.6, size=n_cust)
    persona = rng.choice(len(D.PERSONAS), size=n_cust, p=D.PERSONA_SHARE)
    in_crm = rng.random(n_cust) >= D.P_MISSING_FROM_CRM
    persona_null = rng.random(n_cust) < D.P_NULL_PERSONA
    cid = pl.DataFrame({"k": rng.permutation(n_cust) + 1}).select(
        pl.concat_str([pl.lit("cust-"), pl.col("k").cast(pl.String).str.zfill(7)])
    )[:, 0]
    email = text.fake_emails(rng, n_cust)
    crm = pl.DataFrame(
        {
            "customer_id": cid,
            "persona_segment": text.pick(D.PERSONAS, persona).scatter(np.flatnonzero(persona_null), None),
        }
    ).filter(pl.Series(in_crm))
    info = {
        "activity": activity / activity.sum(),
        "persona": persona,
        "known_persona": in_crm & ~persona_null,
        "customer_id": cid,
    }
    return info, crm, email


def _prior_within(cust: np.ndarray, known: np.ndarray, ts: np.ndarray, window_us: int) -> np.ndarray:
    """True where the same customer started another conversation in the previous window."""
    out = np.zeros(len(ts), dtype=bool)
    idx = np.flatnonzero(known)
    if idx.size < 2:
        return out
    order = idx[np.lexsort((ts[idx], cust[idx]))]
    same = cust[order][1:] == cust[order][:-1]
    close = (ts[order][1:] - ts[order][:-1]) <= window_us
    out[order[1:]] = same & close
    return out


def _season(variant: str, week: np.ndarray, tier2: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shared weekly seasonality (trend, holiday dips, shocks) plus the diverging drift."""
    weeks = np.arange(D.N_WEEKS)
    s = D.SEASON_AMPLITUDE * np.sin(2 * np.pi * weeks / D.N_WEEKS) + D.TREND_PER_WEEK * weeks
    for d, dip in D.HOLIDAY_DIPS.items():
        s[_day_index(d) // 7] += dip
    s = s + rng.normal(0.0, D.WEEK_SHOCK_SD, D.N_WEEKS)
    out = s[week]
    if variant == "diverging":
        launch_week = _day_index(D.LOOKUP_ORDER_LAUNCH) // 7
        out = out + tier2 * D.DIVERGING_DRIFT_PER_WEEK * np.minimum(week - launch_week, 0)
    return out


def simulate(n: int, seed: int, variant: str) -> Simulation:
    """Draw one sample of ``n`` conversations. See docs/DESIGN.md "Fixture generator"."""
    if variant not in D.VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {', '.join(D.VARIANTS)}")
    if n < 1:
        raise ValueError("n_conversations must be at least 1")
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(8)]
    r_cal, r_cust, r_conv, r_email, r_tool, r_out, _r_spare, r_season = streams

    ts = _calendar(r_cal, n)
    day = (ts // US_PER_DAY - (D.START_DATE - EPOCH).days).astype(np.int64)
    week = day // 7
    hour = (ts % US_PER_DAY) // US_PER_HOUR
    night = (hour >= 22) | (hour < 6)

    # --- customers, personas, memory -------------------------------------------------
    info, crm, cust_email = _customers(r_cust, n)
    anonymous = r_cust.random(n) < D.P_ANONYMOUS
    cust = r_cust.choice(len(info["activity"]), size=n, p=info["activity"])
    known_cust = ~anonymous
    persona_names = D.PERSONAS + ("unknown",)
    persona = np.where(known_cust & info["known_persona"][cust], info["persona"][cust], len(D.PERSONAS))
    prior30 = _prior_within(cust, known_cust, ts, D.MEMORY_WINDOW_DAYS * US_PER_DAY)
    mem_draw = 1 + r_cust.poisson(2.0, n)
    mem_items = np.where(
        prior30,
        np.where(r_cust.random(n) < 0.9, mem_draw, 0),
        np.where(known_cust & (r_cust.random(n) < 0.15), 1 + r_cust.poisson(0.5, n), 0),
    )
    mem_null = r_cust.random(n) < D.P_MEMORY_NULL
    memory_has_prior = ((mem_items > 0) & ~mem_null) | prior30

    # --- channel, intent, routing, versions ------------------------------------------
    channel = r_conv.choice(len(D.CHANNELS), size=n, p=D.CHANNEL_SHARE)
    intent_probs = np.tile(D.INTENT_SHARE, (len(persona_names), 1))
    complaint = D.INTENTS.index("complaint")
    intent_probs[D.PERSONAS.index("at_risk"), complaint] *= 2.0
    intent_probs /= intent_probs.sum(axis=1, keepdims=True)
    intent = _categorical(r_conv, intent_probs[persona])
    group = _categorical(r_conv, D.ROUTING[intent])
    skill = group * 8 + r_conv.integers(0, 8, n)
    tier2 = group == D.SKILL_GROUPS.index("tier2")
    is_chat = channel == D.CHANNELS.index("chat")
    v2 = is_chat & (day >= _day_index(D.PROMPT_V2_LAUNCH))
    post_lookup = day >= _day_index(D.LOOKUP_ORDER_LAUNCH)
    lookup_available = tier2 & post_lookup
    transactional = D.IS_TRANSACTIONAL[intent]

    # --- email timing: confounded by intent, memory, persona, channel, hour ----------
    asked = r_email.random(n) < D.P_ASK_EMAIL[intent]
    logit = (
        D.EARLY_LOGIT_INTERCEPT
        + D.EARLY_LOGIT_TRANSACTIONAL * transactional
        + D.EARLY_LOGIT_KNOWN * memory_has_prior
        + _lookup(D.EARLY_LOGIT_PERSONA, persona_names, persona)
        + _lookup(D.EARLY_LOGIT_CHANNEL, D.CHANNELS, channel)
        + D.EARLY_LOGIT_NIGHT * night
    )
    early = asked & (r_email.random(n) < _sigmoid(logit))

    # --- tools ------------------------------------------------------------------------
    u_tool = r_tool.random(n)
    lookup_used = lookup_available & (
        (D.IS_ORDER_INTENT[intent] & (u_tool < D.P_LOOKUP_ORDER_USE))
        | ((intent == complaint) & (u_tool < D.P_LOOKUP_ORDER_USE_COMPLAINT))
    )
    tool_names = ("", "issue_refund", "reset_password", "kb_search")
    other_tool = np.zeros(n, dtype=np.int64)
    u_other = r_tool.random(n)
    for intent_name, (tool, p) in D.P_OTHER_TOOL.items():
        hit = (intent == D.INTENTS.index(intent_name)) & (u_other < p)
        other_tool[hit] = tool_names.index(tool)
    no_rule = ~np.isin(intent, [D.INTENTS.index(k) for k in D.P_OTHER_TOOL])
    other_tool[no_rule & (u_other < D.P_KB_SEARCH_OTHER)] = tool_names.index("kb_search")

    # --- resolution probabilities and potential outcomes ----------------------------
    skill_level = r_season.normal(0.0, D.P_SKILL_SD, len(D.SKILLS))
    base = (
        D.BASE_P
        + D.P_TRANSACTIONAL * transactional
        + D.P_KNOWN * memory_has_prior
        + _lookup(D.P_PERSONA, persona_names, persona)
        + _lookup(D.P_CHANNEL, D.CHANNELS, channel)
        + _lookup(D.P_SKILL_GROUP, D.SKILL_GROUPS, group)
        + skill_level[skill]
        + D.P_COMPLAINT * (intent == complaint)
        + D.P_NIGHT * night
        + _season(variant, week, tier2, r_season)
    )
    null = variant == "null"
    e_email = 0.0 if null else D.EFFECT_EMAIL_EARLY
    e_v2 = 0.0 if null else D.EFFECT_PROMPT_V2
    e_lookup = 0.0 if null else D.EFFECT_LOOKUP_ORDER

    def prob(email: np.ndarray, ver: np.ndarray, look: np.ndarray) -> np.ndarray:
        return np.clip(base + e_email * email + e_v2 * ver + e_lookup * look, *D.P_CLIP)

    ones, zeros = np.ones(n, bool), np.zeros(n, bool)
    p = {
        "p_resolved": prob(early, v2, lookup_available),
        "p_email_early": prob(ones, v2, lookup_available),
        "p_email_late": prob(zeros, v2, lookup_available),
        "p_prompt_v2": prob(early, ones, lookup_available),
        "p_prompt_v1": prob(early, zeros, lookup_available),
        "p_lookup_on": prob(early, v2, ones),
        "p_lookup_off": prob(early, v2, zeros),
    }
    u = r_out.random(n)
    y = {k.replace("p_", "y_", 1): u < v for k, v in p.items()}
    resolved = y.pop("y_resolved")

    def _mean_diff(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float | None:
        return float(np.mean(a[mask].astype(np.int8) - b[mask].astype(np.int8))) if mask.any() else None

    truth = {
        "email_early_vs_late": _mean_diff(y["y_email_early"], y["y_email_late"], early),
        "prompt_v2_launch": _mean_diff(y["y_prompt_v2"], y["y_prompt_v1"], v2),
        "lookup_order_rollout": _mean_diff(y["y_lookup_on"], y["y_lookup_off"], lookup_available),
    }

    # --- downstream outcomes and the agent-controlled "marked resolved" -------------
    p_mark = np.where(
        resolved,
        D.P_MARK_RESOLVED_IF_RESOLVED,
        np.where(early, D.P_MARK_RESOLVED_IF_NOT["early"], D.P_MARK_RESOLVED_IF_NOT["other"]),
    )
    marked = r_out.random(n) < p_mark
    reopened = ~resolved & marked & (r_out.random(n) < D.P_REOPEN_IF_MARKED_UNRESOLVED)
    escalated = ~marked & (
        r_out.random(n) < np.where(resolved, D.P_ESCALATED["resolved"], D.P_ESCALATED["unresolved"])
    )
    csat_res = _categorical(
        r_out, np.where(resolved[:, None], D.CSAT_PROBS["resolved"], D.CSAT_PROBS["unresolved"])
    )
    csat_resp = r_out.random(n) < D.P_CSAT_RESPONSE

    conv = {
        "ts_start_us": ts,
        "day": day,
        "week": week,
        "hour": hour,
        "channel": channel,
        "intent": intent,
        "skill": skill,
        "group": group,
        "persona": persona,
        "anonymous": anonymous,
        "cust": cust,
        "prior30": prior30,
        "memory_items": mem_items,
        "memory_null": mem_null,
        "memory_has_prior_session": memory_has_prior,
        "v2": v2,
        "lookup_available": lookup_available,
        "asked": asked,
        "early": early,
        "lookup_used": lookup_used,
        "other_tool": other_tool,
        "u": u,
        "resolved": resolved,
        "agent_marked_resolved": marked,
        "reopened_7d": reopened,
        "escalated": escalated,
        "csat": np.where(csat_resp, csat_res + 1, 0),  # 0 = no survey answer
        **p,
        **y,
    }
    return Simulation(
        conv=conv, customers=crm, customer_email=cust_email, customer_ids=info["customer_id"], truth=truth
    )


OTHER_TOOL_NAMES: tuple[str, ...] = ("", "issue_refund", "reset_password", "kb_search")
PERSONA_NAMES: tuple[str, ...] = D.PERSONAS + ("unknown",)
