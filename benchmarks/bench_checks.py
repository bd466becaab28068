"""Calibration of the checks: false alarms on valid worlds, detections on broken ones, coverage.

Run: ``.venv/bin/python benchmarks/bench_checks.py [--seeds 100] [--worlds a,b,...] [--jobs 2]
[--out benchmarks/calibration.md]``; re-make the report from saved runs without re-running:
``--from-raw benchmarks/calibration.raw.json``.

Every world (``calibration_worlds.py``) is a simulated ``signals`` table with a known truth and a
known set of broken assumptions. Each seed goes through the question layer end to end, as a
nightly run does: the question config checked against the signals catalogue
(``configs.questions.validate_against_catalog``, recorded as the pseudo-check
``config_validation``), then ``answer_question`` (pre-flight on an in-memory DuckDB table, the
registry's data pull and method, ``evaluate_checks``). Every check the method carries is recorded
with its state, so new checks, diagnostics and pass rules are picked up without editing this
file. Worlds marked ``method_level`` also run the method alone (no config check, no pre-flight)
to show what its own checks catch; worlds marked ``dowhy`` also get DoWhy 0.14's matching
estimator and three refuters as reference rows.

Output: a Markdown report (``--out``): per check, the false-alarm rate on worlds where its
assumption holds and the detection rate on worlds that break it; per method and world, coverage
of the truth, rejection of zero, bias; refuters one by one (ours and DoWhy's); seconds per seed
per world. Per-seed results go to ``<out stem>.raw.json`` next to it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import time
import traceback
from collections import defaultdict
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "benchmarks"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from calibration_worlds import WORLDS, World

ALPHA = 0.05
FALSE_ALARM_TARGET = {"ERROR": 0.05, "WARN": 0.10}
DETECTION_TARGET = 0.90
COVERAGE_TARGET = (0.93, 0.97)
DOWHY_SIMS = 20
CONFIG_CHECK = "config_validation"  # pseudo-check: the question config refused against the catalogue
REFUSED_CHECK = "question_refused"  # pseudo-check: the pre-flight or the method refused (no number)
ENGINES = {"ours": "", "method": " · method only", "dowhy": " · DoWhy"}  # engine -> label suffix
ENTRY_POINTS = {"psm": ("methods.psm", "estimate_psm"), "did": ("methods.did", "estimate_did"),
                "sc": ("methods.sc", "estimate_sc")}

_LIMITS = None  # this process's threadpool limits, kept alive
_SETTINGS: dict = {"overrides": {}, "dowhy_sims": DOWHY_SIMS}


# ============================================================================ one run
def worker_init(settings: dict) -> None:
    """Per process: one BLAS/OpenMP thread, quiet libraries, the method argument overrides."""
    global _LIMITS
    import logging
    import warnings

    import matplotlib
    from threadpoolctl import threadpool_limits

    _LIMITS = threadpool_limits(1)
    warnings.filterwarnings("ignore")
    logging.getLogger("dowhy").setLevel(logging.ERROR)
    matplotlib.use("Agg")
    _SETTINGS.update(settings)
    _apply_overrides(settings.get("overrides") or {})
    if settings.get("no_plots"):
        _stub_plots()


_PNG_1X1 = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d49444154789c"
                         "6360606060000000050001a5f645400000000049454e44ae426082")  # a transparent 1×1 pixel


def _stub_plots() -> None:
    """``--no-plots``: figures are still built but never laid out or rendered; every PNG is a 1×1
    placeholder. Plots feed no check, and rendering is most of a small matching run's time."""
    from matplotlib.figure import Figure

    def savefig(self, fname, *a, **k):
        if hasattr(fname, "write"):
            fname.write(_PNG_1X1)
        else:
            Path(fname).write_bytes(_PNG_1X1)

    Figure.savefig = savefig
    Figure.tight_layout = lambda self, *a, **k: None


def _apply_overrides(overrides: dict[str, dict]) -> None:
    """Default arguments for a method's public entry point (e.g. fewer bootstrap draws), set by
    wrapping it in its package, where the registry imports it from at call time. Arguments a
    caller passes explicitly still win."""
    import functools
    import importlib

    for key, kwargs in overrides.items():
        module, name = ENTRY_POINTS[key]
        mod = importlib.import_module(module)
        orig = getattr(mod, name)
        orig = getattr(orig, "__wrapped__", orig)

        def make(fn, defaults):
            @functools.wraps(fn)
            def wrapped(*a, **k):
                for arg, value in defaults.items():
                    k.setdefault(arg, value)
                return fn(*a, **k)
            return wrapped

        setattr(mod, name, make(orig, dict(kwargs)))


