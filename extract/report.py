"""The extraction report: how the intent extractor did on the stored signals, and whether it drifted.

Why: every estimate that adjusts for ``intent`` rests on it, and a rule set or a model that
quietly stops matching (a new product, a template change on the agent platform) pushes
conversations into the default intent. The report says, from the store's signals alone:
the conversations per intent class, the share falling to the default, the histogram of
``intent_confidence``, and the default share per day. Given the openings (read on demand from
the landing directory, never stored) it adds the hits per rule (``rule_match_counts``) and
redacted examples of openers no rule matched (``extract.redact.redact_text``: nothing that
leaves here holds an email, a phone or a card). Given labels (``conversation_id, intent``) it
adds accuracy and the confusion table, with intents compared after lower-casing and dropping
non-alphanumeric characters (:func:`normalise_intent`).

The check :func:`default_share_check` warns when the default share passes a threshold (20% by
default) or when one day's share jumps away from the 7 days before it (two-proportion z-test,
p < 0.001 *and* a move of at least 5 points: a large sample makes tiny moves significant).

Pure polars; no Dagster (``assets/extraction.py`` and ``convocausal signals report`` wrap it).
:func:`extraction_report` reads a frame of every conversation; :func:`extraction_report_from` gives
the same report from a DuckDB ``signals`` relation, pulling only counts per (day, intent,
confidence bin) and, for the openings and the labels, the rows of the conversations they name
(at 10M conversations the frame of every row was most of the asset's time).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import polars as pl

from configs.signals import SignalsConfig, SignalsConfigError
from extract.intent import extractor_factory, rule_match_counts
from extract.redact import pseudonymize_ids, redact_text

DEFAULT_SHARE_THRESHOLD = 0.20
JUMP_WINDOW_DAYS = 7
JUMP_ALPHA = 0.001
JUMP_MIN_MOVE = 0.05
HISTOGRAM_BINS = 10
N_EXAMPLES = 10
EXAMPLE_CHARS = 200

_NON_ALNUM = "[^a-z0-9]"


# --------------------------------------------------------------------------- label comparison
def normalise_intent(label: str) -> str:
    """``Hotels_4.SearchHotel`` → ``hotels4searchhotel``: lower-cased, non-alphanumerics dropped."""
    return re.sub(_NON_ALNUM, "", label.lower())


def normalised(expr: pl.Expr) -> pl.Expr:
    """:func:`normalise_intent` as a polars expression (same result on ASCII and non-ASCII text)."""
    return expr.cast(pl.String).str.to_lowercase().str.replace_all(_NON_ALNUM, "")


# --------------------------------------------------------------------------- the second extractor
def compare_intents(openings: pl.DataFrame, config: SignalsConfig, model_dir=None) -> pl.DataFrame | None:
    """``conversation_id, intent`` from the config's ``intent.compare_with`` extractor (None: not configured).

    For ``extraction_sensitivity``'s second rerun. Conversation ids are pseudonymised as the stored
    signals' are (an id that looks like PII is hashed with the config's salt), so they join;
    null intents become the default, as in extraction. No text leaves: only the labels.
    """
    name = config.intent.compare_with
    if name is None:
        return None
    extractor = extractor_factory(name)(config=config, model_dir=model_dir, options={})
    if not hasattr(extractor, "classify"):
        raise SignalsConfigError(f"intent.compare_with `{name}` returned {type(extractor).__name__}, "
                                 "which has no classify(openings) method")
    got = extractor.classify(openings.select("conversation_id", "opening_text"))
    return got.select(
        pseudonymize_ids(got["conversation_id"].cast(pl.String), config.customer_key.salt).alias("conversation_id"),
        pl.col("intent").cast(pl.String).fill_null(config.intent.default),
    )


def compare_intents_from_raw(raw_dir, config: SignalsConfig, model_dir=None,
                             on_unreadable: str = "stop") -> pl.DataFrame | None:
    """:func:`compare_intents` over every opening of the landing directory; None (nothing read) when not configured."""
    if config.intent.compare_with is None:
        return None
    from extract.raw import load_transcripts
    from extract.signals import opening_texts

    batch = load_transcripts(raw_dir, on_unreadable=on_unreadable)
    return compare_intents(opening_texts(batch.accepted, config.intent.opening_user_turns), config, model_dir)


# --------------------------------------------------------------------------- the default-share check
@dataclass(frozen=True)
class ShareCheck:
    passed: bool
    message: str
    overall_share: float | None
    threshold: float
    jump_days: list[dict]  # {date, share, baseline_share, z, p_value}

    def as_dict(self) -> dict:
        return {"passed": self.passed, "message": self.message, "overall_share": self.overall_share,
                "threshold": self.threshold, "jump_days": self.jump_days}


REPORT_COLUMNS = ("conversation_id", "date", "intent", "intent_confidence")


def report_signals(con) -> pl.DataFrame:
    """The signals columns the report reads, from a DuckDB connection with a ``signals`` relation
    (a store written before ``intent_confidence`` existed simply lacks that column)."""
    cols = [c for c in REPORT_COLUMNS if c in _columns(con)]
    return pl.from_arrow(con.sql(f"SELECT {', '.join(cols)} FROM signals").to_arrow_table())


def _columns(con) -> set[str]:
    return {row[0] for row in con.execute("DESCRIBE signals").fetchall()}


def signal_counts(con, bins: int = HISTOGRAM_BINS) -> pl.DataFrame:
    """``[date,] intent, b, n``: conversations per (start day, intent, confidence bin) of a DuckDB ``signals`` relation.

    ``b`` is the :func:`confidence_histogram` bin (null: no ``intent_confidence``); ``date`` is
    absent when the relation has no such column. A few thousand rows where the relation has millions.
    """
    have = _columns(con)
    keys = (["date"] if "date" in have else []) + ["intent"]
    if "intent_confidence" in have:
        c = "CAST(intent_confidence AS DOUBLE)"
        # the frame's expression: clip to [0, 1], times bins, floor, clip to [0, bins - 1] (exact in
        # doubles); greatest/least skip a NULL, so it stays NULL first; NaN (which DuckDB orders above 1)
        # is bin -1 here, refused below
        b = (f"CASE WHEN {c} IS NULL THEN NULL WHEN isnan({c}) THEN -1 ELSE least(greatest(CAST(floor("
             f"least(greatest({c}, 0.0), 1.0) * {int(bins)}) AS BIGINT), 0), {int(bins) - 1}) END")
    else:
        b = "CAST(NULL AS BIGINT)"
    got = pl.from_arrow(con.sql(
        f"SELECT {', '.join(keys)}, {b} AS b, count(*) AS n FROM signals GROUP BY ALL").to_arrow_table())
    nan = int(got.filter(pl.col("b") == -1)["n"].sum())
    if nan:  # the frame path refuses them too (a NaN cannot be cast to a bin): never in a validated store
        raise pl.exceptions.InvalidOperationError(f"intent_confidence holds {nan} NaN value(s): no histogram bin")
    return got.with_columns(pl.col("b").cast(pl.Int64), pl.col("n").cast(pl.Int64))


def newest_day(counts: pl.DataFrame):
    """The latest start day of :func:`signal_counts` (None: no dated conversation); the frame's ``date.max()``."""
    return counts["date"].max() if "date" in counts.columns and counts.height else None


