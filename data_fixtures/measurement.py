"""A landing directory for the measurement and mechanism designs (issue 17), with their truths.

``generate_measurement(out_dir, n_conversations, seed)`` writes the standard synthetic landing
directory (``data_fixtures.generator.generate``: its transcripts, customers and the four contract
outcome columns are unchanged) and then adds outcome columns that downstream systems would export,
drawn from the per-conversation labels with effects known by construction:

* **judge calibration**: ``human_score`` (human-rated quality on a random ``AUDIT_SHARE`` sample,
  null elsewhere), ``judge_score`` (an automated judge that also rewards length) and
  ``response_words`` (the length of the agent's answers, which the judging system records). The
  treatment is ``tool_lookup_order``; it raises human quality by ``JUDGE_TRUE_EFFECT`` and the
  answers' length by ``LENGTH_SHIFT`` words, so the effect on the raw judge score is about twice
  the human-quality effect. Quality does not depend on anything else, so the arms' difference in
  human quality *is* the effect.
* **logged routing**: ``route_action`` (``small_model`` / ``large_model`` / ``human``, drawn by a
  logger that routes on persona and channel), its per-action logging probabilities
  ``route_p_<action>`` and a reward ``route_reward``. ``POLICY`` is a candidate rule; its true value
  is the mean expected reward of its action on every conversation, the logged mean is the logger's.
* **mediation**: ``first_contact_resolved``, driven by the lookup_order rollout (treated group after
  launch) with a direct part ``MEDIATION_DIRECT`` and a part ``MEDIATION_TOOL`` that works only
  when the tool was called: total = direct + tool effect x P(tool called | rollout reached).

Truths go to ``out_dir/truth.json`` beside the standard ones (keys ``judge_quality``,
``routing_policy``, ``lookup_mediation``) and in detail to ``out_dir/_truth/measurement.json``.
``configs/examples/measurement/`` holds the signals config (these columns as downstream outcomes) and
the questions that ask them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from data_fixtures.generator import LOOKUP_ORDER_LAUNCH, generate

AUDIT_SHARE = 0.10
JUDGE_TRUE_EFFECT = 0.25  # human-rated quality points
LENGTH_SHIFT = 60.0  # words
JUDGE_SLOPE = 0.9  # judge points per human point
LENGTH_BIAS = (2 * JUDGE_TRUE_EFFECT - JUDGE_SLOPE * JUDGE_TRUE_EFFECT) / LENGTH_SHIFT  # raw effect = 2x truth
ACTIONS = ("small_model", "large_model", "human")
PROPENSITY_PREFIX = "route_p_"
# the candidate routing rule (the same rules as configs/examples/measurement/questions.yaml)
POLICY = {"rules": [{"when": {"persona_segment": {"in": ["vip", "at_risk"]}}, "action": "human"},
                    {"when": {"channel": {"in": ["voice", "email"]}}, "action": "large_model"}],
          "default": "small_model"}
MEDIATION_DIRECT = 0.08
MEDIATION_TOOL = 0.15
MEASUREMENT_QUESTIONS = ("judge_quality", "routing_policy", "lookup_mediation")


def _expected_rewards(persona: np.ndarray, channel: np.ndarray) -> np.ndarray:
    """n x 3 expected reward of each action: the large model pays off on voice and email, humans for
    valuable or fragile customers, the small model elsewhere."""
    important = np.isin(persona, ["vip", "at_risk"])
    slow = np.isin(channel, ["voice", "email"])
    small = 0.70 - 0.25 * slow - 0.30 * important
    large = 0.62 + 0.05 * slow - 0.10 * important
    human = 0.50 + 0.35 * important
    return np.stack([small, large, human], axis=1)


def _logging_probabilities(persona: np.ndarray, channel: np.ndarray) -> np.ndarray:
    """The logger: mostly the small model, the human for fragile customers more often (confounded logs)."""
    important = np.isin(persona, ["vip", "at_risk"])
    slow = np.isin(channel, ["voice", "email"])
    logits = np.stack([np.full(len(persona), 1.0) + 0.4 * important,
                       0.2 - 0.6 * slow + 0.0 * important,
                       -1.2 + 0.9 * important - 0.5 * slow], axis=1)
    e = np.exp(logits)
    return e / e.sum(1, keepdims=True)


def candidate_actions(persona: np.ndarray, channel: np.ndarray) -> np.ndarray:
    """``POLICY`` applied with numpy (first matching rule wins; a missing value matches nothing)."""
    out = np.full(len(persona), POLICY["default"], dtype=object)
    undecided = np.ones(len(persona), dtype=bool)
    for rule in POLICY["rules"]:
        (col, cond), = rule["when"].items()
        values = persona if col == "persona_segment" else channel
        hit = undecided & np.isin(values.astype(str), cond["in"])
        out[hit] = rule["action"]
        undecided &= ~hit
    return out


def measurement_columns(labels: pl.DataFrame, seed: int = 0) -> tuple[pl.DataFrame, dict[str, Any]]:
    """The added outcome columns (one row per conversation of ``labels``) and their truths."""
    rng = np.random.default_rng([seed, 17])
    n = labels.height
    tool = labels["tools"].list.contains("lookup_order").fill_null(False).to_numpy().astype(float)
    persona = labels["persona_segment"].fill_null("unknown").to_numpy().astype(str)
    channel = labels["channel"].to_numpy().astype(str)

    # judge calibration
    human = 3.0 + JUDGE_TRUE_EFFECT * tool + rng.normal(0, 0.8, n)
    words = 80.0 + LENGTH_SHIFT * tool + rng.normal(0, 20.0, n)
    judge = 0.2 + JUDGE_SLOPE * human + LENGTH_BIAS * (words - 80.0) + rng.normal(0, 0.3, n)
    audited = rng.random(n) < AUDIT_SHARE

    # logged routing
    prob = _logging_probabilities(persona, channel)
    logged = (rng.random(n)[:, None] > prob.cumsum(1)).sum(1).clip(0, 2)
    mu = _expected_rewards(persona, channel)
    reward = mu[np.arange(n), logged] + rng.normal(0, 0.3, n)
    index = {a: j for j, a in enumerate(ACTIONS)}
    chosen = np.array([index[a] for a in candidate_actions(persona, channel)], dtype=int)

    # mediation through the tool call, on the lookup_order rollout
    reached = labels["treated_lookup_order"].to_numpy().astype(float)
    tier2 = labels["skill"].str.starts_with("tier2").to_numpy().astype(float)
    post = (labels["date"] >= LOOKUP_ORDER_LAUNCH).to_numpy().astype(float)
    p_first = 0.45 + MEDIATION_DIRECT * reached + MEDIATION_TOOL * tool - 0.05 * tier2 + 0.03 * post
    first_contact = rng.random(n) < p_first

    cols = pl.DataFrame({
        "conversation_id": labels["conversation_id"],
        "judge_score": judge,
        "human_score": pl.Series(np.where(audited, human, np.nan)).fill_nan(None),
        "response_words": words,
        "route_action": np.array(ACTIONS)[logged],
        **{f"{PROPENSITY_PREFIX}{a}": prob[:, j] for j, a in enumerate(ACTIONS)},
        "route_reward": reward,
        "first_contact_resolved": first_contact,
    })
    p_tool = float(tool[reached == 1].mean()) if (reached == 1).any() else 0.0
    total = MEDIATION_DIRECT + MEDIATION_TOOL * p_tool
    truth = {
        "judge_quality": {"human_effect": JUDGE_TRUE_EFFECT,
                          "raw_judge_effect": JUDGE_SLOPE * JUDGE_TRUE_EFFECT + LENGTH_BIAS * LENGTH_SHIFT,
                          "audited": int(audited.sum())},
        "routing_policy": {"policy_value": float(mu[np.arange(n), chosen].mean()),
                           "logged_value": float(mu[np.arange(n), logged].mean()),
                           "population_logged_value": float((prob * mu).sum(1).mean())},
        "lookup_mediation": {"total_effect": total, "direct_effect": MEDIATION_DIRECT,
                             "indirect_effect": MEDIATION_TOOL * p_tool,
                             "share_mediated": MEDIATION_TOOL * p_tool / total, "p_tool_if_reached": p_tool},
    }
    return cols, truth


def generate_measurement(out_dir: str | os.PathLike[str], n_conversations: int = 8_000, seed: int = 0) -> dict:
    """The standard landing directory plus the measurement columns in ``outcomes.parquet`` (module doc)."""
    out = Path(out_dir)
    info = generate(out, n_conversations=n_conversations, seed=seed)
    labels = pl.read_parquet(out / "_truth" / "labels.parquet")
    cols, truth = measurement_columns(labels, seed)
    outcomes = pl.read_parquet(out / "outcomes.parquet")
    outcomes.join(cols, on="conversation_id", how="left").write_parquet(out / "outcomes.parquet")
    headline = {"judge_quality": truth["judge_quality"]["human_effect"],
                "routing_policy": truth["routing_policy"]["policy_value"],
                "lookup_mediation": truth["lookup_mediation"]["total_effect"]}
    all_truth = {**json.loads((out / "truth.json").read_text()), **headline}
    (out / "truth.json").write_text(json.dumps(all_truth, indent=2))
    (out / "_truth" / "measurement.json").write_text(json.dumps(truth, indent=2))
    return {**info, "truth": all_truth, "measurement_truth": truth}
