"""Propensity score matching with a caliper, on covariate cells, with DoWhy as the reference.

DoWhy 0.14's ``backdoor.propensity_score_matching`` is 1-nearest-neighbour matching with
replacement on the propensity, with no caliper, no standard error and refuters that reuse a
stale propensity. We keep its estimator as the reference (``propensity_model="sklearn_default",
match_on="propensity", caliper=None`` reproduces its number exactly; tests/test_psm.py checks it
against a stored DoWhy output) and build the rest ourselves:

* propensity: unpenalised logistic regression fitted on covariate cells (methods/propensity.py);
* matching on the logit of the propensity, caliper = ``caliper`` × SD of the logit (Austin 2011),
  1-NN with or without replacement. All units of a cell share one propensity, so a treated unit
  whose own cell holds controls is matched exactly within the cell (ties use every tied control,
  as Abadie & Imbens do), otherwise to the nearest control cell inside the caliper. Treated units
  with no control inside the caliper are dropped and reported — propensities are never clipped;
* ATT by default, ATE = units-weighted mix of ATT and ATC (as DoWhy);
* interval: bootstrap over rows (a multinomial draw over atoms), propensity refitted each
  replicate; normal interval from the bootstrap SE;
* cross-checks in ``extras``: IPW and doubly robust AIPW with bootstrap SEs;
* balance, overlap and sample-size checks (checks/balance.py), four refutations
  (checks/refutations.py).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats
from scipy.special import expit
from threadpoolctl import threadpool_limits

from checks.balance import (
    MIN_GROUP,
    UNMATCHED_MAX,
    balance_rows,
    check_sample_size,
    overlap_diagnostics,
)
from checks.refutations import (
    data_subset,
    evalue_sensitivity,
    placebo_treatment,
    random_common_cause,
    strongest_measured_confounder,
)
from methods.propensity import (
    Atoms,
    CellStats,
    Prepared,
    cell_stats,
    dowhy_design,
    fit_logit,
    fit_sklearn_default,
    prepare,
)
from methods.result import Diagnostic, EstimateResult

METHOD = "propensity_matching"
TIE_DECIMALS = 10  # propensity logits equal to this many decimals count as one (tied) value


# ----------------------------------------------------------------------------- matching


@dataclass
class Side:
    """Targets (e.g. treated) matched to a pool (e.g. controls), per cell."""

    k: np.ndarray  # target units matched per cell
    w_pool: np.ndarray  # weight carried by pool units per cell (times used)
    diff_sum: float  # Σ over matched targets of (target outcome − matched pool outcome)
    n_target: float
    n_matched: float


def match_side(coord: np.ndarray, nt: np.ndarray, st: np.ndarray, npool: np.ndarray, spool: np.ndarray,
               width: float, replace: bool) -> Side:
    """1-NN matching of target units to pool units on ``coord`` (logit or propensity).

    Pool cells with the same coordinate form one group whose units are used together (tie
    averaging). A target is matched only if its nearest group is within ``width``. Without
    replacement, exact (same-coordinate) matches are made first, then the remaining targets are
    served greedily from the highest coordinate down, each taking the nearest unused units.
    """
    n_cells = len(coord)
    pool_cells = np.flatnonzero(npool > 0)
    key = np.round(coord[pool_cells], TIE_DECIMALS)
    G, inv = np.unique(key, return_inverse=True)
    Ng = np.bincount(inv, weights=npool[pool_cells], minlength=len(G))
    Sg = np.bincount(inv, weights=spool[pool_cells], minlength=len(G))
    ybar = Sg / Ng
    tcells = np.flatnonzero(nt > 0)
    ct = np.round(coord[tcells], TIE_DECIMALS)
    m = len(G)
    k = np.zeros(n_cells)
    Wg = np.zeros(m)
    if m == 0 or len(tcells) == 0:
        return Side(k, np.zeros(n_cells), 0.0, float(nt.sum()), 0.0)
    pos = np.searchsorted(G, ct)
    if replace:
        left = np.clip(pos - 1, 0, m - 1)
        right = np.clip(pos, 0, m - 1)
        dl = np.where(pos - 1 >= 0, ct - G[left], np.inf)
        dr = np.where(pos < m, G[right] - ct, np.inf)
        tie = np.isclose(dl, dr, rtol=0, atol=10.0 ** -TIE_DECIMALS) & np.isfinite(dl)
        sl = np.where(tie, 0.5, (dl < dr).astype(float))
        sr = 1.0 - sl
        ok = np.minimum(dl, dr) <= width
        kk = np.where(ok, nt[tcells], 0.0)
        mu = sl * ybar[left] + sr * ybar[right]
        diff = float(np.sum(np.where(ok, st[tcells] - kk * mu, 0.0)))
        Wg = np.bincount(left, weights=kk * sl, minlength=m) + np.bincount(right, weights=kk * sr, minlength=m)
        k[tcells] = kk
    else:
        k_t, msum, Wg = _greedy_without_replacement(G, Ng, ybar, ct, pos, nt[tcells], width)
        k[tcells] = k_t
        diff = float(np.sum(np.where(k_t > 0, st[tcells] / nt[tcells] * k_t, 0.0)) - msum.sum())
    w_pool = np.zeros(n_cells)
    w_pool[pool_cells] = Wg[inv] * npool[pool_cells] / Ng[inv]
    return Side(k, w_pool, diff, float(nt.sum()), float(k.sum()))


def _greedy_without_replacement(G, Ng, ybar, ct, pos, need0, width):
    """Matching without replacement at the cell level; loops over cells, not rows."""
    m = len(G)
    cap = Ng.astype(float).copy()
    need = need0.astype(float).copy()
    msum = np.zeros(len(ct))
    W = np.zeros(m)
    # phase 1: exact matches, capacity of a group shared pro rata among its targets
    exact = (pos < m) & (G[np.clip(pos, 0, m - 1)] == ct)
    if exact.any():
        g = pos[exact]
        demand = np.bincount(g, weights=need[exact], minlength=m)
        take_g = np.minimum(demand, cap)
        frac = np.divide(take_g, demand, out=np.zeros(m), where=demand > 0)
        take = need[exact] * frac[g]
        need[exact] -= take
        msum[exact] += take * ybar[g]
        W += take_g
        cap -= take_g
    # phase 2: greedy nearest available, highest coordinate first. Union-find pointers skip
    # exhausted groups: pr[i] leads to the next group ≥ i with capacity (m = none), pl[i+1] to
    # the next group ≤ i (0 = none).
    eps = 1e-9
    idx = np.arange(m + 1)
    pr = np.where(np.append(cap > eps, True), idx, idx + 1)
    pl = np.where(np.insert(cap > eps, 0, True), idx, idx - 1)

    def find(parent, i):
        root = i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:
            parent[i], i = root, parent[i]
        return root

    for j in np.argsort(-ct, kind="stable"):
        c = ct[j]
        while need[j] > eps:
            lo, hi = find(pl, pos[j]) - 1, find(pr, pos[j])
            dl = c - G[lo] if lo >= 0 else np.inf
            dr = G[hi] - c if hi < m else np.inf
            if min(dl, dr) > width:
                break
            g = lo if dl <= dr else hi
            take = min(need[j], cap[g])
            cap[g] -= take
            need[j] -= take
            msum[j] += take * ybar[g]
            W[g] += take
            if cap[g] <= eps:
                pr[g], pl[g + 1] = g + 1, g
    return need0 - need, msum, W


@dataclass
class Matched:
    estimate: float
    w1: np.ndarray  # matched weight of treated units per cell
    w0: np.ndarray
    att: Side
    atc: Side | None
    mean_treated: float  # matched-treated mean outcome (for the E-value)


def matched_estimate(coord: np.ndarray, st: CellStats, estimand: str, width: float, replace: bool) -> Matched:
    att = match_side(coord, st.n1, st.s1, st.n0, st.s0, width, replace)
    ybar1 = np.divide(st.s1, st.n1, out=np.zeros_like(st.s1), where=st.n1 > 0)
    if estimand == "ATT":
        est = att.diff_sum / att.n_matched if att.n_matched > 0 else float("nan")
        w1, w0, atc = att.k, att.w_pool, None
    else:
        atc = match_side(coord, st.n0, st.s0, st.n1, st.s1, width, replace)
        tot = att.n_matched + atc.n_matched
        est = (att.diff_sum - atc.diff_sum) / tot if tot > 0 else float("nan")
        w1, w0 = att.k + atc.w_pool, att.w_pool + atc.k
    mean_treated = float(w1 @ ybar1 / w1.sum()) if w1.sum() > 0 else float("nan")
    return Matched(float(est), w1, w0, att, atc, mean_treated)


# ----------------------------------------------------------------------------- cross-checks


def _expit(x):
    return expit(x)


def _wls(X: np.ndarray, n: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Row-level OLS of y on X from cell counts and sums, predictions per cell."""
    A = (X * n[:, None]).T @ X
    b = X.T @ s
    beta = np.linalg.lstsq(A, b, rcond=None)[0]
    return X @ beta


