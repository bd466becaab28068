"""Input shaping: a long unit × period panel to the wide arrays, and the refusals when it is too thin.

Sampling variances per period mean price each donor's noise (the ridge of the module docstring
in ``estimate.py``); a panel without enough pre-periods or donors is refused before any fit.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd

from methods.result import MethodRefusal
from methods.sc.core import NOISE_PENALTY, _advance, _label, _Panel, _period_step


def _prepare(panel: pd.DataFrame, unit: str, time: str, outcome: str, treated_units: list, launch: Any,
             weight: str | None) -> _Panel:
    """Long panel -> sorted wide arrays; drops donors with gaps and periods without treated data."""
    cols = [unit, time, outcome] + ([weight] if weight else [])
    missing = [c for c in cols if c not in panel.columns]
    if missing:
        raise ValueError(f"panel has no column(s) {', '.join(map(repr, missing))}; it has {list(panel.columns)}")
    df = panel[cols].copy()
    df[unit] = df[unit].astype(str)
    treated = [str(u) for u in (treated_units or [])]
    if not treated:
        raise ValueError("treated_units is empty: name at least one treated unit")
    absent = sorted(set(treated) - set(df[unit]))
    if absent:
        raise ValueError(f"treated unit(s) {absent} not found in column {unit!r}")
    if df.duplicated([unit, time]).any():
        raise ValueError(f"panel must have one row per ({unit}, {time}); found duplicates")
    df[outcome] = pd.to_numeric(df[outcome], errors="coerce").astype(float)
    if weight:
        df[weight] = pd.to_numeric(df[weight], errors="coerce").astype(float)
        if (df[weight] < 0).any():
            raise ValueError(f"weight column {weight!r} has negative values")
        df.loc[df[weight].isna() | (df[weight] == 0), outcome] = np.nan

    Y = df.pivot(index=time, columns=unit, values=outcome).sort_index()
    N = df.pivot(index=time, columns=unit, values=weight).reindex(Y.index) if weight else None
    times = Y.index.to_numpy()
    post = _post_mask(Y.index, launch)

    yt, nt = Y[treated].to_numpy(float), (N[treated].to_numpy(float) if N is not None else None)
    present = ~np.isnan(yt)
    if nt is None:
        nt = present.astype(float)
    nt = np.where(present, np.nan_to_num(nt), 0.0)
    n1 = nt.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        y1 = np.where(n1 > 0, np.nansum(np.nan_to_num(yt) * nt, axis=1) / np.where(n1 > 0, n1, 1), np.nan)

    keep_t = ~np.isnan(y1)
    dropped_periods = [_label(t) for t in times[~keep_t]]
    donor_names = [c for c in Y.columns if c not in set(treated)]
    Xd = Y[donor_names].to_numpy(float)[keep_t]
    complete = ~np.isnan(Xd).any(axis=0)
    dropped_donors = [d for d, ok in zip(donor_names, complete) if not ok]
    donors = [d for d, ok in zip(donor_names, complete) if ok]
    X = Xd[:, complete]
    Nd = N[donors].to_numpy(float)[keep_t] if N is not None else None

    v1 = vd = None
    if Nd is not None and X.shape[1] > 0 and X.shape[0] > 0:
        v1, vd = _sampling_variances(y1[keep_t], n1[keep_t], X, Nd)
    return _Panel(
        times=times[keep_t], y=y1[keep_t], X=X, donors=donors, post=post[keep_t], n_treated=n1[keep_t],
        n_donors=Nd, v_treated=v1, v_donors=vd,
        total_treated=float(n1[keep_t].sum()) if weight else float(len(treated)),
        total_donors=float(Nd.sum()) if Nd is not None else float(len(donors)),
        dropped_donors=dropped_donors, dropped_periods=dropped_periods,
    )


def _post_mask(index: pd.Index, launch: Any) -> np.ndarray:
    """``time >= launch`` for numeric, date, timestamp or date-string time columns."""
    values = index
    if pd.api.types.is_numeric_dtype(values.dtype) and not isinstance(launch, (dt.date, pd.Timestamp)):
        try:
            return np.asarray(values.to_numpy(float) >= float(launch))
        except (TypeError, ValueError):
            pass
    try:
        tv = pd.to_datetime(values)
        lv = pd.Timestamp(launch)
    except (TypeError, ValueError) as exc:
        try:
            return np.asarray(values.astype(str) >= str(launch))
        except Exception:  # noqa: BLE001 - report the original parse problem
            raise ValueError(f"cannot compare launch {launch!r} with the time column: {exc}") from exc
    if tv.tz is not None and lv.tzinfo is None:
        lv = lv.tz_localize(tv.tz)
    elif tv.tz is None and lv.tzinfo is not None:
        lv = lv.tz_convert(None)
    return np.asarray(tv >= lv)


def _sampling_variances(y1: np.ndarray, n1: np.ndarray, X: np.ndarray, N: np.ndarray):
    """Variance of each period mean from its volume.

    Rates (all values in [0, 1]) use the Bernoulli variance ``p(1-p)/n`` with the unit's
    average rate; other outcomes use one pooled per-conversation variance estimated from
    period-to-period changes (median of squared first differences over ``1/n_t + 1/n_{t-1}``,
    rescaled by the chi-square(1) median), which errs large when the signal itself moves.
    """
    n1 = np.maximum(n1, 1e-12)
    N = np.maximum(N, 1e-12)
    if np.nanmin(X) >= 0 and np.nanmax(X) <= 1 and np.nanmin(y1) >= 0 and np.nanmax(y1) <= 1:
        pj = X.mean(axis=0)
        p1 = float(y1.mean())
        return p1 * (1 - p1) / n1, (pj * (1 - pj))[None, :] / N
    if X.shape[0] < 2:
        s2 = float(np.var(X))
    else:
        ratio = np.diff(X, axis=0) ** 2 / (1 / N[1:] + 1 / N[:-1])
        s2 = float(np.median(ratio) / 0.454936423119572)
    return s2 / n1, s2 / N


def _penalty(data: _Panel, rows: np.ndarray) -> np.ndarray | None:
    """Ridge pricing each donor's sampling noise over the fitted periods (None without volumes)."""
    if data.v_donors is None:
        return None
    return NOISE_PENALTY * rows.sum() * data.v_donors[rows].mean(axis=0)


