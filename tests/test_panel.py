"""Panel builder: cohort aggregation in DuckDB, thin-cohort dropping, safe SQL, global launches.

Every table here is built with numpy (one row per conversation) so expected cell values are
recomputed independently with pandas rather than read back from the builder.
"""

from __future__ import annotations

import datetime as dt

import duckdb
import numpy as np
import pandas as pd
import pytest

from methods.sc.estimate import estimate_sc
from methods.sc.panel import build_sc_panel

START = dt.date(2026, 1, 5)  # a Monday


def conversations(seed: int = 0, n_weeks: int = 12, launch: dt.date = dt.date(2026, 3, 2),
                  effect: float = 0.0, thin: str | None = "sms|b", per_day: int = 8,
                  channels=("chat", "email", "voice", "sms"), treated_channels=("chat",)) -> pd.DataFrame:
    """Signals-like rows: channel x intent cohorts, daily traffic, effect on treated after launch."""
    rng = np.random.default_rng(seed)
    days = pd.date_range(START, periods=7 * n_weeks, freq="D")
    frames = []
    for ch in channels:
        for it in ("a", "b"):
            k = 1 if f"{ch}|{it}" == thin else per_day
            day = np.repeat(days.to_numpy(), k)
            hour = rng.integers(0, 24, len(day))
            started = pd.to_datetime(day) + pd.to_timedelta(hour, unit="h")
            base = 0.5 + (0.1 if it == "a" else -0.05) + 0.02 * np.sin(np.arange(len(day)) / (7 * k))
            treated = (ch in treated_channels) & (started >= pd.Timestamp(launch))
            resolved = rng.random(len(day)) < base + effect * treated
            frames.append(pd.DataFrame({
                "started_at": started, "date": started.normalize().date, "week": (started.normalize() - pd.to_timedelta(
                    started.dayofweek, unit="D")).date, "channel": ch, "intent": it, "resolved": resolved,
                "skill": np.where(rng.random(len(day)) < 0.5, "tier1", "tier2"),
            }))
    return pd.concat(frames, ignore_index=True)


def connect(df: pd.DataFrame) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.register("_df", df)
    con.execute("CREATE TABLE signals AS SELECT * FROM _df")
    con.unregister("_df")
    return con


def test_cohort_panel_matches_pandas_and_drops_thin_cohorts():
    df = conversations()
    con = connect(df)
    panel, info = build_sc_panel(con, "signals", "resolved", ["channel", "intent"], {"channel": ["chat"]},
                                 dt.date(2026, 3, 2), time_bucket="week", min_volume=30)
    assert info["design"] == "cohorts"
    assert info["treated_units"] == ["chat|a", "chat|b"]
    assert "sms|b" in info["dropped_thin"] and "sms|b" not in info["donor_units"]
    assert sorted(info["donor_units"]) == ["email|a", "email|b", "sms|a", "voice|a", "voice|b"]
    expected = (df.assign(unit=df.channel + "|" + df.intent, period=pd.to_datetime(df.week))
                .groupby(["unit", "period"]).resolved.agg(value="mean", n="size").reset_index())
    expected = expected[expected.unit != "sms|b"].sort_values(["unit", "period"]).reset_index(drop=True)
    got = panel.sort_values(["unit", "period"]).reset_index(drop=True)
    assert (got.unit.to_numpy() == expected.unit.to_numpy()).all()
    np.testing.assert_allclose(got[info["value_col"]].to_numpy(), expected.value.to_numpy())
    assert info["value_col"] == "resolved"
    assert (got.n.to_numpy() == expected.n.to_numpy()).all()
    assert info["launch"] == pd.Timestamp("2026-03-02")
    assert {info["unit_col"], info["time_col"], info["value_col"], info["weight_col"]} <= set(panel.columns)


def test_cohort_panel_feeds_the_estimator_and_recovers_the_effect():
    df = conversations(seed=1, n_weeks=16, effect=0.15, per_day=30, thin=None,
                       channels=("chat", "email", "voice", "sms", "web", "app"))
    panel, info = build_sc_panel(connect(df), "signals", "resolved", ["channel", "intent"],
                                 {"channel": ["chat"]}, dt.date(2026, 3, 2))
    res = estimate_sc(panel, info["unit_col"], info["time_col"], info["value_col"], info["treated_units"],
                      info["launch"], weight=info["weight_col"])
    assert res.ci_low <= 0.15 <= res.ci_high and res.ci_low > 0
    assert res.n_treated == int((df.channel == "chat").sum())


def test_mid_week_launch_drops_the_straddling_week():
    df = conversations()
    panel, info = build_sc_panel(connect(df), "signals", "resolved", ["channel", "intent"],
                                 {"channel": ["chat"]}, dt.date(2026, 3, 4))
    assert info["dropped_periods"] == ["2026-03-02"]
    assert pd.Timestamp("2026-03-02") not in set(panel["period"])


def test_window_and_date_bucket():
    df = conversations()
    panel, _info = build_sc_panel(connect(df), "signals", "resolved", ["channel", "intent"], {"channel": ["chat"]},
                                 dt.date(2026, 3, 2), time_bucket="date", min_volume=1,
                                 window={"start": dt.date(2026, 2, 1), "end": dt.date(2026, 3, 10)})
    assert panel["period"].min() == pd.Timestamp("2026-02-01")
    assert panel["period"].max() == pd.Timestamp("2026-03-10")


