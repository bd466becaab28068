"""How strong an unobserved confounder would have to be: robustness values and benchmarks.

Cinelli & Hazlett (2020, "Making sense of sensitivity", JRSS-B; the R/Python package
``sensemakr``) parameterise a hidden confounder Z by two partial R²s: ``r2dz_x``, the share of
the treatment's variance (left after the measured covariates X) that Z explains, and
``r2yz_dx``, the share of the outcome's variance (left after treatment and X) that it explains.
In the outcome regression Y ~ D + X the omitted-variable bias is then exactly

    |bias| = sqrt(r2yz_dx · r2dz_x / (1 − r2dz_x)) · se(D) · sqrt(dof),

and se(D)·sqrt(dof) = sd(Y ⊥ D, X) / sd(D ⊥ X) is a property of the data, not of Z. From it:

* the partial R² of the treatment with the outcome, ``r2yd_x`` = t² / (t² + dof);
* the robustness value RV_q: the strength (equal partial R² with D and with Y) a confounder
  needs to cut the estimate by 100·q % (q = 1: to zero); RV_{q,α}: to make it insignificant;
* benchmark bounds: a confounder k_D / k_Y times "as strong as" a measured covariate X_j
  (partial R² with D given the other covariates, with Y given D and the others) implies the
  bounds on ``r2dz_x``, ``r2yz_dx`` of C&H §6.2, hence a bias-adjusted estimate and interval.

Why a regression next to a matching estimator: the partial-R² algebra is the regression's. We
fit it exactly on the covariate cells (``cell_regression``: each cell × arm carries n, Σy, Σy²;
WLS of the arm means on D + the cell's design row with weights n gives the row-level OLS
coefficients, and the residual sum of squares is the within-group part Σy² − (Σy)²/n plus the
weighted between-group residuals), so it costs nothing at a million rows and matches
``statsmodels.OLS`` on the rows (tests/test_sensitivity.py) and PySensemakr's numbers
(tests/reference/sensemakr_reference.json). The *matched* estimate is then held to the same
bias: its bias-adjusted value is estimate − bias, its adjusted SE the bootstrap SE scaled by
C&H's factor sqrt((1 − r2yz_dx)/(1 − r2dz_x)·dof/(dof − 1)), and its robustness values solve
the same equations with its own estimate and SE (``robustness_value(fq, f_crit)``). When the
matched estimate and SE equal the regression's these are sensemakr's numbers exactly. This is
the regression's omitted-variable algebra carried over to matching, an approximation (for a
fully nonparametric version see Chernozhukov et al. 2022, "Long story short"); the regression
numbers themselves are reported next to it in ``extras["sensitivity"]["regression"]``.

Benchmarks are whole covariates (all dummies of ``intent`` together, group partial R² as
sensemakr's ``group_partial_r2``), because "a confounder as strong as intent" is what a reader
can judge. The "strongest" is the one whose k = 1 bound implies the largest bias.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from methods.psm.propensity import CellStats
from methods.result import Refutation

ALPHA = 0.05
KD = KY = 1.0  # benchmark: "as strong as the strongest measured covariate"


# ----------------------------------------------------------------------------- formulas (C&H 2020)


def partial_r2(t_statistic: float, dof: float) -> float:
    """Partial R² of a single regressor from its t-statistic: t² / (t² + dof)."""
    return float(t_statistic**2 / (t_statistic**2 + dof))


def robustness_value(fq: float, f_crit: float = 0.0) -> float:
    """RV for Cohen's partial f ``fq`` = q·|t|/sqrt(dof) and critical f ``f_crit``.

    sensemakr's closed form (C&H 2020 eq. 18 and its α version): with fqa = fq − f_crit,
    RV = ½(sqrt(fqa⁴ + 4 fqa²) − fqa²), except when fq > 1/f_crit, where the confounder can
    explain all of the outcome's residual variance and RV = (fq² − f_crit²)/(1 + fq²); 0 when
    fqa ≤ 0 (already insignificant). f_crit = 0 gives RV_q.
    """
    fqa = fq - f_crit
    if not np.isfinite(fqa):
        return float("nan")
    if fqa <= 0:
        return 0.0
    if f_crit > 0 and fq > 1 / f_crit:
        return float((fq**2 - f_crit**2) / (1 + fq**2))
    return float(0.5 * (np.sqrt(fqa**4 + 4 * fqa**2) - fqa**2))


def sensitivity_stats(estimate: float, se: float, dof: float, q: float = 1.0, alpha: float = ALPHA) -> dict:
    """sensemakr's ``sensitivity_stats`` for a regression coefficient: partial R² of the
    treatment with the outcome, RV_q and RV_{q,α} (critical value from t with dof − 1, as
    sensemakr does)."""
    t = estimate / se
    fq = q * abs(t) / np.sqrt(dof)
    f_crit = abs(stats.t.ppf(alpha / 2, dof - 1)) / np.sqrt(dof - 1)
    return {"estimate": float(estimate), "se": float(se), "t_statistic": float(t), "dof": float(dof),
            "r2yd_x": partial_r2(t, dof), "rv_q": robustness_value(fq), "rv_qa": robustness_value(fq, f_crit),
            "q": q, "alpha": alpha}


def bias_factor(r2dz_x: float, r2yz_dx: float) -> float:
    """sqrt(r2yz_dx · r2dz_x / (1 − r2dz_x)): |bias| in units of se·sqrt(dof)."""
    if not r2dz_x < 1:
        return float("inf")
    return float(np.sqrt(r2yz_dx * r2dz_x / (1 - r2dz_x)))


def se_factor(r2dz_x: float, r2yz_dx: float, dof: float) -> float:
    """How the standard error changes once the confounder is adjusted for (C&H eq. 10)."""
    if not r2dz_x < 1:
        return float("inf")
    return float(np.sqrt((1 - r2yz_dx) / (1 - r2dz_x) * dof / (dof - 1)))


def benchmark_bounds(r2dxj_x: float, r2yxj_dx: float, kd: float = KD, ky: float | None = None) -> tuple[float, float]:
    """Bounds on (r2dz_x, r2yz_dx) for a confounder kd / ky times as strong as covariate X_j
    (sensemakr's ``ovb_partial_r2_bound``). NaN when the implied r2dz_x reaches 1 (X_j explains
    half or more of the treatment's residual variance: "as strong as that" is impossible for a
    confounder orthogonal to it); r2yz_dx is capped at 1 as sensemakr does."""
    ky = kd if ky is None else ky
    r2dz = kd * r2dxj_x / (1 - r2dxj_x)
    r2zxj = kd * r2dxj_x**2 / ((1 - kd * r2dxj_x) * (1 - r2dxj_x))
    if not (r2dz < 1 and r2zxj < 1):
        return float("nan"), float("nan")
    r2yz = (np.sqrt(ky) + np.sqrt(r2zxj)) ** 2 / (1 - r2zxj) * (r2yxj_dx / (1 - r2yxj_dx))
    return float(r2dz), float(min(r2yz, 1.0))


# ----------------------------------------------------------------------------- regressions on cells


@dataclass
class CellOLS:
    """A row-level OLS fitted on grouped data: coefficients, their covariance, dof, RSS."""

    beta: np.ndarray
    cov: np.ndarray  # σ² (W'W)^-1
    rss: float
    dof: float

    def t(self, j: int) -> float:
        return float(self.beta[j] / np.sqrt(self.cov[j, j]))

    def group_partial_r2(self, cols: list[int]) -> float:
        """sensemakr's ``group_partial_r2``: F·p / (F·p + dof), F the Wald F of the columns
        (identical to (RSS without them − RSS) / RSS without them)."""
        b = self.beta[cols]
        fp = float(b @ np.linalg.solve(self.cov[np.ix_(cols, cols)], b))
        return fp / (fp + self.dof)


def grouped_ols(W: np.ndarray, n: np.ndarray, s: np.ndarray, q: np.ndarray) -> CellOLS | None:
    """OLS of row outcomes on design rows ``W`` where group g holds n_g rows sharing W_g with
    outcome sum s_g and sum of squares q_g. None when the design is rank deficient."""
    use = n > 0
    W, n, s, q = W[use], n[use], s[use], q[use]
    N = n.sum()
    # centre the outcome so Σy² − (Σy)²/n does not cancel catastrophically; only valid (leaves
    # every coefficient but the intercept's unchanged) when the design has a constant column
    const = np.flatnonzero(np.all(W == 1.0, axis=0))
    mu = s.sum() / N if len(const) else 0.0
    s_c = s - mu * n
    q_c = q - 2 * mu * s + mu * mu * n
    within = float(np.sum(np.maximum(q_c - s_c**2 / n, 0.0)))
    rw = np.sqrt(n)
    A, b = W * rw[:, None], s_c / rw
    Qm, R = np.linalg.qr(A)
    diag = np.abs(np.diag(R))
    if diag.size == 0 or diag.min() <= 1e-9 * max(diag.max(), 1.0):
        return None
    coef = np.linalg.solve(R, Qm.T @ b)
    resid = b - A @ coef
    rss = within + float(resid @ resid)
    dof = float(N - W.shape[1])
    if dof <= 1 or rss <= 0:
        return None
    Rinv = np.linalg.inv(R)
    cov = (rss / dof) * (Rinv @ Rinv.T)
    if len(const):
        coef[const[0]] += mu  # undo the centring: the row-level OLS coefficients
    return CellOLS(coef, cov, rss, dof)


def covariate_groups(x_names: list[str], covariates: list[str]) -> dict[str, list[int]]:
    """Which propensity-design columns belong to which covariate (the intercept to none):
    ``intent=refund_request`` → intent, a numeric column's name is the covariate itself."""
    out: dict[str, list[int]] = {}
    by_len = sorted(covariates, key=len, reverse=True)
    for j, name in enumerate(x_names):
        for c in by_len:
            if name == c or name.startswith(c + "="):
                out.setdefault(c, []).append(j)
                break
    return out


