"""Difference-in-differences for partial rollouts: the public entry point.

``estimate_did`` answers "what did the change do to the units that got it?" when a tool or
feature reached a subset of units (skills, queues, regions) at a known date. The model is
``outcome ~ treated + post + treated:post + fixed-effect dummies``; the interaction is the ATT.

How it scales: rows are compressed to cells in DuckDB (``methods.did.compress``: count, sum y,
sum y² by treated × period × fixed effects × cluster) and the model is fit by WLS on the cells;
point estimates and CR1/HC1 standard errors are exactly those of row-level OLS. Only the cell
table is pulled into Python.

How it is checked: clusters counted (refusal without a treated or a control cluster, or without
pre- and post-launch data in both groups); inference by the wild cluster bootstrap below 30
clusters (``methods.did.inference``), and — when one side has fewer than five clusters, e.g. a tool
given to one queue, where neither cluster-robust errors nor the wild bootstrap are valid — by
randomization over space-time placebos (``methods.did.randomization``); an event study with a joint
pre-trend test and a placebo launch (``methods.did.event_study``); staggered rollouts via
Callaway–Sant'Anna group-time ATTs with a TWFE comparison (``methods.did.staggered``).

Time buckets: when ``time`` holds bucket starts (weeks starting Monday) and the launch falls
inside a bucket, that bucket is partly treated; it is left out of every fit and reported as a
``launch_bucket`` note (``event_study.launch_bucket`` says why).
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb
import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

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
    LaunchBucket,
    drop_launch_bucket,
    fmt_period,
    launch_bucket,
    period_index,
    placebo_launch,
    relative_magnitudes,
    run_event_study,
)
from methods.did.inference import FEW_CLUSTERS, Inference, infer
from methods.did.plots import event_study_png, group_means_png
from methods.did.randomization import (
    FEW_TREATED,
    PlaceboDraws,
    SpaceTimePlacebos,
    min_placebos,
    rank_inference,
)
from methods.persistence import persistence
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
                 bootstrap_weights: str = "webb", time_bucket=None) -> EstimateResult:
    """ATT of a partial rollout by DiD on compressed cells.

    data: pandas DataFrame or ``(duckdb_connection, relation_name)``; never pulled whole.
    treated: 0/1 column (unit got the change). post: 0/1 column; or ``time`` (period column, e.g.
    week) with ``launch`` (post = time ≥ launch); ``event_time``: integer period relative to launch
    (0 = first post period), an alternative to time + launch. fixed_effects: categorical columns
    entered as dummies. cluster: the level treatment was assigned at (standard errors clustered
    there; below 30 clusters a restricted wild cluster bootstrap gives p-value and interval; with
    fewer than ``FEW_TREATED`` treated — or control — clusters, randomization inference over
    space-time placebos, ``methods.did.randomization``).
    time_bucket: width of the buckets ``time`` holds ("week", "date"/"day" or a timedelta); None
    infers it as the most common gap between periods. A bucket the launch falls strictly inside
    (a Wednesday launch in a Monday week) is partly treated and is left out (``launch_bucket``).
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
        cells = compress(con, relation, outcome, cell_keys(treated, post, period, fixed_effects, cluster))
    finally:
        if owned:
            con.close()
    return _estimate_from_cells(cells, outcome, treated, launch, [f"fe{i}" for i in range(len(fixed_effects))],
                                cluster, seed, n_boot, bootstrap_weights, has_time=period is not None,
                                time_bucket=None if event_time is not None else time_bucket)


def cell_keys(treated: str, post: str | None, period: str | None, fixed_effects: Sequence[str],
              cluster: str | None) -> dict[str, str]:
    """The cell table's roles → columns that ``estimate_did`` compresses by (see ``compress``)."""
    fixed_effects = list(dict.fromkeys(fixed_effects or ()))
    return {"treated": treated, **({"post": post} if post else {}), **({"time": period} if period else {}),
            **{f"fe{i}": f for i, f in enumerate(fixed_effects)}, **({"cluster": cluster} if cluster else {})}