def ipw_aipw(eta: np.ndarray, st: CellStats, X: np.ndarray, estimand: str) -> tuple[float, float]:
    """Hájek IPW and doubly robust AIPW (linear outcome model per arm on the propensity design).

    ATT weights controls by p/(1−p) = exp(logit); ATE uses 1/p and 1/(1−p). Weights are not
    trimmed: extreme ones show up as a wide bootstrap interval, not as a silent change.
    """
    m1 = _wls(X, st.n1, st.s1)
    m0 = _wls(X, st.n0, st.s0)
    if estimand == "ATT":
        odds = np.exp(eta)
        mu1 = st.s1.sum() / st.n1.sum()
        ipw = mu1 - (odds @ st.s0) / (odds @ st.n0)
        aipw = ((st.s1 - st.n1 * m0).sum() - odds @ (st.s0 - st.n0 * m0)) / st.n1.sum()
    else:
        inv1 = 1 + np.exp(-eta)  # 1/p
        inv0 = 1 + np.exp(eta)  # 1/(1-p)
        ipw = (inv1 @ st.s1) / (inv1 @ st.n1) - (inv0 @ st.s0) / (inv0 @ st.n0)
        n = st.n1 + st.n0
        aipw = (n @ (m1 - m0) + inv1 @ (st.s1 - st.n1 * m1) - inv0 @ (st.s0 - st.n0 * m0)) / n.sum()
    return float(ipw), float(aipw)