def _signal_rows(con, ids: pl.Series, default: str | None = None) -> pl.DataFrame:
    """``conversation_id, intent`` of the stored conversations whose id (as text) is one of ``ids``
    (``default``: only those whose intent is ``default`` or null, the ones :func:`unmatched_examples` keeps)."""
    wanted = pl.DataFrame({"id": ids.cast(pl.String)}).drop_nulls().unique().to_arrow()
    fell = "(intent = $default OR intent IS NULL) AND " if default is not None else ""
    con.register(_WANTED, wanted)
    try:
        return pl.from_arrow(con.sql(
            f"SELECT conversation_id, intent FROM signals WHERE {fell}"
            f"CAST(conversation_id AS VARCHAR) IN (SELECT id FROM {_WANTED})",
            params={"default": default} if default is not None else None).to_arrow_table())
    finally:
        con.unregister(_WANTED)


_WANTED = "_report_wanted_ids"


def default_share_by_day(signals: pl.DataFrame | pl.LazyFrame, default: str) -> pl.DataFrame:
    """date, n, n_default: conversations per start day and how many fell to the default intent."""
    return (
        signals.lazy().group_by("date")
        .agg(pl.len().cast(pl.Int64).alias("n"),
             (pl.col("intent") == default).fill_null(True).sum().cast(pl.Int64).alias("n_default"))
        .sort("date").collect()
    )


