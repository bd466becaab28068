"""Left-out start signals: do they push the treatment, and would adjusting for them move the answer?

Two checks, computed after the method has run (the second needs its interval):

* ``hidden_confounder_risk`` (WARN): a start-of-conversation signal outside the covariates still
  predicts the treatment once the covariates are accounted for. The treatment is residualized on
  covariate dummies (a linear probability model on covariate × candidate cells), and the candidate
  is flagged when its levels' mean residuals spread by more than ``CONFOUNDER_GAP`` *and* differ by
  more than noise (a chi-square test across levels, p < ``NOISE_ALPHA``). Without the noise test a
  many-level signal (``memory_items``: 0, 1, …, 17 items) showed spreads of 10–17% from a few
  dozen conversations per level although it pushed the treatment only through
  ``memory_has_prior_session``, a covariate derived from it.
* ``omitted_confounder`` (ERROR, blocks): a left-out signal that predicts both the treatment and
  the outcome moves the estimate. The regression-adjusted effect of the treatment
  (outcome ~ treatment + covariate dummies, weighted least squares on the same cells) is refitted
  with the candidate's dummies added; the change in the treatment coefficient is omitted-variable
  bias in the usual sense (it is zero unless the candidate is associated with both treatment and
  outcome given the covariates). The check fails when the estimate shifted by that amount leaves
  the method's own 95% interval: the interval would have excluded the number adjusting for the
  signal gives. That is the case of matching on ``hour_of_day`` only while intent drives both the
  email timing and resolution (0.123 against a truth of 0.028).

Which signals are candidates is the backdoor criterion on the question's causal graph
(``convocausal/questions/graph.py``): start signals the covariates leave unadjusted. All queries
aggregate in DuckDB (one ``GROUP BY`` per candidate: covariate levels × candidate level ×
treatment, with counts and outcome sums); only the cell table reaches numpy.
"""

from __future__ import annotations

import contextvars
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pyarrow.compute as pc
from scipy import stats

from configs.questions import Question
from methods.result import Diagnostic, EstimateResult
from methods.sql import quote_ident as q

CONFOUNDER_GAP = 0.10  # treatment-rate spread across a left-out signal's levels that flags it
NOISE_ALPHA = 0.01  # the spread must also differ from noise at this level
MAX_LEVELS = 30  # levels beyond the 30 most frequent are pooled, so designs stay small
MIN_LEVEL_N = 30  # levels thinner than this do not enter the spread


@dataclass(frozen=True)
class CandidateScore:
    name: str
    treatment_gap: float  # spread of mean treatment residual across the candidate's levels
    treatment_p: float  # chi-square p-value that those residual means differ only by noise
    shift: float  # change in the regression-adjusted effect when the candidate is added
    base_effect: float  # regression-adjusted effect with the covariates only

    @property
    def predicts_treatment(self) -> bool:
        return self.treatment_gap > CONFOUNDER_GAP and self.treatment_p < NOISE_ALPHA


# From this many candidates on, the rows are aggregated once (:func:`candidate_cells`): measured at 10M rows,
# two candidates cost the same either way (4.6 s against 5.0 s: the hash aggregation over the string
# keys dominates, not the scan), and every further candidate costs a full aggregation less.
PRE_AGGREGATE_FROM = 3
# Columns of the pre-aggregated cell table (no signal name starts with an underscore): the treatment, and
# per outcome (by position in the list it was built for) the rows with that outcome and the outcome's sum.
_D = "__d"


def _n(i: int) -> str:
    return f"__n{i}"


def _sum_y(i: int) -> str:
    return f"__sum_y{i}"


def _outcome_aggregates(outcomes: list[str]) -> str:
    """Per outcome, the rows where it is known and its sum: ``count(y)`` counts exactly the rows the one-outcome
    scan (``WHERE y IS NOT NULL``) kept, so sharing a scan between outcomes changes no cell."""
    return ", ".join(f"count({q(y)}) AS {_n(i)}, sum(CAST({q(y)} AS DOUBLE)) AS {_sum_y(i)}"
                     for i, y in enumerate(outcomes))


