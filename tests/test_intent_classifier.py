"""The learned intent classifier and the choice of extractor (issue 14 item 1).

What is asserted: the numpy featurizer produces the n-grams it says; TF-IDF and the model's
probabilities equal scikit-learn's on the same matrix; training is deterministic by seed (same
model bytes); a model is refused when its card does not match the config or its file; the
extractor gives ``intent`` and ``intent_confidence`` with the documented defaults; extractors are
found by entry-point name (``importlib.metadata`` mocked), never by an import path in the config;
``convocausal signals train`` works from labels and from the rules' seed set.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import textwrap
from importlib import metadata

import numpy as np
import polars as pl
import pytest

from configs.signals import ClassifierConfig, SignalsConfigError, load_signals_config, parse_signals_config
from convocausal.cli_signals import add_signals_parser
from extract import intent as intent_mod
from extract.intent import ENTRY_POINT_GROUP, RuleIntentExtractor, extractor_factory, extractor_from_config
from extract.intent_classifier import (
    ClassifierIntentExtractor,
    _buffers,
    count_matrix,
    fit_vocabulary,
    labels_from_rules,
    load_model,
    model_paths,
    ngram_codes,
    prepare_texts,
    settings_hash,
    tfidf,
    train_intent_model,
)
from extract.signals import extract_signals

BASE = load_signals_config().model_dump()
INTENTS = {
    "refund": ["I want my money back for order {n}", "please refund order {n}", "refund the broken item {n}",
               "can I get a refund for {n}", "money back please, order {n}"],
    "password": ["I forgot my password", "cannot log in to my account", "reset my password please {n}",
                 "locked out, need a new password", "login fails with my password"],
    "shipping": ["where is my parcel {n}", "my package has not arrived {n}", "track my delivery {n}",
                 "when will order {n} arrive", "the parcel {n} is late"],
}


def config_with(extractor: str = "classifier", **classifier) -> object:
    data = json.loads(json.dumps(BASE))
    data["intent"]["extractor"] = extractor
    data["intent"]["classifier"].update(classifier)
    return parse_signals_config(data)


def labelled(n_per: int = 40) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Openings and labels of a small three-intent set (varied templates and numbers)."""
    ids, texts, labels = [], [], []
    for intent, templates in INTENTS.items():
        for i in range(n_per):
            ids.append(f"{intent}-{i:03d}")
            texts.append(templates[i % len(templates)].format(n=1000 + 7 * i))
            labels.append(intent)
    openings = pl.DataFrame({"conversation_id": ids, "opening_text": texts})
    return openings, pl.DataFrame({"conversation_id": ids, "intent": labels})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cfg = config_with(c=10.0, cv_folds=3)
    openings, labels = labelled()
    model_dir = tmp_path_factory.mktemp("models")
    res = train_intent_model(cfg, openings, labels, model_dir, seed=3)
    return cfg, model_dir, res


# --------------------------------------------------------------------------- featurizer
def test_char_and_word_ngrams_are_the_documented_ones():
    settings = ClassifierConfig(char_ngrams=(2, 3), word_ngrams=(1, 2))
    prepared = prepare_texts(pl.Series(["AB  cd", None]), 100)
    assert prepared.to_list() == [" ab cd ", "  "]
    data, offsets = _buffers(prepared)
    doc, code = ngram_codes(data, offsets, settings)
    chars = sorted(int(c).to_bytes(8, "big").lstrip(b"\0").decode() for d, c in zip(doc, code)
                   if d == 0 and int(c) < 2**48)
    # windows inside a word or touching its edges; none spans the space between words or is "  "
    assert chars == sorted([" a", "ab", "b ", " c", "cd", "d ", " ab", "ab ", " cd", "cd "])
    words = [int(c) >> 62 for d, c in zip(doc, code) if d == 0 and int(c) >= 2**48]
    assert sorted(words) == [1, 1, 2]  # "ab", "cd", "ab cd"
    assert not (doc == 1).any()  # an empty opening has no n-gram


def test_pii_is_redacted_before_features():
    prepared = prepare_texts(pl.Series(["Mail me at Jane.Doe@example.com or +44 20 7946 0958"]), 200)
    assert "jane" not in prepared[0] and "[email]" in prepared[0] and "[phone]" in prepared[0]


