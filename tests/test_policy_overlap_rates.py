"""Error rates of the ``policy_overlap`` check (WARN) over many seeds.

The check's assumption: the candidate policy takes, almost everywhere, actions the logger took there
with a fair probability. Its truth in a simulated world is the share of the candidate's choices
whose logging propensity is below ``RARE_P`` (computed below on 1M draws, never from the
estimator). Worlds differ only by how rarely the logger sends anyone to a human (``human_shift``,
the human action's logit offset); the candidate sends every risky conversation to a human.

Measured with only the logged action's probability (100 seeds, 2,000 logged rows each; true rare
share in brackets): shift -1.0 (0.1%) fails 0%; -2.0 (1.8%) fails 6%; -3.0 (10.2%) fails 85%;
-4.0 (15.5%) 94%; -5.0 (15.9%) 82% (fails or refuses for an action never logged). With every action's
probability logged (``propensity_prefix``) the share is exact: fails 0% at -1.0 and -2.0, 100% at -3.0,
-4.0 and -5.0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from methods.ope import estimate_policy_value
from methods.ope.estimate import RARE_P, RARE_SHARE
from methods.result import MethodRefusal

ACTIONS = np.array(["small_model", "large_model", "human"])
POLICY = {"rules": [{"when": {"risk": {"gt": 1.0}}, "action": "human"},
                    {"when": {"difficulty": {"gt": -0.3}}, "action": "large_model"}],
          "default": "small_model"}
SEEDS = range(100)


def _probabilities(risk: np.ndarray, difficulty: np.ndarray, human_shift: float) -> np.ndarray:
    logits = np.stack([1.0 - 0.8 * difficulty, 0.2 * difficulty, human_shift + 0.8 * risk], axis=1)
    return np.exp(logits) / np.exp(logits).sum(1, keepdims=True)


def simulate(n: int, seed: int, human_shift: float) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    risk, difficulty = rng.normal(size=n), rng.normal(size=n)
    prob = _probabilities(risk, difficulty, human_shift)
    a = (rng.random(n)[:, None] > prob.cumsum(1)).sum(1).clip(0, 2)
    reward = 0.5 + 0.1 * a + 0.2 * risk + rng.normal(scale=0.5, size=n)
    per_action = {f"p_{name}": prob[:, k] for k, name in enumerate(ACTIONS)}
    return pd.DataFrame({"risk": risk, "difficulty": difficulty, "action": ACTIONS[a],
                         "propensity": prob[np.arange(n), a], "reward": reward, **per_action})


def true_rare_share(human_shift: float, n: int = 1_000_000) -> float:
    """Share of the candidate's choices the logger makes with probability < RARE_P (the check's truth)."""
    rng = np.random.default_rng(2024)
    risk, difficulty = rng.normal(size=n), rng.normal(size=n)
    choice = np.where(risk > 1.0, 2, np.where(difficulty > -0.3, 1, 0))
    return float((_probabilities(risk, difficulty, human_shift)[np.arange(n), choice] < RARE_P).mean())


def failure_rate(human_shift: float, per_action: bool) -> float:
    """Share of seeds in which the check fails, or the method refuses for an action never logged.

    ``per_action``: the logs carry every action's logging probability (``p_<action>``), so the rare
    share is exact; otherwise only the logged action's, and the share is inverse-weighted."""
    failed = 0
    how = {"propensity": None, "propensity_prefix": "p_"} if per_action else {"propensity": "propensity"}
    for s in SEEDS:
        try:
            res = estimate_policy_value(simulate(2000, s, human_shift), action="action", reward="reward",
                                        policy=POLICY, context=["risk", "difficulty"], seed=s, **how)
        except MethodRefusal:
            failed += 1
            continue
        failed += any(not d.passed for d in res.diagnostics if d.check == "policy_overlap")
    return failed / len(SEEDS)


@pytest.mark.parametrize("per_action", [True, False], ids=["per_action", "logged_only"])
@pytest.mark.parametrize("shift", [-1.0, -2.0])
def test_false_alarms_at_most_ten_percent_where_overlap_holds(shift, per_action):
    assert true_rare_share(shift) < RARE_SHARE / 2  # the assumption holds in this world
    rate = failure_rate(shift, per_action)
    print(f"shift {shift}: true rare share {true_rare_share(shift):.3f}, fails {rate:.0%}")
    assert rate <= 0.10


@pytest.mark.parametrize("shift", [-3.0, -4.0, -5.0])
def test_per_action_propensities_detect_at_least_ninety_percent_where_overlap_breaks(shift):
    assert true_rare_share(shift) > 2 * RARE_SHARE  # past the threshold
    rate = failure_rate(shift, per_action=True)
    print(f"shift {shift}: true rare share {true_rare_share(shift):.3f}, fails {rate:.0%}")
    assert rate >= 0.90


@pytest.mark.parametrize("shift, floor", [(-4.0, 0.90), (-5.0, 0.75)])
def test_logged_propensity_only_detects_less_where_the_action_was_almost_never_logged(shift, floor):
    """With only the logged action's probability, the rare share is inverse-weighted over the rows where
    the candidate's action was logged; where the logger (almost) never took it in the candidate's
    region, few or none of those rows exist and the share reads low: measured 94% at shift -4 and 82%
    at -5 (the blind spot, stated in the docs: log every action's probability)."""
    rate = failure_rate(shift, per_action=False)
    print(f"shift {shift}: true rare share {true_rare_share(shift):.3f}, fails {rate:.0%}")
    assert rate >= floor
