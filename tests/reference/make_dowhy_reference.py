"""Regenerate the stored DoWhy 0.14 reference output used by tests/test_psm.py.

Run: ``.venv/bin/python tests/reference/make_dowhy_reference.py``. It writes a small input
table (``dowhy_psm_input.csv``: continuous + categorical + bool covariates, so no two units
share a propensity and 1-NN matching has no ties) and DoWhy's own
``backdoor.propensity_score_matching`` estimates (``dowhy_psm_reference.json``): ATT and ATE
with DoWhy's default propensity model, and ATT with an unpenalised logistic model.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).parent
COVARIATES = ["x1", "x2", "segment", "returning"]


def make_input(n: int = 400, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=n).round(6)
    x2 = rng.normal(size=n).round(6)
    segment = rng.choice(["a", "b", "c"], n)
    returning = rng.random(n) < 0.4
    logit = -0.3 + 0.8 * x1 - 0.5 * x2 + 0.7 * (segment == "b") + 0.5 * returning
    t = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    y = (1.0 + 0.5 * t + 1.0 * x1 + 0.5 * x2 + 0.8 * (segment == "c") + rng.normal(size=n)).round(6)
    return pd.DataFrame({"t": t, "y": y, "x1": x1, "x2": x2, "segment": segment, "returning": returning})


def dowhy_estimate(df: pd.DataFrame, target_units: str, propensity_score_model=None) -> float:
    from dowhy import CausalModel

    logging.getLogger("dowhy").setLevel(logging.ERROR)
    model = CausalModel(data=df.copy(), treatment="t", outcome="y", common_causes=COVARIATES)
    estimand = model.identify_effect(proceed_when_unidentifiable=True)
    params = {} if propensity_score_model is None else {"propensity_score_model": propensity_score_model}
    est = model.estimate_effect(estimand, method_name="backdoor.propensity_score_matching",
                                target_units=target_units, method_params=params)
    return float(est.value)


def main() -> None:
    import dowhy
    import sklearn
    from sklearn.linear_model import LogisticRegression

    df = make_input()
    df.to_csv(HERE / "dowhy_psm_input.csv", index=False)
    df = pd.read_csv(HERE / "dowhy_psm_input.csv")
    ref = {
        "dowhy_version": dowhy.__version__,
        "sklearn_version": sklearn.__version__,
        "treatment": "t", "outcome": "y", "covariates": COVARIATES,
        "att_default": dowhy_estimate(df, "att"),
        "ate_default": dowhy_estimate(df, "ate"),
        "att_unpenalized": dowhy_estimate(
            df, "att", LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000)),
        "true_effect": 0.5,
    }
    (HERE / "dowhy_psm_reference.json").write_text(json.dumps(ref, indent=2) + "\n")
    print(json.dumps(ref, indent=2))


if __name__ == "__main__":
    main()