def _signals(case):
    import duckdb

    con = duckdb.connect()
    con.register("_rows", case.rows)
    con.execute("CREATE TABLE signals AS SELECT * FROM _rows")
    con.unregister("_rows")
    return con


def _record_checks(rec: dict, outcomes) -> None:
    for o in outcomes:
        if o.state != "not_applicable":
            rec["checks"][o.name] = o.state
            rec["severity"][o.name] = o.severity


def _set(rec: dict, check: str, failed: bool, severity: str = "ERROR") -> None:
    rec["checks"][check] = "failed" if failed else "passed"
    rec["severity"][check] = severity


def run_ours(world: World, seed: int) -> dict:
    """The question layer end to end: config check, pre-flight, method, verdicts."""
    from configs.questions import ConfigError, validate_against_catalog
    from convocausal.questions.answer import answer_question
    from convocausal.questions.registry import question_columns

    t0, c0 = time.perf_counter(), time.process_time()
    case = world.make(seed)
    rec = _base(world, seed, "ours", case)
    try:
        validate_against_catalog(case.question, case.catalog, question_columns(case.question))
        _set(rec, CONFIG_CHECK, False)
    except ConfigError as exc:
        _set(rec, CONFIG_CHECK, True)
        rec["config_refusal"] = str(exc)[:300]
    con = _signals(case)
    try:
        ans = answer_question(con, case.question, case.catalog, seed=seed)
    finally:
        con.close()
    _record_checks(rec, ans.checks)
    rec["refusal"] = ans.refusal
    _set(rec, REFUSED_CHECK, bool(ans.refusal))
    _result_fields(rec, ans.result)
    return _timed(rec, t0, c0)


def run_method(world: World, seed: int) -> dict:
    """The method alone on the world's rows, check states from its own evidence (``result_checks``,
    as ``convocausal estimate`` does): what the method catches when nothing upstream refused."""
    from convocausal.questions.answer import result_checks
    from methods.result import MethodRefusal

    if world.method != "propensity_matching":
        raise NotImplementedError("method-only runs are implemented for propensity matching worlds")
    import methods.psm

    t0, c0 = time.perf_counter(), time.process_time()
    case = world.make(seed)
    rec = _base(world, seed, "method", case)
    q = case.question
    cols = list(dict.fromkeys([q.treatment, q.outcome, *q.covariates]))
    df = case.rows[cols].dropna(subset=[q.treatment, q.outcome]).copy()
    df[q.treatment] = df[q.treatment].astype(float)
    df[q.outcome] = df[q.outcome].astype(float)
    try:
        result = methods.psm.estimate_psm(df, treatment=q.treatment, outcome=q.outcome,
                                          covariates=list(q.covariates), estimand=q.estimand, caliper=q.caliper,
                                          seed=seed)
    except MethodRefusal as exc:
        rec["refusal"] = str(exc)
        _set(rec, REFUSED_CHECK, True)
    else:
        _set(rec, REFUSED_CHECK, False)
        _record_checks(rec, result_checks(result))
        _result_fields(rec, result)
    return _timed(rec, t0, c0)


def run_dowhy(world: World, seed: int) -> dict:
    """DoWhy 0.14's propensity matching (ATT) and three refuters on the same rows and covariates."""
    import numpy as np
    from dowhy import CausalModel

    t0, c0 = time.perf_counter(), time.process_time()
    case = world.make(seed)
    rec = _base(world, seed, "dowhy", case)
    q = case.question
    df = case.rows[[q.treatment, q.outcome, *q.covariates]].dropna(subset=[q.treatment, q.outcome]).copy()
    df[q.treatment] = df[q.treatment].astype(bool)
    df[q.outcome] = df[q.outcome].astype(float)
    model = CausalModel(data=df, treatment=q.treatment, outcome=q.outcome, common_causes=list(q.covariates))
    estimand = model.identify_effect(proceed_when_unidentifiable=True)
    est = model.estimate_effect(estimand, method_name="backdoor.propensity_score_matching", target_units="att")
    rec["estimate"] = _f(est.value)
    rec["refuters"], rec["refuter_p"], rec["refuter_new_effect"] = {}, {}, {}
    refuters = (("placebo_treatment_refuter", {"placebo_type": "permute"}), ("random_common_cause", {}),
                ("data_subset_refuter", {}))
    for k, (name, extra) in enumerate(refuters):
        # A RandomState, not an int: DoWhy's data_subset_refuter reseeds an int in every simulation,
        # so all its "random" subsets would be the same subset.
        ref = model.refute_estimate(estimand, est, method_name=name, num_simulations=_SETTINGS["dowhy_sims"],
                                    random_state=np.random.RandomState([seed, k]), n_jobs=1,
                                    show_progress_bar=False, **extra)
        p = _f((ref.refutation_result or {}).get("p_value"))
        # DoWhy's convention: a refutation fails when its p-value is below 0.05 (for the placebo that
        # is the p-value of 0 among the placebo effects, i.e. the new effect is away from 0).
        failed = p is not None and p < ALPHA
        rec["refuters"][name] = not failed
        rec["refuter_p"][name] = p
        rec["refuter_new_effect"][name] = _f(ref.new_effect)
        rec["checks"][f"dowhy:{name}"] = "failed" if failed else ("passed" if p is not None else "not_run")
        rec["severity"][f"dowhy:{name}"] = "WARN"
    return _timed(rec, t0, c0)


