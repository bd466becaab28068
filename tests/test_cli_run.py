"""`convocausal init` then `convocausal run` on a landing directory from 2025, with no variable set.

Also what a run says while it works (stage lines with counts and elapsed time on stderr, none of
Dagster's tracebacks for expected failures) and `--fail-on-blocking` (exit status 3).
"""

from __future__ import annotations

import io
import json
import re
import shutil
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest

from convocausal.cli import main
from convocausal.progress import Progress

SHIFT_DAYS = 364  # 52 weeks: weekdays (and Monday launches) stay weekdays


def shift_landing(src: Path, dst: Path, days: int = SHIFT_DAYS) -> None:
    """Copy a generated landing directory with every transcript moved ``days`` earlier (partition and ts)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("transcripts"))
    for part in sorted((src / "transcripts").glob("date=*/*.parquet")):
        day = date.fromisoformat(part.parent.name.removeprefix("date=")) - timedelta(days=days)
        out = dst / "transcripts" / f"date={day}" / part.name
        out.parent.mkdir(parents=True, exist_ok=True)
        pl.read_parquet(part).with_columns(pl.col("ts") - pl.duration(days=days)).write_parquet(out)


@pytest.fixture(scope="module")
def landing_2025(tmp_path_factory) -> Path:
    from data_fixtures.generator import generate

    base = tmp_path_factory.mktemp("gen")
    generate(base / "raw", n_conversations=400, seed=5)
    out = tmp_path_factory.mktemp("landing") / "raw2025"
    shift_landing(base / "raw", out)
    first = min(p.name for p in (out / "transcripts").iterdir())
    assert first.startswith("date=2025-")
    return out


def test_init_then_run_on_2025_data_without_any_variable(landing_2025, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("CONVOCAUSAL_START_DATE", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["init", "--raw", str(landing_2025)]) == 0
    init_out = capsys.readouterr().out
    assert (tmp_path / "signals.yaml").is_file() and (tmp_path / "questions.yaml").is_file()
    assert "next:" in init_out and "convocausal run" in init_out
    code = main(["run", "--raw", str(landing_2025), "--signals", "signals.yaml", "--questions", "questions.yaml"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "no question registered" in captured.out
    err = captured.err.splitlines()
    assert all(line.startswith("convocausal: ") for line in err), captured.err  # no Dagster log lines
    # the run's calendar is the landing directory's: nothing tells the user to set a variable
    assert not [line for line in err if "CONVOCAUSAL_START_DATE" in line], captured.err[:600]
    assert re.search(r"\d+ transcript day\(s\), 2025-01-\d\d to 2025-07-\d\d", captured.err)
    assert any(re.match(r"convocausal: extraction: \d+ day\(s\), 400 conversations \(\d+\.\d s\)", x) for x in err)
    assert any(re.match(r"convocausal: store: 400 conversations, .* \(\d+\.\d s\)", x) for x in err)
    assert err[-1].startswith("convocausal: done in ")
    import duckdb

    con = duckdb.connect(str(tmp_path / "convocausal.duckdb"), read_only=True)
    first, n = con.execute("SELECT min(date), count(*) FROM signals").fetchone()
    con.close()
    assert first.year == 2025 and n == 400


def test_runner_builds_the_calendar_from_the_days_found(landing_2025, tmp_path):
    """The Dagster calendar still starts at CONVOCAUSAL_START_DATE (2026-01-01 by default) for
    `dagster dev`; the runner's own calendar starts at the first day of the landing directory."""
    from pipelines.partitions import START_DATE, days_before_start, transcript_days
    from pipelines.runner import complete_days, run_pipeline

    days = complete_days(landing_2025)
    assert transcript_days.start.date().isoformat() == START_DATE
    assert days[0] < date.fromisoformat(START_DATE)
    assert days_before_start(days) == (f"transcripts start on {days[0]}, before CONVOCAUSAL_START_DATE={START_DATE}: "
                                       "set that environment variable to an earlier date")
    assert days_before_start(days, start=days[0].isoformat()) is None
    timings: dict = {}
    q = tmp_path / "none.yaml"
    q.write_text("questions: []\n")
    assert run_pipeline(landing_2025, tmp_path / "s.duckdb", questions_config=q, timings=timings) == []
    assert {"extraction", "store"} <= set(timings)


