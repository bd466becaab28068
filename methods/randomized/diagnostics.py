"""The randomization checks, measured on the cells: sample size, survivorship, sample ratio, balance.

Why these three: randomization is what makes the difference between arms causal, and it fails in
ways the estimate cannot see from the inside. A **sample-ratio mismatch** (the arms' sizes differ
from the design's shares beyond chance) means assignment or logging lost conversations in one
arm — the classic silent A/B-test failure. **Imbalance on pre-period covariates** beyond chance
means the assignment was not random (a routing rule, a bug keyed on the customer). Both are
judged on every assigned conversation (``n_all``), not only those with an outcome: outcome
missingness caused by the arm is the survivorship check's business, not randomization's.

Thresholds are those of experimentation practice: SRM fails at p < 0.001 (a false alarm in one
experiment of a thousand), balance at a family-wise 0.001 split over the tests (Bonferroni), so a
sound experiment almost never fails and a broken one of usual size fails almost always
(``tests/test_randomized_checks.py`` measures both over seeds).
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from methods.randomized.cells import Cells
from methods.result import Diagnostic, MethodRefusal

MIN_ARM = 50  # conversations with an outcome per arm below which the method refuses
SRM_ALPHA = 0.001
BALANCE_ALPHA = 0.001  # family-wise, split over the balance tests
MAX_MISSING_GAP = 0.05  # outcome-missing share two arms may differ by (the pre-flight's rule for other designs)
SMD_NOTE = 0.1  # |SMD| beyond which the message names the covariate as visibly different


def sample_size(counts: dict[str, int], outcome: str) -> Diagnostic:
    """Refuses (``MethodRefusal``) when an arm has fewer than ``MIN_ARM`` conversations with an outcome."""
    small = {a: c for a, c in counts.items() if c < MIN_ARM}
    shown = ", ".join(f"{a}: {c}" for a, c in counts.items())
    if small:
        raise MethodRefusal(f"too few conversations with `{outcome}` in arm(s) "
                            + ", ".join(f"`{a}` ({c})" for a, c in small.items())
                            + f"; each arm needs at least {MIN_ARM}, so wait for more traffic (arms: {shown}).")
    return Diagnostic("sample_size", float(min(counts.values())), float(MIN_ARM), True,
                      f"conversations with `{outcome}` per arm: {shown}.", "error", check="sample_size")


def survivorship(counts_all: dict[str, int], counts_outcome: dict[str, int], outcome: str) -> Diagnostic:
    """Outcome-missing share per arm; fails when two arms differ by more than ``MAX_MISSING_GAP``.

    The arm can change who stays to be measured (a survey answered more after a good conversation),
    and then the arms' measured conversations are no longer comparable. Same rule as the question
    layer's pre-flight for the other designs (5 points)."""
    miss = {a: 1.0 - counts_outcome.get(a, 0) / counts_all[a] for a in counts_all if counts_all[a]}
    hi, lo = max(miss, key=miss.get), min(miss, key=miss.get)
    gap = miss[hi] - miss[lo]
    ok = gap <= MAX_MISSING_GAP
    msg = (f"`{outcome}` is missing for " + ", ".join(f"{m:.1%} in arm `{a}`" for a, m in miss.items()) + ". "
           + ("" if ok else f"Arm `{hi}` loses {gap:.1%} more of its outcomes than `{lo}`: the assignment may change "
              "who is measured (survivorship), so compare only with an outcome recorded for everyone."))
    return Diagnostic("survivorship_missing_outcome_gap", gap, MAX_MISSING_GAP, ok, msg.strip(), "warn",
                      check="survivorship")


