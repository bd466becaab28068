"""Difference-in-differences: everything only diff-in-diff uses lives in this package.

``estimate.py`` is the entry point (``estimate_did``); ``compress.py`` reduces rows to sufficient
statistics per cell, ``inference.py`` gives cluster-robust and wild-bootstrap inference,
``event_study.py`` the pre-trend test, ``staggered.py`` staggered adoption (Callaway–Sant'Anna).
"""

from methods.did.estimate import estimate_did

__all__ = ["estimate_did"]
