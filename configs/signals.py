"""Typed loader for ``configs/signals.yaml``: the declarative recipe for turning transcripts into signals.

It lives in ``configs/`` beside ``questions.py`` so every config has one home and one file
reader (``configs.safe_yaml``); extraction imports the typed models from here.

Why a typed loader: the config is user-edited, and a typo in a section name or a regex that the
polars (Rust) engine cannot compile would otherwise surface deep inside a nightly run. Every model
forbids unknown keys, every name is checked as a SQL/Python-safe identifier (the names become
column names in the DuckDB store), and every pattern is compiled at load time by both Python's
``re`` (clear error messages) and polars' Rust engine (the one that actually runs it).

Why size limits: the config may come from a launchpad run config or a shared checkout, and an
absurd file (megabytes of YAML, thousands of rules, a regex whose compiled program exceeds the
Rust engine's size limit) must be refused with a message at load, not stall or crash a nightly
run. Each Rust compile of a large pattern costs up to ~0.1 s, so counts and lengths are capped
*before* any regex is compiled, and intent patterns are compiled once per rule (as the rule's
combined regex, which is what extraction runs), not once per pattern; a behaviour's several
patterns are likewise compiled once, as their alternation.

Why the intent extractor is a *name*: a team may classify intents with the built-in rules, the
built-in learned classifier (``extract/intent_classifier.py``) or its own model (an LLM, an
embedding classifier). The config names that extractor by its registered Python entry point
(group ``convocausal.intent_extractors``, see ``extract/intent.py``): a validated identifier, never
an import path or code, so reading a config can never import or run anything it names. Options
for a plug-in are plain scalars under ``extractor_options``.
"""

from __future__ import annotations

import re
from importlib import resources
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Literal

import polars as pl
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from configs.safe_yaml import load_yaml  # the one file reader and size limit (MAX_CONFIG_BYTES)

NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
ROLES = ("user", "assistant", "tool", "system")
Role = Literal["user", "assistant", "tool", "system"]

# Limits far above any real deployment (the default config has 8 rules and ~40 patterns), low
# enough to bound validation: at most ~500 Rust compiles (one per intent rule, one per behaviour,
# tool or transcript-outcome pattern), i.e. tens of seconds for the most expensive file allowed.
MAX_INTENT_RULES = 200
MAX_RULE_ITEMS = 100  # patterns + keywords of one intent rule
MAX_LIST_ITEMS = 100  # behaviours, known tools, downstream outcomes, transcript outcomes
MAX_PATTERN_CHARS = 1_000  # one regex pattern or literal keyword
MAX_SALT_CHARS = 256
MAX_EXTRACTOR_OPTIONS = 50  # scalar options handed to a plug-in intent extractor

# Columns that extraction always writes; configured names must not collide with them.
RESERVED_NAMES: frozenset[str] = frozenset(
    {
        "conversation_id", "customer_key", "started_at", "ended_at", "duration_s", "date", "week",
        "hour_of_day", "day_of_week", "channel", "agent_version", "skill", "persona_segment", "intent",
        "n_turns", "n_user_turns", "tools_used", "memory_items", "memory_has_prior_session",
        "text", "customer_id", "turn", "ts", "role", "tool_name", "intent_confidence",
    }
)


class SignalsConfigError(ValueError):
    """The signals config cannot be used; the message names the file and the offending field."""


def _check_name(value: str) -> str:
    if not NAME_RE.match(value):
        raise ValueError(
            f"`{value}` is not a valid signal name: use lowercase letters, digits and _ "
            "(start with a letter, at most 63 characters)"
        )
    return value


def _check_python_regex(pattern: str) -> str:
    """Compile with Python ``re`` (fast, precise messages); the Rust engine is checked by the caller."""
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regex {pattern!r}: {exc}") from exc
    return pattern


