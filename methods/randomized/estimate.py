"""Randomized designs: intent-to-treat and treatment-on-the-treated from an A/B test with imperfect uptake.

Why two estimates: random assignment makes the arms comparable, not the users and non-users of
what was assigned. Agents assigned the assistant who never used it, or control agents who found
it anyway, make the *as-treated* comparison (users vs non-users) confounded by whatever drives
uptake — it is shown only as the naive contrast. What randomization does identify:

* **ITT** (intent-to-treat): the effect of *being assigned*, the difference in mean outcome
  between arms (Welch/HC2 standard errors). With pre-period covariates it is regression-adjusted
  as Lin (2013) prescribes — each arm's outcome regressed on the covariates centred at the pooled
  mean, i.e. the fully interacted regression — which is CUPED's variance reduction without its
  bias when effects vary with the covariate; HC2 (or HC1) standard errors.
* **TOT / LATE** by Wald / 2SLS: assignment as the instrument for uptake. The Wald ratio
  ITT_outcome / ITT_uptake is the effect on those whose uptake the assignment changed (compliers,
  a LATE); when nobody in the baseline arm can take up the treatment (one-sided non-compliance) the
  compliers are all who took it up in the assigned arm, and the ratio is the effect on the treated
  (TOT). With covariates it is 2SLS (covariates exogenous, not interacted). Standard errors are
  heteroskedasticity-robust (HC0, linearmodels' ``robust``), the first-stage F is the robust Wald
  statistic of the instrument, and an Anderson–Rubin interval (valid however weak the instrument)
  is reported beside the normal one. Assumptions: the assignment moves the outcome only through
  uptake (exclusion, untestable) and nobody takes up *because* they were not assigned (monotonicity).

Several arms: one row per non-baseline arm against the baseline, for every outcome, in the tidy
table ``extras["arms"]`` (``ARM_TABLE_COLUMNS``). The baseline is the one given, else the arm
``0``/``false`` when there is one, else the most frequent arm (ties: the first in sorted order);
the headline estimate is the first non-baseline arm in sorted order. Arms are compared pairwise,
without a multiplicity correction. Net value per arm: ``value`` (outcome -> weight) adds the
per-conversation column ``net_value`` = Σ weight × outcome (null when any weighted outcome is) as
one more outcome, so the table carries its ITT (and TOT/LATE) per arm with the right standard
error: a linear combination of outcomes is itself an outcome, and the covariance between the
outcomes is inside the combined column (adding the outcomes' variances would ignore it).

Inference is large-sample normal throughout (z intervals and p-values, as statsmodels' robust
covariances and linearmodels report them); the method refuses below ``MIN_ARM`` conversations per
arm. Rows are compressed to cells first (``cells.py``), so millions of conversations cost one
GROUP BY.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pandas as pd
from scipy import stats

from methods.randomized import diagnostics as dg
from methods.randomized.cells import Cells, arm_label, covariate_matrix, to_cells
from methods.randomized.linear import CellIV, anderson_rubin, gram, independent_columns, ols, tsls
from methods.result import Diagnostic, EstimateResult, MethodRefusal
from methods.sql import quote_ident, relation_sql

Z = float(stats.norm.ppf(0.975))
WEAK_F = 10.0
MAX_ARMS = 50
ARM_TABLE_COLUMNS = ["outcome", "arm", "baseline", "estimand", "estimate", "std_error", "ci_low", "ci_high",
                     "p_value", "n_arm", "n_baseline", "mean_arm", "mean_baseline", "first_stage_f",
                     "ar_ci_low", "ar_ci_high"]
NAN = float("nan")
NET_VALUE = "net_value"  # the per-conversation value column ``value`` adds (module doc)


@dataclass
class Design:
    cells: Cells
    arms: list[str]
    baseline: str
    headline: str
    baseline_reason: str
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def others(self) -> list[str]:
        return [a for a in self.arms if a != self.baseline]


def choose_baseline(arms: list[str], counts: dict[str, int], given, assignment: str) -> tuple[str, str]:
    """The baseline arm and why it is the one (module doc)."""
    if given is not None:
        label = arm_label(given)
        if label not in arms:
            raise MethodRefusal(f"baseline {given!r} is not an arm of `{assignment}`; its arms are "
                                + ", ".join(f"`{a}`" for a in arms))
        return label, "given"
    if "0" in arms:
        return "0", "the arm 0/false (not assigned)"
    best = max(arms, key=lambda a: (counts[a], -arms.index(a)))
    return best, "the most frequent arm (no baseline given)"


def _design(cells: Cells, assignment: str, outcome: str, baseline, shares) -> Design:
    arms = cells.arms()
    if len(arms) > MAX_ARMS:
        raise MethodRefusal(f"`{assignment}` has {len(arms):,} distinct values: an assignment has a few arms (at most "
                            f"{MAX_ARMS}); pick the column holding each conversation's arm")
    if len(arms) < 2:
        raise MethodRefusal(f"`{assignment}` has {len(arms)} arm(s) ({', '.join(arms) or 'none'}) among rows with a "
                            "value: a randomized comparison needs at least two")
    counts_all = {a: int(v) for a, v in cells.counts().items()}
    base, why = choose_baseline(arms, counts_all, baseline, assignment)
    others = [a for a in arms if a != base]
    counts_outcome = {a: int(v) for a, v in cells.counts(0).items()}
    diags = [dg.sample_size(counts_outcome, outcome), dg.survivorship(counts_all, counts_outcome, outcome)]
    share_labels = None if not shares else {arm_label(k): float(v) for k, v in shares.items()}
    if share_labels is not None and any(v <= 0 for v in share_labels.values()):
        raise MethodRefusal("every design share must be positive")
    diags.append(dg.sample_ratio(counts_all, share_labels, assignment))
    diags += dg.balance(cells, arms, base)
    d = Design(cells, arms, base, others[0], why, diags)
    if len(arms) > 2:
        diags.append(Diagnostic(
            "arms", float(len(arms)), None, True,
            f"{len(arms)} arms ({', '.join(arms)}): the headline is `{d.headline}` against the baseline `{base}` "
            f"({why}); every arm against the baseline, for every outcome, is in the table `arms` (pairwise, "
            "no multiplicity correction).", "warn"))
    return d


def _ci(est: float, se: float) -> tuple[float, float, float]:
    """Normal 95% interval and two-sided p-value; NaN when there is no positive standard error."""
    if not (np.isfinite(se) and se > 0 and np.isfinite(est)):
        return NAN, NAN, NAN
    return est - Z * se, est + Z * se, float(2 * stats.norm.sf(abs(est / se)))


def _row(outcome, arm, base, estimand, est, se, n_arm, n_base, mean_arm=NAN, mean_base=NAN, **more) -> dict:
    lo, hi, p = _ci(est, se)
    return {"outcome": outcome, "arm": arm, "baseline": base, "estimand": estimand, "estimate": float(est),
            "std_error": float(se), "ci_low": lo, "ci_high": hi, "p_value": p, "n_arm": int(n_arm),
            "n_baseline": int(n_base), "mean_arm": float(mean_arm), "mean_baseline": float(mean_base),
            "first_stage_f": NAN, "ar_ci_low": NAN, "ar_ci_high": NAN, **more}


def _outcome_cells(cells: Cells, k: int, arms: Sequence[str]) -> np.ndarray:
    t = cells.table
    return ((t[f"n_{k}"] > 0) & t["arm"].isin(list(arms))).to_numpy()


def lin_by_arm(cells: Cells, k: int, arms: list[str], adjust: bool, cov_type: str = "HC2"):
    """Per arm ``(adjusted mean, its robust variance, n, raw mean)``, plus the dropped covariate columns.

    Adjusted: each arm's outcome on [1, x − x̄] (x̄ the pooled mean of the rows used), so the
    intercept is the arm's mean outcome predicted at the pooled covariates and the difference of
    two intercepts is Lin's estimator; the fits share no rows, so their covariance is zero and the
    variances add. A covariate column collinear within some arm (a level absent from it) is dropped
    from every arm, so all arms adjust for the same columns. HC1's N/(N−K) uses the K of the one
    fully interacted regression over all arms (statsmodels' value on the row data).
    """
    mask = _outcome_cells(cells, k, arms)
    t = cells.table.loc[mask]
    n = t[f"n_{k}"].to_numpy(float)
    ybar, ss = t[f"ybar_{k}"].to_numpy(float), t[f"ss_{k}"].to_numpy(float)
    arm = t["arm"].to_numpy()
    if adjust and cells.covariates:
        cov = covariate_matrix(cells, mask)
        X, names = cov.X, cov.names
    else:
        X, names = np.zeros((len(t), 0)), []
    xbar = (n @ X) / n.sum() if X.shape[1] else np.zeros(0)
    W = np.column_stack([np.ones(len(t)), X - xbar])
    keep = set(range(W.shape[1]))
    for a in arms:
        sel = arm == a
        keep &= set(independent_columns(gram(W[sel], n[sel])))
    if 0 not in keep:
        raise MethodRefusal("an arm has no conversation with an outcome")
    cols = sorted(keep)
    dropped = [names[j - 1] for j in range(1, W.shape[1]) if j not in keep]
    W = W[:, cols]
    fits = {a: ols(W[arm == a], n[arm == a], ybar[arm == a], ss[arm == a]) for a in arms}
    n_total, k_total = n.sum(), W.shape[1] * len(arms)
    out = {}
    for a, f in fits.items():
        V = f.cov("HC2" if cov_type == "HC2" else "HC0")
        if cov_type == "HC1":  # N and K of the pooled, fully interacted regression
            V = V * n_total / (n_total - k_total)
        out[a] = (float(f.beta[0]), float(V[0, 0]), f.nobs, float(f.n @ ybar[arm == a] / f.nobs))
    return out, dropped


def itt_rows(cells: Cells, d: Design, k: int, adjust: bool, cov_type: str) -> tuple[list[dict], list[str]]:
    """ITT rows of outcome ``k`` for every arm against the baseline (unadjusted, and adjusted when asked)."""
    outcome = cells.outcomes[k]
    raw, _ = lin_by_arm(cells, k, d.arms, adjust=False, cov_type="HC2")
    rows, dropped = [], []
    b = raw[d.baseline]
    for a in d.others:
        r = raw[a]
        rows.append(_row(outcome, a, d.baseline, "ITT", r[0] - b[0], np.sqrt(r[1] + b[1]), r[2], b[2], r[0], b[0]))
    if adjust and cells.covariates:
        adj, dropped = lin_by_arm(cells, k, d.arms, adjust=True, cov_type=cov_type)
        b2 = adj[d.baseline]
        for a in d.others:
            r = adj[a]
            rows.append(_row(outcome, a, d.baseline, "ITT_adjusted", r[0] - b2[0], np.sqrt(r[1] + b2[1]), r[2], b2[2],
                             raw[a][0], b[0]))
    return rows, dropped


@dataclass
class ArmIV:
    """One arm's Wald / 2SLS against the baseline: its table rows and the fit behind them."""

    rows: list[dict]
    fit: CellIV
    uptake_arm: float
    uptake_base: float
    as_treated: float
    dropped: list[str]


def iv_arm(cells: Cells, d: Design, k: int, arm: str, adjust: bool) -> ArmIV:
    """Wald / 2SLS of outcome ``k`` for one arm against the baseline, on those two arms' rows."""
    outcome = cells.outcomes[k]
    mask = _outcome_cells(cells, k, [arm, d.baseline])
    t = cells.table.loc[mask]
    n = t[f"n_{k}"].to_numpy(float)
    ybar, ss = t[f"ybar_{k}"].to_numpy(float), t[f"ss_{k}"].to_numpy(float)
    z = (t["arm"].to_numpy() == arm).astype(float)
    dd = t["d"].to_numpy(float)
    if adjust and cells.covariates:
        cov = covariate_matrix(cells, mask)
        X, names = cov.X, cov.names
    else:
        X, names = np.zeros((len(t), 0)), []
    E = np.column_stack([np.ones(len(t)), X])
    keep = independent_columns(gram(np.column_stack([E, z]), n))
    if E.shape[1] not in keep:
        raise MethodRefusal(f"assignment `{arm}` vs `{d.baseline}` is determined by the covariates: nothing is left "
                            "to compare once they are adjusted for")
    dropped = [names[j - 1] for j in range(1, E.shape[1]) if j not in keep]
    E = E[:, [j for j in keep if j < E.shape[1]]]
    n1, n0 = n[z == 1].sum(), n[z == 0].sum()
    up1, up0 = float((n * dd)[z == 1].sum() / n1), float((n * dd)[z == 0].sum() / n0)
    took = n * dd
    y_sum = n * ybar
    as_treated = (y_sum[dd == 1].sum() / took.sum() - y_sum[dd == 0].sum() / n[dd == 0].sum()
                  if took.sum() > 0 and n[dd == 0].sum() > 0 else NAN)
    if np.allclose(dd, dd[0]):
        raise MethodRefusal(f"uptake is {dd[0]:g} for every conversation in arms `{arm}` and `{d.baseline}`: "
                            "there is no uptake to instrument")
    try:
        fit = tsls(E, z, dd, n, ybar, ss)
    except ZeroDivisionError as exc:
        raise MethodRefusal(f"assignment `{arm}` did not change uptake at all (first stage 0 against "
                            f"`{d.baseline}`): no Wald estimate exists; report the intent-to-treat effect") from exc
    var_fs = fit.first_stage_var
    ar = anderson_rubin(fit.itt, fit.first_stage, fit.itt_var, var_fs, fit.cross, Z)
    estimand = "TOT" if up0 == 0 else "LATE"
    rows = [
        _row(outcome, arm, d.baseline, "first_stage", fit.first_stage, np.sqrt(var_fs), n1, n0, up1, up0,
             first_stage_f=fit.first_stage_f),
        _row(outcome, arm, d.baseline, estimand, fit.effect, fit.se, n1, n0,
             first_stage_f=fit.first_stage_f, ar_ci_low=ar[0], ar_ci_high=ar[1]),
        _row(outcome, arm, d.baseline, "ITT_reduced_form", fit.itt, np.sqrt(fit.itt_var), n1, n0),
        _row(outcome, arm, d.baseline, "as_treated_naive", as_treated, NAN, n1, n0),
    ]
    return ArmIV(rows, fit, up1, up0, float(as_treated), dropped)


def _usable_outcomes(cells: Cells) -> tuple[list[int], list[Diagnostic]]:
    """The primary outcome (its sample size refuses the whole question) and every secondary outcome
    each arm has at least ``MIN_ARM`` conversations with; the others are named, not estimated."""
    keep, notes = [0], []
    for k in range(1, len(cells.outcomes)):
        small = {a: int(c) for a, c in cells.counts(k).items() if c < dg.MIN_ARM}
        if small:
            notes.append(Diagnostic(
                f"secondary_outcome_left_out_{cells.outcomes[k]}", float(min(small.values())), float(dg.MIN_ARM), True,
                f"secondary outcome `{cells.outcomes[k]}` is left out of the table `arms`: "
                + ", ".join(f"arm `{a}` has {c}" for a, c in small.items())
                + f" conversations with it (at least {dg.MIN_ARM} needed).", "warn"))
        else:
            keep.append(k)
    return keep, notes


def _arm_table(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=ARM_TABLE_COLUMNS)


def _dropped_note(dropped: list[str]) -> list[Diagnostic]:
    if not dropped:
        return []
    return [Diagnostic("covariates_dropped", float(len(dropped)), 0.0, True,
                       "covariate columns collinear with the others within an arm (e.g. a level absent from one arm), "
                       "left out of the adjustment: " + ", ".join(sorted(set(dropped))[:20]) + ".", "warn")]


def _pick(table: pd.DataFrame, outcome: str, arm: str, estimand: str) -> pd.Series:
    sel = table[(table["outcome"] == outcome) & (table["arm"] == arm) & (table["estimand"] == estimand)]
    return sel.iloc[0]


def _uptake_note(iv: ArmIV, arm: str, base: str, uptake: str) -> Diagnostic:
    kind = ("nobody in the baseline took it up (one-sided non-compliance), so the Wald ratio is the effect on "
            "those who took it up in the assigned arm (TOT)" if iv.uptake_base == 0 else
            "some baseline conversations took it up too (two-sided non-compliance), so the Wald ratio is the effect "
            "on compliers — those whose uptake followed their assignment (LATE) — not on every user")
    return Diagnostic(
        "uptake_by_arm", iv.uptake_arm - iv.uptake_base, None, True,
        f"`{uptake}` taken up in {iv.uptake_arm:.1%} of arm `{arm}` and {iv.uptake_base:.1%} of `{base}`: {kind}. "
        "Assumed, not testable here: assignment changes the outcome only through uptake (exclusion) and nobody "
        "takes it up because they were not assigned (monotonicity).", "warn")


def _as_treated_note(value: float, estimate: float, what: str) -> Diagnostic:
    return Diagnostic(
        "as_treated_difference", value, None, True,
        f"as-treated difference (users minus non-users of the treatment, ignoring assignment) {value:+.4f} against "
        f"the {what} {estimate:+.4f}: users differ from non-users in more than the treatment (who takes it up is "
        "not random), so it is shown only as the naive contrast.", "warn")


def value_weights(value: Mapping[str, float] | None, outcomes: Sequence[str]) -> dict[str, float]:
    """The non-zero weights of ``value`` as floats; refuses a non-finite weight or a clash with an outcome name."""
    if not value:
        return {}
    weights = {str(o): float(w) for o, w in value.items() if float(w) != 0.0}
    bad = [o for o, w in weights.items() if not math.isfinite(w)]
    if bad:
        raise ValueError("value weights must be finite numbers; not: " + ", ".join(bad))
    if not weights:
        raise ValueError("value needs at least one non-zero weight")
    if NET_VALUE in weights or NET_VALUE in outcomes:
        raise ValueError(f"`{NET_VALUE}` is the name of the value column the method adds; rename that outcome")
    return weights


def value_expression(weights: Mapping[str, float]) -> str:
    """SQL of Σ weight × outcome (null when any weighted outcome is null); names quoted, weights as literals."""
    return " + ".join(f"({w!r}) * CAST({quote_ident(o)} AS DOUBLE)" for o, w in weights.items())


def _cells_with_value(data, outcomes: list[str], assignment: str, uptake, covariates, weights: dict) -> Cells:
    """Cells of ``outcomes`` plus, when ``weights``, the per-conversation ``net_value`` column as the last outcome."""
    if not weights:
        return to_cells(data, outcomes, assignment, uptake, covariates)
    if isinstance(data, tuple):
        con, relation = data
        view = f"_value_{uuid.uuid4().hex[:12]}"
        try:
            con.execute(f"CREATE TEMP VIEW {view} AS SELECT *, {value_expression(weights)} AS {NET_VALUE} "
                        f"FROM {relation_sql(relation)}")
        except duckdb.Error as exc:  # an unknown or non-numeric weighted column
            raise ValueError(f"value weights name unknown or non-numeric column(s) among {', '.join(weights)}: "
                             f"{str(exc).splitlines()[0]}") from exc
        try:
            return to_cells((con, view), [*outcomes, NET_VALUE], assignment, uptake, covariates)
        finally:
            con.execute(f"DROP VIEW IF EXISTS {view}")
    missing = [o for o in weights if o not in data.columns]
    if missing:
        raise ValueError("unknown column(s) in value weights: " + ", ".join(missing))
    if NET_VALUE in data.columns:
        raise ValueError(f"the data already has a column `{NET_VALUE}`: the method adds it from the value weights")
    total = sum(w * data[o].astype("float64") for o, w in weights.items())
    return to_cells(data.assign(**{NET_VALUE: total}), [*outcomes, NET_VALUE], assignment, uptake, covariates)


def _value_extras(table: pd.DataFrame, weights: dict, headline: str, estimand: str) -> dict:
    """The headline arm's net value (``estimand``), beside the weights; empty without weights or rows."""
    if not weights:
        return {}
    sel = table[(table["outcome"] == NET_VALUE) & (table["arm"] == headline) & (table["estimand"] == estimand)]
    out = {"value_weights": dict(weights)}
    if not sel.empty:
        r = sel.iloc[0]
        out.update({"net_value": float(r["estimate"]), "net_value_std_error": float(r["std_error"]),
                    "net_value_ci_low": float(r["ci_low"]), "net_value_ci_high": float(r["ci_high"])})
    return out


def estimate_itt(data, outcome: str, assignment: str, covariates: Sequence[str] = (), uptake: str | None = None,
                 baseline=None, shares: dict | None = None, secondary_outcomes: Sequence[str] = (),
                 cov_type: str = "HC2", value: Mapping[str, float] | None = None) -> EstimateResult:
    """Intent-to-treat effect of assignment on ``outcome`` (module doc).

    ``data``: pandas frame or ``(duckdb_connection, relation)``. ``covariates``: pre-period
    signals (text columns as categories); given, the estimate is Lin's regression-adjusted ITT,
    else the difference in means. ``uptake`` (0/1, null = 0): adds the Wald TOT/LATE, the first
    stage and the as-treated contrast to the extras (the headline stays the ITT). ``shares``: the
    design's arm shares for the sample-ratio check (default equal). ``cov_type``: HC2 or HC1.
    ``value``: outcome -> weight; every arm's net value per conversation joins the table ``arms``
    as outcome ``net_value`` (module doc), the headline arm's in ``extras["net_value"]``.
    """
    if cov_type not in ("HC1", "HC2"):
        raise ValueError("cov_type must be HC1 or HC2")
    outcomes = list(dict.fromkeys([outcome, *secondary_outcomes]))
    weights = value_weights(value, outcomes)
    cells = _cells_with_value(data, outcomes, assignment, uptake, covariates, weights)
    d = _design(cells, assignment, outcome, baseline, shares)
    adjust = bool(cells.covariates)
    rows, dropped = [], []
    ivs: dict[str, ArmIV] = {}
    no_tot: list[Diagnostic] = []
    usable, left_out = _usable_outcomes(cells)
    for k in usable:
        r, dr = itt_rows(cells, d, k, adjust, cov_type)
        rows += r
        dropped += dr if k == 0 else []
        if uptake:
            for a in d.others:
                try:  # the TOT is an extra here: when it cannot exist, the ITT still stands
                    iv = iv_arm(cells, d, k, a, adjust)
                except MethodRefusal as exc:
                    if k == 0:
                        no_tot.append(Diagnostic(f"tot_not_estimated_{a}", None, None, True,
                                                 f"no Wald estimate for arm `{a}`: {exc}", "warn"))
                    continue
                rows += iv.rows
                if k == 0:
                    ivs[a] = iv
    table = _arm_table(rows)
    head = _pick(table, outcome, d.headline, "ITT_adjusted" if adjust else "ITT")
    raw = _pick(table, outcome, d.headline, "ITT")
    diags = list(d.diagnostics) + _dropped_note(dropped) + left_out + no_tot
    extras = {"arms": table, "baseline": d.baseline, "arm": d.headline, "baseline_reason": d.baseline_reason,
              "assignment_counts": {a: int(v) for a, v in cells.counts().items()},
              "difference_in_means": float(raw["estimate"]), "difference_in_means_std_error": float(raw["std_error"]),
              "cov_type": cov_type if adjust else "HC2",
              **_value_extras(table, weights, d.headline, "ITT_adjusted" if adjust else "ITT")}
    naive = float(raw["estimate"])
    if adjust:
        ratio = head["std_error"] / raw["std_error"] if raw["std_error"] > 0 else NAN
        diags.append(Diagnostic(
            "adjustment_variance_ratio", float(ratio), 1.0, True,
            f"adjusting for {', '.join(cells.covariates)} (Lin 2013, {cov_type}) changed the standard error from "
            f"{raw['std_error']:.4g} to {head['std_error']:.4g} ({ratio - 1:+.0%}); unadjusted difference in means "
            f"{raw['estimate']:+.4f}.", "warn"))
    if uptake and d.headline in ivs:
        iv = ivs[d.headline]
        tot = _pick(table, outcome, d.headline, "TOT" if iv.uptake_base == 0 else "LATE")
        naive = iv.as_treated
        extras.update({"tot": float(tot["estimate"]), "tot_estimand": tot["estimand"],
                       "tot_std_error": float(tot["std_error"]), "tot_ci_low": float(tot["ci_low"]),
                       "tot_ci_high": float(tot["ci_high"]), "first_stage": iv.fit.first_stage,
                       "first_stage_f": iv.fit.first_stage_f, "as_treated": iv.as_treated,
                       "uptake_by_arm": {d.headline: iv.uptake_arm, d.baseline: iv.uptake_base}})
        diags.append(_uptake_note(iv, d.headline, d.baseline, uptake))
        diags += [dg.weak_instrument(ivs[a].fit.first_stage_f, WEAK_F, a, d.baseline, None) for a in ivs]
        diags.append(_as_treated_note(iv.as_treated, float(head["estimate"]), "intent-to-treat effect"))
    how = (f"Lin (2013) regression adjustment on {', '.join(cells.covariates)} with {cov_type} standard errors"
           if adjust else "difference in means with Welch (HC2) standard errors")
    return EstimateResult(
        method="randomized_itt", estimand="ITT", outcome=outcome, estimate=float(head["estimate"]),
        std_error=float(head["std_error"]), ci_low=float(head["ci_low"]), ci_high=float(head["ci_high"]),
        p_value=float(head["p_value"]), n_treated=int(head["n_arm"]), n_control=int(head["n_baseline"]),
        naive_estimate=float(naive), diagnostics=diags, extras=extras,
        ci_method=f"normal 95% interval, {how}; arm `{d.headline}` against baseline `{d.baseline}`",
    )


def estimate_iv(data, outcome: str, treatment: str, instrument: str, covariates: Sequence[str] = (),
                baseline=None, shares: dict | None = None, secondary_outcomes: Sequence[str] = (),
                value: Mapping[str, float] | None = None) -> EstimateResult:
    """Wald / 2SLS effect of ``treatment`` (uptake, 0/1) instrumented by ``instrument`` (assignment).

    The headline is the TOT (one-sided non-compliance) or LATE (two-sided), with robust HC0 standard
    errors; ``extras`` carry the reduced-form ITT (same covariates, so estimate = itt / first_stage),
    the first stage, its robust F, the Anderson–Rubin interval and the as-treated contrast (the
    naive estimate). The weak-instrument check fails when the first-stage F is below 10. ``value``:
    as in ``estimate_itt`` (the net value's Wald/2SLS per arm joins the table ``arms``).
    """
    outcomes = list(dict.fromkeys([outcome, *secondary_outcomes]))
    weights = value_weights(value, outcomes)
    cells = _cells_with_value(data, outcomes, instrument, treatment, covariates, weights)
    d = _design(cells, instrument, outcome, baseline, shares)
    adjust = bool(cells.covariates)
    rows, ivs, dropped = [], {}, []
    usable, left_out = _usable_outcomes(cells)
    for k in usable:
        r, _ = itt_rows(cells, d, k, adjust, "HC2")
        rows += r
        for a in d.others:
            iv = iv_arm(cells, d, k, a, adjust)
            rows += iv.rows
            if k == 0:
                ivs[a] = iv
                dropped += iv.dropped
    table = _arm_table(rows)
    iv = ivs[d.headline]
    fit = iv.fit
    estimand = "TOT" if iv.uptake_base == 0 else "LATE"
    head = _pick(table, outcome, d.headline, estimand)
    diags = list(d.diagnostics) + _dropped_note(dropped) + left_out
    diags += [dg.weak_instrument(ivs[a].fit.first_stage_f, WEAK_F, a, d.baseline, "weak_instrument") for a in d.others]
    diags.append(_uptake_note(iv, d.headline, d.baseline, treatment))
    diags.append(_as_treated_note(iv.as_treated, fit.effect, f"{estimand} estimate"))
    ar_low, ar_high = float(head["ar_ci_low"]), float(head["ar_ci_high"])
    extras = {"itt": fit.itt, "itt_std_error": float(np.sqrt(fit.itt_var)), "first_stage": fit.first_stage,
              "first_stage_std_error": float(np.sqrt(fit.first_stage_var)), "first_stage_f": fit.first_stage_f,
              "anderson_rubin_ci_low": ar_low, "anderson_rubin_ci_high": ar_high, "as_treated": iv.as_treated,
              "uptake_by_arm": {d.headline: iv.uptake_arm, d.baseline: iv.uptake_base}, "arms": table,
              "baseline": d.baseline, "arm": d.headline, "baseline_reason": d.baseline_reason,
              "assignment_counts": {a: int(v) for a, v in cells.counts().items()},
              **_value_extras(table, weights, d.headline, estimand)}
    how = ("2SLS with covariates " + ", ".join(cells.covariates) if adjust else "the Wald ratio (2SLS without covariates)")
    return EstimateResult(
        method="randomized_iv", estimand=estimand, outcome=outcome, estimate=fit.effect, std_error=fit.se,
        ci_low=float(head["ci_low"]), ci_high=float(head["ci_high"]), p_value=float(head["p_value"]),
        n_treated=int(head["n_arm"]), n_control=int(head["n_baseline"]), naive_estimate=iv.as_treated,
        diagnostics=diags, extras=extras,
        ci_method=(f"normal 95% interval from {how}, heteroskedasticity-robust (HC0) standard errors; "
                   f"assignment `{d.headline}` against `{d.baseline}` instruments `{treatment}`"),
    )
