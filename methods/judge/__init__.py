"""Judge calibration: an effect on an automated (LLM-judge) score, corrected with a human-audited sample.

``estimate.py`` is the entry point (``estimate_judge_effect``: the effect on the raw judge score,
on the calibrated score by prediction-powered inference, and on the audit sample alone, with the
check that the judge's bias is the same in both arms).
"""

from methods.judge.estimate import estimate_judge_effect

__all__ = ["estimate_judge_effect"]
