"""Intent classification of a conversation's opening customer text, and choosing who classifies it.

Why a protocol: intent is the covariate that matters most for matching (the agent asks for the
email early mostly on transactional intents), and teams will want to swap the keyword rules for
a model (an embedding classifier, an LLM labeller with a cache). Anything with
``classify(openings) -> frame`` plugs into ``extract.signals.extract_signals``. The default
``RuleIntentExtractor`` runs the ordered rules of ``configs/signals.yaml`` as one vectorised
``pl.when(...).then(...)`` chain: the first rule that matches wins, else the default intent.

Why entry points: the signals config says *which* extractor runs (``intent.extractor``), and a
config is data, never code. So it names an extractor by its entry-point name in the group
``convocausal.intent_extractors`` — a validated identifier — and the Python package that
provides it registers the name in its own metadata (``pyproject.toml``
``[project.entry-points."convocausal.intent_extractors"]``). Reading a config therefore never
imports a module it spells out; only code installed in the environment can be reached. The two
built-ins (``rules``, ``classifier``) are registered the same way and also known here directly,
so a checkout whose installed metadata predates the registration still runs them.

A registered entry point is a factory ``factory(config, model_dir, options) -> IntentExtractor``:
``config`` the whole ``SignalsConfig``, ``model_dir`` the store's model folder
(``<store>.parts/models``, or ``None`` outside a store), ``options`` the config's
``intent.extractor_options`` (plain scalars).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Protocol, runtime_checkable

import polars as pl

from configs.signals import SignalsConfig, SignalsConfigError

ENTRY_POINT_GROUP = "convocausal.intent_extractors"
MODELS_SUBDIR = "models"  # <store>.parts/models holds trained intent models and their cards


@runtime_checkable
class IntentExtractor(Protocol):
    """Maps opening texts to intents.

    Input: ``conversation_id`` (str), ``opening_text`` (str, may be null: no customer message).
    Output: ``conversation_id`` and ``intent`` (str; null becomes the config's default), one row
    per input row, and optionally ``intent_confidence`` (float in 0..1; absent or null = the
    extractor does not say).
    """

    def classify(self, openings: pl.DataFrame) -> pl.DataFrame: ...


ExtractorFactory = Callable[..., IntentExtractor]


def intent_expr(config: SignalsConfig, text: str = "opening_text") -> pl.Expr:
    """The first-match-wins rule chain as one polars expression (null text → default)."""
    rules = config.intent.rules
    default = pl.lit(config.intent.default, dtype=pl.String)
    if not rules:
        return default
    col = pl.col(text)
    chain = pl.when(col.str.contains(rules[0].regex)).then(pl.lit(rules[0].name, dtype=pl.String))
    for rule in rules[1:]:
        chain = chain.when(col.str.contains(rule.regex)).then(pl.lit(rule.name, dtype=pl.String))
    return chain.otherwise(default)


class RuleIntentExtractor:
    """Keyword/regex rules from the signals config; ordered, first match wins, default otherwise.

    ``intent_confidence`` is 1.0 when a rule matched and 0.0 when the default was used (no rule
    matched, or no customer message): a rule either fires or does not, and 0.0 rather than null
    lets "drop the low-confidence conversations" drop exactly the default ones.
    """

    def __init__(self, config: SignalsConfig) -> None:
        self.config = config
        self._expr = intent_expr(config).alias("intent")

    def classify(self, openings: pl.DataFrame) -> pl.DataFrame:
        # The streaming engine splits the column into morsels and runs the regex chain on all
        # cores (an eager select runs one expression on one core): ~2x on 2 cores.
        default = self.config.intent.default
        return (
            openings.lazy().select(pl.col("conversation_id"), self._expr)
            .with_columns((pl.col("intent") != default).cast(pl.Float64).alias("intent_confidence"))
            .collect(engine="streaming")
        )


def rule_match_counts(openings: pl.DataFrame, config: SignalsConfig) -> pl.DataFrame:
    """Per rule: how many openings it matches at all, and how many it wins (first match).

    Lets a user see which rules fire, which are shadowed by earlier rules (matches ≫ wins), and
    how much falls through to the default. Columns: rule, order, n_matches, n_wins, share_wins.
    """
    rules = config.intent.rules
    default = config.intent.default
    text = pl.col("opening_text")
    n = openings.height
    # One pass: each rule's match count (regardless of order) plus the winning intent per row.
    matched = openings.select(
        *[text.str.contains(r.regex).fill_null(False).sum().cast(pl.Int64).alias(f"m{i}")
          for i, r in enumerate(rules)]
    ).row(0) if rules else ()
    wins = openings.select(intent_expr(config).alias("rule")).group_by("rule").agg(pl.len().alias("n"))
    win_map = dict(zip(wins["rule"].to_list(), wins["n"].to_list()))
    names = [r.name for r in rules] + [default]
    n_wins = [int(win_map.get(name, 0)) for name in names]
    n_matches = [int(m or 0) for m in matched] + [n_wins[-1]]
    return pl.DataFrame(
        {
            "rule": names,
            "order": list(range(1, len(rules) + 1)) + [None],
            "n_matches": n_matches,
            "n_wins": n_wins,
            "share_wins": [w / n if n else 0.0 for w in n_wins],
        },
        schema={"rule": pl.String, "order": pl.Int32, "n_matches": pl.Int64, "n_wins": pl.Int64,
                "share_wins": pl.Float64},
    )


# --------------------------------------------------------------------------- choosing the extractor
def rules_extractor(config: SignalsConfig, model_dir: Path | None = None,
                    options: Mapping[str, object] | None = None) -> RuleIntentExtractor:
    """Entry point ``rules``: the config's ordered rules (needs no model and takes no options)."""
    if options:
        raise SignalsConfigError(f"intent extractor `rules` takes no extractor_options, got {sorted(options)}")
    return RuleIntentExtractor(config)


def _classifier_extractor(config: SignalsConfig, model_dir: Path | None = None,
                          options: Mapping[str, object] | None = None) -> IntentExtractor:
    from extract.intent_classifier import classifier_extractor  # scikit-learn only when chosen

    return classifier_extractor(config, model_dir, options)


# The built-ins, by the same names as their entry points (see the module doc for why both).
BUILTIN_EXTRACTORS: dict[str, ExtractorFactory] = {"rules": rules_extractor, "classifier": _classifier_extractor}


def registered_extractors() -> dict[str, list[metadata.EntryPoint]]:
    """Entry-point name → the entry points registered under it in ``convocausal.intent_extractors``."""
    out: dict[str, list[metadata.EntryPoint]] = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        out.setdefault(ep.name, []).append(ep)
    return out


def available_extractors() -> list[str]:
    """Every name a config may give as ``intent.extractor`` in this environment, sorted."""
    return sorted(set(BUILTIN_EXTRACTORS) | set(registered_extractors()))


def extractor_factory(name: str) -> ExtractorFactory:
    """The factory registered as ``name``: an installed entry point, else a built-in.

    Two distributions registering the same name is refused (which one runs would depend on
    install order). An entry point that fails to import is reported with its name and target,
    not as a bare traceback from deep inside a nightly run.
    """
    found = registered_extractors().get(name, [])
    targets = sorted({ep.value for ep in found})
    if len(targets) > 1:
        raise SignalsConfigError(f"intent extractor `{name}` is registered more than once in "
                                 f"{ENTRY_POINT_GROUP}: {', '.join(targets)}; uninstall one")
    if found:
        ep = found[0]
        try:
            factory = ep.load()
        except Exception as exc:
            raise SignalsConfigError(f"intent extractor `{name}` ({ep.value}) cannot be loaded: "
                                     f"{type(exc).__name__}: {exc}") from exc
        if not callable(factory):
            raise SignalsConfigError(f"intent extractor `{name}` ({ep.value}) is not callable")
        return factory
    if name in BUILTIN_EXTRACTORS:
        return BUILTIN_EXTRACTORS[name]
    raise SignalsConfigError(f"intent extractor `{name}` is not installed: no entry point of that name in "
                             f"{ENTRY_POINT_GROUP}; available: {', '.join(available_extractors())}")


def extractor_from_config(config: SignalsConfig, model_dir: str | Path | None = None) -> IntentExtractor:
    """The intent extractor the config names, built once per run.

    ``model_dir``: where trained models live (``<store>.parts/models``); the built-in classifier
    refuses to run without one, or when the model there was trained under other settings.
    """
    name = config.intent.extractor
    factory = extractor_factory(name)
    extractor = factory(config=config, model_dir=Path(model_dir) if model_dir is not None else None,
                        options=dict(config.intent.extractor_options))
    if not isinstance(extractor, IntentExtractor):
        raise SignalsConfigError(f"intent extractor `{name}` returned {type(extractor).__name__}, "
                                 "which has no classify(openings) method")
    return extractor


def models_dir(store_parts: str | Path) -> Path:
    """The model folder of a store, given its parts folder (``<store>.parts``)."""
    return Path(store_parts) / MODELS_SUBDIR