def sample_ratio(counts: dict[str, int], shares: dict[str, float] | None, assignment: str) -> Diagnostic:
    """Pearson chi-square of the arms' sizes against the design's shares (equal shares by default)."""
    arms = list(counts)
    if shares:
        unknown = [a for a in arms if a not in shares]
        if unknown:
            raise MethodRefusal(f"the design shares name arms {', '.join(shares)} but `{assignment}` also has "
                                + ", ".join(unknown) + ": give a share for every arm")
        arms = list(dict.fromkeys([*arms, *shares]))
        total_share = sum(shares[a] for a in arms)
        expected_share = {a: shares[a] / total_share for a in arms}
        how = "the design shares " + ", ".join(f"{a} {expected_share[a]:.1%}" for a in arms)
    else:
        expected_share = {a: 1.0 / len(arms) for a in arms}
        how = f"equal shares ({1.0 / len(arms):.1%} each; give the design's shares if they were not equal)"
    observed = np.array([counts.get(a, 0) for a in arms], dtype=float)
    total = observed.sum()
    expected = np.array([expected_share[a] for a in arms]) * total
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    df = len(arms) - 1
    p = float(stats.chi2.sf(chi2, df))
    ok = p >= SRM_ALPHA
    seen = ", ".join(f"{a} {int(o):,} ({o / total:.1%})" for a, o in zip(arms, observed))
    msg = (f"arm sizes {seen} against {how}: chi-square {chi2:.2f} on {df} df, p = {p:.2g}. "
           + ("Consistent with the design." if ok else
              "Sample-ratio mismatch: conversations were lost or added in some arm (assignment, logging or "
              "eligibility differs between arms), so the arms are no longer comparable: find the cause before "
              "using the estimate."))
    return Diagnostic("sample_ratio_mismatch", p, SRM_ALPHA, ok, msg, "error", check="sample_ratio")


def balance(cells: Cells, arms: list[str], baseline: str) -> list[Diagnostic]:
    """One diagnostic per pre-period covariate: is it independent of the arm beyond chance?

    Text covariates: Pearson chi-square of arm × level counts. Numbers: a heteroskedasticity-robust
    Wald test that every arm has the baseline's mean (among rows where the value is present), and
    the missing share as a two-level covariate when some values are missing. The covariate's p-value
    is its smallest; it fails below ``BALANCE_ALPHA`` / (number of tests). The message gives the
    largest standardized mean difference against the baseline, which says how large the imbalance is.
    """
    if not cells.covariates:
        return [Diagnostic("randomization_balance", None, None, True,
                           "no pre-period covariates given, so the arms could not be compared on anything known "
                           "before assignment: name some (`covariates`) to check that randomization held.",
                           "error", check="randomization_balance", tested=False)]
    t = cells.table
    arm = t["arm"].to_numpy()
    n_all = t["n_all"].to_numpy(float)
    tests: list[tuple[str, float, float, str]] = []  # covariate, p, |smd|, what
    for i, c in enumerate(cells.covariates):
        if cells.numeric[c]:
            m = t[f"m{i}"].to_numpy(float)
            present = m == 0
            p, smd = _numeric_test(t[f"v{i}"].to_numpy(float)[present], arm[present], n_all[present], arms, baseline)
            if p is not None:
                tests.append((c, p, smd, "mean"))
            if m.any() and not m.all():
                p, smd = _categorical_test(m.astype(int).astype(str), arm, n_all, arms, baseline)
                if p is not None:
                    tests.append((c, p, smd, "missing share"))
        else:
            p, smd = _categorical_test(t[f"v{i}"].astype(str).to_numpy(), arm, n_all, arms, baseline)
            if p is not None:
                tests.append((c, p, smd, "level shares"))
    threshold = BALANCE_ALPHA / max(len(tests), 1)
    out = []
    for c in cells.covariates:
        mine = [x for x in tests if x[0] == c]
        if not mine:
            out.append(Diagnostic(f"randomization_balance_{c}", None, threshold, True,
                                  f"`{c}` takes one value in the compared rows: nothing to compare.", "error",
                                  check="randomization_balance", tested=False))
            continue
        p = min(x[1] for x in mine)
        smd = max(x[2] for x in mine)
        ok = p >= threshold
        what = ", ".join(f"{x[3]} p = {x[1]:.2g}" for x in mine)
        msg = (f"`{c}` across arms: {what}; largest |SMD| against `{baseline}` {smd:.3f}"
               + (" (visible)" if smd >= SMD_NOTE else "") + ". "
               + ("Alike up to chance." if ok else
                  f"Differs beyond chance (p < {threshold:.2g}, family-wise {BALANCE_ALPHA}): assignment depended "
                  "on something known before the conversation, so the arms may differ in unmeasured ways too."))
        out.append(Diagnostic(f"randomization_balance_{c}", p, threshold, ok, msg, "error",
                              check="randomization_balance"))
    return out