# ----------------------------------------------------------------------------- estimator


class PSMEstimator:
    """The whole estimator as a function of atoms, so bootstrap and refuters refit everything."""

    def __init__(self, X: np.ndarray, estimand: str, caliper: float | None, replace: bool,
                 match_on: str = "logit", propensity_model: str = "logit"):
        self.X = X
        self.estimand = estimand
        self.caliper = caliper
        self.replace = replace
        self.match_on = match_on
        self.propensity_model = propensity_model
        self.beta0: np.ndarray | None = None

    def fit_eta(self, X: np.ndarray, st: CellStats, warm: bool = True) -> tuple[np.ndarray, bool]:
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
            beta0 = np.concatenate([self.beta0, np.zeros(X.shape[1] - len(self.beta0))])
        fit = fit_logit(X, st.n1, st.n0, beta0=beta0)
        return fit.eta, fit.converged

    def coord_width(self, eta: np.ndarray, st: CellStats) -> tuple[np.ndarray, float]:
        coord = eta if self.match_on == "logit" else _expit(eta)
        if self.caliper is None:
            return coord, np.inf
        n = st.n1 + st.n0
        mu = (n @ coord) / n.sum()
        sd = float(np.sqrt(n @ (coord - mu) ** 2 / n.sum()))
        return coord, self.caliper * sd

    def run(self, X: np.ndarray, st: CellStats, eta: np.ndarray | None = None) -> tuple[Matched, np.ndarray]:
        if eta is None:
            eta, _ = self.fit_eta(X, st)
        coord, width = self.coord_width(eta, st)
        return matched_estimate(coord, st, self.estimand, width, self.replace), eta

    def refit(self, atoms: Atoms, extra: np.ndarray | None = None) -> float:
        """Estimate from scratch on ``atoms`` (optionally with an extra categorical covariate
        given per atom): new cells, refitted propensity, new matching."""
        cell, X = atoms.cell, self.X
        if extra is not None:
            levels = int(extra.max()) + 1
            ids, uniq = pd.factorize(atoms.cell * levels + extra)
            first = np.zeros(len(uniq), dtype=np.int64)
            first[ids[::-1]] = np.arange(len(ids))[::-1]
            dummies = np.eye(levels)[extra[first]][:, 1:]
            X = np.hstack([self.X[atoms.cell[first]], dummies])
            cell = ids.astype(np.int64)
        st = cell_stats(cell, atoms.t, atoms.y, atoms.n, X.shape[0])
        if st.n1.sum() == 0 or st.n0.sum() == 0:
            return float("nan")
        matched, _ = self.run(X, st)
        return matched.estimate