def test_tfidf_and_probabilities_equal_scikit_learn(trained):
    """The weights are TF × IDF over sqrt(sum tf·idf²): scikit-learn's unit-length TF-IDF when no
    n-gram repeats; the fast scoring equals the matrix product; probabilities equal scikit-learn's."""
    from sklearn.feature_extraction.text import TfidfTransformer
    from sklearn.linear_model import LogisticRegression

    cfg, _model_dir, res = trained
    openings, _ = labelled()
    prepared = prepare_texts(openings["opening_text"], 500)
    st = cfg.intent.classifier
    counts = count_matrix(prepared, fit_vocabulary(prepared, st), st)
    sk = TfidfTransformer(sublinear_tf=True).fit(counts)
    x = tfidf(counts, sk.idf_).toarray()
    dense = counts.toarray()
    assert np.allclose(x, dense * sk.idf_ / np.sqrt(dense @ sk.idf_**2)[:, None])
    single = (dense <= 1).all(axis=1)  # texts without a repeated n-gram
    assert single.sum() > 10 and np.allclose(x[single], sk.transform(counts).toarray()[single])
    model = res.model
    feats = model.features(prepared)
    assert np.allclose(model.scores(prepared), feats @ model.coef.T + model.intercept)
    clf = LogisticRegression()
    clf.classes_, clf.coef_, clf.intercept_ = np.array(model.classes), model.coef, model.intercept
    best, conf = model.predict_prepared(prepared)
    ref = clf.predict_proba(feats)
    assert np.allclose(conf, ref.max(axis=1)) and (best == ref.argmax(axis=1)).all()


# --------------------------------------------------------------------------- training, card, load
def test_training_is_deterministic_by_seed(trained, tmp_path):
    cfg, _model_dir, res = trained
    openings, labels = labelled()
    again = train_intent_model(cfg, openings, labels, tmp_path, seed=3)
    assert again.model_path.read_bytes() == res.model_path.read_bytes()
    assert again.card_path.read_text() == res.card_path.read_text()
    other = train_intent_model(cfg, openings, labels, tmp_path / "s4", seed=4)
    assert other.card["seed"] == 4 and other.card["cv"]["fold_accuracy"] != [] and other.card["labels"] == res.card["labels"]


def test_card_records_what_the_model_is(trained):
    cfg, model_dir, res = trained
    card = json.loads(res.card_path.read_text())
    assert res.model_path.name == f"intent-{settings_hash(cfg)}.npz" and res.model_path.parent == model_dir
    assert card["format_version"] == 1 and card["seed"] == 3
    assert card["labels"] == ["password", "refund", "shipping"]
    assert card["training_rows"] == 120 and card["rows_per_label"] == {"password": 40, "refund": 40, "shipping": 40}
    assert card["cv"]["folds"] == 3 and card["cv"]["stratified"] and card["cv"]["accuracy"] > 0.9
    assert card["cv"]["grouped_by"] == "conversation_id"


def test_load_refuses_a_model_that_does_not_match(trained, tmp_path):
    cfg, model_dir, res = trained
    # other settings → another hash → no model for them
    with pytest.raises(SignalsConfigError, match="no trained intent model.*signals train"):
        load_model(config_with(c=11.0, cv_folds=3), model_dir)
    # min_confidence only acts at classification: the same model loads
    assert load_model(config_with(c=10.0, cv_folds=3, min_confidence=0.5), model_dir).classes == res.model.classes
    work = tmp_path / "m"
    work.mkdir()
    model_path, card_path = model_paths(cfg, work)
    model_path.write_bytes(res.model_path.read_bytes())
    card = json.loads(res.card_path.read_text())
    card_path.write_text(json.dumps({**card, "settings": {**card["settings"], "c": 99.0}}))
    with pytest.raises(SignalsConfigError, match="settings"):
        load_model(cfg, work)
    card_path.write_text(json.dumps({**card, "format_version": 0}))
    with pytest.raises(SignalsConfigError, match="format_version"):
        load_model(cfg, work)
    card_path.write_text(json.dumps({**card, "labels": ["a", "b", "c"]}))
    with pytest.raises(SignalsConfigError, match="label set"):
        load_model(cfg, work)
    card_path.write_text(json.dumps(card))
    model_path.write_bytes(res.model_path.read_bytes()[:-10] + b"0" * 10)
    with pytest.raises(SignalsConfigError, match="sha256"):
        load_model(cfg, work)


def test_a_change_in_text_preparation_asks_for_a_retrain(trained, monkeypatch):
    """A model trained on text prepared one way is refused when this code prepares it another way."""
    from extract import intent_classifier as ic

    cfg, model_dir, _ = trained
    monkeypatch.setattr(ic, "redact_text", lambda expr: expr)  # e.g. an upgrade that redacts differently
    ic.preparation_fingerprint.cache_clear()
    try:
        with pytest.raises(SignalsConfigError, match="no trained intent model"):
            load_model(cfg, model_dir)
    finally:
        monkeypatch.undo()
        ic.preparation_fingerprint.cache_clear()
    assert load_model(cfg, model_dir).classes == ["password", "refund", "shipping"]


