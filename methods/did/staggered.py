"""Staggered rollouts: Callaway–Sant'Anna group-time ATTs on cell means, with a TWFE comparison.

Why: when units switch on at different periods, the two-way fixed-effects regression
``y ~ D_ut + unit FE + period FE`` compares late adopters with early adopters that are already
treated. If the effect grows with exposure those "forbidden comparisons" carry negative weight
and TWFE can be far from any average effect (Goodman-Bacon 2021). Callaway & Sant'Anna (2021)
instead estimate one clean 2×2 per cohort g (units first treated in period g) and period t:

    ATT(g,t) = (Ȳ_{g,t} − Ȳ_{g,b}) − (Ȳ_{C,t} − Ȳ_{C,b})

with base period b = g−1 for post periods (t ≥ g) and b = t−1 for pre periods ("varying" base,
so pre-period ATTs are one-period placebo changes), and controls C either never-treated units
(``control_group="never"``; units first treated after the data ends count as never) or
not-yet-treated units (``"notyet"``: first treated after max(t, b), excluding cohort g).

Data: repeated cross-sections of conversations, so Ȳ are conversation-weighted cell means
(sum y / count from the DuckDB cell table, never the rows). The overall ATT averages the post
ATT(g,t) with weights = treated conversations in (g, t); the event-time curve θ(e) averages
ATT(g, g+e) the same way. This version is unconditional: fixed effects enter only the TWFE
comparison (a shift in the fixed-effect mix within units over time is not adjusted for).

Inference: Bayesian cluster bootstrap — each unit (cluster) gets an Exp(1) weight per draw,
seeded; every mean, ATT(g,t) and aggregate is recomputed with those weights, as matrix products
over units (vectorized; loops only over the few (g, t) pairs). SE = bootstrap standard deviation,
interval and p-value from t(U−1). The joint pre-trend test is a Wald test of the pre-period θ(e)
with the bootstrap covariance (pseudo-inverse; df = its rank, which the unit count limits).
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb
import numpy as np
import pandas as pd
from scipy import stats

from methods.did.compress import coarsen, compress, design_from_cells, fit_cells
from methods.did.event_study import DIVERGE_MESSAGE, PRE_TREND_ALPHA, comparable, fmt_period
from methods.did.plots import event_study_png, group_means_png
from methods.result import Diagnostic, EstimateResult, MethodRefusal

ESTIMAND = "ATT (treated × post)"
MAX_PRE_BINS = 3  # pooled pre-period bins in the staggered pre-trend test (rank guard)


def estimate_staggered(con: duckdb.DuckDBPyConnection, relation: str, outcome: str, cohort: str, time: str,
                       cluster: str | None, fixed_effects: Sequence[str] = (), seed: int = 0, n_boot: int = 999,
                       control_group: str = "notyet") -> EstimateResult:
    """Overall CS ATT for a staggered rollout; ``cohort`` = each unit's first treated period (null: never)."""
    if cluster is None:
        raise ValueError("a staggered rollout needs cluster= the unit that switched on (e.g. skill)")
    if control_group not in ("notyet", "never"):
        raise ValueError("control_group must be 'notyet' or 'never'")
    fe_roles = [f"fe{i}" for i in range(len(fixed_effects))]
    keys = {"cohort": cohort, "time": time, "cluster": cluster, **dict(zip(fe_roles, fixed_effects))}
    cells = compress(con, relation, outcome, keys, nullable=["cohort"])
    if cells.empty:
        raise MethodRefusal("No rows with the outcome, period and cluster filled in: nothing to estimate.")
    return staggered_from_cells(cells, outcome, fe_roles, seed=seed, n_boot=n_boot, control_group=control_group,
                                cluster_name=cluster)


