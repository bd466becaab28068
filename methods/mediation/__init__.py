"""Mediation of a 0/1 treatment's effect through a 0/1 mediator (a tool call, a retrieval).

``estimate.py`` is the entry point (``estimate_mediation``: total effect, controlled and natural
direct effects, share mediated, regression-based with a vectorized bootstrap).
"""

from methods.mediation.estimate import estimate_mediation

__all__ = ["estimate_mediation"]
