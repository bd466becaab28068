"""Refutations of a synthetic-control estimate: a fake launch in the pre-period, and dropping
each donor with weight in turn (leave-one-out)."""

from __future__ import annotations

import numpy as np

from methods.result import Refutation
from methods.sc.core import PLACEBO_TIME_FRACTION, WEIGHT_EPS, _label, _Panel, _rms
from methods.sc.diagnostics import _noise_floor
from methods.sc.inference import _conformal_pvalue_fn
from methods.sc.prepare import _penalty
from methods.sc.weights import gram, solve_simplex_qp


def _placebo_in_time(data: _Panel, alpha: float, seed: int, kind: str = "iid") -> dict:
    """Fake launch at 2/3 of the pre-period, using pre-launch data only.

    Weights are trained on the early pre-period; the late pre-period's mean gap is the fake
    effect (it should be ~0), its RMSPE the out-of-sample fit, and the conformal p-value of
    a zero effect there says whether the fake effect is distinguishable from noise.
    """
    pre_idx = np.flatnonzero(data.pre)
    T0 = len(pre_idx)
    k = min(max(round(PLACEBO_TIME_FRACTION * T0), 2), T0 - 1)
    Xp, yp = data.X[pre_idx], data.y[pre_idx]
    fake_post = np.arange(T0) >= k
    sub = _sub_panel(data, pre_idx)
    pen = _penalty(sub, ~fake_post)
    w = solve_simplex_qp(gram(Xp[~fake_post], pen), Xp[~fake_post].T @ yp[~fake_post])
    gap = yp - Xp @ w
    p_of, test = _conformal_pvalue_fn(Xp, yp, fake_post, sub, alpha, seed, kind)
    return {
        "fake_launch": _label(data.times[pre_idx[k]]), "train_periods": k, "validation_periods": T0 - k,
        "effect": float(gap[fake_post].mean()), "rmspe_train": _rms(gap[~fake_post]),
        "rmspe_validation": _rms(gap[fake_post]), "p_value": p_of(0.0), "permutations": test.name,
        "floor_validation": _noise_floor(sub, w, fake_post),
    }


def _sub_panel(data: _Panel, rows: np.ndarray) -> _Panel:
    return _Panel(
        times=data.times[rows], y=data.y[rows], X=data.X[rows], donors=data.donors, post=data.post[rows],
        n_treated=data.n_treated[rows], n_donors=None if data.n_donors is None else data.n_donors[rows],
        v_treated=None if data.v_treated is None else data.v_treated[rows],
        v_donors=None if data.v_donors is None else data.v_donors[rows],
    )


def _leave_one_out(data: _Panel, w: np.ndarray, pen_pre, theta: float, lo: float, hi: float) -> dict[str, float]:
    """Re-estimate without each donor that carries weight (the largest first)."""
    pre = data.pre
    Xp = data.X[pre]
    G_full = gram(Xp, pen_pre)
    c_full = Xp.T @ data.y[pre]
    out: dict[str, float] = {}
    idx = np.arange(len(data.donors))
    for j in np.argsort(-w):
        if w[j] <= WEIGHT_EPS:
            break
        others = idx[idx != j]
        wj = solve_simplex_qp(G_full[np.ix_(others, others)], c_full[others])
        out[data.donors[j]] = float((data.y[data.post] - data.X[data.post][:, others] @ wj).mean())
    return out


def _in_time_refutation(theta: float, it: dict, alpha: float) -> Refutation:
    passed = it["p_value"] >= alpha  # the conformal rule: reject a zero fake effect when p < alpha
    msg = (f"fake launch at {it['fake_launch']} (2/3 into the pre-period, {it['train_periods']} training and "
           f"{it['validation_periods']} placebo periods): fake effect {it['effect']:+.4f}, conformal p-value of a "
           f"zero effect {it['p_value']:.3f}"
           + (f" (the fake effect is {abs(it['effect'] / theta):.0%} of the post-launch estimate's size)" if theta else "")
           + f". Pass rule: p >= {alpha:g}, i.e. no effect before the change shipped. "
           + ("Passed." if passed else "FAILED: the synthetic control drifts away from the treated series before "
              "launch, so the post-launch gap may be drift rather than effect."))
    return Refutation("placebo_in_time", theta, it["effect"], it["p_value"], passed, msg)


def _loo_refutation(theta: float, loo: dict[str, float], lo: float, hi: float) -> Refutation:
    if not loo:
        return Refutation("leave_one_out_donors", theta, theta, None, True, "no donor carries weight")
    vals = np.array(list(loo.values()))
    worst_name = max(loo, key=lambda k: abs(loo[k] - theta))
    within = bool(np.all((vals >= lo) & (vals <= hi)))  # False when the interval is empty (NaN)
    same_sign = bool(np.all(np.sign(vals) == np.sign(theta)))
    msg = (f"dropping each of the {len(loo)} weighted donors in turn gives estimates from {vals.min():+.4f} to "
           f"{vals.max():+.4f} (full estimate {theta:+.4f}; largest move without {worst_name!r}); sign "
           f"{'holds' if same_sign else 'flips'} in every re-fit. Pass rule: every re-estimate stays inside the "
           f"confidence interval [{lo:+.4f}, {hi:+.4f}]. " + ("Passed." if within else
           "FAILED: the answer hinges on a single donor."))
    return Refutation("leave_one_out_donors", theta, float(loo[worst_name]), None, within, msg)