def estimate_did_cells(cells: pd.DataFrame, outcome: str, treated: str, time: str, launch,
                       fixed_effects: Sequence[str] = (), cluster: str | None = None, seed: int = 0,
                       n_boot: int = 999, bootstrap_weights: str = "webb", time_bucket=None) -> EstimateResult:
    """``estimate_did`` (time + launch, no cohort) on a cell table already compressed by
    ``cell_keys(treated, None, time, fixed_effects, cluster)`` — e.g. one slice of a scan grouped by a
    further column: the same cells give the same estimate, whoever grouped them. ``treated``, ``time``
    and ``cluster`` only name the columns in messages."""
    fixed_effects = list(dict.fromkeys(fixed_effects or ()))
    return _estimate_from_cells(cells, outcome, treated, launch, [f"fe{i}" for i in range(len(fixed_effects))],
                                cluster, seed, n_boot, bootstrap_weights, has_time=True, time_bucket=time_bucket)


def _binary(cells: pd.DataFrame, role: str, column: str) -> np.ndarray:
    vals = pd.to_numeric(cells[role], errors="coerce").to_numpy(float)
    if np.isnan(vals).any() or not np.isin(vals, (0.0, 1.0)).all():
        raise ValueError(f"column {column!r} must be 0/1 (or boolean)")
    return vals.astype(np.int64)


def _estimate_from_cells(cells: pd.DataFrame, outcome: str, treated: str, launch, fe_roles: list[str],
                         cluster: str | None, seed: int, n_boot: int, weights: str, has_time: bool,
                         time_bucket=None) -> EstimateResult:
    # The matrices here are small (cells × terms, K × K, G × K × K per draw) and solved many times; BLAS
    # threads only add contention next to DuckDB's (the 60k demo question 8.3–11.5 s → 3.6–4.2 s on a busy
    # 2-core box), so run single-threaded, as propensity matching does.
    with threadpool_limits(limits=1, user_api="blas"):
        return _estimate_cells(cells, outcome, treated, launch, fe_roles, cluster, seed, n_boot, weights, has_time,
                               time_bucket)


