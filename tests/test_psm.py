"""Propensity matching against known truth and against DoWhy's own estimator.

The simulated data mimic the email-timing question: an agent asks for the email early mostly on
transactional intents and for returning customers, and those conversations resolve more often
anyway, so the naive difference is several times the true effect (a constant +0.03 or whatever
``effect`` says — ATT = ATE = effect by construction).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from methods.result import MethodRefusal

REF = Path(__file__).parent / "reference"
INTENTS = ["order_status", "refund_request", "cancel_subscription", "update_payment",
           "shipping_address", "password_reset", "product_question", "complaint"]
TRANSACTIONAL = INTENTS[:5]
PERSONAS = ["new", "regular", "vip", "at_risk", "unknown"]
COVARIATES = ["intent", "persona_segment", "memory_has_prior_session", "agent_version", "hour_of_day", "channel"]


def simulate(n: int, seed: int, effect: float = 0.03, confounding: float = 1.0) -> pd.DataFrame:
    """Confounded email-timing data with a known constant effect on ``resolved``.

    ``confounding`` scales how strongly intent / memory / persona drive both the choice to ask
    early and the resolution (0 = a randomised experiment).
    """
    rng = np.random.default_rng(seed)
    intent = rng.choice(INTENTS, n)
    trans = np.isin(intent, TRANSACTIONAL).astype(float)
    persona = rng.choice(PERSONAS, n, p=[0.2, 0.35, 0.1, 0.15, 0.2])
    memory = rng.random(n) < np.where(np.isin(persona, ["regular", "vip"]), 0.6, 0.2)
    agent_version = rng.choice(["v1.4", "v2.0"], n, p=[0.7, 0.3])
    hour = rng.integers(0, 24, n)
    channel = rng.choice(["chat", "voice", "email", "sms"], n, p=[0.5, 0.2, 0.2, 0.1])
    vip = (persona == "vip").astype(float)
    new = (persona == "new").astype(float)
    logit = -1.0 + confounding * (2.0 * trans + 0.9 * memory + 0.6 * vip - 0.6 * new) + 0.2 * (channel == "chat")
    treated = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    p0 = 0.35 + confounding * (0.30 * trans + 0.10 * memory + 0.08 * vip - 0.05 * new) + 0.02 * (agent_version == "v2.0")
    resolved = (rng.random(n) < p0 + effect * treated).astype(int)
    return pd.DataFrame({
        "asked_email_first": treated, "resolved": resolved, "intent": intent, "persona_segment": persona,
        "memory_has_prior_session": memory, "agent_version": agent_version, "hour_of_day": hour,
        "channel": channel,
    })