def _result_fields(rec: dict, r) -> None:
    if r is None:
        return
    rec.update(estimate=_f(r.estimate), ci_low=_f(r.ci_low), ci_high=_f(r.ci_high), p_value=_f(r.p_value),
               std_error=_f(r.std_error), ci_method=(r.ci_method or "")[:200])
    rec["refuters"] = {x.refuter: bool(x.passed) for x in r.refutations}
    rec["inference"] = r.extras.get("inference")


def _base(world: World, seed: int, engine: str, case) -> dict:
    return {"world": world.name, "seed": seed, "engine": engine, "method": world.method, "truth": case.truth,
            "notes": case.notes, "checks": {}, "severity": {}, "refusal": None, "estimate": None, "ci_low": None,
            "ci_high": None, "p_value": None, "error": None}


def _timed(rec: dict, t0: float, c0: float) -> dict:
    rec["seconds"] = time.perf_counter() - t0
    rec["cpu_seconds"] = time.process_time() - c0
    return rec


def _f(x):
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


RUNNERS = {"ours": run_ours, "method": run_method, "dowhy": run_dowhy}


def run_task(task: tuple[str, int, str]) -> dict:
    name, seed, engine = task
    world = WORLDS[name]
    try:
        return RUNNERS[engine](world, seed)
    except Exception as exc:  # noqa: BLE001 — a crash is a result too: recorded and shown in the report
        return {"world": name, "seed": seed, "engine": engine, "method": world.method, "truth": None, "notes": {},
                "checks": {}, "severity": {}, "refusal": None, "estimate": None,
                "error": f"{type(exc).__name__}: {exc}"[:500], "traceback": traceback.format_exc()[-3000:]}


def tasks_for(worlds: list[str], seeds: list[int], dowhy_seeds: int) -> list[tuple[str, int, str]]:
    """Seed-major, so an interrupted or partial run still covers every world."""
    out = []
    for i, s in enumerate(seeds):
        for w in worlds:
            out.append((w, s, "ours"))
            if WORLDS[w].method_level:
                out.append((w, s, "method"))
            if WORLDS[w].dowhy and i < dowhy_seeds:
                out.append((w, s, "dowhy"))
    return out