def _estimate_cells(cells: pd.DataFrame, outcome: str, treated: str, launch, fe_roles: list[str],
                    cluster: str | None, seed: int, n_boot: int, weights: str, has_time: bool,
                    time_bucket=None) -> EstimateResult:
    if cells.empty:
        raise MethodRefusal("No rows with the outcome and every model column filled in: nothing to estimate.")
    cells["treated"] = _binary(cells, "treated", treated)
    notes: list[Diagnostic] = []
    bucket: LaunchBucket | None = None
    if "post" in cells:
        cells["post"] = _binary(cells, "post", "post")
    else:
        bucket = launch_bucket(cells, launch, time_bucket)
        if bucket is not None:
            cells = drop_launch_bucket(cells, bucket)
            notes.append(Diagnostic("launch_bucket", float(bucket.n_rows), None, True, bucket.note(), "warn"))
        idx, _, launch_idx = period_index(cells["time"], launch)
        cells["post"] = (idx >= launch_idx).astype(np.int64)
    cluster_role = "cluster" if cluster else None
    _refuse_if_thin(cells, cluster_role, cluster, bucket)

    design = two_by_two_design(cells, fe_roles, cluster_role)
    if EFFECT not in design.names:
        raise MethodRefusal("treated × post is collinear with the fixed effects: the effect is not identified; "
                            "drop the fixed effect that coincides with treatment timing.")
    fit = fit_cells(design, solver="statsmodels")
    placebos = _placebos(cells, launch, fe_roles, cluster_role, has_time, seed) if _few(cells, cluster_role) else None
    if placebos is not None:
        inf = _placebo_inference(fit, placebos, cluster)
    else:
        inf = infer(fit, EFFECT, seed=seed, n_boot=n_boot, weights=weights)

    tr = cells["treated"] == 1
    n_treated, n_control = int(cells.loc[tr, "n"].sum()), int(cells.loc[~tr, "n"].sum())
    grp = cells.groupby(["treated", "post"])[["n", "sum_y"]].sum()
    means = grp["sum_y"] / grp["n"]
    naive = float(means.loc[(1, 1)] - means.loc[(1, 0)])

    diagnostics = notes + _cluster_diagnostics(cells, cluster_role, cluster, inf, design, placebos)
    refutations, plots, extras = [], {}, {
        "se_analytic": float(fit.se(EFFECT)), "inference": inf.kind, "n_cells": len(cells),
        "n_rows": int(cells["n"].sum()), "dropped_collinear": design.dropped,
        "did_2x2_means": {f"treated={t},post={p}": float(v) for (t, p), v in means.items()},
    }
    if bucket is not None:
        extras["launch_bucket_dropped"] = {"start": fmt_period(bucket.start), "rows": bucket.n_rows}
    if placebos is not None:
        _, draws = placebos
        extras["placebo_estimates"] = {"space": draws.n_space, "time": draws.n_time, "spread": draws.spread,
                                       "shock_share": draws.shock_share}
    if has_time:
        es = run_event_study(cells, launch, fe_roles, cluster_role, seed=seed, n_boot=n_boot, weights=weights,
                             placebo_pre_trend=placebos is not None)
        if es is None or es.p_value is None:
            why = es.test if es is not None and es.untestable else "fewer than two pre-launch periods"
            diagnostics.append(Diagnostic("pre_trend", None, PRE_TREND_ALPHA, False,
                                          f"pre-trend not testable: {why}", "warn",
                                          check="pre_trend", tested=False))
        else:
            ok = es.p_value >= PRE_TREND_ALPHA
            diagnostics.append(Diagnostic(
                "pre_trend", es.p_value, PRE_TREND_ALPHA, bool(ok),
                (f"pre-launch trajectories parallel ({es.test}; p={es.p_value:.3g})" if ok
                 else f"{DIVERGE_MESSAGE} ({es.test}; p={es.p_value:.3g})"),
                "warn" if ok else "error", check="pre_trend",
            ))
        if es is not None:
            extras["event_study"] = es.table
            diagnostics += _persistence(es.table, extras, trust_se=placebos is None)
            if es.wald is not None:
                extras["pre_trend_wald"] = es.wald
            rm = relative_magnitudes(es) if placebos is None else None  # it rests on CR1, invalid with few clusters
            if rm is not None:
                extras["sensitivity_rm"] = rm
            plots["event_study"] = event_study_png(es.table, outcome, share=_is_share(cells))
        ref = placebo_launch(cells, launch, inf.estimate, fe_roles, cluster_role, seed=seed, n_boot=n_boot,
                             weights=weights, placebos=placebos)
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


def _persistence(table: pd.DataFrame, extras: dict, trust_se: bool) -> list[Diagnostic]:
    """Per-period effects after launch and whether they fade (a note; it feeds no check).

    With few treated clusters the event-study standard errors are CR1, which is not valid there,
    so the trend is then read unweighted and marked descriptive.
    """
    lags = table[table["event_time"] >= 0]
    fade = persistence(lags["event_time"], lags["coef"], lags["se"] if trust_se else None, unit="period")
    if fade is None:
        return []
    extras["effect_persistence"] = vars(fade)
    return [Diagnostic("effect_persistence", fade.slope, None, not fade.fading, fade.message, "warn")]


def _is_share(cells: pd.DataFrame) -> bool:
    """True when every outcome value is 0 or 1 (then y^2 = y in every cell): the plots say 'share'."""
    return bool(np.allclose(cells["sum_y2"], cells["sum_y"]))


def _period_means(cells: pd.DataFrame) -> pd.DataFrame:
    m = cells.groupby(["time", "treated"], as_index=False)[["n", "sum_y"]].sum()
    return m.assign(period=m["time"], mean=m["sum_y"] / m["n"],
                    group=np.where(m["treated"] == 1, "treated", "control"))


def _cluster_counts(cells: pd.DataFrame, cluster_role: str) -> tuple[int, int, int]:
    """(treated clusters, control clusters, clusters whose rows are partly treated)."""
    per = cells.groupby(cluster_role)["treated"].agg(["min", "max"])
    mixed = int((per["min"] != per["max"]).sum())
    return int((per["max"] == 1).sum()), int((per["min"] == 0).sum()), mixed


