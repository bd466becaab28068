"""Difference-in-differences for partial rollouts: the public entry point.

``estimate_did`` answers "what did the change do to the units that got it?" when a tool or
feature reached a subset of units (skills, queues, regions) at a known date. The model is
``outcome ~ treated + post + treated:post + fixed-effect dummies``; the interaction is the ATT.

How it scales: rows are compressed to cells in DuckDB (``methods.did.compress``: count, sum y,
sum y² by treated × period × fixed effects × cluster) and the model is fit by WLS on the cells;
point estimates and CR1/HC1 standard errors are exactly those of row-level OLS. Only the cell
table is pulled into Python.

How it is checked: clusters counted (refusal below two treated or two control clusters, or
without pre- and post-launch data in both groups); inference by the wild cluster bootstrap below
30 clusters (``methods.did.inference``); an event study with a joint pre-trend test and a placebo
launch (``methods.did.event_study``); staggered rollouts via Callaway–Sant'Anna group-time ATTs with
a TWFE comparison (``methods.did.staggered``).
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb
import numpy as np
import pandas as pd

from methods.did.compress import (
    EFFECT,
    compress,
    fit_cells,
    two_by_two_design,
    validate_columns,
)
from methods.did.event_study import (
    DIVERGE_MESSAGE,
    PRE_TREND_ALPHA,
    period_index,
    placebo_launch,
    relative_magnitudes,
    run_event_study,
)
from methods.did.inference import FEW_CLUSTERS, infer
from methods.did.plots import event_study_png, group_means_png
from methods.result import Diagnostic, EstimateResult, MethodRefusal
from methods.sql import relation_columns

ESTIMAND = "ATT (treated × post)"


def _open(data) -> tuple[duckdb.DuckDBPyConnection, str, bool]:
    """(connection, relation, owned): a pandas frame is registered in a private in-memory DuckDB."""
    if isinstance(data, pd.DataFrame):
        con = duckdb.connect()
        con.register("did_input", data)
        return con, "did_input", True
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], duckdb.DuckDBPyConnection):
        return data[0], data[1], False
    raise TypeError("data must be a pandas DataFrame or a (duckdb connection, relation name) pair")


def estimate_did(data, outcome: str, treated: str, post: str | None = None, time: str | None = None, launch=None,
                 fixed_effects: Sequence[str] = (), cluster: str | None = None, seed: int = 0, n_boot: int = 999,
                 event_time: str | None = None, cohort: str | None = None, control_group: str = "notyet",
                 bootstrap_weights: str = "webb") -> EstimateResult:
    """ATT of a partial rollout by DiD on compressed cells.

    data: pandas DataFrame or ``(duckdb_connection, relation_name)``; never pulled whole.
    treated: 0/1 column (unit got the change). post: 0/1 column; or ``time`` (period column, e.g.
    week) with ``launch`` (post = time ≥ launch); ``event_time``: integer period relative to launch
    (0 = first post period), an alternative to time + launch. fixed_effects: categorical columns
    entered as dummies. cluster: the level treatment was assigned at (standard errors clustered
    there; below 30 clusters a restricted wild cluster bootstrap gives p-value and interval).
    cohort: for staggered rollouts, each unit's first treated period (null = never treated; same
    type as ``time``); then the estimate is the Callaway–Sant'Anna overall ATT with ``cluster`` as
    the unit and ``control_group`` "notyet" or "never".
    """
    fixed_effects = list(dict.fromkeys(fixed_effects or ()))
    con, relation, owned = _open(data)
    try:
        roles = {"outcome": outcome, "treated": treated, "post": post, "time": time, "event_time": event_time,
                 "cluster": cluster, "cohort": cohort, **{f"fixed_effect[{i}]": f for i, f in enumerate(fixed_effects)}}
        validate_columns(relation_columns(con, relation), roles)
        if cohort is not None:
            from methods.did.staggered import estimate_staggered

            if time is None and event_time is None:
                raise ValueError("a staggered rollout (cohort=) needs time= (the period column)")
            return estimate_staggered(con, relation, outcome, cohort=cohort, time=time or event_time,
                                      cluster=cluster, fixed_effects=fixed_effects, seed=seed, n_boot=n_boot,
                                      control_group=control_group)
        period = event_time or time
        if event_time is not None:
            launch = 0
        if post is None and (period is None or launch is None):
            raise ValueError("diff-in-diff needs post=COL, or time=COL with launch=VALUE (or event_time=COL)")
        keys = {"treated": treated, **({"post": post} if post else {}), **({"time": period} if period else {}),
                **{f"fe{i}": f for i, f in enumerate(fixed_effects)}, **({"cluster": cluster} if cluster else {})}
        cells = compress(con, relation, outcome, keys)
    finally:
        if owned:
            con.close()
    return _estimate_from_cells(cells, outcome, treated, launch, [f"fe{i}" for i in range(len(fixed_effects))],
                                cluster, seed, n_boot, bootstrap_weights, has_time=period is not None)


def _binary(cells: pd.DataFrame, role: str, column: str) -> np.ndarray:
    vals = pd.to_numeric(cells[role], errors="coerce").to_numpy(float)
    if np.isnan(vals).any() or not np.isin(vals, (0.0, 1.0)).all():
        raise ValueError(f"column {column!r} must be 0/1 (or boolean)")
    return vals.astype(np.int64)


def _estimate_from_cells(cells: pd.DataFrame, outcome: str, treated: str, launch, fe_roles: list[str],
                         cluster: str | None, seed: int, n_boot: int, weights: str, has_time: bool) -> EstimateResult:
    if cells.empty:
        raise MethodRefusal("No rows with the outcome and every model column filled in: nothing to estimate.")
    cells["treated"] = _binary(cells, "treated", treated)
    if "post" in cells:
        cells["post"] = _binary(cells, "post", "post")
    else:
        idx, _, launch_idx = period_index(cells["time"], launch)
        cells["post"] = (idx >= launch_idx).astype(np.int64)
    cluster_role = "cluster" if cluster else None
    _refuse_if_thin(cells, cluster_role, cluster)

    design = two_by_two_design(cells, fe_roles, cluster_role)
    if EFFECT not in design.names:
        raise MethodRefusal("treated × post is collinear with the fixed effects: the effect is not identified; "
                            "drop the fixed effect that coincides with treatment timing.")
    fit = fit_cells(design, solver="statsmodels")
    inf = infer(fit, EFFECT, seed=seed, n_boot=n_boot, weights=weights)

    tr = cells["treated"] == 1
    n_treated, n_control = int(cells.loc[tr, "n"].sum()), int(cells.loc[~tr, "n"].sum())
    grp = cells.groupby(["treated", "post"])[["n", "sum_y"]].sum()
    means = grp["sum_y"] / grp["n"]
    naive = float(means.loc[(1, 1)] - means.loc[(1, 0)])

    diagnostics = _cluster_diagnostics(cells, cluster_role, cluster, inf, design)
    refutations, plots, extras = [], {}, {
        "se_analytic": inf.std_error, "inference": inf.kind, "n_cells": len(cells),
        "n_rows": int(cells["n"].sum()), "dropped_collinear": design.dropped,
        "did_2x2_means": {f"treated={t},post={p}": float(v) for (t, p), v in means.items()},
    }
    if has_time:
        es = run_event_study(cells, launch, fe_roles, cluster_role, seed=seed, n_boot=n_boot, weights=weights)
        if es is None or es.p_value is None:
            diagnostics.append(Diagnostic("pre_trend", None, PRE_TREND_ALPHA, False,
                                          "pre-trend not testable: fewer than two pre-launch periods", "warn",
                                          check="pre_trend", tested=False))
        else:
            ok = es.p_value >= PRE_TREND_ALPHA
            diagnostics.append(Diagnostic(
                "pre_trend", es.p_value, PRE_TREND_ALPHA, bool(ok),
                (f"pre-launch trajectories parallel ({es.test}; p={es.p_value:.3g})" if ok
                 else f"{DIVERGE_MESSAGE} ({es.test}; p={es.p_value:.3g})"),
                "warn" if ok else "error", check="pre_trend",
            ))
            extras["event_study"] = es.table
            extras["pre_trend_wald"] = es.wald
            rm = relative_magnitudes(es)
            if rm is not None:
                extras["sensitivity_rm"] = rm
            plots["event_study"] = event_study_png(es.table, outcome)
        ref = placebo_launch(cells, launch, inf.estimate, fe_roles, cluster_role, seed=seed, n_boot=n_boot,
                             weights=weights)
        if ref is not None:
            refutations.append(ref)
        plots["group_means"] = group_means_png(_period_means(cells), launch, outcome)
    else:
        diagnostics.append(Diagnostic("pre_trend", None, PRE_TREND_ALPHA, False,
                                      "pre-trend not testable without a time column (only post given)", "warn",
                                      check="pre_trend", tested=False))
        m = cells.groupby(["post", "treated"], as_index=False)[["n", "sum_y"]].sum()
        m = m.assign(period=m["post"], mean=m["sum_y"] / m["n"],
                     group=np.where(m["treated"] == 1, "treated", "control"))
        plots["group_means"] = group_means_png(m, 0.5, outcome, title="Treated vs control, pre (0) and post (1)")

    return EstimateResult(
        method="diff_in_diff", estimand=ESTIMAND, outcome=outcome, estimate=inf.estimate, std_error=inf.std_error,
        ci_low=inf.ci_low, ci_high=inf.ci_high, p_value=inf.p_value, n_treated=n_treated, n_control=n_control,
        naive_estimate=naive, refutations=refutations, diagnostics=diagnostics, extras=extras, plots=plots,
        ci_method=inf.method,
    )


def _period_means(cells: pd.DataFrame) -> pd.DataFrame:
    m = cells.groupby(["time", "treated"], as_index=False)[["n", "sum_y"]].sum()
    return m.assign(period=m["time"], mean=m["sum_y"] / m["n"],
                    group=np.where(m["treated"] == 1, "treated", "control"))


def _refuse_if_thin(cells: pd.DataFrame, cluster_role: str | None, cluster: str | None) -> None:
    """Plain-sentence refusals: too few treated/control clusters, or a group without pre or post data."""
    tr = cells["treated"] == 1
    if cluster_role:
        n_t = cells.loc[tr, cluster_role].nunique()
        n_c = cells.loc[~tr, cluster_role].nunique()
        if n_t < 2 or n_c < 2:
            raise MethodRefusal(
                f"Only {n_t} treated and {n_c} control {cluster} cluster(s): diff-in-diff needs at least two of each "
                f"to estimate the uncertainty; roll out to (or keep back) more {cluster}s.")
    elif tr.sum() == 0 or (~tr).sum() == 0:
        raise MethodRefusal("Every row is in one group: diff-in-diff needs treated and control rows.")
    have = set(map(tuple, cells.loc[cells["n"] > 0, ["treated", "post"]].to_numpy().tolist()))
    missing = [f"{'treated' if t else 'control'} {'after' if p else 'before'} launch"
               for t in (1, 0) for p in (0, 1) if (t, p) not in have]
    if missing:
        raise MethodRefusal(f"No data for {', '.join(missing)}: diff-in-diff needs both groups before and after the "
                            "launch; widen the window or wait for post-launch data.")


def _cluster_diagnostics(cells, cluster_role, cluster, inf, design) -> list[Diagnostic]:
    out = []
    if cluster_role:
        tr = cells["treated"] == 1
        n_t, n_c = cells.loc[tr, cluster_role].nunique(), cells.loc[~tr, cluster_role].nunique()
        g = cells[cluster_role].nunique()
        out.append(Diagnostic("n_clusters", float(g), 2.0, True,
                              f"{g} {cluster} clusters ({n_t} treated, {n_c} control)", check="sample_size"))
        mixed = int((cells.groupby(cluster_role)["treated"].nunique() > 1).sum())
        if mixed:
            out.append(Diagnostic("assignment_level", float(mixed), 0.0, False,
                                  f"treatment varies inside {mixed} {cluster} cluster(s): the cluster is not the level "
                                  "treatment was assigned at; cluster at a coarser level"))
        few = g < FEW_CLUSTERS
        out.append(Diagnostic(
            "inference", float(g), float(FEW_CLUSTERS), True,
            (f"only {g} clusters (< {FEW_CLUSTERS}): conventional cluster-robust errors are unreliable, p-value and "
             f"interval from the {inf.method}" if few else f"{g} clusters: {inf.method}"), "warn"))
    else:
        out.append(Diagnostic("inference", None, None, True,
                              "no cluster given: HC1 errors assume rows are independent; pass cluster= (the level "
                              "treatment was assigned at) when treatment was given to groups", "warn"))
    if design.dropped:
        out.append(Diagnostic("collinear_columns", float(len(design.dropped)), 0.0, True,
                              "dropped collinear design columns: " + ", ".join(design.dropped[:10])))
    return out
