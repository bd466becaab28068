"""The check calibration benchmark (benchmarks/bench_checks.py): a smoke run, and the targets (slow).

The smoke test runs two seeds of every world with few bootstrap draws and checks that nothing
crashes and that the report has a row for every world, method and check. The slow tests run the
benchmark properly and assert issue 13's targets — false alarms ≤ 5% (ERROR) / ≤ 10% (WARN) where
a check's assumption holds, detection ≥ 90% on large breaks, coverage 93–97% on valid and null
worlds — failing only on a *clear* miss (the Wilson 95% interval of the observed rate lies
entirely on the wrong side of the target), so that a few dozen seeds do not flake.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_checks
from calibration_worlds import WORLDS

FAST_ARGS = "psm.n_bootstrap=20,psm.n_refute_sims=5,did.n_boot=99"


def _run(tmp_path: Path, *args: str) -> tuple[str, dict]:
    out = tmp_path / "calibration.md"
    assert bench_checks.main(["--out", str(out), "--jobs", "2", "--quiet", *args]) == 0
    return out.read_text(), json.loads(out.with_suffix(".raw.json").read_text())


def test_smoke_two_seeds_of_every_world_fill_every_row(tmp_path):
    text, raw = _run(tmp_path, "--seeds", "2", "--method-args", FAST_ARGS, "--dowhy-seeds", "1", "--dowhy-sims", "3",
                     "--no-plots")
    records = raw["records"]
    crashed = [(r["world"], r["engine"], r["error"]) for r in records if r.get("error")]
    assert not crashed, crashed
    for name, world in WORLDS.items():
        assert sum(r["world"] == name and r["engine"] == "ours" for r in records) == 2, name
        for section in ("## Verdicts per world", "## Estimates: coverage, null rejection, bias",
                        "## Seconds per seed", "## Worlds"):
            body = text.split(section, 1)[1].split("\n## ", 1)[0]
            assert f"| {name} |" in body, (section, name)
        if world.dowhy:
            assert f"| {name} · DoWhy |" in text
        if world.method_level:
            assert f"| {name} · method only |" in text
        # extraction_sensitivity is not_applicable (so not recorded) on a world whose question does not use intent
        carried = set(bench_checks.carried(world.method)) - {"extraction_sensitivity"}
        states = next(r["checks"] for r in records if r["world"] == name and r["engine"] == "ours")
        assert set(carried) <= set(states), (name, set(carried) - set(states))  # every carried check recorded
    # every scored (check, world) pair has a row in the checks table, and the report can be re-made
    for row in bench_checks.check_rows(records):
        assert f"| `{row['check']}` | {row['severity']} | {row['arm']} |" in text
    again = tmp_path / "again.md"
    assert bench_checks.main(["--from-raw", str(tmp_path / "calibration.raw.json"), "--out", str(again),
                              "--quiet"]) == 0
    assert again.read_text() == text
    assert "n_bootstrap" in text.splitlines()[2]  # the reduced bootstrap is stated in the header


@pytest.fixture(scope="module")
def calibration(tmp_path_factory):
    """40 seeds of every world with the registry's default arguments (about 8 minutes on 2 idle cores)."""
    _, raw = _run(tmp_path_factory.mktemp("calibration"), "--seeds", "40", "--dowhy-seeds", "10")
    return raw["records"]


# Targets the project does not meet yet, with the reason (benchmarks/README.md "Gaps") and a
# looser bound the rate must still keep, so a regression beyond the known gap still fails.
KNOWN_GAPS = {
    # joint wild-bootstrap Wald of 4 lead bins with 16 clusters: 7% (3–14%) over 100 seeds, 12.5%
    # on seeds 0–39; fewer bins (2, 3) did not help
    ("pre_trend", "did_valid"): ("max", 0.20), ("pre_trend", "did_null"): ("max", 0.20),
    ("pre_trend", "did_midweek_launch"): ("max", 0.20),
    # the treated cohort is ~7x a donor's volume, so its pre-fit is tighter than the placebos' and
    # its post/pre ratio stands out on a true null less often than "never": 76% over 100 seeds
    ("placebo_rank", "sc_null"): ("min", 0.60),
    # +0.015/week divergence with 16 clusters: 84% over 100 seeds
    ("pre_trend", "did_diverge_large"): ("min", 0.70),
}


def _misses(rows) -> list[str]:
    out = []
    for r in rows:
        gap = KNOWN_GAPS.get((r["check"], r["arm"]))
        rate = r["failed"] / r["runs"] if r["runs"] else 0.0
        if gap is not None:
            kind, bound = gap
            if (kind == "max" and rate > bound) or (kind == "min" and rate < bound):
                out.append(f"{r['check']} on {r['arm']}: {r['failed']}/{r['runs']} beyond the known gap's bound {bound}")
        elif r["clear_miss"]:
            out.append(f"{r['check']} on {r['arm']}: {r['failed']}/{r['runs']} (target {r['target']})")
    return out


@pytest.mark.slow
def test_no_crashes(calibration):
    assert not [(r["world"], r["seed"], r["error"]) for r in calibration if r.get("error")]


@pytest.mark.slow
def test_false_alarms_within_target_where_the_assumption_holds(calibration):
    rows = [r for r in bench_checks.check_rows(calibration) if r["role"] == "hold" and r["engine"] != "dowhy"]
    assert not _misses(rows), _misses(rows)


@pytest.mark.slow
def test_large_breaks_are_detected(calibration):
    rows = [r for r in bench_checks.check_rows(calibration)
            if r["role"] == "break" and r["met"] is not None and r["engine"] == "ours"]
    assert not _misses(rows), _misses(rows)


@pytest.mark.slow
def test_interval_coverage_within_band_on_valid_and_null_worlds(calibration):
    bad = [f"{e['arm']}: {e['covered']}/{e['with_ci']}" for e in bench_checks.estimate_rows(calibration)
           if e["coverage_clear_miss"]]
    assert not bad, bad


@pytest.mark.slow
def test_valid_worlds_get_a_number(calibration):
    refused = [f"{v['arm']}: {v['refused']}/{v['runs']}" for v in bench_checks.verdict_rows(calibration)
               if WORLDS[v["world"]].kind in ("valid", "null") and v["refused"]]
    assert not refused, refused