def _cohort_index(cells: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(period index per cell, cohort index per cell with never = +inf, sorted periods)."""
    tvals, _ = comparable(cells["time"], None)
    periods, t_idx = np.unique(tvals, return_inverse=True)
    coh = cells["cohort"]
    if np.issubdtype(np.asarray(tvals).dtype, np.datetime64):
        cv = pd.to_datetime(coh).to_numpy()
        missing = pd.isna(cv)
    else:
        cv = pd.to_numeric(coh, errors="coerce").to_numpy(float)
        missing = np.isnan(cv)
    g = np.full(len(cells), np.inf)
    g[~missing] = np.searchsorted(periods, cv[~missing], side="left")
    return t_idx.astype(np.int64), g, periods


def staggered_from_cells(cells: pd.DataFrame, outcome: str, fe_roles: Sequence[str] = (), seed: int = 0,
                         n_boot: int = 999, control_group: str = "notyet", cluster_name: str = "unit",
                         alpha: float = 0.05) -> EstimateResult:
    t_idx, g_cell, periods = _cohort_index(cells)
    T = len(periods)
    cells = cells.assign(_t=t_idx, _g=g_cell)
    unit_cohorts = cells.groupby("cluster")["_g"].agg(["min", "max"])
    if (unit_cohorts["min"] != unit_cohorts["max"]).any():
        raise ValueError("cohort must be constant within each cluster (the unit that switched on)")
    units = unit_cohorts.index.to_numpy()
    g_unit = unit_cohorts["min"].to_numpy(float)
    g_unit = np.where(g_unit >= T, np.inf, g_unit)  # first treated after the data ends: never within the window
    always = g_unit <= 0
    u_code = pd.Categorical(cells["cluster"], categories=units).codes
    U = len(units)
    N = np.zeros((U, T))
    SY = np.zeros((U, T))
    np.add.at(N, (u_code, t_idx), cells["n"].to_numpy(float))
    np.add.at(SY, (u_code, t_idx), cells["sum_y"].to_numpy(float))

    keep = ~always
    n_treated_units = int(np.sum(np.isfinite(g_unit) & keep))
    n_never = int(np.sum(~np.isfinite(g_unit)))
    n_cohorts = len({g for g in g_unit[keep & np.isfinite(g_unit)]})
    if n_treated_units < 2 or (n_never < 2 and (control_group == "never" or n_cohorts < 2)):
        raise MethodRefusal(
            f"Only {n_treated_units} treated {cluster_name}(s) with a pre-period and {n_never} never-treated: "
            "a staggered diff-in-diff needs at least two treated units and two units to compare them with.")

    rng = np.random.default_rng(seed)
    W = np.column_stack([np.ones(U), rng.exponential(1.0, size=(U, n_boot))])  # col 0: point estimate
    W[always] = 0.0

    def mean(mask: np.ndarray, t: int) -> np.ndarray:
        w = W[mask]
        return (w.T @ SY[mask, t]) / np.maximum(w.T @ N[mask, t], 1e-300)

    cohorts = sorted({int(g) for g in g_unit[keep & np.isfinite(g_unit)]})
    rows, draws = [], []
    for g in cohorts:
        gm = g_unit == g
        for t in range(T):
            b = g - 1 if t >= g else t - 1
            if b < 0 or t == b:
                continue
            cm = (~np.isfinite(g_unit)) if control_group == "never" else ((g_unit > max(t, b)) & (g_unit != g))
            cm &= ~always
            if cm.sum() < 2 or N[gm, t].sum() == 0 or N[gm, b].sum() == 0 or N[cm, t].sum() == 0 or N[cm, b].sum() == 0:
                continue
            att = (mean(gm, t) - mean(gm, b)) - (mean(cm, t) - mean(cm, b))
            rows.append({"cohort": fmt_period(periods[g]), "g": g, "period": fmt_period(periods[t]), "t": t,
                         "event_time": t - g, "att": float(att[0]), "n_treated": float(N[gm, t].sum()),
                         "n_control_units": int(cm.sum())})
            draws.append(att[1:])
    if not rows:
        raise MethodRefusal("No cohort has both a pre-launch period and a clean control group at any period.")
    att_gt = pd.DataFrame(rows)
    D = np.vstack(draws)  # (g,t) pairs × B
    post = att_gt["event_time"].to_numpy() >= 0
    if not post.any():
        raise MethodRefusal("No post-launch period with clean controls: wait for data after the first rollout.")
    att_gt["se"] = D.std(axis=1, ddof=1) if n_boot > 1 else np.nan
    df_t = max(U - int(always.sum()) - 1, 1)
    q = float(stats.t(df_t).ppf(1 - alpha / 2))

    def agg(mask: np.ndarray) -> tuple[float, np.ndarray]:
        w = att_gt.loc[mask, "n_treated"].to_numpy()
        return float(att_gt.loc[mask, "att"].to_numpy() @ w / w.sum()), (w @ D[mask]) / w.sum()

    est, est_draws = agg(post)
    se = float(est_draws.std(ddof=1))
    p = float(2 * stats.t(df_t).sf(abs(est / se))) if se > 0 else 0.0
    ev_rows, ev_draws = [], []
    for e in sorted(att_gt["event_time"].unique()):
        m = (att_gt["event_time"] == e).to_numpy()
        th, thd = agg(m)
        s = float(thd.std(ddof=1))
        ev_rows.append({"event_time": int(e), "coef": th, "se": s, "ci_low": th - q * s, "ci_high": th + q * s})
        ev_draws.append(thd)
    event = pd.DataFrame(ev_rows)
    EV = np.vstack(ev_draws)

    diagnostics = [Diagnostic("n_clusters", float(U), 2.0, True,
                              f"{U} {cluster_name} units: {n_treated_units} treated in {len(cohorts)} cohort(s), "
                              f"{n_never} never treated within the window", check="sample_size"),
                   Diagnostic("inference", float(U), None, True,
                              f"Bayesian cluster bootstrap over {U} units ({n_boot} draws, seed {seed}), "
                              f"t({df_t}) interval", "warn")]
    if always.any():
        diagnostics.append(Diagnostic("always_treated", float(always.sum()), 0.0, False,
                                      f"{int(always.sum())} unit(s) treated from the first period have no "
                                      "pre-period and were left out", "warn"))
    pre_e = (event["event_time"] < 0).to_numpy()
    if pre_e.any():
        p_pre, test = _pre_trend_test(event.loc[pre_e, "coef"].to_numpy(), EV[pre_e],
                                      att_gt, U - int(always.sum()))
        ok = p_pre >= PRE_TREND_ALPHA
        diagnostics.append(Diagnostic("pre_trend", p_pre, PRE_TREND_ALPHA, bool(ok),
                                      (f"pre-launch trajectories parallel ({test}; p={p_pre:.3g})" if ok
                                       else f"{DIVERGE_MESSAGE} ({test}; p={p_pre:.3g})"), "warn" if ok else "error",
                                      check="pre_trend"))
    else:
        diagnostics.append(Diagnostic("pre_trend", None, PRE_TREND_ALPHA, False,
                                      "pre-trend not testable: no cohort has two pre-launch periods", "warn",
                                      check="pre_trend", tested=False))

    twfe, twfe_se = _twfe(cells, fe_roles)
    diff = abs(twfe - est)
    thr = 1.96 * float(np.hypot(twfe_se, se))
    diagnostics.append(Diagnostic(
        "twfe_vs_cs", diff, thr, bool(diff <= thr),
        (f"TWFE {twfe:.4g} (SE {twfe_se:.3g}) and Callaway–Sant'Anna {est:.4g} (SE {se:.3g}) agree within 1.96 SE"
         if diff <= thr else
         f"TWFE {twfe:.4g} differs from Callaway–Sant'Anna {est:.4g} by more than 1.96 combined SE: effects likely "
         "vary with exposure or cohort, so TWFE is biased; report the Callaway–Sant'Anna estimate"), "warn"))

    ever = np.isfinite(cells["_g"].to_numpy()) & (cells["_g"].to_numpy() > 0)
    is_post = cells["_t"].to_numpy() >= cells["_g"].to_numpy()
    tp, tq = cells[ever & is_post], cells[ever & ~is_post]
    naive = float(tp["sum_y"].sum() / tp["n"].sum() - tq["sum_y"].sum() / tq["n"].sum())
    n_treated = int(cells.loc[ever, "n"].sum())
    n_control = int(cells.loc[~ever, "n"].sum())

    means = cells.groupby(["_g", "_t"], as_index=False)[["n", "sum_y"]].sum()
    means = means.assign(period=periods[means["_t"].to_numpy()], mean=means["sum_y"] / means["n"],
                         group=[("never treated" if not np.isfinite(g) else f"cohort {fmt_period(periods[int(g)])}")
                                for g in means["_g"]])
    first = periods[cohorts[0]]
    plots = {"group_means": group_means_png(means, first, outcome, title="Mean by cohort (first rollout marked)"),
             "event_study": event_study_png(event, outcome, title="Callaway–Sant'Anna θ(e), varying base period",
                                            share=bool(np.allclose(cells["sum_y2"], cells["sum_y"])))}
    return EstimateResult(
        method="diff_in_diff", estimand=ESTIMAND, outcome=outcome, estimate=est, std_error=se,
        ci_low=est - q * se, ci_high=est + q * se, p_value=p, n_treated=n_treated, n_control=n_control,
        naive_estimate=naive, diagnostics=diagnostics, plots=plots,
        ci_method=(f"Callaway–Sant'Anna ({control_group} controls), Bayesian cluster bootstrap over {U} units, "
                   f"{n_boot} draws, seed {seed}, t({df_t})"),
        extras={"att_gt": att_gt, "event_study": event, "twfe_estimate": twfe, "twfe_se": twfe_se,
                "control_group": control_group},
    )


def _pre_trend_test(theta: np.ndarray, draws: np.ndarray, att_gt: pd.DataFrame, n_units: int,
                    max_bins: int = MAX_PRE_BINS) -> tuple[float, str]:
    """Joint test that pre-period θ(e) (one-period placebo changes) are zero.

    A covariance of many θ(e) estimated from a few dozen clusters is rank-limited and its inverse
    explodes the Wald statistic (false alarms). So adjacent pre-periods are pooled into at most
    ``max_bins`` bins (mean of θ(e) in the bin: a steady divergence shows up as a non-zero mean
    one-period change) and the Wald statistic uses the Hotelling small-sample reference
    F(L, d−L+1) with d = units − 1.
    """
    L0 = len(theta)
    bins = np.array_split(np.arange(L0)[::-1], min(L0, max_bins))  # latest pre-periods first
    M = np.zeros((len(bins), L0))
    for i, b in enumerate(bins):
        M[i, b] = 1.0 / len(b)
    th, dr = M @ theta, M @ draws
    cov = np.atleast_2d(np.cov(dr))
    wald = float(th @ np.linalg.pinv(cov) @ th)
    L, d = len(bins), max(n_units - 1, 2)
    if d - L + 1 < 1:
        L = 1
        th, cov = np.atleast_1d(th.mean()), np.atleast_2d(np.mean(cov))
        wald = float(th @ np.linalg.pinv(cov) @ th)
    f = wald * (d - L + 1) / (L * d)
    p = float(stats.f(L, d - L + 1).sf(f))
    return p, (f"joint Wald of {L0} pre-period θ(e) pooled into {L} bin(s) = 0, bootstrap covariance, "
               f"Hotelling F({L}, {d - L + 1})")


def _twfe(cells: pd.DataFrame, fe_roles: Sequence[str]) -> tuple[float, float]:
    """y ~ D_ut + unit FE + period FE (+ fixed effects), WLS on cells, CR1 by unit → (coef, se)."""
    c = coarsen(cells, ["cluster", "_t", "_g", *fe_roles])
    d = (c["_t"].to_numpy() >= c["_g"].to_numpy()).astype(float)
    design = design_from_cells(c, {"D": d}, ["cluster", "_t", *fe_roles], "cluster", protect=["D"])
    fit = fit_cells(design)
    return fit.coef("D"), fit.se("D")