def _engine_error(regex: str) -> str | None:
    """Why polars' Rust engine refuses ``regex`` (one line), or ``None`` when it compiles.

    The engine rejects syntax Python accepts (look-around, backreferences) and any pattern whose
    compiled program exceeds its size limit (e.g. ``(a{1000}){1000}``, or ``\\w{300}`` since
    ``\\w`` is a large Unicode class); both must fail here, at load.
    """
    try:
        pl.Series(["probe"]).str.contains(regex)
    except pl.exceptions.PolarsError as exc:  # ComputeError for syntax or size the Rust engine rejects
        text = str(exc)
        size = re.search(r"exceeds size limit of (\d+) bytes", text)
        if size:
            return (f"compiles to more than the polars regex engine's size limit ({int(size.group(1)):,} bytes); "
                    "use smaller repetition counts or narrower character classes")
        lines = text.splitlines()
        reason = next((ln.strip() for ln in lines if ln.strip().startswith("error:")), None)
        if reason is None:
            return lines[0].strip() if lines else type(exc).__name__
        reason = reason[len("error:"):].strip()
        # The engine marks the offending span with ^^^ under the regex: name it, since an intent
        # rule's regex combines many patterns.
        for above, marks in pairwise(lines):
            if marks.strip() and set(marks.strip()) == {"^"}:
                start = len(marks) - len(marks.lstrip())
                span = above[start:start + len(marks.strip())]
                if span.strip():
                    reason += f" (at {span!r})"
                break
        return reason
    return None


def _check_regex(pattern: str) -> str:
    """Compile with Python ``re`` and with polars' Rust engine (as run: case-insensitive); both must accept it."""
    _check_python_regex(pattern)
    reason = _engine_error(case_insensitive([pattern]))
    if reason:
        raise ValueError(f"regex {pattern!r} is not supported by the polars engine: {reason}")
    return pattern


Name = Annotated[str, AfterValidator(_check_name)]
# Length is capped before anything compiles the pattern.
Bounded = Annotated[str, StringConstraints(max_length=MAX_PATTERN_CHARS)]
Regex = Annotated[Bounded, AfterValidator(_check_regex)]
# Intent patterns: Python-checked one by one, Rust-checked once per rule (see IntentRule).
RulePattern = Annotated[Bounded, AfterValidator(_check_python_regex)]


def case_insensitive(patterns: list[str], keywords: list[str] = ()) -> str:
    """One case-insensitive regex matching any of ``patterns`` (regex) or ``keywords`` (literal)."""
    parts = [f"(?:{p})" for p in patterns] + [pl.escape_regex(k) for k in keywords]
    return "(?i)" + "|".join(parts)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IntentRule(_Model):
    """One intent: any of its regex ``patterns`` or literal ``keywords`` in the opening text."""

    name: Name
    patterns: list[RulePattern] = Field(default_factory=list, max_length=MAX_RULE_ITEMS)
    keywords: list[Bounded] = Field(default_factory=list, max_length=MAX_RULE_ITEMS)

    @field_validator("keywords")
    @classmethod
    def _keywords(cls, v: list[str]) -> list[str]:
        if any(not k for k in v):
            raise ValueError("empty keyword")
        return v

    @model_validator(mode="after")
    def _nonempty(self) -> IntentRule:
        if not self.patterns and not self.keywords:
            raise ValueError(f"intent rule `{self.name}` needs at least one pattern or keyword")
        if len(self.patterns) + len(self.keywords) > MAX_RULE_ITEMS:
            raise ValueError(f"intent rule `{self.name}` has {len(self.patterns) + len(self.keywords)} patterns "
                             f"and keywords (max {MAX_RULE_ITEMS}); split it into several rules")
        # One Rust compile per rule, of the combined regex extraction actually runs: it catches
        # syntax the Rust engine rejects and a rule whose patterns together exceed its size limit.
        reason = _engine_error(self.regex)
        if reason:
            raise ValueError(f"intent rule `{self.name}`: patterns not supported by the polars engine: {reason}")
        return self

    @property
    def regex(self) -> str:
        return case_insensitive(self.patterns, self.keywords)


