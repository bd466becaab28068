"""Schema-Guided Dialogue rows (``data/sgd_dialogues``) → a landing directory (CONTRACT §1) with gold labels.

Why: the fixtures' texts come from the same phrase bank the default rules were written from, so
they cannot show how extraction does on text nobody here wrote. The SGD dev dialogues are real
crowd-sourced assistant conversations with gold intents; turned into a landing directory they
run through the same reader, extraction and store as an export would.

    python -m data_fixtures.sgd_landing --sgd data/sgd_dialogues --out RAW

What is copied: ``conversation_id``; ``turn`` = ``turn_index`` (0-based, unique per
conversation); ``role`` (already ``user``/``assistant``/``tool``); ``text``; ``tool_name`` (on the
assistant's API call, whose text is null, and on the ``tool`` result row).

What is **synthesised**, deterministically, because SGD has none of it (so it carries no signal
and no estimate may be read from it):

* start time: conversations sorted by id get ranks ``r = 0, 1, …``; day = ``start_date + r mod days``;
  time of day = 08:00 UTC + ``(r × 7919) mod 43200`` seconds (08:00–20:00); message ``turn``
  is stamped ``15 × turn`` seconds after the start. The same rows give the same times on any
  machine and any library version (no hash functions).
* ``channel = "chat"``, ``agent_version = "sgd-dev"``, ``skill = "general"``; ``customer_id`` and
  ``memory_items`` are null (SGD has no customers), so there is no ``customers.parquet``.
* ``outcomes.parquet``: ``resolved`` = the SGD ``transaction_outcome`` (``success`` → true,
  ``failure`` → false, no transaction → null); the other outcome columns are null.

Gold labels go to ``RAW/_labels/intents.parquet`` (``conversation_id, intent`` = SGD
``primary_intent``), outside the landing layout so the pipeline never reads them as input;
``convocausal signals train --labels RAW/_labels/intents.parquet`` trains on them. The SGD licence
(CC BY-SA 4.0) applies to everything written here; ``RAW/_ATTRIBUTION.txt`` says so
(underscore names are outside the landing layout, so the reader passes over them quietly).
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
from pathlib import Path

import polars as pl

DEFAULT_SGD = Path(__file__).resolve().parents[1] / "data" / "sgd_dialogues"
START_DATE = dt.date(2026, 1, 5)  # a Monday, inside the pipeline's default calendar
DAYS = 28
SECONDS_PER_TURN = 15
UTC_US = pl.Datetime("us", "UTC")

ATTRIBUTION = """\
Derived from the Schema-Guided Dialogue dataset (Rastogi et al. 2020, "Towards Scalable Multi-domain
Conversational Modeling: The Schema-Guided Dialogue Dataset"), google-research-datasets/
dstc8-schema-guided-dialogue, dev split (one half). Licence: CC BY-SA 4.0 (see LICENSE.txt beside the
source rows in data/sgd_dialogues/). Timestamps, channel, agent version and skill are synthesised by
data_fixtures/sgd_landing.py and carry no information.
"""


def build_landing(sgd_dir: str | Path = DEFAULT_SGD, out_dir: str | Path = "sgd_raw",
                  start_date: dt.date = START_DATE, days: int = DAYS, replicate: int = 1) -> dict:
    """Write the landing directory; returns counts and paths (``labels`` is the gold-label file).

    ``replicate`` > 1 (for benchmarks: real, non-templated text at production size) writes every
    dialogue that many times, copy ``k`` ≥ 1 under the id ``<id>~<k>`` (copy 0 keeps the SGD id),
    ranked and dated like distinct conversations; ``replicate=1`` writes exactly the plain landing
    directory. Day folders are built one at a time, so memory holds one day of messages."""
    sgd, out = Path(sgd_dir), Path(out_dir)
    if days < 1:
        raise ValueError("days must be at least 1")
    if replicate < 1:
        raise ValueError("replicate must be at least 1")
    messages = pl.read_parquet(sgd / "messages.parquet")
    conversations = pl.read_parquet(sgd / "conversations.parquet")
    conversations = _replicated(conversations, replicate)
    start_ts = dt.datetime.combine(start_date, dt.time(8, 0), tzinfo=dt.timezone.utc)
    starts = (
        conversations.select("conversation_id", "__sgd_id").unique().sort("conversation_id")
        .with_row_index("rank")
        .with_columns(
            (pl.lit(start_ts, UTC_US)
             + pl.duration(days=pl.col("rank") % days, seconds=(pl.col("rank") * 7919) % 43_200)).alias("started_at"))
    )
    starts = starts.with_columns(pl.col("started_at").dt.date().alias("__day"))
    if out.exists():
        shutil.rmtree(out / "transcripts", ignore_errors=True)
    (out / "transcripts").mkdir(parents=True, exist_ok=True)
    messages = messages.rename({"conversation_id": "__sgd_id"}).with_columns(pl.col("__sgd_id").cast(pl.String))
    n_messages, day_list = 0, []
    for (day,), day_starts in starts.partition_by("__day", as_dict=True, maintain_order=True).items():
        part = _day_rows(messages, day_starts)
        if not part.height:
            continue
        folder = out / "transcripts" / f"date={day.isoformat()}"
        folder.mkdir(parents=True, exist_ok=True)
        part.write_parquet(folder / "part-0.parquet")
        n_messages += part.height
        day_list.append(day)
    outcomes = conversations.select(
        pl.col("conversation_id").cast(pl.String),
        pl.when(pl.col("transaction_outcome") == "success").then(True)
        .when(pl.col("transaction_outcome") == "failure").then(False).otherwise(None).alias("resolved"),
        pl.lit(None, pl.Boolean).alias("reopened_7d"),
        pl.lit(None, pl.Boolean).alias("escalated"),
        pl.lit(None, pl.Int64).alias("csat"),
    ).sort("conversation_id")
    outcomes.write_parquet(out / "outcomes.parquet")
    labels_path = out / "_labels" / "intents.parquet"
    labels_path.parent.mkdir(parents=True, exist_ok=True)
    conversations.select(pl.col("conversation_id").cast(pl.String), pl.col("primary_intent").alias("intent")) \
        .sort("conversation_id").write_parquet(labels_path)
    (out / "_ATTRIBUTION.txt").write_text(ATTRIBUTION, encoding="utf-8")
    return {"raw": out, "labels": labels_path, "n_conversations": starts.height, "n_messages": n_messages,
            "days": len(day_list), "first_day": min(day_list), "last_day": max(day_list)}


def _replicated(conversations: pl.DataFrame, replicate: int) -> pl.DataFrame:
    """The conversations table with ``__sgd_id`` (the source dialogue) and, for ``replicate`` > 1,
    copies ``1..replicate-1`` of every row under ``<id>~<k>``."""
    base = conversations.with_columns(pl.col("conversation_id").cast(pl.String).alias("__sgd_id"))
    if replicate == 1:
        return base.with_columns(pl.col("__sgd_id").alias("conversation_id"))
    copies = pl.DataFrame({"__k": pl.int_range(0, replicate, eager=True).cast(pl.UInt32)})
    return base.join(copies, how="cross").with_columns(
        pl.when(pl.col("__k") == 0).then(pl.col("__sgd_id"))
        .otherwise(pl.col("__sgd_id") + pl.lit("~") + pl.col("__k").cast(pl.String)).alias("conversation_id")
    ).drop("__k")


def _day_rows(messages: pl.DataFrame, day_starts: pl.DataFrame) -> pl.DataFrame:
    """One day folder's message rows: the messages of the dialogues that start that day."""
    return (
        messages.join(day_starts, on="__sgd_id", how="inner")
        .select(
            pl.col("conversation_id").cast(pl.String),
            pl.col("turn_index").cast(pl.Int64).alias("turn"),
            (pl.col("started_at") + pl.duration(seconds=pl.col("turn_index") * SECONDS_PER_TURN)).alias("ts"),
            pl.col("role").cast(pl.String),
            pl.col("text").cast(pl.String),
            pl.col("tool_name").cast(pl.String),
            pl.lit("chat").alias("channel"),
            pl.lit("sgd-dev").alias("agent_version"),
            pl.lit(None, pl.String).alias("customer_id"),
            pl.lit("general").alias("skill"),
            pl.lit(None, pl.Int64).alias("memory_items"),
        )
        .sort("conversation_id", "turn")
    )


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sgd", type=Path, default=DEFAULT_SGD, help="folder with messages.parquet, conversations.parquet")
    p.add_argument("--out", type=Path, required=True, help="landing directory to write")
    p.add_argument("--start-date", type=dt.date.fromisoformat, default=START_DATE)
    p.add_argument("--days", type=int, default=DAYS)
    p.add_argument("--replicate", type=int, default=1, help="write every dialogue this many times (benchmarks)")
    a = p.parse_args(argv)
    info = build_landing(a.sgd, a.out, a.start_date, a.days, a.replicate)
    print(f"wrote {info['raw']}: {info['n_conversations']} conversations, {info['n_messages']} messages over "
          f"{info['days']} days ({info['first_day']} to {info['last_day']}); gold labels in {info['labels']}")
    return info


if __name__ == "__main__":
    main()