def test_rule_features_tie_the_model_to_the_rules(tmp_path):
    cfg = config_with(c=10.0, cv_folds=3, rule_features=0.5)
    openings, labels = labelled()
    train_intent_model(cfg, openings, labels, tmp_path, seed=0)
    assert load_model(cfg, tmp_path).rules == [r.regex for r in cfg.intent.rules]
    data = cfg.model_dump()
    data["intent"]["rules"] = data["intent"]["rules"][:-1]  # a rule edited away → retrain
    with pytest.raises(SignalsConfigError, match="no trained intent model"):
        load_model(parse_signals_config(data), tmp_path)


def test_labels_are_checked():
    cfg = config_with()
    openings, labels = labelled(5)
    with pytest.raises(SignalsConfigError, match="lacks column"):
        train_intent_model(cfg, openings, labels.rename({"intent": "label"}), "/nonexistent")
    dup = pl.concat([labels, labels.head(1).with_columns(pl.lit("other_intent").alias("intent"))])
    with pytest.raises(SignalsConfigError, match="more than one intent label"):
        train_intent_model(cfg, openings, dup, "/nonexistent")
    with pytest.raises(SignalsConfigError, match="two different intents"):
        train_intent_model(cfg, openings, labels.head(3), "/nonexistent")
    with pytest.raises(SignalsConfigError, match="found in the transcripts"):
        train_intent_model(cfg, openings.head(1), labels, "/nonexistent")


# --------------------------------------------------------------------------- classification
def test_extractor_gives_intent_and_confidence(trained):
    cfg, model_dir, _ = trained
    ex = extractor_from_config(cfg, model_dir)
    assert isinstance(ex, ClassifierIntentExtractor)
    out = ex.classify(pl.DataFrame({"conversation_id": ["a", "b", "c", "d"],
                                    "opening_text": ["please refund order 77", "I forgot my password", None,
                                                     "please refund order 77"]}))
    assert out["intent"].to_list() == ["refund", "password", "other", "refund"]
    conf = out["intent_confidence"].to_list()
    assert conf[0] > 0.5 and conf[1] > 0.5 and conf[2] == 0.0 and conf[3] == conf[0]
    strict = config_with(c=10.0, cv_folds=3, min_confidence=0.999)  # same model, stricter threshold
    low = extractor_from_config(strict, model_dir).classify(out.select("conversation_id").with_columns(
        pl.Series("opening_text", ["please refund order 77", "hmm", None, "x"])))
    assert set(low["intent"].to_list()) == {"other"} and low["intent_confidence"][0] == pytest.approx(conf[0])


def test_extract_signals_with_the_classifier(trained):
    cfg, model_dir, _ = trained
    t0 = dt.datetime(2026, 3, 2, tzinfo=dt.timezone.utc)
    rows = [("a", 0, "user", "where is my parcel 5"), ("a", 1, "assistant", "checking"),
            ("b", 0, "assistant", "hello?")]
    msgs = pl.DataFrame({
        "conversation_id": [r[0] for r in rows], "turn": [r[1] for r in rows],
        "ts": [t0 + dt.timedelta(seconds=r[1]) for r in rows], "role": [r[2] for r in rows],
        "text": [r[3] for r in rows], "tool_name": [None] * 3, "channel": ["chat"] * 3, "agent_version": ["v"] * 3,
        "customer_id": [None] * 3, "skill": [None] * 3, "memory_items": [None] * 3,
    })
    sig = extract_signals(msgs, config=cfg, intent_extractor=extractor_from_config(cfg, model_dir)).sort("conversation_id")
    assert sig["intent"].to_list() == ["shipping", "other"]
    assert sig["intent_confidence"][0] > 0.5 and sig["intent_confidence"][1] == 0.0


def test_classifier_needs_its_model():
    with pytest.raises(SignalsConfigError, match="model folder"):
        extractor_from_config(config_with(), None)


# --------------------------------------------------------------------------- choosing the extractor
def _fake_entry_points(monkeypatch, *eps: metadata.EntryPoint) -> None:
    def entry_points(group=None, **_):
        return [ep for ep in eps if ep.group == group]

    monkeypatch.setattr(intent_mod.metadata, "entry_points", entry_points)


def _plugin(tmp_path, monkeypatch, name: str, body: str) -> None:
    """A plug-in module ``name`` on sys.path for this test only (a fresh name: modules are cached)."""
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)