def _sklearn_lr():
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression()


# ----------------------------------------------------------------------------- entry point


def estimate_psm(df: pd.DataFrame, treatment: str, outcome: str, covariates: list[str],
                 estimand: str = "ATT", caliper: float | None = 0.2, replace: bool = True,
                 n_bootstrap: int = 200, seed: int = 0, refute: bool = True, n_refute_sims: int = 30,
                 match_on: str = "logit", propensity_model: str = "logit",
                 min_group: int = MIN_GROUP) -> EstimateResult:
    """Effect of a 0/1 ``treatment`` on ``outcome`` by propensity matching on ``covariates``.

    ``caliper`` is in SDs of the matching coordinate (the logit by default); None disables it.
    ``propensity_model="sklearn_default"`` with ``match_on="propensity"`` and ``caliper=None``
    reproduces DoWhy 0.14's estimator (penalised sklearn LogisticRegression, distance on the
    propensity itself); use it to compare with DoWhy, not for answers. Raises MethodRefusal when
    either group has fewer than ``min_group`` units.
    """
    # The matrices here are small (cells × terms) and solved thousands of times; BLAS threads
    # only add contention (measured 7× slower on a busy 2-core box), so run single-threaded.
    with threadpool_limits(limits=1, user_api="blas"):
        return _estimate_psm(df, treatment, outcome, covariates, estimand, caliper, replace, n_bootstrap,
                             seed, refute, n_refute_sims, match_on, propensity_model, min_group)


def _estimate_psm(df, treatment, outcome, covariates, estimand, caliper, replace, n_bootstrap, seed,
                  refute, n_refute_sims, match_on, propensity_model, min_group) -> EstimateResult:
    estimand = estimand.upper()
    if estimand not in ("ATT", "ATE"):
        raise ValueError(f"estimand must be ATT or ATE, got {estimand!r}")
    if match_on not in ("logit", "propensity") or propensity_model not in ("logit", "sklearn_default"):
        raise ValueError("match_on must be logit|propensity, propensity_model logit|sklearn_default")
    if not covariates:
        raise ValueError("propensity matching needs at least one covariate")
    prep = prepare(df, treatment, outcome, covariates)
    cells, atoms = prep.cells, prep.atoms
    st = cell_stats(atoms.cell, atoms.t, atoms.y, atoms.n, cells.n_cells)
    n1_all, n0_all = int(st.n1.sum()), int(st.n0.sum())
    diags = _exclusion_diagnostics(prep, len(df))
    diags.append(check_sample_size(n1_all, n0_all, treatment, min_group))

    X = cells.X
    est = PSMEstimator(X, estimand, caliper, replace, match_on, propensity_model)
    if propensity_model == "sklearn_default":
        # DoWhy fits on the rows in their order; do the same so the coefficients are identical
        rows = dowhy_design(df.loc[prep.keep], covariates).to_numpy(dtype=float)
        first = _first_rows(prep.cell_of_row, cells.n_cells)
        X = est.X = rows[first]
        eta = fit_sklearn_default(rows, prep.treatment_rows)[first]
        converged = True
    else:
        fit = fit_logit(X, st.n1, st.n0)
        eta, converged = fit.eta, fit.converged
        est.beta0 = fit.beta if converged else None  # never warm-start from a diverged fit
    matched, _ = est.run(X, st, eta)
    naive = float(st.s1.sum() / st.n1.sum() - st.s0.sum() / st.n0.sum())
    ipw, aipw = ipw_aipw(eta, st, cells.X, estimand)

    boot = _bootstrap(est, X, atoms, cells.n_cells, cells.X, n_bootstrap, seed)
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
        result.refutations = [
            placebo_treatment(est.refit, atoms, matched.estimate, rng, n_refute_sims),
            random_common_cause(est.refit, atoms, matched.estimate, se, rng, n_refute_sims),
            data_subset(est.refit, atoms, matched.estimate, ci_low, ci_high, rng, n_refute_sims),
            evalue_sensitivity(matched.estimate, ci_low, ci_high, matched.mean_treated,
                               _outcome_sd(st), _is_binary(atoms.y),
                               benchmark=strongest_measured_confounder(cells.Z, cells.z_names, st.n1, st.n0, st.s0)
                               if _is_binary(atoms.y) else None),
        ]
    result.plots = {"propensity_overlap": _overlap_png(eta, st.n1, st.n0, treatment),
                    "balance_love_plot": _love_png(bal)}
    return result


