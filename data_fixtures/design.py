"""Fixed calendar, populations and effect sizes of the synthetic fixture.

Kept apart from the simulation code so ``configs/questions.yaml``, tests and the generator
read the same numbers (``data_fixtures.generator`` re-exports the public constants).
Effects are additive on the resolution *probability* (a linear probability model), so
parallel trends hold exactly in the standard variant and the DiD / synthetic-control
estimands are the plain differences of potential outcomes.
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from data_fixtures import phrases

START_DATE: dt.date = dt.date(2026, 1, 5)  # a Monday
N_WEEKS: int = 26
N_DAYS: int = N_WEEKS * 7  # 182 days: 2026-01-05 .. 2026-07-05
PROMPT_V2_LAUNCH: dt.date = dt.date(2026, 5, 25)  # Monday of week 21 (1-based)
LOOKUP_ORDER_LAUNCH: dt.date = dt.date(2026, 3, 30)  # Monday of week 13 (1-based)

SKILL_GROUPS: tuple[str, ...] = ("tier1", "tier2", "billing")
SKILLS: tuple[str, ...] = tuple(f"{g}-{k}" for g in SKILL_GROUPS for k in range(1, 9))
TREATED_SKILLS: tuple[str, ...] = tuple(s for s in SKILLS if s.startswith("tier2-"))

CHANNELS: tuple[str, ...] = ("chat", "email", "voice", "sms")
CHANNEL_SHARE = np.array([0.50, 0.20, 0.20, 0.10])
PERSONAS: tuple[str, ...] = ("new", "regular", "vip", "at_risk")
PERSONA_SHARE = np.array([0.25, 0.45, 0.10, 0.20])
AGENT_V1, AGENT_V2 = "v1.4", "v2.0"
VARIANTS: tuple[str, ...] = ("standard", "null", "diverging")
QUESTION_IDS: tuple[str, ...] = ("email_early_vs_late", "prompt_v2_launch", "lookup_order_rollout")

INTENTS: tuple[str, ...] = phrases.INTENTS
INTENT_SHARE = np.array([0.20, 0.13, 0.10, 0.10, 0.12, 0.13, 0.10, 0.12])  # order of phrases.INTENTS
IS_TRANSACTIONAL = np.array([i in phrases.TRANSACTIONAL_INTENTS for i in INTENTS])
IS_ORDER_INTENT = np.array([i in phrases.ORDER_INTENTS for i in INTENTS])

# Routing: P(skill group | intent), columns follow SKILL_GROUPS. Skill follows intent (plus
# noise) only, so given intent it is not a confounder of the email-timing choice.
ROUTING = np.array(
    [
        [0.25, 0.70, 0.05],  # order_status
        [0.15, 0.35, 0.50],  # refund_request
        [0.20, 0.10, 0.70],  # cancel_subscription
        [0.10, 0.05, 0.85],  # update_payment
        [0.85, 0.10, 0.05],  # password_reset
        [0.80, 0.15, 0.05],  # product_question
        [0.35, 0.50, 0.15],  # complaint
        [0.20, 0.75, 0.05],  # shipping_address
    ]
)

# --- population shares --------------------------------------------------------------
P_ANONYMOUS = 0.15  # conversations without a customer_id
CUSTOMERS_PER_CONVERSATION = 0.35  # size of the customer pool relative to n_conversations
P_MISSING_FROM_CRM = 0.05
P_NULL_PERSONA = 0.02
P_MEMORY_NULL = 0.03  # memory_items not logged
# memory_has_prior_session := memory_items > 0 (null counts as 0) OR the same customer started
# another conversation at most MEMORY_WINDOW_DAYS before this one (start times are unique).
MEMORY_WINDOW_DAYS = 30
P_SYSTEM_MESSAGE = 0.35
P_FOLLOWUP = 0.65

# --- email timing (PSM) -----------------------------------------------------------
# P(agent asks for the email at all | intent), order of phrases.INTENTS.
P_ASK_EMAIL = np.array([0.75, 0.75, 0.75, 0.75, 0.75, 0.50, 0.60, 0.75])
# logit P(early | asked) = intercept + terms below: strong, all observed covariates.
EARLY_LOGIT_INTERCEPT = -1.7
EARLY_LOGIT_TRANSACTIONAL = 2.6
EARLY_LOGIT_KNOWN = 1.0
EARLY_LOGIT_PERSONA = {"new": 0.0, "regular": 0.2, "vip": 0.6, "at_risk": -0.5, "unknown": -0.3}
EARLY_LOGIT_CHANNEL = {"chat": 0.3, "email": -0.2, "voice": -0.4, "sms": 0.0}
EARLY_LOGIT_NIGHT = -0.3  # 22:00-05:59 UTC

# --- resolution model (additive on the probability) ---------------------------------
BASE_P = 0.50
P_TRANSACTIONAL = 0.15
P_KNOWN = 0.08
P_PERSONA = {"new": 0.0, "regular": 0.02, "vip": 0.05, "at_risk": -0.08, "unknown": -0.03}
P_CHANNEL = {"chat": 0.0, "email": -0.03, "voice": 0.02, "sms": -0.04}
P_SKILL_GROUP = {"tier1": 0.0, "tier2": -0.06, "billing": -0.02}
P_SKILL_SD = 0.015  # per-queue level (cluster effect), fixed per seed
P_COMPLAINT = -0.10
P_NIGHT = -0.02
HOLIDAY_DIPS = {dt.date(2026, 2, 16): -0.03, dt.date(2026, 4, 6): -0.06}  # week starts
SEASON_AMPLITUDE = 0.03
TREND_PER_WEEK = 0.004  # steady improvement (knowledge base grows): makes before/after comparisons wrong
WEEK_SHOCK_SD = 0.006
P_CLIP = (0.02, 0.98)

EFFECT_EMAIL_EARLY = 0.03
EFFECT_PROMPT_V2 = 0.06
EFFECT_LOOKUP_ORDER = 0.05
DIVERGING_DRIFT_PER_WEEK = -0.01  # tier2 vs others, before LOOKUP_ORDER_LAUNCH (variant diverging)

# --- agent-controlled outcome and other downstream outcomes -------------------------
P_MARK_RESOLVED_IF_RESOLVED = 0.92
P_MARK_RESOLVED_IF_NOT = {"early": 0.35, "other": 0.10}  # eager closing after an early ask
P_REOPEN_IF_MARKED_UNRESOLVED = 0.6
P_ESCALATED = {"resolved": 0.04, "unresolved": 0.40}
P_CSAT_RESPONSE = 0.35
CSAT_PROBS = {  # over 1..5
    "resolved": np.array([0.03, 0.05, 0.12, 0.35, 0.45]),
    "unresolved": np.array([0.30, 0.28, 0.22, 0.13, 0.07]),
}

# --- tools --------------------------------------------------------------------------
P_LOOKUP_ORDER_USE = 0.85  # tier2 post-launch, order intents
P_LOOKUP_ORDER_USE_COMPLAINT = 0.30
# P(other tool | intent) for issue_refund / reset_password / kb_search.
P_OTHER_TOOL = {
    "refund_request": ("issue_refund", 0.55),
    "password_reset": ("reset_password", 0.65),
    "product_question": ("kb_search", 0.60),
}
P_KB_SEARCH_OTHER = 0.08
