"""Propensity score matching with a caliper, on covariate cells, with DoWhy as the reference.

DoWhy 0.14's ``backdoor.propensity_score_matching`` is 1-nearest-neighbour matching with
replacement on the propensity, with no caliper, no standard error and refuters that reuse a
stale propensity. We keep its estimator as the reference (``propensity_model="sklearn_default",
match_on="propensity", caliper=None`` reproduces its number exactly; tests/test_psm.py checks it
against a stored DoWhy output) and build the rest ourselves:

* propensity: unpenalised logistic regression fitted on covariate cells (``propensity.py``);
* matching on the logit of the propensity, caliper = ``caliper`` × SD of the logit (Austin 2011),
  1-NN with or without replacement. All units of a cell share one propensity, so a treated unit
  whose own cell holds controls is matched exactly within the cell (ties use every tied control,
  as Abadie & Imbens do), otherwise to the nearest control cell inside the caliper. Treated units
  with no control inside the caliper are dropped and reported — propensities are never clipped;
* ATT by default, ATE = units-weighted mix of ATT and ATC (as DoWhy);
* interval: bootstrap over rows (a multinomial draw over atoms), propensity refitted each
  replicate; normal interval from the bootstrap SE;
* cross-checks in ``extras``: IPW and doubly robust AIPW with bootstrap SEs;
* balance, overlap and sample-size diagnostics (``balance.py``), four refutations: placebo,
  random common cause and data subsets (``refuters.py``) and robustness to a hidden confounder
  (``sensitivity.py``, Cinelli & Hazlett's partial R² with the E-value as extra information);
  matching itself in ``matching.py``, the cross-checks in ``crosschecks.py``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats
from scipy.special import expit
from threadpoolctl import threadpool_limits

from methods.parallel import map_replicates
from methods.psm.balance import (
    MIN_GROUP,
    UNMATCHED_MAX,
    balance_rows,
    check_sample_size,
    overlap_diagnostics,
)
from methods.psm.crosschecks import ipw_aipw
from methods.psm.matching import Matched, matched_estimate
from methods.psm.plots import _love_png, _overlap_png
from methods.psm.propensity import (
    Atoms,
    CellGram,
    CellStats,
    Prepared,
    cell_stats,
    dowhy_design,
    fit_logit,
    fit_sklearn_default,
    prepare,
)
from methods.psm.refuters import (
    data_subset,
    evalue_numbers,
    placebo_treatment,
    random_common_cause,
    strongest_measured_confounder,
)
from methods.psm.sensitivity import confounder_robustness, covariate_groups, regression_sensitivity
from methods.result import Diagnostic, EstimateResult

METHOD = "propensity_matching"


def _expit(x):
    return expit(x)


# ----------------------------------------------------------------------------- estimator


class PSMEstimator:
    """The whole estimator as a function of atoms, so bootstrap and refuters refit everything."""

    def __init__(self, X: np.ndarray, estimand: str, caliper: float | None, replace: bool,
                 match_on: str = "logit", propensity_model: str = "logit", plan: CellGram | None = None):
        self.X = X
        self.plan = plan  # CellGram of X: the Hessians of every refit without the dense product
        self.estimand = estimand
        self.caliper = caliper
        self.replace = replace
        self.match_on = match_on
        self.propensity_model = propensity_model
        self.beta0: np.ndarray | None = None

    def fit_eta(self, X: np.ndarray | None, st: CellStats, warm: bool = True,
                plan: CellGram | None = None) -> tuple[np.ndarray, bool]:
        """Logit of the propensity per cell; ``X`` may be None when ``plan`` holds the design."""
        if self.propensity_model == "sklearn_default":
            use = (st.n1 + st.n0) > 0
            Xs = np.vstack([X[use], X[use]])
            ts = np.concatenate([np.ones(use.sum()), np.zeros(use.sum())])
            ws = np.concatenate([st.n1[use], st.n0[use]])
            keep = ws > 0
            lr = _sklearn_lr().fit(Xs[keep], ts[keep], sample_weight=ws[keep])
            return lr.decision_function(X), True
        beta0 = None
        if warm and self.beta0 is not None:
            terms = X.shape[1] if X is not None else plan.p
            beta0 = np.concatenate([self.beta0, np.zeros(terms - len(self.beta0))])
        fit = fit_logit(X, st.n1, st.n0, beta0=beta0, plan=plan)
        return fit.eta, fit.converged

    def coord_width(self, eta: np.ndarray, st: CellStats) -> tuple[np.ndarray, float]:
        coord = eta if self.match_on == "logit" else _expit(eta)
        if self.caliper is None:
            return coord, np.inf
        n = st.n1 + st.n0
        mu = (n @ coord) / n.sum()
        sd = float(np.sqrt(n @ (coord - mu) ** 2 / n.sum()))
        return coord, self.caliper * sd

    def run(self, X: np.ndarray | None, st: CellStats, eta: np.ndarray | None = None,
            plan: CellGram | None = None) -> tuple[Matched, np.ndarray]:
        """Fit (unless ``eta`` is given) and match; ``plan`` is the ``CellGram`` of ``X``, if any
        (then ``X`` may be None)."""
        if eta is None:
            eta, _ = self.fit_eta(X, st, plan=plan)
        coord, width = self.coord_width(eta, st)
        return matched_estimate(coord, st, self.estimand, width, self.replace), eta

    def refit(self, atoms: Atoms, extra: np.ndarray | None = None) -> float:
        """Estimate from scratch on ``atoms`` (optionally with an extra categorical covariate
        given per atom): new cells, refitted propensity, new matching. With a ``CellGram`` the
        split design is never written out: the extended plan is all the fit reads."""
        cell, X, plan = atoms.cell, self.X, self.plan
        n_cells = X.shape[0]
        if extra is not None:
            levels = int(extra.max()) + 1
            ids, uniq = pd.factorize(atoms.cell * levels + extra)
            first = np.zeros(len(uniq), dtype=np.int64)
            first[ids[::-1]] = np.arange(len(ids))[::-1]
            if self.plan is not None:
                plan, X = self.plan.extend(atoms.cell[first], extra[first], levels), None
            else:
                X = np.hstack([self.X[atoms.cell[first]], np.eye(levels)[extra[first]][:, 1:]])
            cell = ids.astype(np.int64)
            n_cells = len(first)
        st = cell_stats(cell, atoms.t, atoms.y, atoms.n, n_cells)
        if st.n1.sum() == 0 or st.n0.sum() == 0:
            return float("nan")
        matched, _ = self.run(X, st, plan=plan)
        return matched.estimate


def _sklearn_lr():
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression()


# ----------------------------------------------------------------------------- entry point


def estimate_psm(df: pd.DataFrame, treatment: str, outcome: str, covariates: list[str],
                 estimand: str = "ATT", caliper: float | None = 0.2, replace: bool = True,
                 n_bootstrap: int = 200, seed: int = 0, refute: bool = True, n_refute_sims: int = 30,
                 match_on: str = "logit", propensity_model: str = "logit",
                 min_group: int = MIN_GROUP, weights: str | None = None) -> EstimateResult:
    """Effect of a 0/1 ``treatment`` on ``outcome`` by propensity matching on ``covariates``.

    ``caliper`` is in SDs of the matching coordinate (the logit by default); None disables it.
    ``propensity_model="sklearn_default"`` with ``match_on="propensity"`` and ``caliper=None``
    reproduces DoWhy 0.14's estimator (penalised sklearn LogisticRegression, distance on the
    propensity itself); use it to compare with DoWhy, not for answers. Raises MethodRefusal when
    either group has fewer than ``min_group`` units.

    ``weights`` names a column of row counts when ``df`` arrives grouped (one row per distinct
    covariates × treatment × outcome, as ``GROUP BY … count(*)`` gives): the same estimate as from
    the ungrouped rows, without moving millions of rows into pandas. Not with
    ``propensity_model="sklearn_default"``, which fits DoWhy's model on the rows themselves.
    """
    # The matrices here are small (cells × terms) and solved thousands of times; BLAS threads
    # only add contention (measured 7× slower on a busy 2-core box), so run single-threaded.
    with threadpool_limits(limits=1, user_api="blas"):
        return _estimate_psm(df, treatment, outcome, covariates, estimand, caliper, replace, n_bootstrap,
                             seed, refute, n_refute_sims, match_on, propensity_model, min_group, weights)


def _estimate_psm(df, treatment, outcome, covariates, estimand, caliper, replace, n_bootstrap, seed,
                  refute, n_refute_sims, match_on, propensity_model, min_group, weights=None) -> EstimateResult:
    estimand = estimand.upper()
    if estimand not in ("ATT", "ATE"):
        raise ValueError(f"estimand must be ATT or ATE, got {estimand!r}")
    if match_on not in ("logit", "propensity") or propensity_model not in ("logit", "sklearn_default"):
        raise ValueError("match_on must be logit|propensity, propensity_model logit|sklearn_default")
    if not covariates:
        raise ValueError("propensity matching needs at least one covariate")
    if weights is not None and propensity_model == "sklearn_default":
        raise ValueError("propensity_model='sklearn_default' fits on one row per conversation: pass ungrouped rows")
    prep = prepare(df, treatment, outcome, covariates, weights=weights)
    cells, atoms = prep.cells, prep.atoms
    st = cell_stats(atoms.cell, atoms.t, atoms.y, atoms.n, cells.n_cells)
    n1_all, n0_all = int(st.n1.sum()), int(st.n0.sum())
    n_rows = len(df) if weights is None else int(np.rint(df[weights].sum()))
    diags = _exclusion_diagnostics(prep, n_rows)
    diags.append(check_sample_size(n1_all, n0_all, treatment, min_group))

    X = cells.X
    # the Hessians and outcome-model Gram matrices of every refit from the design's one-hot
    # structure (CellGram): the same sums in another order, equal to rounding
    plan = CellGram.build(cells.X)
    est = PSMEstimator(X, estimand, caliper, replace, match_on, propensity_model,
                       plan=plan if propensity_model == "logit" else None)
    if propensity_model == "sklearn_default":
        # DoWhy fits on the rows in their order; do the same so the coefficients are identical
        rows = dowhy_design(df.loc[prep.keep], covariates).to_numpy(dtype=float)
        first = _first_rows(prep.cell_of_row, cells.n_cells)
        X = est.X = rows[first]
        eta = fit_sklearn_default(rows, prep.treatment_rows)[first]
        converged = True
    else:
        fit = fit_logit(X, st.n1, st.n0, plan=plan)
        eta, converged = fit.eta, fit.converged
        est.beta0 = fit.beta if converged else None  # never warm-start from a diverged fit
    matched, _ = est.run(X, st, eta)
    naive = float(st.s1.sum() / st.n1.sum() - st.s0.sum() / st.n0.sum())
    ipw, aipw = ipw_aipw(eta, st, cells.X, estimand, plan)

    boot = _bootstrap(est, X, atoms, cells.n_cells, cells.X, n_bootstrap, seed, plan)
    se = _sd(boot[:, 0])
    z = stats.norm.ppf(0.975)
    ci_low, ci_high = matched.estimate - z * se, matched.estimate + z * se
    p_value = float(2 * stats.norm.sf(abs(matched.estimate) / se)) if se > 0 else float("nan")

    diags.append(Diagnostic(
        name="propensity_model_converged", value=float(converged), threshold=1.0, passed=bool(converged),
        message=("Logistic propensity model converged." if converged else
                 "The propensity model did not converge: some covariate level (almost) perfectly "
                 "predicts the treatment, so those conversations have no comparable counterpart"
                 + _one_sided_levels(cells.Z, cells.z_names, cells.kinds, cells.z_covariate, st) + "."),
    ))
    diags += overlap_diagnostics(eta, st.n1, st.n0, estimand)
    diags += _matching_diagnostics(matched, st, estimand, caliper, replace, min_group)

    bal = balance_rows(cells.Z, cells.z_names, st.n1, st.n0, matched.w1, matched.w0)

    result = EstimateResult(
        method=METHOD, estimand=estimand, outcome=outcome, estimate=matched.estimate, std_error=se,
        ci_low=ci_low, ci_high=ci_high, p_value=p_value,
        n_treated=_units_used(st.n1, matched.w1, replace), n_control=_units_used(st.n0, matched.w0, replace),
        naive_estimate=naive, balance=bal, diagnostics=diags,
        ci_method=(f"bootstrap: {np.isfinite(boot[:, 0]).sum()} replicates resampling conversations "
                   f"(seed {seed}), propensity model refitted and units re-matched in each; "
                   f"normal 95% interval estimate ± 1.96·SE, two-sided p-value from z = estimate/SE"),
    )
    ok = np.isfinite(boot[:, 0])
    result.extras = {
        "ipw_estimate": ipw, "ipw_std_error": _sd(boot[:, 1]),
        "aipw_estimate": aipw, "aipw_std_error": _sd(boot[:, 2]),
        "bootstrap_percentile_ci": [float(np.quantile(boot[ok, 0], 0.025)), float(np.quantile(boot[ok, 0], 0.975))]
        if ok.any() else [float("nan"), float("nan")],
        "n_treated_total": n1_all, "n_control_total": n0_all,
        "n_cells": cells.n_cells, "caliper_sd": caliper, "replace": replace, "match_on": match_on,
        "propensity_model": propensity_model,
        "propensity_terms": list(cells.x_names) if propensity_model == "logit" else None,
        "rows_excluded": dict(prep.excluded),
    }
    if refute:
        rng = np.random.default_rng([seed, 1])
        reg = regression_sensitivity(cells.X, covariate_groups(cells.x_names, cells.covariates), st)
        robustness, sens = confounder_robustness(matched.estimate, se, ci_low, ci_high, reg)
        # the E-value (VanderWeele & Ding 2017) stays as extra information: it needs no model of
        # the confounder but also has no benchmark on the outcome's own scale, so it is no longer
        # a pass/fail refuter (the partial-R² robustness value replaces it, issue 13)
        binary = _is_binary(atoms.y)
        sens["evalue"] = evalue_numbers(
            matched.estimate, ci_low, ci_high, matched.mean_treated, _outcome_sd(st), binary,
            benchmark=strongest_measured_confounder(cells.Z, cells.z_names, st.n1, st.n0, st.s0) if binary else None)
        result.extras["sensitivity"] = sens
        result.refutations = [
            placebo_treatment(est.refit, atoms, matched.estimate, rng, n_refute_sims, std_error=se),
            random_common_cause(est.refit, atoms, matched.estimate, se, rng, n_refute_sims),
            data_subset(est.refit, atoms, matched.estimate, ci_low, ci_high, rng, n_refute_sims, std_error=se),
            robustness,
        ]
    result.plots = {"propensity_overlap": _overlap_png(eta, st.n1, st.n0, treatment),
                    "balance_love_plot": _love_png(bal)}
    return result


def _first_rows(cell_of_row: np.ndarray, n_cells: int) -> np.ndarray:
    first = np.zeros(n_cells, dtype=np.int64)
    first[cell_of_row[::-1]] = np.arange(len(cell_of_row))[::-1]
    return first


def _bootstrap(est: PSMEstimator, X: np.ndarray, atoms: Atoms, n_cells: int, Xcc: np.ndarray,
               n_bootstrap: int, seed: int, plan_cc: CellGram | None = None) -> np.ndarray:
    """Rows resampled with replacement = multinomial counts over atoms; everything refitted
    (``plan_cc``: the ``CellGram`` of the cross-checks' design ``Xcc``)."""
    rng = np.random.default_rng([seed, 0])
    N = int(np.rint(atoms.n.sum()))
    pv = atoms.n / atoms.n.sum()

    def replicate(nb: np.ndarray) -> tuple[float, float, float]:
        st = cell_stats(atoms.cell, atoms.t, atoms.y, nb, n_cells)
        if st.n1.sum() == 0 or st.n0.sum() == 0:
            return (np.nan, np.nan, np.nan)
        matched, eta = est.run(X, st, plan=est.plan)
        return (matched.estimate, *ipw_aipw(eta, st, Xcc, est.estimand, plan_cc))

    # the draws in order in this thread, the refits on the cores (methods/parallel.py)
    draws = (rng.multinomial(N, pv).astype(float) for _ in range(max(n_bootstrap, 0)))
    out = np.array(map_replicates(replicate, draws), dtype=float).reshape(-1, 3)
    return out


def _one_sided_levels(Z, names, kinds, z_cov, st: CellStats) -> str:
    """Categorical levels seen in only one group (the usual cause of separation)."""
    out = []
    for j, name in enumerate(names):
        if kinds[z_cov[j]] != "categorical":
            continue
        a1, a0 = float(Z[:, j] @ st.n1), float(Z[:, j] @ st.n0)
        if (a1 > 0) != (a0 > 0):
            out.append(f"{name} ({'treated' if a1 > 0 else 'control'} only)")
    return (": " + ", ".join(out[:10])) if out else ""


def _sd(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(np.std(x, ddof=1)) if len(x) > 1 else float("nan")


def _units_used(n: np.ndarray, w: np.ndarray, replace: bool) -> int:
    """Distinct units carrying matched weight (with replacement every unit of a used cell is
    used; without replacement each unit at most once, so the weights are the count)."""
    return int(np.rint(n[w > 0].sum() if replace else w.sum()))


def _ess(n: np.ndarray, w: np.ndarray) -> float:
    """Kish effective sample size of unit weights, each unit of a cell carrying w_c / n_c."""
    use = (w > 0) & (n > 0)
    if not use.any():
        return 0.0
    return float(w[use].sum() ** 2 / np.sum(w[use] ** 2 / n[use]))


def _matching_diagnostics(m: Matched, st: CellStats, estimand: str, caliper: float | None,
                          replace: bool, min_group: int) -> list[Diagnostic]:
    out = []
    sides = [("treated", m.att, st.n0, m.w0, "control")]
    if m.atc is not None:
        sides.append(("control", m.atc, st.n1, m.w1, "treated"))
    for tgt, side, npool, wpool, pool in sides:
        dropped = side.n_target - side.n_matched
        share = dropped / side.n_target if side.n_target else 0.0
        cal = f"caliper {caliper} SD of the logit propensity" if caliper is not None else "no caliper"
        out.append(Diagnostic(
            name=f"unmatched_{tgt}_share", value=float(share), threshold=UNMATCHED_MAX,
            passed=bool(share <= UNMATCHED_MAX),
            message=(f"{dropped:.0f} of {side.n_target:.0f} {tgt} conversations ({share:.1%}) had no "
                     f"{pool} within the {cal} and are left out; the estimate describes the "
                     f"{side.n_matched:.0f} matched {tgt}. Pass if at most {UNMATCHED_MAX:.0%}."),
        ))
        ess = _ess(npool, wpool)
        out.append(Diagnostic(
            name=f"effective_sample_size_{pool}", value=ess, threshold=float(min_group),
            passed=bool(ess >= min_group),
            message=(f"Matched {pool}s ({'with' if replace else 'without'} replacement) count as "
                     f"{ess:.0f} independent conversations (Kish ESS of the matching weights); "
                     f"pass if at least {min_group}."),
            check="sample_size",
        ))
    return out


def _exclusion_diagnostics(prep: Prepared, n_rows: int) -> list[Diagnostic]:
    words = {"null_treatment": "no value for the treatment (the behaviour never happened or was "
                               "not measured)",
             "null_outcome": "no outcome", "null_numeric_covariate": "a missing numeric covariate"}
    out = []
    for key, n in prep.excluded.items():
        out.append(Diagnostic(
            name=f"rows_excluded_{key}", value=float(n), threshold=None, passed=True, severity="warn",
            message=f"{n} of {n_rows} rows excluded because they have {words[key]}.",
        ))
    return out


def _is_binary(y: np.ndarray) -> bool:
    return bool(np.isin(np.unique(y), (0.0, 1.0)).all())


def _outcome_sd(st: CellStats) -> float:
    n = st.n1.sum() + st.n0.sum()
    mu = (st.s1.sum() + st.s0.sum()) / n
    return float(np.sqrt(max((st.q1.sum() + st.q0.sum()) / n - mu * mu, 0.0)))
