"""``convocausal signals …``: train the learned intent classifier, list the intent extractors.

Why a module of its own: the signals subcommands are added to the entry point's parser by
``add_signals_parser(subparsers)`` (``convocausal/cli.py`` calls it), so they sit in the
``convocausal`` layer and import extraction, never the entry point (``tests/test_layers.py``).
Every command returns 0; a user error (bad path, unusable labels, a config that does not use
the classifier) raises ``configs.signals.SignalsConfigError``, which the entry point turns into
exit 2 with its first line.

    convocausal signals train --labels FILE --raw RAW --signals CONFIG --store FILE [--seed N] [--json]
    convocausal signals train --labels-from-rules --raw RAW --signals CONFIG --store FILE
    convocausal signals extractors
    convocausal signals report [--store FILE] [--signals CONFIG] [--raw RAW] [--labels FILE] [--threshold S] [--json]

``train`` reads the landing directory's transcripts through the same reader and the same
opening-text step as extraction (so the model learns from the text it will classify), joins
the labels (``conversation_id, intent``; parquet or CSV), cross-validates (folds stratified by
intent, grouped by conversation), fits on every labelled opening and writes the model and its
card to ``<store>.parts/models/``, where ``convocausal run`` and the Dagster ``signals_day``
asset find them. ``--labels-from-rules`` labels a seed set with the config's intent rules
instead (the openings a rule matched). The SGD example turns its rows into a landing directory
with ``python -m data_fixtures.sgd_landing --sgd data/sgd_dialogues --out RAW`` first.

``report`` is the extraction report of ``extract/report.py`` over the store's signals (read
from its day parts, so it never waits for the writer's lock): conversations per intent, the
share falling to the default and the ``default_intent_share`` check, the ``intent_confidence``
histogram; with ``--raw`` the hits per rule and redacted openers that fell to the default (the
openers are read from the landing directory on demand, never stored); with ``--labels`` the
accuracy and confusion against them.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from configs.signals import SignalsConfigError

LABEL_SUFFIXES = (".parquet", ".csv")


def add_signals_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``signals`` (with ``train`` and ``extractors``) to the entry point's subparsers."""
    s = subparsers.add_parser("signals", help="signal extraction: train the intent classifier, list extractors")
    sub = s.add_subparsers(dest="signals_command", required=True)

    t = sub.add_parser("train", help="train the learned intent classifier into <store>.parts/models/",
                       description="Train the intent classifier named by the signals config (intent.extractor: "
                                   "classifier) from labelled conversations; prints its cross-validated accuracy.")
    src = t.add_mutually_exclusive_group(required=True)
    src.add_argument("--labels", type=Path, metavar="FILE",
                     help="labelled conversations, .parquet or .csv with columns conversation_id, intent")
    src.add_argument("--labels-from-rules", action="store_true",
                     help="no labels: label a seed set with the config's intent rules (the openings a rule matches)")
    t.add_argument("--raw", type=Path, required=True, metavar="DIR",
                   help="landing directory whose transcripts hold the labelled conversations")
    t.add_argument("--signals", type=Path, required=True, metavar="CONFIG", help="signals config (.yaml)")
    t.add_argument("--store", type=Path, default=Path("convocausal.duckdb"), metavar="FILE",
                   help="the store the model belongs to (written to FILE.parts/models/)")
    t.add_argument("--seed", type=int, default=0, help="orders the cross-validation folds, samples large label sets")
    t.add_argument("--json", action="store_true", help="print the model card as JSON")
    t.set_defaults(func=cmd_train)

    r = sub.add_parser("report", help="extraction report: intents, default share, confidence, accuracy vs labels",
                       description="How intent extraction did on the store's signals; with --raw the rule hits "
                                   "and redacted unmatched openers, with --labels accuracy and confusion.")
    r.add_argument("--store", type=Path, default=Path("convocausal.duckdb"), metavar="FILE",
                   help="the store whose signals are reported (read from FILE.parts/signals)")
    r.add_argument("--parts-url", default=os.environ.get("CONVOCAUSAL_PARTS_URL") or None, metavar="URL",
                   help="read the day parts from this s3:// URL instead (as `convocausal run --parts-url`; "
                        "default: $CONVOCAUSAL_PARTS_URL)")
    r.add_argument("--signals", type=Path, default=None, metavar="CONFIG",
                   help="signals config (.yaml) the store was extracted with (default: the packaged one)")
    r.add_argument("--raw", type=Path, default=None, metavar="DIR",
                   help="landing directory: adds rule hits and redacted openers that fell to the default")
    r.add_argument("--labels", type=Path, default=None, metavar="FILE",
                   help="labelled conversations, .parquet or .csv with columns conversation_id, intent")
    r.add_argument("--threshold", type=float, default=None, metavar="SHARE",
                   help="default-intent share above which the check warns (default 0.2)")
    r.add_argument("--json", action="store_true", help="print the report as JSON")
    r.set_defaults(func=cmd_report)

    e = sub.add_parser("extractors", help="the intent extractors a signals config may name in this environment")
    e.set_defaults(func=cmd_extractors)
    return s


