"""Nearest-neighbour matching of covariate cells on the propensity coordinate.

Cells, not rows: every unit of a cell shares one propensity, so matching runs over cells and a
treated unit whose cell holds controls is matched exactly inside it (ties use every tied control,
as Abadie & Imbens do). Without replacement a greedy pass serves the highest coordinate first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from methods.psm.propensity import CellStats

TIE_DECIMALS = 10  # propensity logits equal to this many decimals count as one (tied) value


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
    pos = _searchsorted(G, ct)
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


def _searchsorted(G: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """``np.searchsorted(G, keys)``, the same positions, with the keys looked up in sorted order:
    each lookup then starts from the previous one's bounds instead of a cold binary search over
    all of ``G`` (half the time for a few thousand treated cells, on every refit)."""
    order = np.argsort(keys)
    pos = np.empty(len(keys), dtype=np.intp)
    pos[order] = np.searchsorted(G, keys[order])
    return pos


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