def _categorical_test(values: np.ndarray, arm: np.ndarray, w: np.ndarray, arms: list[str], baseline: str):
    levels = sorted(set(values))
    if len(levels) < 2:
        return None, 0.0
    table = np.zeros((len(arms), len(levels)))
    ai = {a: i for i, a in enumerate(arms)}
    li = {lv: j for j, lv in enumerate(levels)}
    np.add.at(table, (np.array([ai[a] for a in arm]), np.array([li[v] for v in values])), w)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return None, 0.0
    _, p, _, _ = stats.chi2_contingency(table, correction=False)
    shares = table / table.sum(axis=1, keepdims=True)
    b = shares[ai[baseline]]
    smd = 0.0
    for a in arms:
        if a == baseline:
            continue
        s = shares[ai[a]]
        pooled = np.sqrt((s * (1 - s) + b * (1 - b)) / 2)
        with np.errstate(divide="ignore", invalid="ignore"):
            d = np.where(pooled > 0, np.abs(s - b) / pooled, 0.0)
        smd = max(smd, float(d.max()))
    return float(p), smd


def _numeric_test(x: np.ndarray, arm: np.ndarray, w: np.ndarray, arms: list[str], baseline: str):
    means, vars_, ns = {}, {}, {}
    for a in arms:
        sel = arm == a
        n = w[sel].sum()
        if n < 2:
            return None, 0.0
        mu = float((w[sel] * x[sel]).sum() / n)
        means[a], ns[a] = mu, n
        vars_[a] = float((w[sel] * (x[sel] - mu) ** 2).sum() / (n - 1))
    others = [a for a in arms if a != baseline]
    if all(vars_[a] == 0 for a in arms):
        return None, 0.0
    diff = np.array([means[a] - means[baseline] for a in others])
    V = np.diag([vars_[a] / ns[a] for a in others]) + vars_[baseline] / ns[baseline]
    wald = float(diff @ np.linalg.pinv(V) @ diff)
    p = float(stats.chi2.sf(wald, len(others)))
    smd = max(abs(means[a] - means[baseline]) / np.sqrt((vars_[a] + vars_[baseline]) / 2)
              if vars_[a] + vars_[baseline] > 0 else 0.0 for a in others)
    return p, float(smd)


def weak_instrument(f_stat: float, threshold: float, arm: str, baseline: str, check: str | None) -> Diagnostic:
    """First-stage strength: a robust F below 10 (Staiger–Stock) biases 2SLS towards the as-treated
    comparison and makes its normal interval wrong; the Anderson–Rubin interval stays valid."""
    ok = f_stat >= threshold
    msg = (f"first-stage F (robust Wald of assignment `{arm}` vs `{baseline}` on uptake) = {f_stat:.1f}"
           + (f" ≥ {threshold:g}: assignment moves uptake strongly enough." if ok else
              f" < {threshold:g}: weak instrument — assignment barely changed who took up the treatment, so the "
              "Wald/2SLS estimate is biased towards the as-treated difference and its interval is too narrow; "
              "read the Anderson–Rubin interval (anderson_rubin_ci) or report the intent-to-treat effect."))
    return Diagnostic("first_stage_f", f_stat, threshold, ok, msg, "error" if check else "warn", check=check)