class ClassifierConfig(_Model):
    """The built-in learned intent classifier: TF-IDF over word and character n-grams, a linear model.

    Trained by ``convocausal signals train`` from a labelled table (``conversation_id, intent``)
    into a model file beside the store, named by a hash of these settings (except
    ``min_confidence``, which only acts at classification), so a model trained under other
    settings is refused at load instead of silently used. The seed is not a setting: it is given
    at training and recorded in the model's card.
    """

    word_ngrams: tuple[int, int] | None = (1, 2)  # word n-gram lengths (lowest, highest); null = none
    char_ngrams: tuple[int, int] | None = (2, 4)  # character (UTF-8 byte) n-grams inside words
    max_chars: int = Field(500, ge=16, le=10_000)  # the opening text is cut to this many characters
    min_df: int = Field(1, ge=1, le=1_000)  # keep n-grams seen in at least this many training texts
    max_features: int = Field(500_000, ge=100, le=5_000_000)  # the most frequent n-grams kept
    c: float = Field(5.0, gt=0, le=1e6, allow_inf_nan=False)  # inverse regularisation of the model
    class_weight: Literal["none", "balanced"] = "none"
    max_iter: int = Field(2_000, ge=10, le=100_000)
    # Weight of one extra feature per intent rule (1 where the rule's regex matches the opening,
    # whatever the rules' order): hand-written rules are prior knowledge a small labelled set
    # lacks. 0 = off. With it on, the rules are part of the model (a rule edit needs a retrain).
    rule_features: float = Field(0.0, ge=0.0, le=10.0, allow_inf_nan=False)
    cv_folds: int = Field(5, ge=2, le=20)  # cross-validation reported in the model card
    max_training_rows: int = Field(200_000, ge=10, le=10_000_000)  # a larger labelled set is sampled by seed
    # Below this probability the intent is the config's default (its confidence is kept): 0 = never.
    min_confidence: float = Field(0.0, ge=0.0, le=1.0, allow_inf_nan=False)

    @field_validator("word_ngrams", "char_ngrams")
    @classmethod
    def _range(cls, v, info):
        if v is None:
            return v
        hi_max = 3 if info.field_name == "word_ngrams" else 6  # six bytes fit the 48-bit codes
        lo, hi = v
        if not 1 <= lo <= hi <= hi_max:
            raise ValueError(f"{info.field_name} must be [lowest, highest] with 1 <= lowest <= highest <= {hi_max}")
        return v

    @model_validator(mode="after")
    def _some_features(self) -> ClassifierConfig:
        if self.word_ngrams is None and self.char_ngrams is None:
            raise ValueError("classifier needs word_ngrams or char_ngrams")
        return self


ExtractorOption = Annotated[str, StringConstraints(max_length=MAX_PATTERN_CHARS)] | bool | int | float


class IntentConfig(_Model):
    """Intent from the first ``opening_user_turns`` customer messages.

    ``extractor`` names who classifies them: ``rules`` (ordered rules, first match wins, the
    default), ``classifier`` (the built-in learned model, settings under ``classifier``) or the
    name of an extractor another package registers in the entry-point group
    ``convocausal.intent_extractors`` (its options under ``extractor_options``). The rules stay
    meaningful with any extractor: ``convocausal signals train --labels-from-rules`` labels a
    seed set with them, and they are the baseline a learned model is compared with.
    """

    opening_user_turns: int = Field(1, ge=1, le=20)
    default: Name = "other"
    extractor: Name = "rules"
    classifier: ClassifierConfig = Field(default_factory=ClassifierConfig)
    extractor_options: dict[Name, ExtractorOption] = Field(default_factory=dict, max_length=MAX_EXTRACTOR_OPTIONS)
    # A second extractor (an entry-point name, e.g. `rules` beside `classifier`) whose labels the
    # `extraction_sensitivity` check re-estimates each question with; null = none. Takes no options.
    compare_with: Name | None = None
    rules: list[IntentRule] = Field(max_length=MAX_INTENT_RULES)

    @model_validator(mode="after")
    def _unique(self) -> IntentConfig:
        names = [r.name for r in self.rules]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate intent rule names: {dup}")
        if self.default in names:
            raise ValueError(f"default intent `{self.default}` is also a rule name")
        if self.compare_with is not None and self.compare_with == self.extractor:
            raise ValueError(f"intent.compare_with `{self.compare_with}` is the extractor itself; name another one")
        return self


