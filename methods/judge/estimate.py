"""The effect of a 0/1 treatment on human-rated quality, measured by an automated judge plus a human audit.

An LLM judge is a measurement system with its own biases: one that prefers longer answers scores a
more verbose model higher, and the effect on the raw judge score can be twice the effect on the
quality a human would rate. With a human-audited random sample (``conversation_id, human_score``)
three effects are reported, as differences in mean between the arms:

* **raw**: on the judge score over all rows (the naive number; Welch standard error);
* **audit only**: on the human score over the audited rows (unbiased, wide);
* **calibrated** (the headline): prediction-powered inference (Angelopoulos et al. 2023). A
  calibration model, least squares of the human score on the judge score and the bias covariates
  the user names (e.g. response length), is fitted on the audit sample and applied to every row;
  per arm g the PPI mean is ``mean_all_g(f) + mean_audit_g(h - f)``: the mean prediction over all
  rows plus the rectifier, the audit sample's mean residual, which removes whatever bias the
  calibration model leaves. Its variance per arm is ``var(f)/N_g + var(h - f)/n_g +
  2 cov(f, h - f)/N_g`` (the audit rows are part of the N_g rows; the covariance term is that
  overlap), the arms add. The interval carries the calibration uncertainty through the rectifier's
  variance; the model is fitted on the same audit rows, a bias of order (covariates / audit size)
  that is negligible next to the standard error for a handful of covariates (the method refuses
  below ``MIN_AUDIT_PER_ARM`` audited rows per arm).

Assumption: the audit sample is a random sample of the rows within each arm (its share may differ
by arm). The ``judge_bias_by_arm`` check regresses, on the audit rows, the judge score on the human
score, the bias covariates, the arm and arm x human score (HC1 covariance) and fails when the arm
terms are jointly significant (Wald, p < ``BIAS_ALPHA``): the judge then gives the same human quality
a different score in the two arms, so the calibrated score applied to all rows (and the raw effect)
is biased between arms. (The test is on the judge given the human score, not on the calibration
residual, because a residual of the human given a noisy judge depends on the arm through the arms'
different mean quality even for an unbiased judge.)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from methods.result import Diagnostic, EstimateResult, MethodRefusal

Z = float(stats.norm.ppf(0.975))
MIN_AUDIT_PER_ARM = 20
BIAS_ALPHA = 0.01


def _design(df: pd.DataFrame, cols: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Numeric columns as they are (missing -> column mean), text columns one-hot (first level dropped)."""
    parts, names = [], []
    for c in cols:
        s = df[c]
        if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
            x = s.to_numpy(dtype=float, na_value=np.nan)
            x = np.where(np.isnan(x), np.nanmean(x) if np.isfinite(x).any() else 0.0, x)
            parts.append(x[:, None])
            names.append(c)
        else:
            dummies = pd.get_dummies(s.astype(str), prefix=c, drop_first=True, dtype=float)
            parts.append(dummies.to_numpy())
            names += list(dummies.columns)
    return (np.hstack(parts) if parts else np.empty((len(df), 0))), names


def _welch(y: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    a, b = y[t == 1], y[t == 0]
    return float(a.mean() - b.mean()), float(np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)))


