"""Emails, phone numbers and card-like numbers planted in every text field reach no store table,
no parquet part, no memo, no plot and no log line."""

from __future__ import annotations

import logging
import re

import duckdb
import polars as pl
import pytest

from convocausal.store import connect
from pipelines.runner import run_pipeline

EMAIL = "leak.victim99@example.org"
PHONE = "+44 20 7946 0958"
CARD = "4111 1111 1111 1111"
PATTERNS = [re.escape(EMAIL), r"7946[ -]?0958", r"4111[ -]?1111[ -]?1111[ -]?1111"]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    from data_fixtures.generator import generate

    raw = tmp_path_factory.mktemp("pii_raw")
    generate(raw, n_conversations=5000, seed=31)
    leak = f" contact {EMAIL} or {PHONE}, card {CARD}"
    # Labels that become plot axes and legends (skill → DiD clusters, agent version and persona →
    # balance plot rows) carry PII for a tenth of the conversations / customers.
    some = pl.col("conversation_id").str.ends_with("7")
    for f in (raw / "transcripts").glob("date=*/*.parquet"):
        df = pl.read_parquet(f)
        df.with_columns(
            (pl.col("text").fill_null("") + pl.lit(leak)).alias("text"),
            pl.when(pl.col("role") == "tool").then(pl.lit(f"lookup {EMAIL}")).otherwise(pl.col("tool_name"))
            .alias("tool_name"),
            pl.when(some).then(pl.col("skill") + f" {EMAIL}").otherwise(pl.col("skill")).alias("skill"),
            pl.when(some).then(pl.col("agent_version") + f" {PHONE}").otherwise(pl.col("agent_version"))
            .alias("agent_version"),
        ).write_parquet(f)
    crm = pl.read_parquet(raw / "customers.parquet")
    crm.with_columns(
        pl.when(pl.col("customer_id").str.ends_with("3")).then(pl.lit(f"vip {CARD}"))
        .otherwise(pl.col("persona_segment")).alias("persona_segment")
    ).write_parquet(raw / "customers.parquet")
    return raw


def test_no_pii_anywhere(planted, tmp_path, caplog, monkeypatch):
    import matplotlib.figure
    import matplotlib.text

    drawn: list[str] = []  # every string drawn in every figure saved during the run
    original = matplotlib.figure.Figure.savefig

    def savefig(fig, *args, **kwargs):
        out = original(fig, *args, **kwargs)  # drawn now, so tick labels exist
        drawn.extend(t.get_text() for t in fig.findobj(matplotlib.text.Text))
        return out

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    # the Love plot draws its 20 most imbalanced levels; here it draws every level, so every
    # label a plot could ever show is checked (the planted ones are rare, hence well balanced)
    monkeypatch.setattr("methods.psm.plots.LOVE_TOP", 10_000)
    store = tmp_path / "store.duckdb"
    with caplog.at_level(logging.DEBUG):
        run_pipeline(planted, store, log_level="DEBUG")
    found: list[str] = []
    labels = "\n".join(drawn)
    assert "agent_version=v1.4 [PHONE]" in labels and "persona_segment=vip [CARD]" in labels, \
        "the planted labels should reach the balance plot, redacted"
    found += [f"plot text: {p}" for p in PATTERNS if re.search(p, "\n".join(drawn))]
    with connect(store, read_only=True) as con:
        for (table,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall():
            text = con.execute(f"SELECT CAST(COLUMNS(*) AS VARCHAR) FROM {table}").df().to_csv()
            found += [f"table {table}: {p}" for p in PATTERNS if re.search(p, text)]
    parts = store.with_name(store.name + ".parts")
    with duckdb.connect() as con:
        for f in parts.rglob("*.parquet"):
            text = con.execute("SELECT CAST(COLUMNS(*) AS VARCHAR) FROM read_parquet(?)", [str(f)]).df().to_csv()
            found += [f"{f}: {p}" for p in PATTERNS if re.search(p, text)]
    for f in parts.rglob("*.png"):
        found += [f"{f.name}: {p}" for p in PATTERNS if re.search(p.encode(), f.read_bytes())]
    for f in [*parts.rglob("*.md"), *parts.rglob("*.html")]:
        found += [f"{f.name}: {p}" for p in PATTERNS if re.search(p, f.read_text())]
    found += [f"log: {p}" for p in PATTERNS if re.search(p, caplog.text)]
    assert not found, found