def _two_sided_p(z: pl.Expr) -> pl.Expr:
    # erfc(|z| / sqrt 2) as a polars expression (polars has no erfc): Abramowitz-Stegun 7.1.26,
    # absolute error < 1.5e-7, ample for a p < 0.001 threshold
    x = z.abs() / math.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * x)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return poly * (-(x * x)).exp()


def default_share_check(by_day: pl.DataFrame, threshold: float = DEFAULT_SHARE_THRESHOLD,
                        window_days: int = JUMP_WINDOW_DAYS, alpha: float = JUMP_ALPHA,
                        min_move: float = JUMP_MIN_MOVE) -> ShareCheck:
    """Fails when the overall default share exceeds ``threshold`` or some day jumps from the days before.

    A day is compared with the ``window_days`` calendar days before it (pooled; days without
    conversations count as empty) by a two-proportion z-test; it jumps when p < ``alpha`` and the
    shares differ by at least ``min_move``. Days with fewer than ``window_days`` days before them
    in the data are not tested.
    """
    total = int(by_day["n"].sum()) if by_day.height else 0
    if total == 0:
        return ShareCheck(True, "no conversations: nothing to check", None, threshold, [])
    share = float(by_day["n_default"].sum()) / total
    first = by_day["date"].min()
    cal = (
        pl.DataFrame({"date": pl.date_range(first, by_day["date"].max(), "1d", eager=True)})
        .join(by_day.select("date", "n", "n_default"), on="date", how="left").fill_null(0)
        .with_columns(
            prev_n=pl.col("n").shift(1).rolling_sum(window_days),
            prev_d=pl.col("n_default").shift(1).rolling_sum(window_days),
        )
        .filter((pl.col("n") > 0) & (pl.col("prev_n") > 0))
        .with_columns(p1=pl.col("n_default") / pl.col("n"), p0=pl.col("prev_d") / pl.col("prev_n"),
                      pooled=(pl.col("n_default") + pl.col("prev_d")) / (pl.col("n") + pl.col("prev_n")))
        .with_columns(se=(pl.col("pooled") * (1 - pl.col("pooled")) * (1 / pl.col("n") + 1 / pl.col("prev_n"))).sqrt())
        .with_columns(z=pl.when(pl.col("se") > 0).then((pl.col("p1") - pl.col("p0")) / pl.col("se")).otherwise(0.0))
        .with_columns(p_value=_two_sided_p(pl.col("z")))
    )
    jumps = cal.filter((pl.col("p_value") < alpha) & ((pl.col("p1") - pl.col("p0")).abs() >= min_move))
    jump_days = [{"date": str(r["date"]), "share": r["p1"], "baseline_share": r["p0"], "z": r["z"],
                  "p_value": r["p_value"]} for r in jumps.iter_rows(named=True)]
    problems = []
    if share > threshold:
        problems.append(f"{share:.1%} of conversations fell to the default intent (threshold {threshold:.0%})")
    if jump_days:
        shown = ", ".join(f"{d['date']} {d['share']:.1%} vs {d['baseline_share']:.1%}" for d in jump_days[:5])
        problems.append(f"the default share jumped on {len(jump_days)} day(s) against the {window_days} days "
                        f"before (p < {alpha:g}, move >= {min_move:.0%}): {shown}"
                        + (" …" if len(jump_days) > 5 else ""))
    if problems:
        return ShareCheck(False, "; ".join(problems), share, threshold, jump_days)
    return ShareCheck(True, f"{share:.1%} fell to the default intent (threshold {threshold:.0%}); "
                            f"{cal.height} day(s) tested against the {window_days} before, none jumped",
                      share, threshold, [])


