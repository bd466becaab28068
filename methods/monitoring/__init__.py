"""Numerics for nightly monitoring: anytime-valid intervals, multiplicity, drift between runs.

Pure functions over numbers and arrays (no store, no config, no orchestrator): the question
layer reads the run history and the new days from the store and calls these.
"""

from methods.monitoring.confidence_sequence import (
    ConfidenceSequence,
    confidence_sequence,
    running_intersection,
)
from methods.monitoring.multiplicity import adjust, n_tested

__all__ = ["ConfidenceSequence", "adjust", "confidence_sequence", "n_tested", "running_intersection"]