def _any_known(outcomes: list[str]) -> str:
    return "(" + " OR ".join(f"{q(y)} IS NOT NULL" for y in outcomes) + ")"


def candidate_cells(con, question: Question, candidates: list[str], relation: str, where: str, params: list,
                    outcomes: list[str] | None = None) -> str:
    """One pass over the rows: a temp table of covariates × every candidate × treatment with, per outcome of
    ``outcomes`` (default: the question's), the rows where it is known and its sum. Each candidate's cells are
    then a ``GROUP BY`` of this table, not another scan of every row (at 10M rows each scan took 1.6 s; a
    question checks 2–10 candidates, twice with a guardrail). Returns the table's name; the caller drops it."""
    outcomes = outcomes or [question.outcome]
    name = f"_confounding_cells_{uuid.uuid4().hex[:12]}"
    t = q(question.treatment)
    keys = ", ".join(q(k) for k in dict.fromkeys([*question.covariates, *candidates]))
    con.execute(
        f"CREATE TEMP TABLE {name} AS SELECT {keys}, CAST({t} AS DOUBLE) AS {_D}, {_outcome_aggregates(outcomes)} "
        f"FROM {relation} WHERE {t} IS NOT NULL AND {_any_known(outcomes)} AND {where} GROUP BY ALL",
        params,
    )
    return name