def regression_sensitivity(X: np.ndarray, groups: dict[str, list[int]], st: CellStats,
                           alpha: float = ALPHA, kd: float = KD, ky: float = KY) -> dict | None:
    """The C&H analysis of the outcome regression Y ~ D + X fitted on the cells.

    ``X`` is the cells' design (intercept + covariate columns, full rank), ``groups`` maps each
    covariate to its columns. Returns the regression's sensemakr statistics and, per covariate,
    its partial R² with the treatment (regression D ~ X) and with the outcome (given D and the
    others) and the k-times-as-strong bounds, strongest first; None when D is collinear with X
    (every cell has one arm only: nothing to learn from the regression).
    """
    W = np.vstack([np.hstack([np.ones((len(X), 1)), X]), np.hstack([np.zeros((len(X), 1)), X])])
    out_fit = grouped_ols(W, np.r_[st.n1, st.n0], np.r_[st.s1, st.s0], np.r_[st.q1, st.q0])
    n = st.n1 + st.n0
    trt_fit = grouped_ols(X, n, st.n1, st.n1)  # D is 0/1: Σd² = Σd = n1
    if out_fit is None or trt_fit is None:
        return None
    est, se, dof = float(out_fit.beta[0]), float(np.sqrt(out_fit.cov[0, 0])), out_fit.dof
    reg = sensitivity_stats(est, se, dof, 1.0, alpha)
    benches = []
    for name, cols in groups.items():
        r2d = trt_fit.group_partial_r2(cols)
        r2y = out_fit.group_partial_r2([c + 1 for c in cols])
        r2dz, r2yz = benchmark_bounds(r2d, r2y, kd, ky)
        bf = bias_factor(r2dz, r2yz) if np.isfinite(r2dz) else float("nan")
        row = {"covariate": name, "n_terms": len(cols), "r2dxj_x": r2d, "r2yxj_dx": r2y, "kd": kd, "ky": ky,
               "r2dz_x": r2dz, "r2yz_dx": r2yz, "bias_factor": bf}
        if np.isfinite(bf):
            adj = float(np.sign(est) * (abs(est) - bf * se * np.sqrt(dof)))
            adj_se = se * se_factor(r2dz, r2yz, dof)
            tc = abs(stats.t.ppf(alpha / 2, dof))
            row.update(adjusted_estimate=adj, adjusted_se=adj_se,
                       adjusted_lower_ci=adj - tc * adj_se, adjusted_upper_ci=adj + tc * adj_se)
        benches.append(row)
    benches.sort(key=lambda r: -r["bias_factor"] if np.isfinite(r["bias_factor"]) else np.inf)
    reg["bias_scale"] = se * np.sqrt(dof)  # sd(Y ⊥ D,X) / sd(D ⊥ X): bias per unit of bias factor
    reg["benchmarks"] = benches
    return reg