def cmd_train(args) -> int:
    import polars as pl

    from configs.signals import load_signals_config
    from convocausal.file_settings import FileSettingError, check_file_settings, check_write_target
    from convocausal.store import store_paths
    from extract.intent import models_dir
    from extract.intent_classifier import labels_from_rules, train_intent_model
    from extract.raw import load_transcripts
    from extract.signals import opening_texts

    try:
        check_file_settings(args.raw, args.store, signals_config=args.signals)
        if args.labels is not None:
            check_write_target(args.labels, "labels")  # the allowed roots, when set, hold for it too
    except FileSettingError as exc:
        raise SignalsConfigError(str(exc)) from exc
    if not args.raw.is_dir():
        raise SignalsConfigError(f"--raw {args.raw}: not a directory")
    config = load_signals_config(args.signals)
    if config.intent.extractor != "classifier":
        raise SignalsConfigError(f"{args.signals}: intent.extractor is `{config.intent.extractor}`; set it to "
                                 "`classifier` to train the built-in classifier")
    labels = None
    if args.labels is not None:
        labels = _read_labels(args.labels, pl)
    elif config.intent.classifier.rule_features > 0:
        raise SignalsConfigError(f"{args.signals}: --labels-from-rules with intent.classifier.rule_features > 0 "
                                 "would teach the model the rules it already sees; set rule_features: 0")
    batch = load_transcripts(args.raw)
    openings = opening_texts(batch.accepted, config.intent.opening_user_turns)
    if labels is None:
        labels = labels_from_rules(openings, config)
        source = f"rules of {args.signals.name} ({labels.height} of {openings.height} openings matched)"
    else:
        source = args.labels.name
    target = models_dir(store_paths(args.store).parts)
    try:
        check_write_target(target, "store")
    except FileSettingError as exc:
        raise SignalsConfigError(str(exc)) from exc
    result = train_intent_model(config, openings, labels, target, seed=args.seed, labels_source=source)
    card = result.card
    if args.json:
        print(json.dumps(card, indent=2, sort_keys=True))
        return 0
    cv = card["cv"]
    print(f"trained {result.model_path} ({card['training_rows']} conversations, {len(card['labels'])} intents, "
          f"{card['n_features']} n-gram features, seed {card['seed']})")
    print(f"  {cv['folds']}-fold cross-validated accuracy, grouped by conversation"
          f"{', stratified by intent' if cv['stratified'] else ''}: {cv['accuracy']:.1%} "
          f"(folds {', '.join(f'{a:.1%}' for a in cv['fold_accuracy'])})")
    if card["labels_without_conversation"]:
        print(f"  {card['labels_without_conversation']} label(s) name no conversation in {args.raw}: ignored")
    print(f"  card: {result.card_path}")
    return 0


def _read_labels(path: Path, pl):
    """The labels table (parquet or CSV), read as strings; a file that cannot be read is a user error."""
    if not path.is_file():
        raise SignalsConfigError(f"--labels {path}: file not found")
    suffix = path.suffix.lower()
    if suffix not in LABEL_SUFFIXES:
        raise SignalsConfigError(f"--labels {path}: expected a .parquet or .csv file")
    try:
        if suffix == ".parquet":
            return pl.read_parquet(path)
        return pl.read_csv(path, infer_schema=False)
    except Exception as exc:
        raise SignalsConfigError(f"--labels {path}: cannot read it ({type(exc).__name__}: {exc})") from exc


def cmd_report(args) -> int:
    import polars as pl

    from configs.signals import load_signals_config
    from convocausal.file_settings import FileSettingError, check_file_settings, check_write_target
    from convocausal.store import open_signals, store_paths
    from extract.report import DEFAULT_SHARE_THRESHOLD, extraction_report_from, format_report

    try:
        # without --raw the store's own folder stands in for it (the rules on paths are the same)
        raw = args.raw if args.raw is not None else args.store.resolve().parent
        check_file_settings(raw, args.store, signals_config=args.signals)
        if args.labels is not None:
            check_write_target(args.labels, "labels")
    except FileSettingError as exc:
        raise SignalsConfigError(str(exc)) from exc
    threshold = DEFAULT_SHARE_THRESHOLD if args.threshold is None else args.threshold
    if not 0.0 <= threshold <= 1.0:
        raise SignalsConfigError(f"--threshold {args.threshold}: give a share between 0 and 1")
    config = load_signals_config(args.signals)
    labels = _read_labels(args.labels, pl) if args.labels is not None else None
    try:
        con = open_signals(store_paths(args.store, args.parts_url))
    except FileNotFoundError as exc:
        raise SignalsConfigError(f"--store {args.store}: {exc}") from exc
    try:
        openings = None
        if args.raw is not None:
            from extract.raw import load_transcripts
            from extract.signals import opening_texts

            if not args.raw.is_dir():
                raise SignalsConfigError(f"--raw {args.raw}: not a directory")
            openings = opening_texts(load_transcripts(args.raw).accepted, config.intent.opening_user_turns)
        try:
            report = extraction_report_from(con, config, openings=openings, labels=labels, threshold=threshold)
        except ValueError as exc:
            raise SignalsConfigError(f"--labels {args.labels}: {exc}") from exc
    finally:
        con.close()
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True, default=str))
    else:
        print(format_report(report))
    return 0


def cmd_extractors(args) -> int:
    from extract.intent import BUILTIN_EXTRACTORS, ENTRY_POINT_GROUP, registered_extractors

    registered = registered_extractors()
    print(f"intent extractors ({ENTRY_POINT_GROUP}):")
    for name in sorted(set(BUILTIN_EXTRACTORS) | set(registered)):
        targets = ", ".join(sorted({ep.value for ep in registered.get(name, [])})) or "built in (not registered)"
        print(f"  {name:<16} {targets}")
    return 0
