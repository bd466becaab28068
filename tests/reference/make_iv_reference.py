"""Regenerate the stored linearmodels 7.1 IV2SLS reference used by tests/test_randomized.py.

linearmodels is not a dependency of the project (it is not in .venv and must not be installed
there), so its numbers are stored. How this file was run (linearmodels 7.1, numpy 2.4.6,
pandas 3.1.1, pyarrow 26.0.1, Python 3.11):

    python3 -m venv /tmp/lmvenv && /tmp/lmvenv/bin/pip install linearmodels pandas pyarrow
    /tmp/lmvenv/bin/python tests/reference/make_iv_reference.py

It writes ``iv_data.parquet`` (a seeded A/B test with two-sided non-compliance: assignment ``z``,
uptake ``d`` confounded with the outcome through a latent type, a numeric covariate ``x`` and a
categorical ``segment``) and ``iv_reference.json``: for 2SLS of ``y`` on ``d`` instrumented by
``z`` without covariates (the Wald ratio) and with ``x`` and segment dummies as exogenous
regressors, linearmodels' ``IV2SLS(...).fit(cov_type="robust")`` (HC0, ``debiased=False``)
parameters, standard errors, 95% interval, the first-stage robust F (``first_stage.diagnostics
["f.stat"]``) and the first-stage coefficient on ``z``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).parent
N, SEED = 2000, 20260516


def make_data(n: int = N, seed: int = SEED) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    z = rng.integers(0, 2, n)
    u = rng.random(n)
    kind = np.where(u > 0.8, 2, np.where(u < 0.3, 0, 1))  # always-taker, never-taker, complier
    d = np.where(kind == 2, 1, np.where(kind == 0, 0, z))
    x = rng.normal(size=n).round(4)
    segment = rng.choice(["a", "b", "c"], n)
    y = (0.5 + 0.4 * d + 0.8 * (kind == 2) - 0.5 * (kind == 0) + 0.6 * x + 0.3 * (segment == "b")
         + rng.normal(size=n) * (1.0 + 0.5 * d)).round(6)
    return pd.DataFrame({"y": y, "d": d.astype(np.int64), "z": z.astype(np.int64), "x": x, "segment": segment})


def _fit(df: pd.DataFrame, covariates: bool) -> dict:
    from linearmodels.iv import IV2SLS

    exog = pd.DataFrame({"const": np.ones(len(df))})
    if covariates:
        exog["x"] = df["x"]
        exog["segment_b"] = (df["segment"] == "b").astype(float)
        exog["segment_c"] = (df["segment"] == "c").astype(float)
    res = IV2SLS(df["y"], exog, df[["d"]].astype(float), df[["z"]].astype(float)).fit(cov_type="robust")
    ci = res.conf_int()
    fs = res.first_stage
    return {
        "params": {k: float(v) for k, v in res.params.items()},
        "std_errors": {k: float(v) for k, v in res.std_errors.items()},
        "ci_low": float(ci.loc["d", "lower"]), "ci_high": float(ci.loc["d", "upper"]),
        "first_stage_f": float(fs.diagnostics.loc["d", "f.stat"]),
        "first_stage_coef": float(fs.individual["d"].params["z"]),
        "nobs": int(res.nobs),
    }


def main() -> None:
    import linearmodels

    df = make_data()
    df.to_parquet(HERE / "iv_data.parquet", index=False)
    out = {"linearmodels": linearmodels.__version__, "cov_type": "robust", "n": N, "seed": SEED,
           "wald": _fit(df, covariates=False), "tsls_covariates": _fit(df, covariates=True)}
    (HERE / "iv_reference.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