def _ols_hc1(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    e = y - X @ beta
    n, k = X.shape
    bread = np.linalg.pinv(X.T @ X)
    meat = (X * e[:, None] ** 2).T @ X
    return beta, bread @ meat @ bread * n / max(n - k, 1)


def _row(name: str, est: float, se: float) -> dict:
    return {"effect": name, "estimate": est, "std_error": se, "ci_low": est - Z * se, "ci_high": est + Z * se}


def estimate_judge_effect(df: pd.DataFrame, audit: pd.DataFrame, *, treatment: str, judge: str,
                          human: str = "human_score", bias_covariates: Sequence[str] = (),
                          id_col: str = "conversation_id") -> EstimateResult:
    """Raw, calibrated (PPI) and audit-only effects of ``treatment`` (module doc)."""
    bias_covariates = [c for c in dict.fromkeys(bias_covariates) if c not in (treatment, judge)]
    for frame, cols, what in ((df, [id_col, treatment, judge, *bias_covariates], "data"),
                              (audit, [id_col, human], "audit")):
        missing = [c for c in cols if c not in frame.columns]
        if missing:
            raise MethodRefusal(f"the {what} table has no column {', '.join(missing)}")
    if audit[id_col].duplicated().any():
        raise MethodRefusal(f"the audit table repeats {int(audit[id_col].duplicated().sum()):,} `{id_col}` values; "
                            "give one human score per conversation (e.g. the mean of its raters)")
    h_audit = pd.to_numeric(audit[human], errors="coerce")
    if h_audit.isna().any():
        raise MethodRefusal(f"the audit column `{human}` has {int(h_audit.isna().sum()):,} missing or non-numeric "
                            "values; drop those rows from the audit table")
    t_raw = df[treatment]
    t_num = pd.to_numeric(t_raw.astype("float64") if pd.api.types.is_bool_dtype(t_raw) else t_raw, errors="coerce")
    s_num = pd.to_numeric(df[judge], errors="coerce")
    keep = t_num.notna() & s_num.notna()
    if not set(pd.unique(t_num[keep])) <= {0.0, 1.0}:
        raise MethodRefusal(f"`{treatment}` must be 0/1 (or true/false)")
    d = df.loc[keep, [id_col, *bias_covariates]].copy()
    d["_t"], d["_s"] = t_num[keep].to_numpy(int), s_num[keep].to_numpy(float)
    right = pd.DataFrame({id_col: audit[id_col].to_numpy(), "_h": h_audit.to_numpy(float)})
    if d[id_col].dtype != right[id_col].dtype:  # e.g. ids read as numbers from one file, as text from the other
        d[id_col], right[id_col] = d[id_col].astype(str), right[id_col].astype(str)
    d = d.merge(right, on=id_col, how="left", validate="many_to_one")
    if d[id_col].duplicated().any():
        raise MethodRefusal(f"the data repeats `{id_col}` values; the judge effect needs one row per conversation")
    unmatched = int(len(audit) - d["_h"].notna().sum())
    t, s, h = d["_t"].to_numpy(), d["_s"].to_numpy(), d["_h"].to_numpy()
    lab = ~np.isnan(h)
    counts = {g: (int((t == g).sum()), int(((t == g) & lab).sum())) for g in (0, 1)}
    small = [g for g in (0, 1) if counts[g][1] < MIN_AUDIT_PER_ARM]
    if small:
        raise MethodRefusal(
            "too few audited conversations: " + ", ".join(f"arm {g} has {counts[g][1]}" for g in (0, 1))
            + f" audited rows; at least {MIN_AUDIT_PER_ARM} per arm are needed to calibrate the judge")

    Xb, bnames = _design(d, bias_covariates)
    X = np.column_stack([np.ones(len(d)), s, Xb])
    beta, *_ = np.linalg.lstsq(X[lab], h[lab], rcond=None)
    f = X @ beta

    theta, var = {}, {}
    for g in (0, 1):
        allg, audg = t == g, (t == g) & lab
        res, fa = h[audg] - f[audg], f[audg]
        n_all, n_aud = int(allg.sum()), int(audg.sum())
        theta[g] = f[allg].mean() + res.mean()
        var[g] = (f[allg].var(ddof=1) / n_all + res.var(ddof=1) / n_aud
                  + 2 * np.cov(fa, res, ddof=1)[0, 1] / n_all)
    ppi = float(theta[1] - theta[0])
    ppi_se = float(np.sqrt(max(var[0] + var[1], 0.0)))
    p_value = float(2 * stats.norm.sf(abs(ppi / ppi_se))) if ppi_se > 0 else float("nan")
    raw, raw_se = _welch(s, t)
    aud, aud_se = _welch(h[lab], t[lab])
    plug, plug_se = _welch(f, t)

    # the judge given the human score: do the arm terms matter?
    Xj = np.column_stack([np.ones(lab.sum()), h[lab], Xb[lab], t[lab], t[lab] * h[lab]])
    bj, vj = _ols_hc1(Xj, s[lab])
    idx = [Xj.shape[1] - 2, Xj.shape[1] - 1]
    sub = vj[np.ix_(idx, idx)]
    wald = float(bj[idx] @ np.linalg.pinv(sub) @ bj[idx])
    p_bias = float(stats.chi2.sf(wald, 2))
    bias_ok = p_bias >= BIAS_ALPHA

    diagnostics = [
        Diagnostic("audited_rows", float(lab.sum()), float(2 * MIN_AUDIT_PER_ARM), True,
                   f"{int(lab.sum()):,} audited of {len(d):,} conversations (arm 1: {counts[1][1]:,} of {counts[1][0]:,};"
                   f" arm 0: {counts[0][1]:,} of {counts[0][0]:,})"
                   + (f"; {unmatched:,} audit rows match no conversation of the data" if unmatched else ""),
                   "error", "sample_size"),
        Diagnostic("judge_bias_by_arm", p_bias, BIAS_ALPHA, bias_ok,
                   (f"Judge score given the human score{' and ' + ', '.join(bias_covariates) if bias_covariates else ''}"
                    f": arm shift {bj[idx[0]]:+.3g}, arm x human {bj[idx[1]]:+.3g} (Wald p = {p_bias:.3g}). ")
                   + ("The judge scores the same human quality alike in both arms." if bias_ok else
                      "The judge's bias differs between the arms: the raw-score effect and the calibrated score are "
                      "biased; only the audit rows' human scores measure the arms alike (the PPI rectifier leans "
                      "on them) — audit more, or name the covariate that drives the judge's bias."),
                   "error", "judge_bias_by_arm"),
    ]
    effects = pd.DataFrame([_row("calibrated_ppi", ppi, ppi_se), _row("raw_judge", raw, raw_se),
                            _row("audit_only", aud, aud_se), _row("calibrated_plugin", plug, plug_se)])
    return EstimateResult(
        method="judge_calibration", estimand="ATE on the human-rated score", outcome=human,
        estimate=ppi, std_error=ppi_se, ci_low=ppi - Z * ppi_se, ci_high=ppi + Z * ppi_se, p_value=p_value,
        n_treated=counts[1][0], n_control=counts[0][0], naive_estimate=raw, diagnostics=diagnostics,
        extras={"raw_effect": raw, "raw_std_error": raw_se, "audit_effect": aud, "audit_std_error": aud_se,
                "calibrated_plugin_effect": plug, "n_audited": int(lab.sum()), "effects": effects,
                "calibration": dict(zip(["intercept", judge, *bnames], map(float, beta))),
                "judge_bias_p_value": p_bias},
        ci_method=("prediction-powered inference (Angelopoulos et al. 2023): mean calibrated prediction over all "
                   "rows plus the audit sample's mean residual, per arm, with its variance; normal interval"),
    )
