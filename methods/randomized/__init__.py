"""Randomized designs (A/B tests with imperfect uptake): everything only they use lives here.

``estimate.py`` is the entry point (``estimate_itt``: intent-to-treat, difference in means or
Lin's regression adjustment; ``estimate_iv``: Wald / 2SLS treatment-on-the-treated), ``cells.py``
compresses rows to sufficient statistics in DuckDB, ``linear.py`` fits least squares and 2SLS on
the cells with exact robust covariances, ``diagnostics.py`` measures the randomization checks
(sample size, sample ratio, covariate balance, first-stage strength).
"""

from methods.randomized.estimate import ARM_TABLE_COLUMNS, estimate_itt, estimate_iv

__all__ = ["ARM_TABLE_COLUMNS", "estimate_itt", "estimate_iv"]