def preload(tasks) -> None:
    """Import what the runs need once, before the workers are forked (they share it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot

    import convocausal.questions.answer  # noqa: F401
    import methods.did
    import methods.psm
    import methods.sc
    import methods.sc.panel  # noqa: F401

    if any(t[2] == "dowhy" for t in tasks):
        import dowhy  # noqa: F401


def run_all(tasks, jobs: int, settings: dict, progress: bool = True) -> list[dict]:
    import multiprocessing as mp

    preload(tasks)
    out, t0 = [], time.perf_counter()
    pool = None
    if jobs <= 1:
        worker_init(settings)
        it = map(run_task, tasks)
    else:
        pool = mp.get_context("fork").Pool(jobs, initializer=worker_init, initargs=(settings,))
        it = pool.imap_unordered(run_task, tasks, chunksize=1)
    try:
        for k, rec in enumerate(it, 1):
            out.append(rec)
            if progress and (k % max(1, len(tasks) // 20) == 0 or k == len(tasks)):
                print(f"  {k}/{len(tasks)} runs, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    return out


# ============================================================================ scoring
def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


def carried(method: str) -> tuple[str, ...]:
    from convocausal.questions.registry import REGISTRY

    return tuple(REGISTRY[method].checks) if method in REGISTRY else ()


def role(world: World, check: str, engine: str = "ours") -> str:
    """``break`` (a failure is a detection), ``hold`` (a failure is a false alarm) or ``unscored``."""
    if engine == "method" and check in (CONFIG_CHECK, REFUSED_CHECK):
        return "unscored"  # the method-only arm skips what would refuse; it asks what the method catches
    if check.startswith("dowhy:"):
        return "break" if world.kind == "broken" else "hold"
    if check in world.breaks:
        return "break"
    if check in world.unscored:
        return "unscored"
    if world.kind == "broken" and any(re.search(p, check) for p in world.break_patterns):
        return "break"
    if world.kind == "broken" and check not in {*carried(world.method), CONFIG_CHECK, REFUSED_CHECK}:
        return "unscored"  # a check added after this world was written: shown in the matrix, not scored
    return "hold"


def arms(records) -> list[tuple[str, str]]:
    """(world, engine) pairs present, in world order, the question-layer run first."""
    order = list(WORLDS)
    have = {(r["world"], r["engine"]) for r in records if r["world"] in WORLDS}
    return sorted(have, key=lambda a: (order.index(a[0]), list(ENGINES).index(a[1])))


def label(arm: tuple[str, str]) -> str:
    return arm[0] + ENGINES[arm[1]]


def ordered_checks(records) -> list[str]:
    from checks.catalog import CATALOG

    seen = {c for r in records for c in r["checks"]}
    order = [CONFIG_CHECK, REFUSED_CHECK, *CATALOG]
    return [c for c in order if c in seen] + sorted(seen - set(order))


def _grouped(records) -> dict[tuple[str, str], list[dict]]:
    g = defaultdict(list)
    for r in records:
        if not r.get("error"):
            g[(r["world"], r["engine"])].append(r)
    return g


def check_rows(records) -> list[dict]:
    """One scored row per (check, world arm) where the check ran and is scored.

    ``met``: the observed rate meets the target; ``clear_miss``: the Wilson 95% interval lies entirely
    on the wrong side of the target (what a test can assert without flaking on a few seeds).
    """
    by_arm, out = _grouped(records), []
    for check in ordered_checks([r for rs in by_arm.values() for r in rs]):
        for arm in arms(records):
            world = WORLDS[arm[0]]
            rs = [r for r in by_arm[arm] if check in r["checks"]]
            rl = role(world, check, arm[1])
            if not rs or rl == "unscored":
                continue
            sev = rs[0]["severity"].get(check, "WARN")
            n, k = len(rs), sum(r["checks"][check] == "failed" for r in rs)
            lo, hi = wilson(k, n)
            row = {"check": check, "severity": sev, "world": arm[0], "engine": arm[1], "arm": label(arm),
                   "role": rl, "kind": world.kind, "size": world.size, "runs": n, "failed": k,
                   "not_run": sum(r["checks"][check] == "not_run" for r in rs), "rate": k / n, "ci": (lo, hi)}
            if rl == "hold":
                tgt = FALSE_ALARM_TARGET.get(sev, 0.10)
                row.update(target=f"≤ {tgt:.0%}", met=k / n <= tgt, clear_miss=lo > tgt)
            elif not world.detectable:
                row.update(target="(not in the logs)", met=None, clear_miss=False)
            elif world.size == "large" or world.kind == "null":
                row.update(target=f"≥ {DETECTION_TARGET:.0%}", met=k / n >= DETECTION_TARGET,
                           clear_miss=hi < DETECTION_TARGET)
            else:
                row.update(target="(small break)", met=None, clear_miss=False)
            out.append(row)
    return out


def estimate_rows(records) -> list[dict]:
    out = []
    by_arm = _grouped(records)
    for arm in arms(records):
        rs, world = by_arm[arm], WORLDS[arm[0]]
        if not rs:
            continue
        est = [r for r in rs if r.get("estimate") is not None]
        truth = rs[0]["truth"]
        vals = [r["estimate"] for r in est]
        mean = sum(vals) / len(vals) if vals else math.nan
        sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else math.nan
        ci = [r for r in est if r.get("ci_low") is not None and r.get("ci_high") is not None]
        with_p = [r for r in est if r.get("p_value") is not None]
        notes = rs[0]["notes"]
        cov = sum(r["ci_low"] <= truth <= r["ci_high"] for r in ci)
        lo, hi = wilson(cov, len(ci))
        scored = arm[1] == "ours" and bool(ci) and world.kind in ("valid", "null")
        widths = [r["ci_high"] - r["ci_low"] for r in ci if math.isfinite(r["ci_high"] - r["ci_low"])]
        out.append({
            "world": arm[0], "engine": arm[1], "arm": label(arm), "kind": world.kind, "size": world.size,
            "method": "DoWhy PSM" if arm[1] == "dowhy" else world.method, "runs": len(rs), "estimated": len(est),
            "truth": truth, "mean": mean, "bias": mean - truth, "sd": sd,
            "expected_bias": -notes["mediated_effect"] if "mediated_effect" in notes else notes.get("expected_bias"),
            "covered": cov, "with_ci": len(ci), "coverage": cov / len(ci) if ci else None, "coverage_ci": (lo, hi),
            "coverage_met": (COVERAGE_TARGET[0] <= cov / len(ci) <= COVERAGE_TARGET[1]) if scored else None,
            "coverage_clear_miss": (hi < COVERAGE_TARGET[0] or lo > COVERAGE_TARGET[1]) if scored else None,
            "rejects": sum(r["p_value"] < ALPHA for r in with_p), "with_p": len(with_p),
            "excludes_zero": sum(not (r["ci_low"] <= 0 <= r["ci_high"]) for r in ci),
            "mean_width": sum(widths) / len(widths) if widths else None,
        })
    return out


def verdict_rows(records) -> list[dict]:
    """What a memo reader is told (``convocausal/report.py``): refused, blocked (an ERROR check
    failed), caveat (a WARN check failed, or an ERROR check the data could not test), clean."""
    out = []
    for arm, rs in _grouped(records).items():
        if arm[1] == "dowhy" or arm[0] not in WORLDS:
            continue
        counts = {"refused": 0, "blocked": 0, "caveat": 0, "clean": 0}
        for r in rs:
            counts[_verdict(r)] += 1
        out.append({"world": arm[0], "engine": arm[1], "arm": label(arm), "runs": len(rs), **counts})
    order = arms(records)
    return sorted(out, key=lambda v: order.index((v["world"], v["engine"])))


def _verdict(r: dict) -> str:
    if r.get("refusal") or r["checks"].get(CONFIG_CHECK) == "failed":
        return "refused"
    checks = {c: s for c, s in r["checks"].items() if c not in (CONFIG_CHECK, REFUSED_CHECK)}
    if any(r["severity"].get(c) == "ERROR" and s == "failed" for c, s in checks.items()):
        return "blocked"
    untested = r["engine"] == "ours" and any(r["severity"].get(c) == "ERROR" and s == "not_run"
                                             for c, s in checks.items())
    return "caveat" if untested or any(s == "failed" for s in checks.values()) else "clean"


# ============================================================================ the report
def _pct(k: int, n: int, ci: bool = True) -> str:
    if n == 0:
        return "–"
    lo, hi = wilson(k, n)
    return f"{100 * k / n:.0f}%" + (f" ({100 * lo:.0f}–{100 * hi:.0f})" if ci else "")


def _mark(met) -> str:
    return "" if met is None else ("✓" if met else "✗")


def _num(x, fmt: str = "+.4f") -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def report(records: list[dict], meta: dict) -> str:
    ok = [r for r in records if not r.get("error")]
    all_arms = arms(records)
    by_arm = _grouped(records)
    overrides = meta.get("overrides") or {}
    lines = [f"# Check calibration — {meta.get('date', '')}", "",
             f"{meta.get('seeds')} seeds per world (DoWhy reference on {meta.get('dowhy_seeds')} of them, "
             f"{meta.get('dowhy_sims', DOWHY_SIMS)} simulations per refuter); code at `{meta.get('commit', '?')}`"
             f"{' plus uncommitted changes' if meta.get('dirty') else ''}; {meta.get('jobs')} processes, "
             f"{meta.get('elapsed_s', 0):.0f} s wall. Method arguments: "
             + ("; ".join(f"`{k}` {v}" for k, v in overrides.items()) + ", the rest the registry's defaults"
                if overrides else "the registry's defaults (PSM 200 bootstrap replicates and 30 simulations per "
                "refuter, DiD 999 wild-bootstrap draws, SC 999 permutations)") + "."
             + (" Plots not rendered (`--no-plots`)." if meta.get("no_plots") else "")
             + (f" Note: {meta['note']}." if meta.get("note") else ""),
             "",
             ("Rates are over seeds, Wilson 95% intervals in brackets. *False alarm*: the check failed where its "
             "assumption holds; *detection*: it failed where the world breaks it. `not run` is counted apart "
             "(neither a failure nor a pass). Pseudo-checks: `config_validation` is the question config checked "
             "against the signals catalogue (refused before anything runs); `question_refused` is a refusal by "
             "the pre-flight or the method (no number). *· method only*: the method alone on the same rows (no "
             "config check, no pre-flight), to see what its own checks catch. Targets: false alarms ≤ 5% (ERROR) "
             "/ ≤ 10% (WARN), detection ≥ 90% on large breaks, coverage 93–97%; ✗ marks a miss of the observed "
             "rate (with few seeds, check the interval before calling it real).")]
    errors = [r for r in records if r.get("error")]
    if errors:
        lines += ["", (f"**{len(errors)} runs crashed** and are left out of the rates (first: {errors[0]['world']} "
                  f"seed {errors[0]['seed']}: `{errors[0]['error'][:200]}`).")]

    rows = check_rows(records)
    detail = ["", "## Checks per world: false alarms and detections", "",
              "| check | severity | world | role | break | runs | failed | not run | rate | target | met |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        detail.append(f"| `{r['check']}` | {r['severity']} | {r['arm']} | "
                      f"{'false alarm' if r['role'] == 'hold' else 'detection'} | {r['size']} | {r['runs']} | "
                      f"{r['failed']} | {r['not_run']} | {_pct(r['failed'], r['runs'])} | {r['target']} | "
                      f"{_mark(r['met'])} |")

    lines += ["", "## Checks, pooled over worlds", "",
              ("Each check's false alarms pooled over the worlds where its assumption holds, and its weakest "
              "detection; every (check, world) pair is in *Checks per world* below."), "",
              ("| check | severity | false alarms, pooled over worlds where it should pass | worst world | "
              "detection, large breaks (worst world) | detection, small or unlogged breaks |"), "|---|---|---|---|---|---|"]
    for check in dict.fromkeys(r["check"] for r in rows):
        rs = [r for r in rows if r["check"] == check]
        hold = [r for r in rs if r["role"] == "hold"]
        big = [r for r in rs if r["role"] == "break" and r["met"] is not None]
        small = [r for r in rs if r["role"] == "break" and r["met"] is None]
        k, n = sum(r["failed"] for r in hold), sum(r["runs"] for r in hold)
        worst = max(hold, key=lambda r: r["rate"], default=None)
        weakest = min(big, key=lambda r: r["rate"], default=None)
        lines.append(
            f"| `{check}` | {rs[0]['severity']} | {_pct(k, n)} | "
            + (f"{worst['arm']} {_pct(worst['failed'], worst['runs'], False)}" if worst else "–") + " | "
            + (f"{weakest['arm']} {_pct(weakest['failed'], weakest['runs'], False)}" if weakest else "–") + " | "
            + (", ".join(f"{r['arm']} {_pct(r['failed'], r['runs'], False)}" for r in small) or "–") + " |")

    lines += ["", "## Verdicts per world", "",
              ("What a memo reader is told: *refused* (no number), *blocked* (a number, but an ERROR check failed: "
              "\"do not act\"), *caveat* (a WARN check failed, or an ERROR check the data could not test), "
              "*clean* (nothing failed)."),
              "", "| world | kind | break | runs | refused | blocked | caveat only | clean |",
              "|---|---|---|---|---|---|---|---|"]
    for v in verdict_rows(records):
        w, n = WORLDS[v["world"]], v["runs"]
        lines.append(f"| {v['arm']} | {w.kind} | {w.size} | {n} | " + " | ".join(
            _pct(v[c], n, False) for c in ("refused", "blocked", "caveat", "clean")) + " |")

    lines += ["", "## Failure rate of every check in every world", "",
              ("`F` expected to fail (detection), `P` expected to pass (false alarm), `·` not scored; "
              "`n/r k`: not run in k seeds."), ""]
    checks_all = ordered_checks(ok)
    for method in ("propensity_matching", "diff_in_diff", "synthetic_control"):
        marms = [a for a in all_arms if WORLDS[a[0]].method == method]
        cols = [c for c in checks_all if any(c in r["checks"] for a in marms for r in by_arm[a])]
        if not marms or not cols:
            continue
        lines += [f"**{method}**", "", "| world | " + " | ".join(f"`{c}`" for c in cols) + " |",
                  "|---|" + "---|" * len(cols)]
        for arm in marms:
            cells = []
            for c in cols:
                have = [r for r in by_arm[arm] if c in r["checks"]]
                if not have:
                    cells.append("")
                    continue
                k = sum(r["checks"][c] == "failed" for r in have)
                nr = sum(r["checks"][c] == "not_run" for r in have)
                mark = {"break": "F", "hold": "P", "unscored": "·"}[role(WORLDS[arm[0]], c, arm[1])]
                cells.append(f"{mark} {100 * k / len(have):.0f}%" + (f" n/r {nr}" if nr else ""))
            lines.append(f"| {label(arm)} | " + " | ".join(cells) + " |")
        lines.append("")

    refs = sorted({(r["engine"] == "dowhy", x) for r in ok for x in (r.get("refuters") or {})})
    if refs:
        lines += ["## Refuters one by one (failure rate)", "",
                  ("Ours: each refuter's own pass rule (any failure fails `refuters_passed`). DoWhy: its convention, "
                  "refutation p-value < 0.05 (for the placebo, the p-value of 0 among the placebo effects: the new "
                  "effect is away from 0); a p-value DoWhy cannot compute (NaN: all simulations returned the "
                  "original estimate) counts as not failed."), "",
                  "| world | " + " | ".join(f"{'DoWhy ' if d else ''}`{x}`" for d, x in refs) + " |",
                  "|---|" + "---|" * len(refs)]
        for arm in all_arms:
            cells = []
            for d, x in refs:
                rs = [r for r in by_arm[arm] if (arm[1] == "dowhy") == d and x in (r.get("refuters") or {})]
                cells.append(f"{100 * sum(not r['refuters'][x] for r in rs) / len(rs):.0f}% of {len(rs)}" if rs else "")
            if any(cells):
                lines.append(f"| {label(arm)} | " + " | ".join(cells) + " |")

    lines += ["", "## Estimates: coverage, null rejection, bias", "",
              ("Coverage: the 95% interval contains the true effect (target 93–97% on valid and null worlds). "
              "Rejects 0: p < 0.05 with the method's own p-value (synthetic control: the conformal test's p at 0, "
              "the test its interval inverts; the placebo rank is the `placebo_rank` check). Bias: mean estimate − truth over runs with an "
              "estimate; expected bias: what the world builds in, where known in closed form. DoWhy's matching "
              "gives no interval."), "",
              ("| world | method | kind | runs | estimated | truth | mean estimate | bias | expected bias | sd | "
              "coverage | met | rejects 0 (p<.05) | CI excludes 0 | mean CI width |"),
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in estimate_rows(records):
        lines.append(
            f"| {e['arm']} | {e['method']} | {e['kind']} | {e['runs']} | {e['estimated']} | {e['truth']:+.3f} | "
            f"{_num(e['mean'])} | {_num(e['bias'])} | {_num(e['expected_bias'], '+.3f')} | {_num(e['sd'], '.4f')} | "
            + (_pct(e["covered"], e["with_ci"]) if e["with_ci"] else "–") + f" | {_mark(e['coverage_met'])} | "
            + (_pct(e["rejects"], e["with_p"]) if e["with_p"] else "–") + " | "
            + (_pct(e["excludes_zero"], e["with_ci"], False) if e["with_ci"] else "–") + f" | "
            f"{_num(e['mean_width'], '.4f')} |")

    lines += detail
    lines += ["", "## Seconds per seed", "",
              ("Wall seconds of one run in one process, and its CPU seconds (the machine may be shared, so CPU "
              "seconds are the better guide to cost)."), "", "| world | runs | mean wall s | max wall s | mean CPU s |",
              "|---|---|---|---|---|"]
    for arm in all_arms:
        rs = [r for r in records if (r["world"], r["engine"]) == arm]
        secs = [r["seconds"] for r in rs if r.get("seconds") is not None]
        cpu = [r["cpu_seconds"] for r in rs if r.get("cpu_seconds") is not None]
        lines.append(f"| {label(arm)} | {len(rs)} | {sum(secs) / max(len(secs), 1):.2f} | {max(secs, default=0):.2f} "
                     f"| {sum(cpu) / max(len(cpu), 1):.2f} |")
    wall = sum(r.get("seconds") or 0 for r in records)
    cpu = sum(r.get("cpu_seconds") or 0 for r in records)
    lines += ["", (f"Summed over runs: {wall:.0f} wall s and {cpu:.0f} CPU s for {len(records)} runs, "
                   f"{cpu / max(meta.get('seeds') or 1, 1):.1f} CPU s per seed for all worlds together.")]

    lines += ["", "## Worlds", "", "| world | method | kind | break | what it is |", "|---|---|---|---|---|"]
    for w in dict.fromkeys(a[0] for a in all_arms):
        world = WORLDS[w]
        lines.append(f"| {w} | {world.method} | {world.kind} | {world.size} | {world.what} |")
    return "\n".join(lines) + "\n"


# ============================================================================ command line
def _git() -> tuple[str, bool]:
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=False).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, check=False).stdout.strip())
    except OSError:
        return "?", False
    return head or "?", dirty


def parse_overrides(text: str) -> dict[str, dict]:
    """``psm.n_bootstrap=100,did.n_boot=399`` → {"psm": {"n_bootstrap": 100}, "did": {"n_boot": 399}}."""
    out: dict[str, dict] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = part.partition("=")
        method, _, arg = key.partition(".")
        if method not in ENTRY_POINTS or not arg or not value:
            raise SystemExit(f"--method-args: expected METHOD.ARG=VALUE with METHOD one of {list(ENTRY_POINTS)}, "
                             f"got {part!r}")
        out.setdefault(method, {})[arg] = json.loads(value)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--seed-start", type=int, default=0)
    ap.add_argument("--worlds", default="", help="comma-separated world names (default: all): " + ", ".join(WORLDS))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "calibration.md"))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--dowhy-seeds", type=int, default=None,
                    help="how many of the seeds also run DoWhy's reference (default: all; 0 turns it off)")
    ap.add_argument("--dowhy-sims", type=int, default=DOWHY_SIMS, help="simulations per DoWhy refuter")
    ap.add_argument("--method-args", default="",
                    help="default arguments for the methods' entry points, e.g. psm.n_bootstrap=100,did.n_boot=399 "
                         "(stated in the report)")
    ap.add_argument("--no-plots", action="store_true",
                    help="do not render the methods' plots (they feed no check; stated in the report)")
    ap.add_argument("--from-raw", default=None, help="re-make the report from a saved .raw.json; run nothing")
    ap.add_argument("--quiet", action="store_true", help="do not print the report")
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if a.from_raw:
        saved = json.loads(Path(a.from_raw).read_text())
        text = report(saved["records"], saved["meta"])
        out.write_text(text)
        if not a.quiet:
            print(text)
        return 0
    worlds = [w.strip() for w in a.worlds.split(",") if w.strip()] or list(WORLDS)
    unknown = [w for w in worlds if w not in WORLDS]
    if unknown:
        raise SystemExit(f"unknown worlds {unknown}; known: {', '.join(WORLDS)}")
    seeds = list(range(a.seed_start, a.seed_start + a.seeds))
    dowhy_seeds = a.seeds if a.dowhy_seeds is None else min(a.dowhy_seeds, a.seeds)
    settings = {"overrides": parse_overrides(a.method_args), "dowhy_sims": a.dowhy_sims, "no_plots": a.no_plots}
    tasks = tasks_for(worlds, seeds, dowhy_seeds)
    print(f"{len(tasks)} runs ({len(worlds)} worlds × {a.seeds} seeds, DoWhy on {dowhy_seeds}) in {a.jobs} "
          "processes", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    records = run_all(tasks, a.jobs, settings, progress=not a.quiet)
    elapsed = time.perf_counter() - t0
    records.sort(key=lambda r: (list(WORLDS).index(r["world"]), list(ENGINES).index(r["engine"]), r["seed"]))
    head, dirty = _git()
    meta = {"date": time.strftime("%Y-%m-%d %H:%M"), "seeds": a.seeds, "seed_start": a.seed_start,
            "dowhy_seeds": dowhy_seeds, "dowhy_sims": a.dowhy_sims, "jobs": a.jobs, "elapsed_s": elapsed,
            "commit": head, "dirty": dirty, "overrides": settings["overrides"], "no_plots": a.no_plots,
            "worlds": worlds}
    raw = out.with_suffix(".raw.json")
    raw.write_text(json.dumps({"meta": meta, "records": records}, indent=1, default=str))
    text = report(records, meta)
    out.write_text(text)
    if not a.quiet:
        print(text)
    print(f"elapsed {elapsed:.1f} s ({elapsed / max(a.seeds, 1):.1f} s per seed, {a.jobs} processes); "
          f"report {out}, per-seed runs {raw}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