# ----------------------------------------------------------------------------- the refutation


def matched_sensitivity(estimate: float, std_error: float, ci_low: float, ci_high: float, reg: dict,
                        alpha: float = ALPHA) -> dict:
    """The regression's omitted-variable bias applied to the matched estimate and its SE.

    Robustness values of the matched estimate: fq = |estimate| / bias_scale and the critical
    f = z · SE / bias_scale · sqrt(dof/(dof − 1)) (the matched interval is normal), then the
    same closed form as sensemakr. Benchmark: the strongest covariate's bounds move the matched
    estimate by the same bias and scale its SE by the same factor.
    """
    B, dof = reg["bias_scale"], reg["dof"]
    z = stats.norm.ppf(1 - alpha / 2)
    fq = abs(estimate) / B
    f_crit = z * std_error / B * np.sqrt(dof / (dof - 1))
    out = {"estimate": estimate, "std_error": std_error, "ci": [ci_low, ci_high],
           "rv_q": robustness_value(fq), "rv_qa": robustness_value(fq, f_crit),
           "r2yd_x_equivalent": float(fq**2 / (1 + fq**2)), "benchmark": None}
    usable = [b for b in reg["benchmarks"] if np.isfinite(b["bias_factor"])]
    if usable:
        b = usable[0]
        adj = float(np.sign(estimate) * (abs(estimate) - b["bias_factor"] * B))
        adj_se = std_error * se_factor(b["r2dz_x"], b["r2yz_dx"], dof)
        out["benchmark"] = {"covariate": b["covariate"], "kd": b["kd"], "ky": b["ky"], "r2dz_x": b["r2dz_x"],
                            "r2yz_dx": b["r2yz_dx"], "r2dxj_x": b["r2dxj_x"], "r2yxj_dx": b["r2yxj_dx"],
                            "bias": float(b["bias_factor"] * B), "adjusted_estimate": adj,
                            "adjusted_se": adj_se, "adjusted_ci": [adj - z * adj_se, adj + z * adj_se]}
    out["undefined_benchmarks"] = [b["covariate"] for b in reg["benchmarks"] if not np.isfinite(b["bias_factor"])]
    return out


