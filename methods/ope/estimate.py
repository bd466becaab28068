"""The value of a candidate routing policy from logs that recorded the logging propensities.

Logged rows are (context x, action a taken with known probability p = P(a | x) by the logging
policy, reward r). A deterministic candidate policy pi (``rules.py``) is valued by

* **IPS**: mean(w r) with w = 1[a = pi(x)] / p;
* **self-normalised IPS**: sum(w r) / sum(w), a little biased, often much less variable;
* **doubly robust** (the headline): mean(q(x, pi(x)) + w (r - q(x, a))) with q a reward model,
  one least-squares regression of r on the context columns per action, cross-fitted over
  ``FOLDS`` folds (each row's q comes from the folds it is not in). It is unbiased when either
  the propensities or the reward model are right.

Intervals are normal, from each estimator's influence function (sandwich) standard error; the
p-value tests the doubly robust value against the logging policy's own value (the logged mean
reward), with the influence function of the difference. Assumptions: the propensities are the
ones the logger really used and every action the candidate takes had a positive logging
probability where the candidate takes it (overlap). The ``policy_overlap`` check warns when the
candidate takes actions the logger rarely took there: logging propensity < ``RARE_P`` on more than
``RARE_SHARE`` of the candidate's choices (that share is itself estimated by inverse weighting, so
it counts the rows where the candidate's action was not logged too), or an effective sample size
sum(w)^2 / sum(w^2) below ``ESS_SHARE`` of the rows. Without propensities the method refuses: the
logs are confounded by whatever the logger routed on.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from methods.ope.rules import choose_actions
from methods.result import Diagnostic, EstimateResult, MethodRefusal

Z = float(stats.norm.ppf(0.975))
FOLDS = 5
MIN_ROWS = 50
RARE_P = 0.05
RARE_SHARE = 0.05
ESS_SHARE = 0.10
RIDGE = 1e-8


def _labels(s: pd.Series) -> np.ndarray:
    """Action labels as text; integer-valued floats as integers (1.0 -> "1")."""
    if pd.api.types.is_float_dtype(s) and np.all(np.mod(s.to_numpy(), 1) == 0):
        s = s.astype("int64")
    return s.astype(str).to_numpy()


def context_matrix(df: pd.DataFrame, context: Sequence[str]) -> np.ndarray:
    """Intercept, numeric context columns (missing -> column mean) and text columns one-hot (first dropped)."""
    parts = [np.ones((len(df), 1))]
    for c in context:
        s = df[c]
        if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
            x = s.to_numpy(dtype=float, na_value=np.nan)
            x = np.where(np.isnan(x), np.nanmean(x) if np.isfinite(x).any() else 0.0, x)
            parts.append(x[:, None])
        else:
            dummies = pd.get_dummies(s.astype(str), drop_first=True, dtype=float).to_numpy()
            if dummies.shape[1]:
                parts.append(dummies)
    return np.hstack(parts)


def cross_fitted_rewards(X: np.ndarray, actions: np.ndarray, reward: np.ndarray, labels: list[str],
                         seed: int = 0, folds: int = FOLDS) -> np.ndarray:
    """n x len(labels): each row's predicted reward under each action, from models fit without its fold."""
    n, k = X.shape
    fold = np.random.default_rng(seed).permutation(n) % folds
    Q = np.empty((n, len(labels)))
    for f in range(folds):
        test, train = fold == f, fold != f
        for j, a in enumerate(labels):
            rows = train & (actions == a)
            if rows.sum() > 2 * k:
                Xa, ra = X[rows], reward[rows]
                beta = np.linalg.solve(Xa.T @ Xa + RIDGE * np.eye(k), Xa.T @ ra)
                Q[test, j] = X[test] @ beta
            else:  # too few rows of this action to regress: its mean reward, else the overall mean
                Q[test, j] = reward[rows].mean() if rows.any() else reward[train].mean()
    return Q


def _row(name: str, phi: np.ndarray, value: float | None = None) -> dict:
    n = len(phi)
    v = float(phi.mean()) if value is None else value
    se = float(phi.std(ddof=1) / np.sqrt(n))
    return {"estimator": name, "value": v, "std_error": se, "ci_low": v - Z * se, "ci_high": v + Z * se}