def _few(cells: pd.DataFrame, cluster_role: str | None) -> bool:
    """Placebo inference applies: clusters given, assigned at the cluster level, and fewer than
    ``FEW_TREATED`` clusters on one side (where the wild bootstrap stops being trustworthy)."""
    if not cluster_role:
        return False
    n_t, n_c, mixed = _cluster_counts(cells, cluster_role)
    return not mixed and 0 < min(n_t, n_c) < FEW_TREATED


def _placebos(cells, launch, fe_roles, cluster_role, has_time, seed) -> tuple[SpaceTimePlacebos, PlaceboDraws]:
    if has_time and launch is not None:
        idx, _, launch_idx = period_index(cells["time"], launch)
    else:  # a post column: one "pre" and one "post" period, so space placebos only
        idx, launch_idx = cells["post"].to_numpy(np.int64), 1
    stp = SpaceTimePlacebos(cells, idx, launch_idx, fe_roles, cluster_role)
    return stp, stp.draws(seed=seed)


def _placebo_inference(fit, placebos: tuple[SpaceTimePlacebos, PlaceboDraws], cluster: str) -> Inference:
    _, draws = placebos
    est = fit.coef(EFFECT)
    need = min_placebos(PRE_TREND_ALPHA)
    side = f"{draws.m} {draws.minority} {cluster} cluster{'s' if draws.m > 1 else ''}"
    if draws.k < need:
        how = (f"{draws.n_space} from other {cluster}s at the launch"
               + (f", {draws.n_time} from {draws.fake_launches} fake launch dates before it" if draws.fake_launches
                  else ", none from fake launches (the pre-launch period is too short)"))
        raise MethodRefusal(
            f"Only {draws.k} placebo estimates can be formed ({how}): with {side} a 95% interval needs at least "
            f"{need}; add {cluster}s that did not get the change or a longer pre-launch period.")
    r = rank_inference(est, draws.estimates, alpha=0.05, scale=draws.real_scale, placebo_scales=draws.scale,
                       df=draws.df)
    text = (f"randomization inference over {draws.k} space-time placebos ({draws.n_space} with other {cluster}s "
            f"given the change at the launch, {draws.n_time} at {draws.fake_launches} fake launch dates before it; "
            f"Conley–Taber), {side}: every estimate divided by its standard deviation under independent "
            f"{cluster}-period shocks and row noise; p = the larger of the placebo p-value (share of placebos at "
            f"least as extreme; {r.p_placebo:.3g}) and that working model's t({draws.df:.0f}) p-value; interval "
            f"estimate ± {r.critical:.4g} by test inversion (set by the "
            f"{'placebos' if r.bound == 'placebos' else 'working model'}); std_error is the placebos' spread at "
            f"the real estimate's design")
    return Inference(est, draws.spread, r.p_value, r.ci_low, r.ci_high, "placebo_randomization", text)


def _refuse_if_thin(cells: pd.DataFrame, cluster_role: str | None, cluster: str | None,
                    bucket: LaunchBucket | None = None) -> None:
    """Plain-sentence refusals: no treated or no control cluster (or, when treatment varies inside
    clusters, fewer than two of either: placebo inference needs cluster-level assignment), or a
    group without pre or post data. One treated cluster is not refused: ``_placebo_inference``."""
    tr = cells["treated"] == 1
    if cluster_role:
        n_t, n_c, mixed = _cluster_counts(cells, cluster_role)
        if min(n_t, n_c) == 0:
            raise MethodRefusal(
                f"Only {n_t} treated and {n_c} control {cluster} cluster(s): diff-in-diff needs at least one of each; "
                f"roll out to (or keep back) some {cluster}s.")
        if mixed and min(n_t, n_c) < 2:
            raise MethodRefusal(
                f"Only {n_t} treated and {n_c} control {cluster} cluster(s), and treatment varies inside {mixed} of "
                f"them: diff-in-diff needs at least two of each (or treatment assigned whole {cluster}s) to estimate "
                f"the uncertainty; cluster at the level treatment was assigned at.")
    elif tr.sum() == 0 or (~tr).sum() == 0:
        raise MethodRefusal("Every row is in one group: diff-in-diff needs treated and control rows.")
    # the distinct (treated, post) pairs first: a tolist of every cell took 0.17 s at 10M conversations
    have = set(map(tuple, cells.loc[cells["n"] > 0, ["treated", "post"]].drop_duplicates().to_numpy().tolist()))
    missing = [f"{'treated' if t else 'control'} {'after' if p else 'before'} launch"
               for t in (1, 0) for p in (0, 1) if (t, p) not in have]
    if missing:
        extra = (f" (the partly treated bucket starting {fmt_period(bucket.start)}, around the launch, is left out)"
                 if bucket is not None else "")
        raise MethodRefusal(f"No data for {', '.join(missing)}{extra}: diff-in-diff needs both groups before and "
                            "after the launch; widen the window or wait for post-launch data.")


