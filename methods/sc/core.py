"""Synthetic control's shared pieces: constants, the wide panel it works on, small helpers."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

METHOD = "synthetic_control"
ESTIMAND = "ATT (average post-launch gap, treated units)"
ALPHA = 0.05
# The pre-period fit gate (check ``pre_period_fit``, see ``diagnostics.py``): three rules, each at
# about a 1% false-alarm rate on honest fits; together they failed 0-4.5% of good fits in the
# simulated worlds of ``tests/test_sc_gate.py`` (200 seeds each).
FIT_GATE_RATIO = 1.0  # pre-period RMSPE / residual sd of the treated pre-series around its own linear trend
GAP_TREND_ALPHA = 0.01  # two-sided level of the t-test for a linear drift in the pre-launch gap
HOLDOUT_Z = 2.576  # held-out mean gap within z x noise x sqrt(1/k_validation + 1/k_train): two-sided 1%
NOISE_QUANTILE = 0.95  # a fit within the 95% chi-square band of pure sampling noise is as good as data allow
MAX_GAP_AUTOCORRELATION = 0.9  # cap on the lag-1 autocorrelation used to widen the drift test
PLACEBO_TIME_FRACTION = 2.0 / 3.0
N_IID_PERMUTATIONS = 999
PERMUTATION_KINDS = ("iid", "moving_block")
PLOT_PLACEBO_PRE_RMSPE_CAP = 5.0  # placebos fitting 5x worse than the treated unit are not drawn
WEIGHT_EPS = 1e-8
NOISE_PENALTY = 1.0  # multiplier of the sampling-noise ridge (see module docstring)


@dataclass
class _Panel:
    """Wide arrays the estimator works on (periods sorted, post periods last)."""

    times: np.ndarray  # period labels as given
    y: np.ndarray  # treated series (T,)
    X: np.ndarray  # donors (T, D)
    donors: list[str]
    post: np.ndarray  # bool (T,)
    n_treated: np.ndarray  # treated volume per period (T,)
    n_donors: np.ndarray | None  # donor volume per period (T, D) when a weight column is given
    v_treated: np.ndarray | None  # sampling variance of the treated period mean (T,)
    v_donors: np.ndarray | None  # sampling variance of each donor period mean (T, D)
    total_treated: float = 0.0
    total_donors: float = 0.0
    dropped_donors: list[str] = field(default_factory=list)
    dropped_periods: list[str] = field(default_factory=list)

    @property
    def pre(self) -> np.ndarray:
        return ~self.post



def _rms(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(a)))) if len(a) else 0.0


def _label(t: Any) -> str:
    if isinstance(t, (np.datetime64, pd.Timestamp, dt.datetime)):
        ts = pd.Timestamp(t)
        return ts.date().isoformat() if ts == ts.normalize() else ts.isoformat()
    if isinstance(t, (np.integer, np.floating)):
        return str(t.item())
    return str(t)


def _period_step(times: np.ndarray):
    if len(times) < 2:
        return None
    try:
        s = pd.Series(pd.to_datetime(times)) if not np.issubdtype(np.asarray(times).dtype, np.number) else pd.Series(times)
        return s.diff().dropna().median()
    except (TypeError, ValueError):
        return None


def _advance(last, step, k: int):
    try:
        if isinstance(step, pd.Timedelta):
            return pd.Timestamp(last) + step * k
        return last + step * k
    except (TypeError, ValueError):
        return last