NO_PROPENSITIES = ("no logging propensities: the logs record which action was taken but not with what probability, "
                   "so a new policy cannot be valued from them (the logged actions are confounded by whatever the "
                   "logger routed on); log P(action | context) for every action at decision time")


def propensity_columns(columns: Sequence[str], prefix: str) -> dict[str, str]:
    """Action label -> the column holding its logging probability (``prefix + label``)."""
    return {str(c)[len(prefix):]: str(c) for c in columns if str(c).startswith(prefix) and len(str(c)) > len(prefix)}


def _per_action_propensities(df: pd.DataFrame, action: str, prefix: str) -> tuple[pd.Series, dict[str, str]]:
    """The logged action's probability on each row, read from the column ``prefix + action``."""
    cols = propensity_columns(df.columns, prefix)
    if not cols:
        raise MethodRefusal(f"{NO_PROPENSITIES}: no column starts with `{prefix}` (expected one per action, "
                            f"e.g. `{prefix}<action>`)")
    labels = pd.Series(_labels(df[action].dropna()), index=df[action].dropna().index)
    lacking = sorted(set(labels) - set(cols))
    if lacking:
        raise MethodRefusal(f"logged action(s) {', '.join(lacking[:10])} have no propensity column "
                            + ", ".join(f"`{prefix}{a}`" for a in lacking[:10])
                            + f" (found: {', '.join(cols.values())}); every logged action needs its logging probability")
    p = pd.Series(np.nan, index=df.index)
    for lab, col in cols.items():
        rows = labels.index[labels.to_numpy() == lab]
        p.loc[rows] = pd.to_numeric(df.loc[rows, col], errors="coerce")
    return p, cols