# --------------------------------------------------------------------------- the report
def confidence_histogram(signals: pl.DataFrame, bins: int = HISTOGRAM_BINS) -> list[dict]:
    """``bins`` equal-width bins over [0, 1] (the last closed), plus a ``null`` row when the extractor said nothing."""
    conf = (signals.select(pl.col("intent_confidence").cast(pl.Float64)) if "intent_confidence" in signals.columns
            else pl.DataFrame({"intent_confidence": pl.Series([None] * signals.height, dtype=pl.Float64)}))
    counts = (
        conf.filter(pl.col("intent_confidence").is_not_null())
        .select((pl.col("intent_confidence").clip(0.0, 1.0) * bins).floor().cast(pl.Int64).clip(0, bins - 1).alias("b"))
        .group_by("b").agg(pl.len().alias("n"))
    )
    got = dict(zip(counts["b"].to_list(), counts["n"].to_list()))
    out = [{"low": i / bins, "high": (i + 1) / bins, "n": int(got.get(i, 0))} for i in range(bins)]
    n_null = int(conf["intent_confidence"].null_count())
    if n_null:
        out.append({"low": None, "high": None, "n": n_null})
    return out


def accuracy_against(signals: pl.DataFrame, labels: pl.DataFrame) -> dict:
    """Accuracy and confusion of the stored intents against ``labels`` (``conversation_id, intent``), normalised."""
    missing = {"conversation_id", "intent"} - set(labels.columns)
    if missing:
        raise ValueError(f"labels need columns conversation_id, intent (missing {', '.join(sorted(missing))})")
    gold = (labels.select(pl.col("conversation_id").cast(pl.String), normalised(pl.col("intent")).alias("gold"))
            .unique("conversation_id", keep="first"))
    pred = signals.select(pl.col("conversation_id").cast(pl.String), normalised(pl.col("intent")).alias("predicted"))
    both = gold.join(pred, on="conversation_id", how="inner")
    n = both.height
    # labels whose id no stored conversation has (not gold − matched rows: an id stored twice matches twice)
    unmatched = gold.join(pred.select("conversation_id"), on="conversation_id", how="anti").height
    if n == 0:
        return {"n_labelled": 0, "n_labels_without_conversation": unmatched, "accuracy": None,
                "per_intent": [], "confusion": []}
    accuracy = float((both["gold"] == both["predicted"]).mean())
    confusion = both.group_by("gold", "predicted").agg(pl.len().alias("n")).sort(["gold", "n"], descending=[False, True])
    per_intent = (
        both.group_by("gold").agg(pl.len().alias("n"), (pl.col("gold") == pl.col("predicted")).mean().alias("recall"))
        .sort(["recall", "gold"])
    )
    return {"n_labelled": n, "n_labels_without_conversation": unmatched, "accuracy": accuracy,
            "per_intent": per_intent.to_dicts(), "confusion": confusion.to_dicts()}


def unmatched_examples(openings: pl.DataFrame, signals: pl.DataFrame, default: str,
                       n: int = N_EXAMPLES, chars: int = EXAMPLE_CHARS) -> list[str]:
    """Redacted openers (at most ``chars`` characters) of conversations that fell to the default intent, by id."""
    fell = signals.filter((pl.col("intent") == default) | pl.col("intent").is_null()).select(
        pl.col("conversation_id").cast(pl.String))
    return (
        openings.select(pl.col("conversation_id").cast(pl.String), "opening_text")
        .join(fell, on="conversation_id", how="semi")
        .filter(pl.col("opening_text").is_not_null() & (pl.col("opening_text").str.strip_chars() != ""))
        .sort("conversation_id").head(n)
        .select(redact_text(pl.col("opening_text")).str.slice(0, chars).alias("t"))["t"].to_list()
    )