class PositionRule(_Model):
    """When a behaviour counts as early: exactly one of a turn, a fraction, or an assistant-message count.

    ``turn_at_most: 3`` → first matching turn ≤ 3 is early. ``fraction_at_most: 0.5`` → first matching
    turn / (n_turns - 1) ≤ 0.5 (0 = first message, 1 = last message) is early.
    ``assistant_message_at_most: 2`` → early when at most 2 assistant *text* messages (assistant
    rows with text; a tool call without text does not count) were sent up to and including the
    first matching row: for an assistant behaviour, "in the agent's first two messages" however
    many customer turns and tool calls came between them.
    """

    turn_at_most: int | None = Field(None, ge=0, le=1_000_000)
    fraction_at_most: float | None = Field(None, ge=0.0, le=1.0, allow_inf_nan=False)
    assistant_message_at_most: int | None = Field(None, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _exactly_one(self) -> PositionRule:
        given = [v for v in (self.turn_at_most, self.fraction_at_most, self.assistant_message_at_most)
                 if v is not None]
        if len(given) != 1:
            raise ValueError("early_if needs exactly one of `turn_at_most`, `fraction_at_most` or "
                             "`assistant_message_at_most`")
        return self

    def describe(self) -> str:
        """The rule in words, for the signal catalogue."""
        if self.turn_at_most is not None:
            return f"turn <= {self.turn_at_most}"
        if self.fraction_at_most is not None:
            return f"turn/(n_turns-1) <= {self.fraction_at_most:g}"
        return f"within the first {self.assistant_message_at_most} assistant text message(s)"


ToolValue = Annotated[str, StringConstraints(min_length=1, max_length=MAX_PATTERN_CHARS)]


def _literal_list(v):
    """``x`` is the short form of ``[x]``; ``None`` of ``[]``."""
    if v is None:
        return []
    return [v] if isinstance(v, str) else v


def _combined_regex_error(owner: str, patterns: list[str]) -> None:
    """One Rust compile of the alternation extraction runs (as for an intent rule's patterns)."""
    reason = _engine_error(case_insensitive(patterns))
    if reason:
        raise ValueError(f"{owner}: regex patterns not supported by the polars engine together: {reason}")


class Behaviour(_Model):
    """A thing the agent (or customer) does: ``<name>`` = 1 early / 0 later / null never, plus ``<name>_turn``.

    A row of ``role`` counts when its text matches any of ``pattern`` / ``patterns`` (regexes,
    case-insensitive) and, when ``tool_name`` is given, its ``tool_name`` is one of those values
    (literal). With ``tool_name`` alone no text is read: "the agent called lookup_order" is
    ``{tool_name: lookup_order}`` (the call is the assistant row that carries the tool name).
    """

    name: Name
    role: Role = "assistant"
    pattern: Regex | None = None  # one pattern, checked alone (the original form)
    patterns: list[RulePattern] = Field(default_factory=list, max_length=MAX_RULE_ITEMS)
    tool_name: list[ToolValue] = Field(default_factory=list, max_length=MAX_RULE_ITEMS)
    early_if: PositionRule

    @field_validator("tool_name", "patterns", mode="before")
    @classmethod
    def _short_lists(cls, v):
        return _literal_list(v)

    @model_validator(mode="after")
    def _something_to_match(self) -> Behaviour:
        if not self.all_patterns and not self.tool_name:
            raise ValueError(f"behaviour `{self.name}` needs a `pattern`, `patterns` or `tool_name`")
        if len(self.all_patterns) > MAX_RULE_ITEMS:
            raise ValueError(f"behaviour `{self.name}` has {len(self.all_patterns)} patterns (max {MAX_RULE_ITEMS})")
        if self.patterns:  # `pattern` alone was compiled by its field validator
            _combined_regex_error(f"behaviour `{self.name}`", self.all_patterns)
        return self

    @property
    def all_patterns(self) -> list[str]:
        return ([self.pattern] if self.pattern is not None else []) + list(self.patterns)

    @property
    def regex(self) -> str | None:
        """One case-insensitive regex for all patterns, or ``None`` for a tool-only behaviour."""
        return case_insensitive(self.all_patterns) if self.all_patterns else None


class Tool(_Model):
    """A known tool: matched on ``tool_name``; optionally also on a text ``pattern`` of assistant/tool rows."""

    name: Name
    pattern: Regex | None = None

    @property
    def regex(self) -> str | None:
        return None if self.pattern is None else case_insensitive([self.pattern])


class ToolsConfig(_Model):
    known: list[Tool] = Field(default_factory=list, max_length=MAX_LIST_ITEMS)

    @field_validator("known", mode="before")
    @classmethod
    def _strings(cls, v):
        # `known: [lookup_order, kb_search]` is the short form of `[{name: lookup_order}, ...]`.
        return [{"name": t} if isinstance(t, str) else t for t in (v or [])]


class MemoryConfig(_Model):
    """A prior session = memory injected (memory_items > 0) or a prior conversation within the window."""

    window_days: float = Field(30, gt=0, le=3650, allow_inf_nan=False)  # history is read day by day


class DownstreamOutcome(_Model):
    """An outcome column of the outcomes export (written by systems the agent cannot touch)."""

    name: Name
    dtype: Literal["bool", "int", "float", "str"] = "bool"


class TranscriptOutcome(_Model):
    """An outcome read from the transcript itself (e.g. the agent saying it resolved the ticket): agent-controlled.

    True when any row of ``role`` matches ``pattern`` or any of ``patterns``.
    """

    name: Name
    role: Role = "assistant"
    pattern: Regex | None = None
    patterns: list[RulePattern] = Field(default_factory=list, max_length=MAX_RULE_ITEMS)

    @field_validator("patterns", mode="before")
    @classmethod
    def _short_list(cls, v):
        return _literal_list(v)

    @model_validator(mode="after")
    def _something_to_match(self) -> TranscriptOutcome:
        pats = self.all_patterns
        if not pats:
            raise ValueError(f"transcript outcome `{self.name}` needs a `pattern` or `patterns`")
        if len(pats) > MAX_RULE_ITEMS:
            raise ValueError(f"transcript outcome `{self.name}` has {len(pats)} patterns (max {MAX_RULE_ITEMS})")
        if self.patterns:
            _combined_regex_error(f"transcript outcome `{self.name}`", pats)
        return self

    @property
    def all_patterns(self) -> list[str]:
        return ([self.pattern] if self.pattern is not None else []) + list(self.patterns)

    @property
    def regex(self) -> str:
        return case_insensitive(self.all_patterns)


class OutcomesConfig(_Model):
    downstream: list[DownstreamOutcome] = Field(default_factory=list, max_length=MAX_LIST_ITEMS)
    transcript: list[TranscriptOutcome] = Field(default_factory=list, max_length=MAX_LIST_ITEMS)

    @field_validator("downstream", mode="before")
    @classmethod
    def _strings(cls, v):
        return [{"name": t} if isinstance(t, str) else t for t in (v or [])]


class CustomerKeyConfig(_Model):
    """Salt for ``customer_key = sha256(salt + customer_id)``; change it per deployment."""

    salt: str = Field(min_length=1, max_length=MAX_SALT_CHARS)


class SignalsConfig(_Model):
    version: Literal[1] = 1
    intent: IntentConfig
    behaviours: list[Behaviour] = Field(default_factory=list, max_length=MAX_LIST_ITEMS)
    tools: ToolsConfig = Field(default_factory=ToolsConfig)
    memory: MemoryConfig = Field(default_factory=MemoryConfig)
    outcomes: OutcomesConfig = Field(default_factory=OutcomesConfig)
    customer_key: CustomerKeyConfig

    @model_validator(mode="after")
    def _no_collisions(self) -> SignalsConfig:
        """Every generated column name must be unique and not shadow a built-in column."""
        generated: list[str] = []
        for b in self.behaviours:
            generated += [b.name, f"{b.name}_turn"]
        for t in self.tools.known:
            generated += [f"tool_{t.name}", f"tool_{t.name}_turn"]
        generated += [o.name for o in self.outcomes.downstream]
        generated += [o.name for o in self.outcomes.transcript]
        dup = sorted({n for n in generated if generated.count(n) > 1})
        if dup:
            raise ValueError(f"configured signal names collide: {dup}")
        reserved = sorted(set(generated) & RESERVED_NAMES)
        if reserved:
            raise ValueError(f"configured signal names shadow built-in columns: {reserved}")
        if any(len(n) > 63 for n in generated):
            raise ValueError(f"generated column names too long: {[n for n in generated if len(n) > 63]}")
        return self

    @property
    def tool_names(self) -> list[str]:
        return [t.name for t in self.tools.known]


def default_config_path() -> Path:
    """The packaged default ``configs/signals.yaml``."""
    return Path(str(resources.files("configs").joinpath("signals.yaml")))


def parse_signals_config(data: object, source: str = "<dict>") -> SignalsConfig:
    """Validate an already-parsed mapping; errors name ``source`` and the field path."""
    if not isinstance(data, dict):
        raise SignalsConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return SignalsConfig.model_validate(data)
    except ValidationError as exc:
        lines = [
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
        ]
        # the first line names the field: a CLI that prints one line still says what to fix
        more = f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""
        raise SignalsConfigError(f"{source}: invalid signals config: {lines[0]}{more}\n  "
                                 + "\n  ".join(lines)) from None


def load_signals_config(path: str | Path | None = None) -> SignalsConfig:
    """Load and validate a signals config; ``None`` → the packaged default.

    Read by the shared safe loader (``configs.safe_yaml``: regular file, size checked before
    reading, UTF-8, ``yaml.safe_load`` only, errors with line and column).
    """
    p = Path(path) if path is not None else default_config_path()
    data = load_yaml(p, "signals config", SignalsConfigError)
    return parse_signals_config(data, source=str(p))