def estimate_policy_value(df: pd.DataFrame, *, action: str, reward: str, propensity: str | None, policy: dict,
                          context: Sequence[str] = (), seed: int = 0,
                          propensity_prefix: str | None = None) -> EstimateResult:
    """Value of ``policy`` (plain form, ``rules.py``) on the logs ``df`` (module doc).

    The logging probabilities come either from one column holding the logged action's probability
    (``propensity``) or, with ``propensity_prefix``, from one column per action (``prefix + action``):
    the logged action's column weights the row (IPS), and the candidate's action's column gives the
    overlap check its exact share of rare choices (no inverse weighting needed)."""
    context = list(dict.fromkeys(context))
    prop_cols: dict[str, str] = {}
    if propensity_prefix is not None:
        p_all, prop_cols = _per_action_propensities(df, action, propensity_prefix)
        propensity = f"{propensity_prefix}<action>"
    elif propensity is None or propensity not in df.columns:
        raise MethodRefusal(f"{NO_PROPENSITIES} and pass it as --propensity-prefix (one column per action) "
                            "or --propensity (the logged action's)")
    else:
        p_all = pd.to_numeric(df[propensity], errors="coerce")
    if p_all.notna().sum() == 0:
        raise MethodRefusal(f"no logging propensities: column `{propensity}` has no numeric values")
    keep = df[action].notna() & df[reward].notna() & p_all.notna()
    dropped = int((~keep).sum())
    d = df.loc[keep]
    p = p_all[keep].to_numpy(dtype=float)
    if ((p <= 0) | (p > 1)).any():
        bad = int(((p <= 0) | (p > 1)).sum())
        raise MethodRefusal(f"`{propensity}`: {bad:,} logging propensities outside (0, 1]; a logged action had "
                            "a positive probability of being taken, at most 1")
    n = len(d)
    if n < MIN_ROWS:
        raise MethodRefusal(f"{n} logged rows with action, reward and propensity; at least {MIN_ROWS} are needed")
    r = pd.to_numeric(d[reward], errors="coerce").to_numpy(dtype=float)
    if np.isnan(r).any():
        raise MethodRefusal(f"`{reward}` holds values that are not numbers")
    a = _labels(d[action])
    pi = choose_actions(d, policy)
    logged_labels = sorted(set(a))
    never = sorted(set(pi) - set(logged_labels))
    if never:
        raise MethodRefusal(
            f"the candidate takes action(s) {', '.join(never)} that the logger never took (logged actions: "
            f"{', '.join(logged_labels[:20])}); the logs say nothing about their rewards")
    labels = logged_labels
    idx = {lab: j for j, lab in enumerate(labels)}
    ai = np.fromiter((idx[x] for x in a), dtype=int, count=n)
    pii = np.fromiter((idx[x] for x in pi), dtype=int, count=n)
    match = ai == pii
    w = match / p

    Q = cross_fitted_rewards(context_matrix(d, context), a, r, labels, seed=seed)
    rows_ = np.arange(n)
    q_pi, q_a = Q[rows_, pii], Q[rows_, ai]
    phi_dr = q_pi + w * (r - q_a)
    ips = _row("ips", w * r)
    snips_v = float((w * r).sum() / w.sum()) if w.sum() > 0 else float("nan")
    snips = _row("snips", w * (r - snips_v) / max(w.mean(), 1e-300) + snips_v, snips_v)
    dr = _row("doubly_robust", phi_dr)
    logged = _row("logged_mean", r)
    diff = _row("dr_minus_logged", phi_dr - r)
    p_value = float(2 * stats.norm.sf(abs(diff["value"] / diff["std_error"]))) if diff["std_error"] > 0 else float("nan")
    ess = float(w.sum() ** 2 / (w ** 2).sum()) if (w > 0).any() else 0.0
    if prop_cols and set(pi) <= set(prop_cols):  # every row's probability of the candidate's action is logged
        p_pi = np.empty(n)
        for lab in set(pi):
            p_pi[pi == lab] = pd.to_numeric(d[prop_cols[lab]], errors="coerce").to_numpy(dtype=float)[pi == lab]
        rare_share = float(np.nanmean(np.nan_to_num(p_pi, nan=0.0) < RARE_P))
        rare_how = "of the candidate's choices (read from the logged per-action probabilities)"
    else:
        rare_share = float(min(1.0, (w * (p < RARE_P)).mean()))
        rare_how = "of the candidate's choices (estimated by inverse weighting)"
    share = pd.Series(pi).value_counts(normalize=True)

    diagnostics = [
        Diagnostic("logged_rows", float(n), float(MIN_ROWS), True,
                   f"{n:,} logged rows ({dropped:,} dropped for a missing action, reward or propensity); the "
                   f"candidate agrees with the logged action on {int(match.sum()):,} of them", "error", "sample_size"),
        Diagnostic("rare_action_share", rare_share, RARE_SHARE, rare_share <= RARE_SHARE,
                   f"{rare_share:.1%} {rare_how} are actions the logger took with "
                   f"probability < {RARE_P:g} there" + ("" if rare_share <= RARE_SHARE else
                   "; the value leans on few, heavily weighted rows: read the interval with care"),
                   "warn", "policy_overlap"),
        Diagnostic("effective_sample_size", ess, ESS_SHARE * n, ess >= ESS_SHARE * n,
                   f"Effective sample size {ess:,.0f} of {n:,} rows ({ess / n:.1%})" + (
                       "" if ess >= ESS_SHARE * n else
                       f", below {ESS_SHARE:.0%}: the candidate differs so much from the logger that few rows "
                       "inform its value"), "warn", "policy_overlap"),
    ]
    return EstimateResult(
        method="logged_policy_evaluation", estimand="policy_value", outcome=reward,
        estimate=dr["value"], std_error=dr["std_error"], ci_low=dr["ci_low"], ci_high=dr["ci_high"],
        p_value=p_value, n_treated=int(match.sum()), n_control=int(n - match.sum()),
        naive_estimate=logged["value"], diagnostics=diagnostics,
        extras={"ips": ips["value"], "snips": snips_v, "logged_mean": logged["value"],
                "effective_sample_size": ess, "improvement": diff["value"],
                "estimators": pd.DataFrame([dr, ips, snips, logged, diff]),
                "candidate_action_share": {str(k): float(v) for k, v in share.items()},
                "context": context, "propensity_columns": prop_cols},
        ci_method=("normal intervals from each estimator's influence function (sandwich SE); doubly robust with a "
                   f"per-action linear reward model cross-fitted over {FOLDS} folds; p-value: candidate value "
                   "vs the logged mean reward"),
    )