RV_MIN = 0.005  # a hidden confounder weaker than this (partial R² with both D and Y) must not remove significance


def confounder_robustness(estimate: float, std_error: float, ci_low: float, ci_high: float,
                          reg: dict | None, alpha: float = ALPHA) -> tuple[Refutation, dict]:
    """Refutation ``unobserved_confounder_robustness`` and the numbers for ``extras``.

    Pass rule: an interval that excludes 0 needs a robustness value RV_{q=1,α} of at least
    ``RV_MIN``: a hidden confounder explaining less than 0.5% of the remaining variation of both
    the treatment and the outcome must not be able to make the estimate insignificant. The
    threshold trades false alarms for detection (calibration worlds, 6,000 conversations, 100
    seeds): at 1% the rule failed 18% of sound runs with a +0.05 effect (t ≈ 3), at 0.5% about 9%
    predicted; it flags the barely significant estimates, which include about half of the false
    positives on a true null. An interval
    that already includes 0 passes — there is no effect to explain away, and a rule that failed
    every null would fail by construction on sound designs (issue 13).

    Why not "fail when a confounder as strong as the strongest measured covariate explains it
    away": in a design confounded by measured covariates — exactly where matching is used — the
    strongest covariate (intent) is strong by construction, so that rule failed 100% of sound runs
    with a +0.08 effect in the calibration worlds. Which strength of hidden confounder is plausible
    is a judgement the benchmark makes concrete; it is reported in the message and in ``extras``
    (adjusted estimate and interval for a confounder as strong as that covariate), not thresholded.
    """
    crosses = bool(ci_low <= 0 <= ci_high)
    if reg is None or not (np.isfinite(estimate) and np.isfinite(std_error) and std_error > 0):
        why = ("the outcome regression could not be fitted (the treatment is constant within every "
               "covariate cell)" if reg is None else "the estimate has no standard error")
        ref = Refutation("unobserved_confounder_robustness", estimate, float("nan"), None, crosses,
                         f"Sensitivity to a hidden confounder not computable: {why}. Pass rule: the "
                         f"interval under a confounder as strong as the strongest measured covariate "
                         f"still excludes 0, or the interval includes 0. "
                         + ("Passed: the interval includes 0, so there is no effect to explain away." if crosses
                            else "FAILED: robustness to hidden confounding could not be shown."))
        return ref, {"regression": reg, "matched": None}
    m = matched_sensitivity(estimate, std_error, ci_low, ci_high, reg, alpha)
    b = m["benchmark"]
    if b is None:
        adj, passed, bench = float("nan"), crosses, (
            " No measured covariate can serve as a benchmark (each explains half or more of the "
            "treatment's variation, so a confounder 'as strong' is impossible).")
    else:
        adj = b["adjusted_estimate"]
        lo, hi = b["adjusted_ci"]
        # same side as the original: a bias larger than the estimate flips its sign, and an
        # interval on the other side of 0 means the effect was explained away (and more)
        still = bool(lo > 0) if estimate > 0 else bool(hi < 0)
        where = ("still excludes 0" if still else
                 "includes 0" if lo <= 0 <= hi else "lies on the other side of 0")
        bench = (f" For scale, the strongest measured covariate, {b['covariate']}, explains "
                 f"{b['r2dxj_x']:.1%} of the treatment's variation and {b['r2yxj_dx']:.1%} of the "
                 f"outcome's (each beyond the other covariates); a hidden confounder as strong as "
                 f"{b['covariate']} would move the estimate from {estimate:+.4f} to {adj:+.4f}, 95% "
                 f"interval [{lo:+.4f}, {hi:+.4f}], which {where}.")
    passed = bool(crosses or (np.isfinite(m["rv_qa"]) and m["rv_qa"] >= RV_MIN))
    if m["undefined_benchmarks"]:
        bench += (" No bound for " + ", ".join(m["undefined_benchmarks"]) + " (explains half or more of "
                  "the treatment's variation).")
    verdict = ("Passed: the interval includes 0, so there is no effect to explain away." if crosses else
               "Passed." if passed else
               f"FAILED: a hidden confounder explaining less than {RV_MIN:.1%} of the remaining variation "
               "of treatment and outcome could make the effect insignificant: the estimate is fragile.")
    msg = (f"Sensitivity to a hidden confounder (Cinelli & Hazlett 2020; the omitted-variable bias of "
           f"the outcome regression applied to the matched estimate): a confounder would have to "
           f"explain {m['rv_q']:.1%} of the remaining variation of both the treatment and the outcome "
           f"to bring the estimate to 0 (robustness value), and {m['rv_qa']:.1%} to make it "
           f"statistically insignificant at {alpha:.0%}." + bench
           + f" Pass rule: robustness value for significance ≥ {RV_MIN:.1%}, or an interval that "
             "already includes 0. " + verdict)
    ref = Refutation("unobserved_confounder_robustness", estimate, adj, None, bool(passed), msg)
    return ref, {"method": "Cinelli & Hazlett (2020) partial-R² sensitivity, benchmark k_D = k_Y = 1",
                 "matched": m, "regression": reg}