def _cluster_diagnostics(cells, cluster_role, cluster, inf, design, placebos=None) -> list[Diagnostic]:
    out = []
    if cluster_role:
        n_t, n_c, mixed = _cluster_counts(cells, cluster_role)
        g = cells[cluster_role].nunique()
        out.append(Diagnostic("n_clusters", float(g), 2.0, True,
                              f"{g} {cluster} clusters ({n_t} treated, {n_c} control)", check="sample_size"))
        if mixed:
            out.append(Diagnostic("assignment_level", float(mixed), 0.0, False,
                                  f"treatment varies inside {mixed} {cluster} cluster(s): the cluster is not the level "
                                  "treatment was assigned at; cluster at a coarser level"))
        if placebos is not None:
            out.append(_placebo_assumption(cells, cluster_role, cluster, placebos, inf))
        else:
            few = g < FEW_CLUSTERS
            out.append(Diagnostic(
                "inference", float(g), float(FEW_CLUSTERS), True,
                (f"only {g} clusters (< {FEW_CLUSTERS}): conventional cluster-robust errors are unreliable, p-value "
                 f"and interval from the {inf.method}" if few else f"{g} clusters: {inf.method}"), "warn"))
    else:
        out.append(Diagnostic("inference", None, None, True,
                              "no cluster given: HC1 errors assume rows are independent; pass cluster= (the level "
                              "treatment was assigned at) when treatment was given to groups", "warn"))
    if design.dropped:
        out.append(Diagnostic("collinear_columns", float(len(design.dropped)), 0.0, True,
                              "dropped collinear design columns: " + ", ".join(design.dropped[:10])))
    return out


def _placebo_assumption(cells, cluster_role, cluster, placebos, inf) -> Diagnostic:
    """The "inference" note under placebo inference: what it rests on, and what we can see of it — how
    the minority clusters' size compares with the placebo clusters' (placebos are rescaled for size and
    window under the working model; a large size gap leans harder on that model)."""
    _, draws = placebos
    rows = cells.groupby(cluster_role).agg(n=("n", "sum"), treated=("treated", "max"))
    minority = rows["treated"] == (1 if draws.minority == "treated" else 0)
    ratio = float(rows.loc[minority, "n"].median() / rows.loc[~minority, "n"].median())
    size = (f"; the {draws.minority} {cluster}{'s have' if draws.m > 1 else ' has'} {ratio:.2f}× the median rows "
            "of the others"
            + (" (placebos are rescaled for the difference in noise, under independent "
               f"{cluster}-period shocks and row noise)" if not 0.5 <= ratio <= 2.0 else ""))
    many = draws.m > 1
    whose = f"{cluster}s'" if many else f"{cluster}'s"
    return Diagnostic(
        "inference", float(draws.k), float(min_placebos(0.05)), True,
        (f"only {draws.m} {draws.minority} {cluster} cluster{'s' if many else ''} (< {FEW_TREATED}): cluster-robust "
         f"errors and the wild bootstrap are not valid here; p-value and interval from {draws.k} space-time "
         f"placebo estimates (Conley–Taber randomization inference). Assumption: the {draws.minority} "
         f"{whose} deviations from the common trend are drawn from the same distribution as "
         f"the other {cluster}s' (after rescaling for size and window) and do not trend on their own{size}"),
        "warn")