def extraction_report(signals: pl.DataFrame, config: SignalsConfig, openings: pl.DataFrame | None = None,
                      labels: pl.DataFrame | None = None, threshold: float = DEFAULT_SHARE_THRESHOLD,
                      n_examples: int = N_EXAMPLES) -> dict:
    """The whole report as plain JSON-ready values (see the module doc for what each part is)."""
    default = config.intent.default
    n = signals.height
    classes = (signals.group_by("intent").agg(pl.len().cast(pl.Int64).alias("n"))
               .with_columns((pl.col("n") / max(n, 1)).alias("share")).sort(["n", "intent"], descending=[True, False]))
    n_default = int(signals.select(((pl.col("intent") == default) | pl.col("intent").is_null()).sum()).item()) if n else 0
    by_day = default_share_by_day(signals, default) if "date" in signals.columns and n else pl.DataFrame(
        schema=_BY_DAY_SCHEMA)
    return _assemble(config, n, classes, n_default, by_day, confidence_histogram(signals), threshold,
                     openings, labels, lambda: signals, lambda: signals, n_examples)


def extraction_report_from(con, config: SignalsConfig, openings: pl.DataFrame | None = None,
                           labels: pl.DataFrame | None = None, threshold: float = DEFAULT_SHARE_THRESHOLD,
                           n_examples: int = N_EXAMPLES, counts: pl.DataFrame | None = None) -> dict:
    """:func:`extraction_report` of a DuckDB connection's ``signals`` relation, equal to
    ``extraction_report(report_signals(con), …)`` without a frame of every conversation.

    The counts come from :func:`signal_counts` (``counts``: already read); the unmatched openers
    and the label comparison read the rows of the conversations the openings or the labels name.
    """
    default = config.intent.default
    counts = signal_counts(con) if counts is None else counts
    is_default = (pl.col("intent") == default).fill_null(True)
    n = int(counts["n"].sum())
    classes = (counts.group_by("intent").agg(pl.col("n").sum().cast(pl.Int64))
               .with_columns((pl.col("n") / max(n, 1)).alias("share")).sort(["n", "intent"], descending=[True, False]))
    n_default = int(counts.filter(is_default)["n"].sum()) if n else 0
    by_day = (counts.group_by("date").agg(pl.col("n").sum().cast(pl.Int64),
                                          pl.col("n").filter(is_default).sum().cast(pl.Int64).alias("n_default"))
              .sort("date") if "date" in counts.columns and n else pl.DataFrame(schema=_BY_DAY_SCHEMA))
    binned = dict(counts.filter(pl.col("b").is_not_null()).group_by("b").agg(pl.col("n").sum()).iter_rows())
    histogram = [{"low": i / HISTOGRAM_BINS, "high": (i + 1) / HISTOGRAM_BINS, "n": int(binned.get(i, 0))}
                 for i in range(HISTOGRAM_BINS)]
    n_null = int(counts.filter(pl.col("b").is_null())["n"].sum())
    if n_null:
        histogram.append({"low": None, "high": None, "n": n_null})

    no_rows = pl.DataFrame(schema={"conversation_id": pl.String, "intent": pl.String})

    def opened_rows():
        # only conversations that fell to the default can give an example: none fell, nothing to read
        return _signal_rows(con, openings["conversation_id"], default) if n_default else no_rows

    def label_rows():
        if "conversation_id" not in labels.columns:  # accuracy_against says what is missing
            return no_rows
        return _signal_rows(con, labels["conversation_id"])

    return _assemble(config, n, classes, n_default, by_day, histogram, threshold, openings, labels,
                     opened_rows, label_rows, n_examples)


_BY_DAY_SCHEMA = {"date": pl.Date, "n": pl.Int64, "n_default": pl.Int64}


