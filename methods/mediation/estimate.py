"""Did the treatment work *through* the mediator? Regression-based mediation with a bootstrap interval.

"Did lookup_order help because it was called?" is a mechanism question. Adjusting for the mediator
(putting the tool call among the covariates) does not give the treatment's effect: it gives the
effect with the mediator held fixed, a different question. This method reports both, by name:

* **total effect** (the headline): least squares of the outcome on the treatment and the
  covariates, the treatment's coefficient: what the treatment did, by every path;
* **controlled direct effect** CDE(m): from the outcome on treatment, mediator, treatment x mediator
  and covariates, ``theta_t + theta_tm * m``: the effect if the mediator were *forced* to m for
  everyone (reported for m = 0 and m = 1);
* **natural direct / indirect effects** (VanderWeele 2015, linear outcome and linear-probability
  mediator models): NDE = theta_t + theta_tm * E[M | t=0, X]; NIE = (theta_m + theta_tm) *
  (E[M | t=1, X] - E[M | t=0, X]) averaged over the rows; **share mediated** = NIE / (NDE + NIE).

Intervals: percentile bootstrap over rows (``B`` resamples, all fits at once as weighted least
squares with Poisson(1) resampling weights, the Poisson bootstrap). Assumptions, none testable from these data: no
unmeasured treatment-outcome, treatment-mediator or mediator-outcome confounding given the
covariates, and no mediator-outcome confounder that the treatment itself affects. The covariates
must be measured before the treatment.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from methods.result import Diagnostic, EstimateResult, MethodRefusal

B = 1000
MIN_CELL = 10
RIDGE = 1e-9
NOTE = ("The mediator-adjusted number (the controlled direct effect) answers a different question from the total "
        "effect: what the treatment would do if the mediator were held fixed, not what it did. Use the total effect "
        "to decide on the treatment; the direct effect and the share mediated say how it worked.")


def _binary(s: pd.Series, name: str) -> np.ndarray:
    x = pd.to_numeric(s.astype("float64") if pd.api.types.is_bool_dtype(s) else s, errors="coerce")
    if x.isna().any() or not set(pd.unique(x)) <= {0.0, 1.0}:
        raise MethodRefusal(f"`{name}` must be 0/1 (or true/false) with no missing values in the rows used")
    return x.to_numpy(dtype=float)


def _covariates(df: pd.DataFrame, cols: Sequence[str]) -> np.ndarray:
    parts = []
    for c in cols:
        s = df[c]
        if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
            x = s.to_numpy(dtype=float, na_value=np.nan)
            parts.append(np.where(np.isnan(x), np.nanmean(x), x)[:, None] - np.nanmean(x))
        else:
            d = pd.get_dummies(s.astype(str), drop_first=True, dtype=float).to_numpy()
            parts.append(d - d.mean(0))
    return np.hstack(parts) if parts else np.empty((len(df), 0))


def _wls(X: np.ndarray, ys: Sequence[np.ndarray], W: np.ndarray) -> list[np.ndarray]:
    """Coefficients of each y in ``ys`` on X for every weight row of W (B x n) at once: B x k each."""
    n, k = X.shape
    XtWX = np.einsum("bn,nk->bk", W, (X[:, :, None] * X[:, None, :]).reshape(n, k * k)).reshape(-1, k, k)
    XtWX += RIDGE * np.eye(k)
    rhs = np.stack([np.einsum("bn,nk->bk", W, X * y[:, None]) for y in ys], axis=-1)  # B x k x len(ys)
    sol = np.linalg.solve(XtWX, rhs)
    return [sol[..., j] for j in range(len(ys))]


def _effects(t, m, y, C, W, interact: bool = True) -> dict[str, np.ndarray]:
    n = len(t)
    one = np.ones(n)
    total, g = _wls(np.column_stack([one, t, C]), [y, m], W)  # g: the linear-probability mediator model
    total = total[:, 1]
    if interact:
        (th,) = _wls(np.column_stack([one, t, m, t * m, C]), [y], W)
    else:  # the mediator occurs only under treatment: t x m is m itself, theta_tm = 0, CDE(1) not identified
        (th,) = _wls(np.column_stack([one, t, m, C]), [y], W)
        th = np.column_stack([th[:, :3], np.zeros(len(th)), th[:, 3:]])
    wsum = W.sum(1)
    base = g[:, :1] + (C @ g[:, 2:].T).T if C.shape[1] else np.repeat(g[:, :1], n, 1)  # E[M | t=0, X], B x n
    p0 = (W * base).sum(1) / wsum
    shift = g[:, 1]  # E[M | t=1, X] - E[M | t=0, X]
    nde = th[:, 1] + th[:, 3] * p0
    nie = (th[:, 2] + th[:, 3]) * shift
    cde_1 = th[:, 1] + th[:, 3] if interact else np.full(len(th), np.nan)
    return {"total": total, "cde_0": th[:, 1], "cde_1": cde_1, "nde": nde, "nie": nie,
            "share_mediated": nie / (nde + nie), "mediator_shift": shift}


def estimate_mediation(df: pd.DataFrame, *, treatment: str, outcome: str, mediator: str,
                       covariates: Sequence[str] = (), seed: int = 0, n_boot: int = B) -> EstimateResult:
    """Total, direct and indirect effects of ``treatment`` through ``mediator`` (module doc)."""
    covariates = [c for c in dict.fromkeys(covariates) if c not in (treatment, outcome, mediator)]
    if mediator in (treatment, outcome):
        raise MethodRefusal("the mediator must be a column other than the treatment and the outcome")
    d = df.loc[df[[treatment, outcome, mediator]].notna().all(axis=1)]
    t, m = _binary(d[treatment], treatment), _binary(d[mediator], mediator)
    y = pd.to_numeric(d[outcome], errors="coerce").to_numpy(dtype=float)
    if np.isnan(y).any():
        raise MethodRefusal(f"`{outcome}` holds values that are not numbers")
    cells = {(a, b): int(((t == a) & (m == b)).sum()) for a in (0, 1) for b in (0, 1)}
    # the mediator never happens without the treatment (a tool the rollout made available): the
    # treatment x mediator term is the mediator itself, so CDE(m=1) is not identified; CDE(0) = NDE is
    one_sided = cells[(0, 1)] == 0
    thin = {k: v for k, v in cells.items() if v < MIN_CELL and not (one_sided and k == (0, 1))}
    if thin:
        raise MethodRefusal("too few conversations in the treatment x mediator cells "
                            + ", ".join(f"({treatment}={a}, {mediator}={b}): {v}" for (a, b), v in thin.items())
                            + f"; at least {MIN_CELL} in each are needed to separate the direct and indirect paths")
    C = _covariates(d, covariates)
    n = len(d)
    point = {k: float(v[0]) for k, v in _effects(t, m, y, C, np.ones((1, n)), not one_sided).items()}
    rng = np.random.default_rng(seed)
    boots = {k: [] for k in point}
    for start in range(0, n_boot, 200):  # bounded memory: 200 resamples at a time
        W = rng.poisson(1.0, size=(min(200, n_boot - start), n)).astype(float)
        for k, v in _effects(t, m, y, C, W, not one_sided).items():
            boots[k].append(v)
    boots = {k: np.concatenate(v) for k, v in boots.items()}
    table = []
    for k, v in point.items():
        if not np.isfinite(boots[k]).any():  # CDE(1) when the mediator occurs only under treatment
            table.append({"effect": k, "estimate": v, "std_error": float("nan"), "ci_low": float("nan"),
                          "ci_high": float("nan")})
            continue
        lo, hi = np.nanquantile(boots[k], [0.025, 0.975])
        table.append({"effect": k, "estimate": v, "std_error": float(np.nanstd(boots[k], ddof=1)),
                      "ci_low": float(lo), "ci_high": float(hi)})
    tab = pd.DataFrame(table).set_index("effect")
    tot = tab.loc["total"]
    p_value = float(min(1.0, 2 * min((boots["total"] <= 0).mean(), (boots["total"] >= 0).mean())
                        + 1.0 / (n_boot + 1)))
    naive = float(y[t == 1].mean() - y[t == 0].mean())
    diagnostics = [
        Diagnostic("rows_per_cell", float(min(cells.values())), float(MIN_CELL), True,
                   f"{n:,} conversations; treatment x mediator cells " + ", ".join(
                       f"({a},{b}): {v:,}" for (a, b), v in cells.items()), "error", "sample_size"),
        Diagnostic("mediation_estimand", None, None, True, NOTE, "warn", None),
    ]
    if one_sided:
        diagnostics.append(Diagnostic(
            "mediator_only_under_treatment", float(cells[(0, 1)]), 0.0, True,
            f"`{mediator}` never occurs without `{treatment}` (e.g. a tool only the treated could call): the direct "
            "effect is the effect with the mediator off (CDE(0), equal to the natural direct effect here); the effect "
            "with the mediator forced on for the untreated is not identified and is not reported", "warn", None))
    return EstimateResult(
        method="mediation", estimand="total effect (ATE)", outcome=outcome,
        estimate=point["total"], std_error=float(tot["std_error"]), ci_low=float(tot["ci_low"]),
        ci_high=float(tot["ci_high"]), p_value=p_value, n_treated=int((t == 1).sum()),
        n_control=int((t == 0).sum()), naive_estimate=naive, diagnostics=diagnostics,
        extras={"direct_effect": point["cde_0"], "direct_effect_mediator_on": point["cde_1"],
                "natural_direct_effect": point["nde"], "indirect_effect": point["nie"],
                "share_mediated": point["share_mediated"], "mediator": mediator,
                "mediator_only_under_treatment": one_sided,
                "effects": tab.reset_index(), "note": NOTE},
        ci_method=f"percentile bootstrap over rows ({n_boot} resamples); p-value from the bootstrap distribution",
    )
