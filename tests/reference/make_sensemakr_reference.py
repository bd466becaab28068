"""Regenerate the stored PySensemakr reference used by tests/test_sensitivity.py.

PySensemakr (the Python port of Cinelli & Hazlett's ``sensemakr``) is not a project dependency;
run this in a throwaway environment that has it, e.g.::

    python -m venv /tmp/sensevenv && /tmp/sensevenv/bin/pip install PySensemakr==0.0.8
    /tmp/sensevenv/bin/python tests/reference/make_sensemakr_reference.py

It writes a small input table (``sensemakr_input.csv``: categorical, integer and boolean
covariates, so rows fall into covariate cells as in production, and a continuous outcome) and
PySensemakr's numbers for the row-level statsmodels OLS ``y ~ t + covariates``
(``sensemakr_reference.json``): the sensitivity statistics (partial R², RV_q, RV_{q,α}) and the
k = 1 benchmark bounds with adjusted estimates and intervals for every covariate, each
categorical covariate benchmarked as a group of its dummies. The design is built here with
pandas, independently of methods/psm.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).parent
COVARIATES = ["segment", "channel", "tenure", "returning"]


def make_input(n: int = 1500, seed: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    segment = rng.choice(["a", "b", "c", "d"], n, p=[0.4, 0.3, 0.2, 0.1])
    channel = rng.choice(["chat", "voice", "email"], n, p=[0.5, 0.3, 0.2])
    tenure = rng.integers(0, 5, n)
    returning = rng.random(n) < 0.4
    logit = -0.4 + 1.0 * (segment == "b") - 0.6 * (segment == "d") + 0.5 * (channel == "chat") + 0.15 * tenure
    t = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    y = (2.0 + 0.25 * t + 0.8 * (segment == "b") + 0.3 * (channel == "voice") + 0.1 * tenure
         + 0.4 * returning + rng.normal(size=n)).round(4)
    return pd.DataFrame({"t": t, "y": y, "segment": segment, "channel": channel, "tenure": tenure,
                         "returning": returning})


def design(df: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    cols, groups = {"t": df["t"].astype(float)}, {}
    for c in ["segment", "channel", "tenure"]:
        d = pd.get_dummies(df[c].astype(str), prefix=c, drop_first=True, dtype=float)
        cols.update(d.to_dict("series"))
        groups[c] = list(d.columns)
    cols["returning"] = df["returning"].astype(float)
    groups["returning"] = ["returning"]
    return pd.DataFrame(cols), groups


def main() -> None:
    import sensemakr
    import statsmodels
    import statsmodels.api as sm

    df = make_input()
    df.to_csv(HERE / "sensemakr_input.csv", index=False)
    df = pd.read_csv(HERE / "sensemakr_input.csv")
    Xd, groups = design(df)
    fit = sm.OLS(df["y"].astype(float), sm.add_constant(Xd)).fit()
    s = sensemakr.Sensemakr(model=fit, treatment="t", benchmark_covariates=groups, kd=1, q=1, alpha=0.05)
    st = {k: float(v) for k, v in s.sensitivity_stats.items()}
    bounds = s.bounds.copy()
    rows = []
    for (name, _), (_, b) in zip(groups.items(), bounds.iterrows()):
        rows.append({"covariate": name, "bound_label": b["bound_label"], "r2dz_x": float(b["r2dz_x"]),
                     "r2yz_dx": float(b["r2yz_dx"]), "adjusted_estimate": float(b["adjusted_estimate"]),
                     "adjusted_se": float(b["adjusted_se"]), "adjusted_lower_ci": float(b["adjusted_lower_CI"]),
                     "adjusted_upper_ci": float(b["adjusted_upper_CI"])})
    # PySensemakr 0.0.8's model-based bounds regress the treatment on the covariates *plus an
    # extra constant* (``non_treatment.insert(0, 0, 1)`` although the model has one), and the
    # pinv covariance of that rank-deficient design shifts r2dxj_x slightly (0.0571 vs 0.0573 for
    # segment). So we also store PySensemakr's bounds computed from the correct partial R²s:
    # r2dxj_x by the restricted-vs-full residual sums of squares of D ~ X, r2yxj_dx by its own
    # group_partial_r2 on the outcome model (which has one constant and is right).
    X0 = sm.add_constant(Xd.drop(columns="t"))
    d = df["t"].astype(float)
    full_d = sm.OLS(d, X0).fit()
    manual = []
    tc = abs(float(__import__("scipy").stats.t.ppf(0.025, fit.df_resid)))
    for name, cols in groups.items():
        restricted = sm.OLS(d, X0.drop(columns=cols)).fit()
        r2d = float((restricted.ssr - full_d.ssr) / restricted.ssr)
        r2y = float(sensemakr.group_partial_r2(fit, covariates=cols))
        b = sensemakr.ovb_partial_r2_bound(r2dxj_x=r2d, r2yxj_dx=r2y, kd=1)
        r2dz, r2yz = float(b["r2dz_x"].iloc[0]), float(b["r2yz_dx"].iloc[0])
        est = float(sensemakr.adjusted_estimate(r2dz, r2yz, estimate=st["estimate"], se=st["se"], dof=st["dof"]))
        se = float(sensemakr.adjusted_se(r2dz, r2yz, se=st["se"], dof=st["dof"]))
        manual.append({"covariate": name, "r2dxj_x": r2d, "r2yxj_dx": r2y, "r2dz_x": r2dz, "r2yz_dx": r2yz,
                       "adjusted_estimate": est, "adjusted_se": se,
                       "adjusted_lower_ci": est - tc * se, "adjusted_upper_ci": est + tc * se})
    # robustness values straight from (t, dof), including the branch where the confounder can
    # explain all of the outcome (fq > 1/f_crit, small dof and a huge t) and an insignificant t
    rv_cases = []
    for t_stat, dof, q, alpha in [(4.18445, 783, 1.0, 1.0), (4.18445, 783, 0.5, 0.05), (20.0, 10, 1.0, 0.05),
                                  (-3.0, 200, 1.0, 0.05), (1.2, 500, 1.0, 0.05), (2.5, 5000, 1.0, 0.10)]:
        rv = float(np.asarray(sensemakr.robustness_value(t_statistic=float(t_stat), dof=dof, q=q, alpha=alpha))[0])
        rv_cases.append({"t_statistic": t_stat, "dof": dof, "q": q, "alpha": alpha, "rv": rv})
    ref = {
        "pysensemakr_version": getattr(sensemakr, "__version__", "0.0.8"),
        "statsmodels_version": statsmodels.__version__,
        "treatment": "t", "outcome": "y", "covariates": COVARIATES,
        "sensitivity_stats": st,
        "benchmarks_from_partial_r2": manual,
        "benchmarks_model_based": rows,
        "robustness_values": rv_cases,
    }
    (HERE / "sensemakr_reference.json").write_text(json.dumps(ref, indent=2) + "\n")
    print(json.dumps(ref, indent=2))


if __name__ == "__main__":
    main()