def test_every_day_after_yesterday_is_a_clear_error(tmp_path, capsys):
    raw = tmp_path / "raw" / "transcripts" / f"date={date.today() + timedelta(days=3)}"
    raw.mkdir(parents=True)
    pl.DataFrame({"conversation_id": ["c"], "turn": [0]}).write_parquet(raw / "part-0.parquet")
    code = main(["run", "--raw", str(tmp_path / "raw"), "--store", str(tmp_path / "s.duckdb")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "extracted once it is complete" in err


@pytest.fixture(scope="module")
def answered(landing_2025, tmp_path_factory):
    """A run with the three example questions `init` proposes (uncommented), as JSON with --progress."""
    from tests.cli_helpers import uncomment

    work = tmp_path_factory.mktemp("answered")
    assert main(["init", "--raw", str(landing_2025), "--out", str(work)]) == 0
    (work / "questions.yaml").write_text(uncomment((work / "questions.yaml").read_text(), "questions"))
    (work / "signals.yaml").write_text(uncomment((work / "signals.yaml").read_text(), "behaviours"))
    return work


def test_json_run_with_progress_and_fail_on_blocking(answered, landing_2025, capsys):
    """JSON on stdout, stage lines on stderr (asked for with --progress), never a Dagster log line or
    traceback, and status 3 exactly when a blocking check failed."""
    from checks.catalog import CATALOG

    capsys.readouterr()
    code = main(["run", "--raw", str(landing_2025), "--store", str(answered / "s.duckdb"),
                 "--signals", str(answered / "signals.yaml"), "--questions", str(answered / "questions.yaml"),
                 "--json", "--progress", "--fail-on-blocking"])
    captured = capsys.readouterr()
    assert captured.out.strip(), captured.err
    rows = json.loads(captured.out)
    assert len(rows) == 3
    blocked = [r["question_id"] for r in rows if any(s == "failed" and CATALOG[k].blocking
                                                      for k, s in r["checks"].items())]
    assert code == (3 if blocked else 0)
    assert "Traceback" not in captured.err and "dagster" not in captured.err.lower()
    lines = captured.err.splitlines()
    assert all(x.startswith("convocausal: ") for x in lines), captured.err
    for i, r in enumerate(rows, 1):
        assert any(re.match(rf"convocausal: question {i}/3 {r['question_id']}: .* \(\d+\.\d s\)$", x) for x in lines)
    if blocked:
        assert lines[-1].startswith(f"convocausal: blocking check failed: {blocked[0]}")


def test_fail_on_blocking_exit_status(monkeypatch, tmp_path, capsys):
    """Exit 3 only with --fail-on-blocking and only for a failed *blocking* check."""
    import pipelines.runner

    raw = tmp_path / "raw"
    raw.mkdir()
    rows = [{"question_id": "q1", "method": "diff_in_diff", "estimate": 0.1, "ci_low": 0.0, "ci_high": 0.2,
             "p_value": 0.04, "naive_estimate": 0.2, "checks": {"pre_trend": "failed", "sample_size": "passed"}},
            {"question_id": "q2", "method": "synthetic_control", "estimate": 0.1, "ci_low": 0.0, "ci_high": 0.2,
             "p_value": 0.04, "naive_estimate": 0.2, "checks": {"placebo_rank": "failed"}}]
    monkeypatch.setattr(pipelines.runner, "run_pipeline", lambda *a, **k: [dict(r) for r in rows])
    assert main(["run", "--raw", str(raw), "--store", str(tmp_path / "s.duckdb")]) == 0
    assert capsys.readouterr().err.startswith("convocausal: done in ")
    assert main(["run", "--raw", str(raw), "--store", str(tmp_path / "s.duckdb"), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)[0]["question_id"] == "q1" and captured.err == ""  # --json: quiet
    assert main(["run", "--raw", str(raw), "--store", str(tmp_path / "s.duckdb"), "--fail-on-blocking", "-q"]) == 3
    assert capsys.readouterr().err.strip() == ("convocausal: blocking check failed: q1 (pre_trend); "
                                               "exit status 3 (--fail-on-blocking)")
    rows[0]["checks"]["pre_trend"] = "passed"  # a WARN check (placebo_rank) never blocks
    assert main(["run", "--raw", str(raw), "--store", str(tmp_path / "s.duckdb"), "--fail-on-blocking"]) == 0


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_lines_and_terminal_bar():
    plain = io.StringIO()
    p = Progress(plain)
    assert not p.bar  # not a terminal: lines only
    with p.stage("extraction", total=3, unit="days") as st:
        st.summary = "3 day(s), 10 conversations"
    p.warn("something to know")
    lines = plain.getvalue().splitlines()
    assert re.fullmatch(r"convocausal: extraction: 3 day\(s\), 10 conversations \(\d\.\d s\)", lines[0])
    assert lines[1] == "convocausal: warning: something to know"

    tty = _Tty()
    count = iter(range(100))
    p = Progress(tty)
    assert p.bar
    with p.stage("extraction", total=4, unit="days", poll=lambda: min(next(count), 4)) as st:
        import time

        time.sleep(0.6)
        st.summary = "4 day(s)"
    text = tty.getvalue()
    assert "\r" in text and "/4 days" in text and "[" in text
    assert text.rstrip("\n").endswith("4 day(s) (0.6 s)") or re.search(r"extraction: 4 day\(s\) \(\d\.\d s\)\n$", text)

    quiet = io.StringIO()
    p = Progress(quiet, enabled=False)  # --json without --progress: warnings still, stage lines not
    with p.stage("store") as st:
        st.summary = "x"
    p.warn("kept")
    assert quiet.getvalue() == "convocausal: warning: kept\n"
    off = io.StringIO()
    p = Progress(off, enabled=False, warnings=False)  # --quiet
    p.warn("dropped")
    assert off.getvalue() == ""
