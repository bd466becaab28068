"""Build the synthetic-control panel (unit x period outcome rates) from the signals table.

Synthetic control needs a handful of aggregate series, not millions of rows, so all the
work is one or two GROUP BYs in DuckDB. Two designs:

* **cohorts** — units are cohorts (the ``unit_by`` columns joined as ``"chat|order_status"``);
  treated units are the cohorts the ``treated`` selector reaches, donors the cohorts it never
  reaches, and cohorts only partly reached are left out (they would be both).
* **prior_weeks** — when the selector reaches every cohort (a global launch) there is no
  donor left, so the donors become earlier weeks: units are calendar weeks, the time axis is
  the position inside the week (day of week, or hour of week), the treated unit is the launch
  week and its pre-period is the part of that week before the launch.

Column names come from configuration, so each is checked against the relation's columns and
double-quoted; selector values and dates are bound as parameters, never pasted into SQL.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import duckdb
import pandas as pd

from methods.sql import date_window_sql, quote_ident, relation_columns, relation_sql, treated_selector_sql

TIME_BUCKETS = ("week", "date", "hour")
REACH_TREATED = 0.5  # share of a cohort's post-launch conversations the selector must cover


def _check_columns(columns: list[str], names: dict[str, list[str]]) -> None:
    known = set(columns)
    for role, cols in names.items():
        bad = [c for c in cols if not isinstance(c, str) or c not in known]
        if bad:
            raise ValueError(f"{role} column(s) {bad!r} are not columns of the relation; available: {sorted(known)}")


def build_sc_panel(con: duckdb.DuckDBPyConnection, relation: str, outcome: str, unit_by: list[str],
                   treated: dict[str, list], launch: dt.date, time_bucket: str = "week", min_volume: int = 30,
                   window: dict | None = None) -> tuple[pd.DataFrame, dict]:
    """Long panel ``unit, period, <outcome>, n`` plus ``info`` for ``estimate_sc``.

    The value column (named after the outcome, ``value`` if that name is taken) is the mean
    outcome of the cell's conversations and ``n`` their count (the volume used to weight
    treated cohorts and price donor noise). ``info`` carries the column
    names (``unit_col``, ``time_col``, ``value_col``, ``weight_col``), ``treated_units``,
    ``donor_units``, the ``launch`` value comparable with ``period``, dropped and excluded
    cohorts, and ``design`` (``"cohorts"`` or ``"prior_weeks"``) with ``design_reason``.
    """
    if time_bucket not in TIME_BUCKETS:
        raise ValueError(f"time_bucket must be one of {TIME_BUCKETS}, got {time_bucket!r}")
    if not unit_by:
        raise ValueError("unit_by is empty: name the columns that define a cohort (e.g. [channel, intent])")
    if not treated:
        raise ValueError("treated selector is empty: give column -> allowed values")
    rel = relation_sql(relation)
    cols = relation_columns(con, relation)
    time_cols = ["date"] + (["started_at"] if time_bucket == "hour" else [])
    _check_columns(cols, {"outcome": [outcome], "unit_by": list(unit_by), "treated selector": list(treated),
                          "time": time_cols})
    launch_ts = pd.Timestamp(launch)
    sel_sql, sel_params = treated_selector_sql(treated)
    where_sql, where_params = date_window_sql(
        *(pd.Timestamp(window[k]).date() if window and window.get(k) is not None else None for k in ("start", "end")))
    y = quote_ident(outcome)
    unit_sql = "concat_ws('|', " + ", ".join(
        f"coalesce(CAST({quote_ident(c)} AS VARCHAR), 'null')" for c in unit_by) + ")"
    base = (f"SELECT {unit_sql} AS unit, CAST(\"date\" AS DATE) AS d, {_ts_sql(time_bucket)} AS ts, "
            f"CAST({y} AS DOUBLE) AS y, CAST(({sel_sql}) AS DOUBLE) AS sel "
            f"FROM {rel} WHERE {y} IS NOT NULL AND {where_sql}")
    base_params = sel_params + where_params

    reach = con.execute(
        f"""WITH base AS ({base})
            SELECT unit, avg(sel) AS share_all, avg(sel) FILTER (WHERE ts >= ?) AS share_post, count(*) AS n
            FROM base GROUP BY unit ORDER BY unit""",
        base_params + [launch_ts.to_pydatetime()],
    ).df()
    if reach.empty:
        raise ValueError(f"no rows with a non-null {outcome!r} in {relation} (within the window)")
    share = reach["share_post"].fillna(reach["share_all"])
    treated_units = reach.loc[share >= REACH_TREATED, "unit"].tolist()
    donors = reach.loc[reach["share_all"] == 0, "unit"].tolist()
    mixed = reach.loc[(share < REACH_TREATED) & (reach["share_all"] > 0), "unit"].tolist()
    if not treated_units:
        raise ValueError(f"the treated selector {treated!r} reaches no cohort of {list(unit_by)} after the launch")
    if not donors:
        panel, info = _prior_weeks_panel(con, base, base_params, launch_ts, time_bucket, min_volume, treated_units,
                                         mixed)
    else:
        panel, info = _cohort_panel(con, base, base_params, launch_ts, time_bucket, min_volume, treated_units,
                                    donors, mixed)
    if outcome not in ("unit", "period", "n"):  # name the value after the outcome so plots and JSON read well
        panel = panel.rename(columns={"value": outcome})
        info["value_col"] = outcome
    return panel, info


def _ts_sql(time_bucket: str) -> str:
    """Timestamp the launch is compared with (day resolution unless hours are asked for)."""
    return "CAST(\"started_at\" AS TIMESTAMP)" if time_bucket == "hour" else "CAST(CAST(\"date\" AS DATE) AS TIMESTAMP)"


def _bucket_sql(time_bucket: str) -> str:
    return {"week": "CAST(date_trunc('week', d) AS TIMESTAMP)", "date": "CAST(d AS TIMESTAMP)",
            "hour": "date_trunc('hour', ts)"}[time_bucket]


def _cohort_panel(con, base: str, params: list, launch: pd.Timestamp, time_bucket: str, min_volume: int,
                  treated_units: list[str], donors: list[str], mixed: list[str]) -> tuple[pd.DataFrame, dict]:
    cells = con.execute(
        f"""WITH base AS ({base})
            SELECT unit, {_bucket_sql(time_bucket)} AS period, avg(y) AS value, count(*) AS n
            FROM base WHERE unit IN (SELECT unnest(?)) GROUP BY ALL ORDER BY unit, period""",
        params + [treated_units + donors],
    ).df()
    cells["period"] = pd.to_datetime(cells["period"])
    # A bucket that starts before the launch but contains it is half treated: leave it out.
    straddling = _straddling_bucket(launch, time_bucket)
    dropped_periods = []
    if straddling is not None and (cells["period"] == straddling).any():
        cells = cells[cells["period"] != straddling]
        dropped_periods.append(straddling.date().isoformat() if time_bucket != "hour" else straddling.isoformat())
    n_periods = cells["period"].nunique()
    avg_volume = cells.groupby("unit")["n"].sum() / max(n_periods, 1)
    thin = sorted(u for u in donors if avg_volume.get(u, 0.0) < min_volume)
    thin_treated = sorted(u for u in treated_units if avg_volume.get(u, 0.0) < min_volume)
    keep_donors = [u for u in donors if u not in set(thin)]
    panel = cells[cells["unit"].isin(set(treated_units) | set(keep_donors))].reset_index(drop=True)
    info = _info("cohorts", "some cohorts were never reached by the change, so they serve as donors "
                 "(each cohort's own before/after is compared with theirs).",
                 panel, launch, time_bucket, treated_units, keep_donors, mixed, min_volume)
    info.update(dropped_thin=thin, thin_treated_kept=thin_treated, dropped_periods=dropped_periods,
                unit_volume=avg_volume.round(1).to_dict())
    return panel, info


def _straddling_bucket(launch: pd.Timestamp, time_bucket: str) -> pd.Timestamp | None:
    start = {"week": (launch - pd.Timedelta(days=launch.weekday())).normalize(),
             "date": launch.normalize(), "hour": launch.floor("h")}[time_bucket]
    return None if start == launch else start


def _prior_weeks_panel(con, base: str, params: list, launch: pd.Timestamp, time_bucket: str, min_volume: int,
                       treated_cohorts: list[str], mixed: list[str]) -> tuple[pd.DataFrame, dict]:
    """Global launch: weeks are units, position in the week is time, the launch week is treated."""
    hourly = time_bucket == "hour"
    pos_sql = ("(isodow(ts) - 1) * 24 + hour(ts)" if hourly else "isodow(d) - 1")
    launch_week = (launch - pd.Timedelta(days=launch.weekday())).normalize()
    launch_pos = launch.weekday() * 24 + launch.hour if hourly else launch.weekday()
    cells = con.execute(
        f"""WITH base AS ({base})
            SELECT CAST(date_trunc('week', d) AS DATE) AS week, {pos_sql} AS position, avg(y) AS value,
                   count(*) AS n
            FROM base WHERE d < CAST(? AS DATE) + INTERVAL 7 DAY GROUP BY ALL ORDER BY week, position""",
        params + [launch_week.date()],
    ).df()
    cells["unit"] = pd.to_datetime(cells["week"]).dt.strftime("%Y-%m-%d")
    cells = cells.drop(columns="week")
    treated_unit = launch_week.strftime("%Y-%m-%d")
    if not (cells["unit"] == treated_unit).any():
        raise ValueError(f"no conversations in the launch week ({treated_unit}): check the launch date and the window")
    positions = 168 if hourly else 7
    volume = cells.groupby("unit")["n"].sum() / positions
    complete = cells.groupby("unit")["position"].nunique() == positions
    weeks = sorted(u for u in cells["unit"].unique() if u != treated_unit)
    thin = [u for u in weeks if volume.get(u, 0.0) < min_volume or not complete.get(u, False)]
    donors = [u for u in weeks if u not in set(thin)]
    panel = cells[cells["unit"].isin(set(donors) | {treated_unit})][["unit", "position", "value", "n"]]
    panel = panel.rename(columns={"position": "period"}).reset_index(drop=True)
    unit_word = "hour of the week" if hourly else "day of the week"
    reason = (f"the change reached every cohort ({len(treated_cohorts)} reached, none left untouched), so no "
              f"cohort can serve as a donor; instead the {len(donors)} complete prior weeks are donors, the time "
              f"axis is the {unit_word}, and the synthetic week is fitted on the part of the launch week "
              f"({treated_unit}) before the launch.")
    info = _info("prior_weeks", reason, panel, launch_pos, time_bucket, [treated_unit], donors, mixed, min_volume)
    info.update(dropped_thin=thin, thin_treated_kept=[], dropped_periods=[], launch_week=treated_unit,
                reached_cohorts=treated_cohorts, position_unit=unit_word, unit_volume=volume.round(1).to_dict())
    return panel, info


def _info(design: str, reason: str, panel: pd.DataFrame, launch: Any, time_bucket: str, treated: list[str],
          donors: list[str], mixed: list[str], min_volume: int) -> dict:
    return {
        "design": design, "design_reason": reason, "unit_col": "unit", "time_col": "period",
        "value_col": "value", "weight_col": "n", "treated_units": list(treated), "donor_units": list(donors),
        "excluded_partly_reached": list(mixed), "launch": launch, "time_bucket": time_bucket,
        "min_volume": min_volume, "n_cells": len(panel),
    }