def test_builtins_without_any_entry_point(monkeypatch):
    _fake_entry_points(monkeypatch)
    assert isinstance(extractor_from_config(load_signals_config()), RuleIntentExtractor)
    assert intent_mod.available_extractors() == ["classifier", "rules"]


def test_a_plugin_is_found_by_its_entry_point_name(tmp_path, monkeypatch):
    _plugin(tmp_path, monkeypatch, "cc_test_plugin", """
        import polars as pl

        class Upper:
            def __init__(self, label):
                self.label = label

            def classify(self, openings):
                return openings.select("conversation_id", pl.lit(self.label).alias("intent"),
                                       pl.lit(0.25).alias("intent_confidence"))

        def factory(config, model_dir, options):
            return Upper(options.get("label", "x"))
    """)
    _fake_entry_points(monkeypatch, metadata.EntryPoint("constant", "cc_test_plugin:factory", ENTRY_POINT_GROUP),
                       metadata.EntryPoint("constant", "elsewhere:factory", "another.group"))
    data = json.loads(json.dumps(BASE))
    data["intent"].update(extractor="constant", extractor_options={"label": "from_plugin"})
    cfg = parse_signals_config(data)
    ex = extractor_from_config(cfg, None)
    out = ex.classify(pl.DataFrame({"conversation_id": ["a"], "opening_text": ["hi"]}))
    assert out.row(0) == ("a", "from_plugin", 0.25)
    assert "constant" in intent_mod.available_extractors()


def test_entry_point_errors(tmp_path, monkeypatch):
    _plugin(tmp_path, monkeypatch, "cc_test_plugin_errors", """
        def not_an_extractor(config, model_dir, options):
            return 42

        def boom(config, model_dir, options):
            raise RuntimeError("never built")
    """)
    _fake_entry_points(
        monkeypatch,
        metadata.EntryPoint("twice", "cc_test_plugin_errors:boom", ENTRY_POINT_GROUP),
        metadata.EntryPoint("twice", "other_pkg:boom", ENTRY_POINT_GROUP),
        metadata.EntryPoint("missing", "cc_no_such_module:factory", ENTRY_POINT_GROUP),
        metadata.EntryPoint("wrong", "cc_test_plugin_errors:not_an_extractor", ENTRY_POINT_GROUP),
    )
    with pytest.raises(SignalsConfigError, match="registered more than once"):
        extractor_factory("twice")
    with pytest.raises(SignalsConfigError, match="cannot be loaded: ModuleNotFoundError"):
        extractor_factory("missing")
    with pytest.raises(SignalsConfigError, match="not installed.*available: classifier, missing, rules, twice, wrong"):
        extractor_factory("llm")
    data = json.loads(json.dumps(BASE))
    data["intent"]["extractor"] = "wrong"
    with pytest.raises(SignalsConfigError, match="no classify"):
        extractor_from_config(parse_signals_config(data))


def test_the_config_names_an_extractor_never_an_import_path():
    data = json.loads(json.dumps(BASE))
    for bad in ("os:system", "extract.intent_classifier:classifier_extractor", "../x", "Rules"):
        data["intent"]["extractor"] = bad
        with pytest.raises(SignalsConfigError, match="not a valid signal name"):
            parse_signals_config(data)
    data["intent"]["extractor"] = "rules"
    data["intent"]["extractor_options"] = {"nested": {"a": 1}}
    with pytest.raises(SignalsConfigError, match="extractor_options"):
        parse_signals_config(data)


@pytest.mark.parametrize("classifier, message", [
    ({"char_ngrams": [0, 3]}, "1 <= lowest <= highest <= 6"),
    ({"word_ngrams": [2, 4]}, "1 <= lowest <= highest <= 3"),
    ({"word_ngrams": None, "char_ngrams": None}, "needs word_ngrams or char_ngrams"),
    ({"c": 0}, "greater than 0"),
    ({"min_confidence": 1.5}, "less than or equal to 1"),
    ({"kernel": "rbf"}, "Extra inputs"),
])
def test_classifier_settings_are_validated(classifier, message):
    with pytest.raises(SignalsConfigError, match=message):
        config_with(**classifier)


