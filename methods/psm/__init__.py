"""Propensity score matching: everything only matching uses lives in this package.

``estimate.py`` is the entry point (``estimate_psm``); ``propensity.py`` fits the propensity on
covariate cells, ``matching.py`` matches cells, ``balance.py`` and ``refuters.py`` give the
method's own diagnostics and refutations, ``crosschecks.py`` the IPW/AIPW cross-checks.
"""

from methods.psm.estimate import PSMEstimator, estimate_psm

__all__ = ["PSMEstimator", "estimate_psm"]