def _refuse_if_thin(data: _Panel, launch: Any, min_pre: int, min_donors: int, min_post: int) -> None:
    n_pre, n_post, n_don = int(data.pre.sum()), int(data.post.sum()), len(data.donors)
    min_donors = max(min_donors, 2)  # placebo-in-space needs a donor left over to fit each placebo
    min_pre = max(min_pre, 3)  # placebo-in-time needs two training periods and one to validate
    if n_pre < min_pre:
        raise MethodRefusal(
            f"only {n_pre} period(s) before the launch ({launch}); synthetic control needs at least {min_pre} "
            "to learn the donor weights. Waiting does not add history: include earlier data (widen the window), "
            "use a finer time bucket, or, for a global launch, compare against prior weeks."
        )
    if n_don < min_donors:
        dropped = f" ({len(data.dropped_donors)} more dropped for missing periods)" if data.dropped_donors else ""
        raise MethodRefusal(
            f"only {n_don} donor unit(s) the change never reached{dropped}; synthetic control needs at least "
            f"{min_donors}. Split cohorts finer (more unit_by columns) or keep a holdout the change does not reach."
        )
    if n_post < min_post:
        step = _period_step(data.times)
        until = f" (until about {_label(_advance(data.times[-1], step, min_post - n_post))})" if step is not None else ""
        raise MethodRefusal(
            f"only {n_post} period(s) after the launch ({launch}); need at least {min_post}. "
            f"Launched recently? Wait for {min_post - n_post} more full period(s) of data{until} and re-run."
        )