@dataclass(frozen=True)
class _Cells:
    """One candidate's cells (covariates × candidate × treatment) as integer level codes, shared by outcomes.

    ``codes`` holds, per key column, the code of the cell's level in the order of ``level_names`` (levels are
    the stored values printed as text, a missing value is a level of its own); pooling the rare levels is
    per outcome (:meth:`pooled`), because which rows count depends on where the outcome is known."""
    codes: np.ndarray  # keys × cells, int64
    n_levels: np.ndarray  # per key
    level_names: list[list]  # per key: the printed value of each code (None: missing)
    d: np.ndarray  # the treatment of each cell
    n: dict[str, np.ndarray]  # per outcome: rows of the cell where it is known
    sum_y: dict[str, np.ndarray]  # per outcome: its sum over those rows

    @classmethod
    def fetch(cls, con, sql: str, params: list, n_keys: int, outcomes: list[str]) -> _Cells:
        table = con.sql(sql, params=params or None).to_arrow_table()
        codes, n_levels, names = [], [], []
        for i in range(n_keys):
            encoded = pc.dictionary_encode(table.column(f"k{i}").combine_chunks(), null_encoding="encode")
            codes.append(encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64))
            names.append(encoded.dictionary.to_pylist())
            n_levels.append(len(names[-1]))
        column = lambda c: table.column(c).to_numpy().astype(float)
        return cls(np.vstack(codes) if codes else np.zeros((0, table.num_rows), np.int64),
                   np.array(n_levels, dtype=np.int64), names, column("d"),
                   {y: column(_n(i)) for i, y in enumerate(outcomes)},
                   {y: np.nan_to_num(column(_sum_y(i))) for i, y in enumerate(outcomes)})

    def pooled(self, outcome: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(codes, levels per key, d, n, sum_y) of the cells where ``outcome`` is known, with every key's levels
        beyond its ``MAX_LEVELS`` most frequent (by those rows) pooled into one. Code 0 is then the most
        frequent level; ties are broken by the printed value, so the coding does not depend on the order the
        cells arrive in (the cells are also sorted by their codes, so sums are taken in one order)."""
        n = self.n[outcome]
        keep = n > 0
        codes, d, n, s = self.codes[:, keep], self.d[keep], n[keep], self.sum_y[outcome][keep]
        out, sizes = np.empty_like(codes), []
        for i, names in enumerate(self.level_names):
            totals = np.bincount(codes[i], weights=n, minlength=len(names))
            order = sorted(range(len(names)), key=lambda c: (-totals[c], names[c] is None, str(names[c])))
            rank = np.empty(len(names), dtype=np.int64)
            rank[order] = np.minimum(np.arange(len(names)), MAX_LEVELS)
            out[i] = rank[codes[i]]
            sizes.append(min(len(names), MAX_LEVELS + 1))
        treated = np.unique(d, return_inverse=True)[1]
        order = np.argsort(np.ravel_multi_index((*out, treated), (*sizes, int(treated.max(initial=0)) + 1)),
                           kind="stable")
        return out[:, order], np.array(sizes, dtype=np.int64), d[order], n[order], s[order]


def _cells_sql(question: Question, candidate: str, relation: str, where: str, outcomes: list[str],
               pre_aggregated: bool) -> str:
    """Covariates × candidate × treatment with each outcome's known rows and sum, grouped on the stored values
    first and cast to text after: the casts then run on the cells, not on every row (two values that print
    alike are merged by the outer ``GROUP BY``, as casting first would)."""
    t = q(question.treatment)
    keys = [*question.covariates, candidate]
    raw = ", ".join(f"{q(k)} AS k{i}" for i, k in enumerate(keys))
    cast = ", ".join(f"CAST(k{i} AS VARCHAR) AS k{i}" for i in range(len(keys)))
    sums = ", ".join(f"sum({_n(i)}) AS {_n(i)}, sum({_sum_y(i)}) AS {_sum_y(i)}" for i in range(len(outcomes)))
    if pre_aggregated:  # ``relation`` is a candidate_cells table built for these outcomes
        inner = f"SELECT {raw}, {_D} AS d, {sums} FROM {relation} GROUP BY ALL"
    else:
        inner = (f"SELECT {raw}, CAST({t} AS DOUBLE) AS d, {_outcome_aggregates(outcomes)} FROM {relation} "
                 f"WHERE {t} IS NOT NULL AND {_any_known(outcomes)} AND {where} GROUP BY ALL")
    return f"SELECT {cast}, d, {sums} FROM ({inner}) GROUP BY ALL"


def score_candidate(con, question: Question, candidate: str, relation: str, where: str, params: list,
                    pre_aggregated: bool = False, outcomes: list[str] | None = None) -> CandidateScore:
    """Both measurements for one left-out signal, from one aggregation (of the rows, or with
    ``pre_aggregated`` of a :func:`candidate_cells` table built for ``outcomes``, whose counts and sums are
    added up). Scores the question's own outcome; :func:`score_candidates` scores several from one scan."""
    outcomes = outcomes or [question.outcome]
    cells = _fetch(con, question, candidate, relation, where, params, outcomes, pre_aggregated)
    return _score(cells, candidate, question.outcome)


def _fetch(con, question, candidate, relation, where, params, outcomes, pre_aggregated) -> _Cells:
    sql = _cells_sql(question, candidate, relation, where, outcomes, pre_aggregated)
    return _Cells.fetch(con, sql, [] if pre_aggregated else params, len(question.covariates) + 1, outcomes)


def _score(cells: _Cells, candidate: str, outcome: str) -> CandidateScore:
    codes, sizes, d, n, sum_y = cells.pooled(outcome)
    if len(d) == 0 or len(np.unique(d)) < 2:
        return CandidateScore(candidate, 0.0, 1.0, 0.0, float("nan"))
    gap, p = _treatment_gap(codes, sizes, d, n)
    base, shift = _effect_shift(codes, sizes, d, n, sum_y)
    return CandidateScore(candidate, gap, p, shift, base)


def _onehot_normal_equations(codes: np.ndarray, sizes: np.ndarray, w: np.ndarray, targets: list[np.ndarray],
                             dense: np.ndarray | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
    """XᵀWX and XᵀWy of X = [dense columns, intercept, drop-first dummies of every key], from the codes.

    Why not the design matrix: the cell tables of a 10M-row store have 10⁵–10⁶ rows and 40–70 dummy columns;
    building the sparse dummies and their products took most of a candidate's second. Every entry between two
    dummy blocks is a weighted count of a pair of levels (one ``bincount`` per pair of keys), so the Gram
    matrix costs keys² passes over integer codes. Which level is dropped (code 0) does not matter: only the
    treatment's coefficient and the fitted values are used, and both depend on the span, not the coding."""
    dense = np.zeros((len(w), 0)) if dense is None else dense
    k = len(sizes)
    widths = [dense.shape[1], 1, *(int(s) - 1 for s in sizes)]
    starts = np.concatenate([[0], np.cumsum(widths)])
    p = int(starts[-1])
    gram = np.zeros((p, p))
    rhs = [np.zeros(p) for _ in targets]
    e, one = slice(0, widths[0]), starts[1]
    dw = dense * w[:, None]
    gram[e, e] = dw.T @ dense
    gram[e, one] = gram[one, e] = dw.sum(axis=0)
    gram[one, one] = w.sum()
    for r, y in zip(rhs, targets):
        r[e] = dw.T @ y
        r[one] = w @ y
    for i in range(k):
        bi = slice(starts[2 + i], starts[3 + i])
        L = int(sizes[i])
        counts = np.bincount(codes[i], weights=w, minlength=L)[1:]
        gram[one, bi] = gram[bi, one] = counts
        gram[bi, bi] = np.diag(counts)
        for c in range(dense.shape[1]):
            gram[c, bi] = gram[bi, c] = np.bincount(codes[i], weights=dw[:, c], minlength=L)[1:]
        for r, y in zip(rhs, targets):
            r[bi] = np.bincount(codes[i], weights=w * y, minlength=L)[1:]
        for j in range(i + 1, k):
            bj = slice(starts[2 + j], starts[3 + j])
            Lj = int(sizes[j])
            pair = np.bincount(codes[i] * Lj + codes[j], weights=w, minlength=L * Lj).reshape(L, Lj)[1:, 1:]
            gram[bi, bj] = pair
            gram[bj, bi] = pair.T
    return gram, rhs


def _solve(gram: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """The minimum-norm solution of XᵀWX b = XᵀWy: the coefficients ``lstsq`` on the weighted rows gives, also
    where dummies are collinear (a candidate level that coincides with a covariate level)."""
    beta, *_ = np.linalg.lstsq(gram, rhs, rcond=None)
    return beta


def _fitted(beta: np.ndarray, codes: np.ndarray, sizes: np.ndarray, n_dense: int = 0,
            dense: np.ndarray | None = None) -> np.ndarray:
    out = np.full(codes.shape[1], beta[n_dense])
    if n_dense:
        out += dense @ beta[:n_dense]
    at = n_dense + 1
    for i, size in enumerate(sizes):
        out += np.concatenate([[0.0], beta[at:at + size - 1]])[codes[i]]
        at += size - 1
    return out


def _treatment_gap(codes: np.ndarray, sizes: np.ndarray, d: np.ndarray, n: np.ndarray) -> tuple[float, float]:
    """Spread and chi-square p of the candidate's mean treatment residual beyond the covariates."""
    key = np.ravel_multi_index(tuple(codes), tuple(int(s) for s in sizes))
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    n_cell = np.bincount(inverse, weights=n)
    rate = np.bincount(inverse, weights=n * d) / n_cell
    cov, cand = codes[:-1, first], codes[-1, first]
    gram, (rhs,) = _onehot_normal_equations(cov, sizes[:-1], n_cell, [rate])
    resid = rate - _fitted(_solve(gram, rhs), cov, sizes[:-1])
    # Residual sums and squared-residual sums per candidate level (individual 0/1 outcomes:
    # a cell's rows contribute n·(rate(1 − rate) + resid²) to the squared sum).
    L = int(sizes[-1])
    lv_n = np.bincount(cand, weights=n_cell, minlength=L)
    lv_sum = np.bincount(cand, weights=resid * n_cell, minlength=L)
    lv_sq = np.bincount(cand, weights=n_cell * (rate * (1 - rate) + resid**2), minlength=L)
    thick = lv_n >= MIN_LEVEL_N
    if thick.sum() < 2:
        return 0.0, 1.0
    lv_n, lv_sum, lv_sq = lv_n[thick], lv_sum[thick], lv_sq[thick]
    mean = lv_sum / lv_n
    var = np.clip(lv_sq / lv_n - mean**2, 1e-12, None)
    grand = float(lv_sum.sum() / lv_n.sum())
    chi2 = float((((mean - grand) ** 2) / (var / lv_n)).sum())
    p = float(stats.chi2.sf(chi2, len(lv_n) - 1))
    return float(mean.max() - mean.min()), p


def _effect_shift(codes: np.ndarray, sizes: np.ndarray, d: np.ndarray, n: np.ndarray,
                  sum_y: np.ndarray) -> tuple[float, float]:
    """Treatment coefficient of outcome ~ d + covariate dummies, and its change when the
    candidate's dummies are added (cell-level WLS: exact row-level OLS coefficients). The covariates-only
    normal equations are the leading block of the full ones (the candidate's dummies come last)."""
    ybar = sum_y / n
    gram, (rhs,) = _onehot_normal_equations(codes, sizes, n, [ybar], dense=d[:, None])
    p0 = gram.shape[0] - (int(sizes[-1]) - 1)
    b0 = float(_solve(gram[:p0, :p0], rhs[:p0])[0])
    b1 = float(_solve(gram, rhs)[0])
    return b0, b1 - b0


# Cells fetched for several outcomes at once, kept for the rest of one :func:`shared_scans` block.
_SHARED: contextvars.ContextVar[dict | None] = contextvars.ContextVar("convocausal_confounding_cells", default=None)


@contextmanager
def shared_scans() -> Iterator[None]:
    """Within this block a candidate's cells, once fetched for a question and its guardrails, are reused.

    Why: a guardrail is the same question with another outcome (``outcomes.py`` answers it again), and its
    confounding checks group the same rows by the same keys; at 10M rows the scan is 0.3–0.9 s per candidate.
    The primary question's scan carries every guardrail outcome's counts and sums (``count(y)``: exactly the
    rows a scan of that outcome alone keeps), and the guardrail's check reads them from here. Nested blocks
    share the outermost one; leaving it drops everything kept."""
    if _SHARED.get() is not None:
        yield
        return
    token = _SHARED.set({})
    try:
        yield
    finally:
        _SHARED.reset(token)


def _cells_for(con, question: Question, candidates: list[str], relation: str, where: str, params: list,
               outcomes: list[str]) -> list[_Cells]:
    """Each candidate's cells for ``outcomes``: kept ones where a :func:`shared_scans` block has them, the
    rest from one scan each (or, from ``PRE_AGGREGATE_FROM`` candidates on, one scan for all)."""
    shared = _SHARED.get()
    keys = {c: (id(con), relation, question.treatment, tuple(question.covariates), c, where, tuple(params))
            for c in candidates}
    kept = {c: shared[keys[c]][1] for c in candidates
            if shared is not None and keys[c] in shared and question.outcome in shared[keys[c]][1].n}
    missing = [c for c in candidates if c not in kept]
    if len(missing) >= PRE_AGGREGATE_FROM:
        table = candidate_cells(con, question, missing, relation, where, params, outcomes)
        try:
            fetched = {c: _fetch(con, question, c, table, "TRUE", [], outcomes, True) for c in missing}
        finally:
            con.execute(f"DROP TABLE IF EXISTS {table}")
    else:
        fetched = {c: _fetch(con, question, c, relation, where, params, outcomes, False) for c in missing}
    if shared is not None and len(outcomes) > 1:
        shared.update({keys[c]: (con, cells) for c, cells in fetched.items()})  # con kept: its id stays unique
    return [kept.get(c) or fetched[c] for c in candidates]


def confounding_diagnostics(con, question: Question, candidates: list[str], relation: str, where: str,
                            params: list, result: EstimateResult | None,
                            also_outcomes: list[str] | tuple = ()) -> list[Diagnostic]:
    """``hidden_confounder_risk`` and ``omitted_confounder`` for the left-out start signals.

    ``also_outcomes`` (the guardrails' outcomes) ride along in the same scans, for the guardrails' own
    checks to read inside a :func:`shared_scans` block."""
    outcomes = list(dict.fromkeys([question.outcome, *also_outcomes]))
    cells = _cells_for(con, question, candidates, relation, where, params, outcomes)
    scores = [_score(c, name, question.outcome) for c, name in zip(cells, candidates)]
    out = [_risk_diagnostic(scores, len(candidates))]
    if result is not None and np.isfinite(result.ci_low) and np.isfinite(result.ci_high):
        out.append(_omitted_diagnostic(scores, result))
    return out


def _risk_diagnostic(scores: list[CandidateScore], n_candidates: int) -> Diagnostic:
    flagged = [s for s in scores if s.predicts_treatment]
    worst = max((s.treatment_gap for s in flagged), default=0.0)
    if flagged:
        names = ", ".join(f"{s.name} (shifts the treatment rate by up to {s.treatment_gap:.0%} beyond the "
                          f"covariates, p = {s.treatment_p:.2g})" for s in flagged)
        msg = (f"signals known at conversation start but not in the covariates predict the treatment: {names}. "
               "Add them, or say why they cannot affect the outcome (the `omitted_confounder` check says "
               "whether adjusting for them would move the estimate).")
    else:
        msg = (f"none of the {n_candidates} start-of-conversation signals outside the covariates predicts the "
               f"treatment beyond noise once the covariates are accounted for (spread > {CONFOUNDER_GAP:.0%} "
               f"with p < {NOISE_ALPHA}); reasons not in the logs can still confound: see the "
               "`unobserved_confounder_robustness` refuter.")
    return Diagnostic("hidden_confounder_risk", worst, CONFOUNDER_GAP, not flagged, msg, "warn",
                      check="hidden_confounder_risk")


def _omitted_diagnostic(scores: list[CandidateScore], result: EstimateResult) -> Diagnostic:
    half = (result.ci_high - result.ci_low) / 2
    moved = [s for s in scores if np.isfinite(s.shift)
             and not (result.ci_low <= result.estimate + s.shift <= result.ci_high)]
    worst = max((abs(s.shift) for s in scores if np.isfinite(s.shift)), default=0.0)
    if moved:
        names = ", ".join(f"{s.name} (moves the regression-adjusted effect by {s.shift:+.4f}, to about "
                          f"{result.estimate + s.shift:+.4f})" for s in moved)
        msg = (f"OMITTED CONFOUNDER: signals known at conversation start but left out of the covariates predict "
               f"both the treatment and the outcome: {names}; that is beyond the estimate's 95% interval "
               f"[{result.ci_low:+.4f}, {result.ci_high:+.4f}]. The estimate mixes their effect with the "
               "treatment's: add them to `covariates`.")
    elif scores:
        biggest = max(scores, key=lambda s: abs(s.shift) if np.isfinite(s.shift) else -1)
        msg = (f"adding any of the {len(scores)} left-out start signals to the covariates moves the "
               f"regression-adjusted effect by at most {worst:.4f} ({biggest.name}), inside the estimate's "
               f"interval half-width {half:.4f}.")
    else:
        msg = "every start-of-conversation signal is among the covariates: no logged confounder is left out."
    return Diagnostic("omitted_confounder", worst, half, not moved, msg, "error", check="omitted_confounder")