# --------------------------------------------------------------------------- command line
def _landing(tmp_path, openings: pl.DataFrame) -> object:
    """A landing directory whose conversations are the openings plus an agent reply."""
    t0 = dt.datetime(2026, 3, 2, tzinfo=dt.timezone.utc)
    n = openings.height
    user = openings.select("conversation_id", pl.lit(0).alias("turn"), pl.lit("user").alias("role"),
                           pl.col("opening_text").alias("text"))
    agent = openings.select("conversation_id", pl.lit(1).alias("turn"), pl.lit("assistant").alias("role"),
                            pl.lit("ok").alias("text"))
    rows = pl.concat([user, agent]).with_columns(
        pl.lit(t0).dt.replace_time_zone("UTC").alias("ts"), pl.lit(None, pl.String).alias("tool_name"),
        pl.lit("chat").alias("channel"), pl.lit("v1").alias("agent_version"))
    folder = tmp_path / "raw" / "transcripts" / "date=2026-03-02"
    folder.mkdir(parents=True)
    rows.write_parquet(folder / "part-0.parquet")
    assert rows.height == 2 * n
    return tmp_path / "raw"


def _cli(*argv: str) -> int:
    p = argparse.ArgumentParser(prog="convocausal")
    add_signals_parser(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(list(argv))
    return args.func(args)


def test_signals_train_command(tmp_path, capsys):
    openings, labels = labelled(20)
    raw = _landing(tmp_path, openings)
    labels.write_csv(tmp_path / "labels.csv")
    cfg_path = tmp_path / "signals.yaml"
    cfg_path.write_text(json.dumps(config_with(cv_folds=3).model_dump(mode="json")))  # JSON is YAML
    store = tmp_path / "s.duckdb"
    assert _cli("signals", "train", "--labels", str(tmp_path / "labels.csv"), "--raw", str(raw),
                "--signals", str(cfg_path), "--store", str(store), "--seed", "1") == 0
    out = capsys.readouterr().out
    assert "3-fold cross-validated accuracy" in out and "60 conversations, 3 intents" in out
    cfg = load_signals_config(cfg_path)
    assert load_model(cfg, tmp_path / "s.duckdb.parts" / "models").card["seed"] == 1
    # the rules label a seed set where there are no labels (the default rules know "refund" and "password")
    assert _cli("signals", "train", "--labels-from-rules", "--raw", str(raw), "--signals", str(cfg_path),
                "--store", str(store), "--json") == 0
    card = json.loads(capsys.readouterr().out)
    assert card["labels_source"].startswith("rules of signals.yaml")
    assert set(card["labels"]) <= {r.name for r in cfg.intent.rules} and len(card["labels"]) >= 2


def test_signals_train_user_errors(tmp_path):
    openings, labels = labelled(10)
    raw = _landing(tmp_path, openings)
    labels.write_parquet(tmp_path / "labels.parquet")
    rules_cfg = tmp_path / "rules.yaml"
    rules_cfg.write_text(json.dumps(BASE))
    clf_cfg = tmp_path / "clf.yaml"
    clf_cfg.write_text(json.dumps(config_with(rule_features=1.0).model_dump(mode="json")))
    common = ["--raw", str(raw), "--store", str(tmp_path / "s.duckdb")]
    with pytest.raises(SignalsConfigError, match="intent.extractor is `rules`"):
        _cli("signals", "train", "--labels", str(tmp_path / "labels.parquet"), "--signals", str(rules_cfg), *common)
    with pytest.raises(SignalsConfigError, match="file not found"):
        _cli("signals", "train", "--labels", str(tmp_path / "none.csv"), "--signals", str(clf_cfg), *common)
    (tmp_path / "labels.txt").write_text("x")
    with pytest.raises(SignalsConfigError, match=r"\.parquet or \.csv"):
        _cli("signals", "train", "--labels", str(tmp_path / "labels.txt"), "--signals", str(clf_cfg), *common)
    with pytest.raises(SignalsConfigError, match="rule_features"):
        _cli("signals", "train", "--labels-from-rules", "--signals", str(clf_cfg), *common)
    with pytest.raises(SignalsConfigError, match=r"`\.\.` path components"):
        _cli("signals", "train", "--labels", str(tmp_path / "labels.parquet"), "--signals", str(clf_cfg),
             "--raw", str(raw / ".." / "raw"), "--store", str(tmp_path / "s.duckdb"))


def test_signals_extractors_command(capsys, monkeypatch):
    _fake_entry_points(monkeypatch, metadata.EntryPoint("rules", "extract.intent:rules_extractor", ENTRY_POINT_GROUP))
    assert _cli("signals", "extractors") == 0
    out = capsys.readouterr().out
    assert "rules            extract.intent:rules_extractor" in out and "classifier       built in" in out


def test_labels_from_rules_keeps_only_matches():
    cfg = load_signals_config()
    openings = pl.DataFrame({"conversation_id": ["a", "b", "c"],
                             "opening_text": ["I want a refund", "hello there", None]})
    assert labels_from_rules(openings, cfg).rows() == [("a", "refund_request")]
