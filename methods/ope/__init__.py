"""Logged-policy evaluation (off-policy evaluation of a routing rule from logs with propensities).

``estimate.py`` is the entry point (``estimate_policy_value``: IPS, self-normalised IPS and
doubly robust values of a candidate policy with influence-function intervals and the effective
sample size); ``rules.py`` evaluates a policy written as data (ordered rules, first match wins)
with numpy masks.
"""

from methods.ope.estimate import estimate_policy_value
from methods.ope.rules import choose_actions

__all__ = ["choose_actions", "estimate_policy_value"]
