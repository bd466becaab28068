"""Synthetic control: everything only synthetic control uses lives in this package.

``estimate.py`` is the entry point (``estimate_sc``); ``panel.py`` aggregates the signals into a
cohort × period panel in DuckDB, ``prepare.py`` shapes it, ``weights.py`` solves the simplex QP,
``inference.py`` gives placebo ranks and the conformal interval, ``refuters.py`` and
``diagnostics.py`` the method's own refutations and diagnostics.
"""

from methods.sc.estimate import estimate_sc

__all__ = ["estimate_sc"]