def _first_rows(cell_of_row: np.ndarray, n_cells: int) -> np.ndarray:
    first = np.zeros(n_cells, dtype=np.int64)
    first[cell_of_row[::-1]] = np.arange(len(cell_of_row))[::-1]
    return first


def _bootstrap(est: PSMEstimator, X: np.ndarray, atoms: Atoms, n_cells: int, Xcc: np.ndarray,
               n_bootstrap: int, seed: int) -> np.ndarray:
    """Rows resampled with replacement = multinomial counts over atoms; everything refitted."""
    rng = np.random.default_rng([seed, 0])
    N = int(round(atoms.n.sum()))
    pv = atoms.n / atoms.n.sum()
    out = np.full((max(n_bootstrap, 0), 3), np.nan)
    for b in range(n_bootstrap):
        nb = rng.multinomial(N, pv).astype(float)
        st = cell_stats(atoms.cell, atoms.t, atoms.y, nb, n_cells)
        if st.n1.sum() == 0 or st.n0.sum() == 0:
            continue
        matched, eta = est.run(X, st)
        out[b, 0] = matched.estimate
        out[b, 1:] = ipw_aipw(eta, st, Xcc, est.estimand)
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
    return int(round(n[w > 0].sum() if replace else w.sum()))


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


def _overlap_png(eta: np.ndarray, n1: np.ndarray, n0: np.ndarray, treatment: str) -> bytes:
    """Histogram of propensities by group (unit-weighted), the picture behind the overlap checks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = _expit(eta)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.linspace(0, 1, 41)
    ax.hist(p, bins=bins, weights=n1 / max(n1.sum(), 1), alpha=0.5, label=f"{treatment}=1")
    ax.hist(p, bins=bins, weights=n0 / max(n0.sum(), 1), alpha=0.5, label=f"{treatment}=0")
    ax.set_xlabel("propensity score")
    ax.set_ylabel("share of group")
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


def _love_png(rows) -> bytes:
    """Love plot: |SMD| of every covariate level before and after matching, with the 0.1 line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [b.covariate for b in rows]
    before = [abs(b.smd_before) for b in rows]
    after = [abs(b.smd_after) for b in rows]
    fig, ax = plt.subplots(figsize=(6, 0.18 * len(rows) + 1.2))
    y = np.arange(len(rows))
    ax.scatter(before, y, marker="o", facecolors="none", edgecolors="grey", label="before matching")
    ax.scatter(after, y, marker="o", color="C0", label="after matching")
    ax.axvline(0.1, color="C3", linestyle="--", linewidth=1)
    ax.set_yticks(y)
    ax.set_yticklabels(names, fontsize=6)
    ax.set_xlabel("|standardised mean difference|")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()