@pytest.mark.parametrize("bad", ['resolved"; DROP TABLE signals; --', "resolved'", "no_such_column"])
def test_identifiers_are_validated_and_tables_survive(bad):
    con = connect(conversations())
    with pytest.raises(ValueError, match="not columns of the relation"):
        build_sc_panel(con, "signals", bad, ["channel"], {"channel": ["chat"]}, dt.date(2026, 3, 2))
    with pytest.raises(ValueError, match="not columns of the relation"):
        build_sc_panel(con, "signals", "resolved", ["channel", bad], {"channel": ["chat"]}, dt.date(2026, 3, 2))
    with pytest.raises(ValueError, match="not columns of the relation"):
        build_sc_panel(con, "signals", "resolved", ["channel"], {bad: ["chat"]}, dt.date(2026, 3, 2))
    with pytest.raises(ValueError, match="plain"):
        build_sc_panel(con, "signals; DROP TABLE signals", "resolved", ["channel"], {"channel": ["x"]},
                       dt.date(2026, 3, 2))
    assert con.execute("SELECT count(*) FROM signals").fetchone()[0] > 0


def test_odd_but_real_column_names_are_quoted_and_values_bound():
    df = conversations().rename(columns={"channel": 'chan"nel; x'})
    con = connect(df)
    _panel, info = build_sc_panel(con, "signals", "resolved", ['chan"nel; x', "intent"], {'chan"nel; x': ["chat"]},
                                 dt.date(2026, 3, 2))
    assert info["treated_units"] == ["chat|a", "chat|b"]
    # a value that looks like SQL is only ever a value: it matches nothing
    with pytest.raises(ValueError, match="reaches no cohort"):
        build_sc_panel(con, "signals", "resolved", ["intent"], {'chan"nel; x': ["chat' OR 1=1 --"]},
                       dt.date(2026, 3, 2))


def test_partly_reached_cohorts_are_left_out():
    df = conversations()
    rng = np.random.default_rng(5)
    df["flag"] = (df.channel == "chat") | ((df.channel == "email") & (df.intent == "a") & (rng.random(len(df)) < 0.2))
    panel, info = build_sc_panel(connect(df), "signals", "resolved", ["channel", "intent"], {"flag": [True]},
                                 dt.date(2026, 3, 2))
    assert info["treated_units"] == ["chat|a", "chat|b"]
    assert info["excluded_partly_reached"] == ["email|a"]
    assert "email|a" not in set(panel["unit"])


def test_global_launch_switches_to_prior_weeks():
    launch = dt.date(2026, 3, 6)  # a Friday: Mon-Thu of the launch week are its pre-period
    df = conversations(seed=2, n_weeks=10, launch=launch, effect=0.25, thin=None, per_day=12,
                       treated_channels=("chat", "email", "voice", "sms"))
    con = connect(df)
    panel, info = build_sc_panel(con, "signals", "resolved", ["channel", "intent"],
                                 {"channel": ["chat", "email", "voice", "sms"]}, launch, time_bucket="date")
    assert info["design"] == "prior_weeks"
    assert "no cohort can serve as a donor" in info["design_reason"]
    assert info["treated_units"] == ["2026-03-02"]
    assert info["donor_units"] == [d.strftime("%Y-%m-%d") for d in pd.date_range(START, "2026-02-23", freq="7D")]
    assert sorted(panel["period"].unique()) == list(range(7)) and info["launch"] == 4
    assert not (panel["unit"] > "2026-03-02").any()  # weeks after the launch week are not used
    # the launch week's Friday cell equals the pandas mean of that day
    fri = df[df.date == launch].resolved.mean()
    assert panel.query("unit == '2026-03-02' and period == 4")["resolved"].item() == pytest.approx(fri)
    res = estimate_sc(panel, info["unit_col"], info["time_col"], info["value_col"], info["treated_units"],
                      info["launch"], weight=info["weight_col"])
    assert res.ci_low <= 0.25 <= res.ci_high


def test_global_launch_by_hour_uses_hour_of_week():
    launch = pd.Timestamp("2026-02-11 12:00")  # Wednesday noon of the 6th week
    df = conversations(seed=3, n_weeks=6, launch=launch.date(), thin=None, per_day=400,
                       channels=("chat",), treated_channels=("chat",))
    panel, info = build_sc_panel(connect(df), "signals", "resolved", ["channel"], {"channel": ["chat"]},
                                 launch, time_bucket="hour", min_volume=5)
    assert info["design"] == "prior_weeks" and info["position_unit"] == "hour of the week"
    assert info["launch"] == 2 * 24 + 12
    assert panel["period"].max() <= 167
    assert len(info["donor_units"]) == 5


def test_selector_reaching_nothing_is_an_error():
    with pytest.raises(ValueError, match="reaches no cohort"):
        build_sc_panel(connect(conversations()), "signals", "resolved", ["channel"], {"channel": ["fax"]},
                       dt.date(2026, 3, 2))