def _assemble(config: SignalsConfig, n: int, classes: pl.DataFrame, n_default: int, by_day: pl.DataFrame,
              histogram: list[dict], threshold: float, openings: pl.DataFrame | None, labels: pl.DataFrame | None,
              opened_rows, labelled_rows, n_examples: int) -> dict:
    """The report dict of both entry points; ``opened_rows``/``labelled_rows`` give (at least) the
    signals rows of the conversations the openings/labels name, read only when those are given."""
    default = config.intent.default
    check = default_share_check(by_day, threshold=threshold)
    out = {
        "n_conversations": n,
        "extractor": config.intent.extractor,
        "default_intent": default,
        "n_default": n_default,
        "default_share": n_default / n if n else None,
        "class_counts": classes.to_dicts(),
        "confidence_histogram": histogram,
        "default_share_by_day": [{"date": str(d), "n": c, "n_default": k}
                                 for d, c, k in by_day.select("date", "n", "n_default").iter_rows()],
        "default_share_check": check.as_dict(),
        "rule_hits": None,
        "unmatched_examples": None,
        "labels": None,
    }
    if openings is not None:
        out["rule_hits"] = rule_match_counts(openings.select("conversation_id", "opening_text"), config).to_dicts()
        out["unmatched_examples"] = unmatched_examples(openings, opened_rows(), default, n_examples)
    if labels is not None:
        out["labels"] = accuracy_against(labelled_rows(), labels)
    return out


def format_report(report: dict) -> str:
    """The report as text for a terminal."""
    lines = [(f"{report['n_conversations']:,} conversations; intent extractor `{report['extractor']}`; "
             f"default intent `{report['default_intent']}`")]
    share = report["default_share"]
    lines.append(f"fell to the default: {report['n_default']:,}" + (f" ({share:.1%})" if share is not None else ""))
    chk = report["default_share_check"]
    lines.append(f"default_intent_share check: {'passed' if chk['passed'] else 'WARN'}: {chk['message']}")
    lines.append("")
    lines.append("conversations per intent:")
    for row in report["class_counts"]:
        lines.append(f"  {row['intent']!s:<32} {row['n']:>9,} {row['share']:>7.1%}")
    if report["rule_hits"] is not None:
        lines.append("")
        lines.append("rule hits (on the openings; matches = any match, wins = first match):")
        lines.append(f"  {'rule':<32} {'order':>5} {'matches':>9} {'wins':>9} {'share':>7}")
        for r in report["rule_hits"]:
            order = "-" if r["order"] is None else str(r["order"])
            lines.append(f"  {r['rule']:<32} {order:>5} {r['n_matches']:>9,} {r['n_wins']:>9,} {r['share_wins']:>7.1%}")
    lines.append("")
    lines.append("intent_confidence histogram:")
    for b in report["confidence_histogram"]:
        label = "null" if b["low"] is None else f"[{b['low']:.1f}, {b['high']:.1f}{']' if b['high'] >= 1 else ')'}"
        lines.append(f"  {label:<12} {b['n']:>9,}")
    if report["unmatched_examples"] is not None:
        lines.append("")
        lines.append("openers that fell to the default (redacted):")
        lines.extend([f"  - {t}" for t in report["unmatched_examples"]] or ["  (none)"])
    lab = report["labels"]
    if lab is not None:
        lines.append("")
        acc = lab["accuracy"]
        lines.append(f"against the labels: {lab['n_labelled']:,} labelled conversations, accuracy "
                     + ("-" if acc is None else f"{acc:.1%}")
                     + (f"; {lab['n_labels_without_conversation']} label(s) name no stored conversation"
                        if lab["n_labels_without_conversation"] else ""))
        weakest = [r for r in lab["per_intent"] if r["recall"] < 1.0][:10]
        if weakest:
            lines.append("weakest intents (recall; most frequent confusions):")
            for r in weakest:
                conf = [c for c in lab["confusion"] if c["gold"] == r["gold"] and c["predicted"] != r["gold"]][:3]
                lines.append(f"  {r['gold']:<32} {r['recall']:>6.1%} of {r['n']:>5}  → "
                             + ", ".join(f"{c['predicted']} ({c['n']})" for c in conf))
    return "\n".join(lines)
