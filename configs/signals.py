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
combined regex, which is what extraction runs), not once per pattern.
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

# Columns that extraction always writes; configured names must not collide with them.
RESERVED_NAMES: frozenset[str] = frozenset(
    {
        "conversation_id", "customer_key", "started_at", "ended_at", "duration_s", "date", "week",
        "hour_of_day", "day_of_week", "channel", "agent_version", "skill", "persona_segment", "intent",
        "n_turns", "n_user_turns", "tools_used", "memory_items", "memory_has_prior_session",
        "text", "customer_id", "turn", "ts", "role", "tool_name",
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


class IntentConfig(_Model):
    """Intent from the first ``opening_user_turns`` customer messages; ordered rules, first match wins."""

    opening_user_turns: int = Field(1, ge=1, le=20)
    default: Name = "other"
    rules: list[IntentRule] = Field(max_length=MAX_INTENT_RULES)

    @model_validator(mode="after")
    def _unique(self) -> IntentConfig:
        names = [r.name for r in self.rules]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate intent rule names: {dup}")
        if self.default in names:
            raise ValueError(f"default intent `{self.default}` is also a rule name")
        return self


class PositionRule(_Model):
    """When a behaviour counts as early: exactly one of an absolute turn or a fraction of the conversation.

    ``turn_at_most: 3`` → first matching turn ≤ 3 is early. ``fraction_at_most: 0.5`` → first matching
    turn / (n_turns - 1) ≤ 0.5 (0 = first message, 1 = last message) is early.
    """

    turn_at_most: int | None = Field(None, ge=0, le=1_000_000)
    fraction_at_most: float | None = Field(None, ge=0.0, le=1.0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _exactly_one(self) -> PositionRule:
        if (self.turn_at_most is None) == (self.fraction_at_most is None):
            raise ValueError("early_if needs exactly one of `turn_at_most` or `fraction_at_most`")
        return self


class Behaviour(_Model):
    """A thing the agent (or customer) says: ``<name>`` = 1 early / 0 later / null never, plus ``<name>_turn``."""

    name: Name
    role: Role = "assistant"
    pattern: Regex
    early_if: PositionRule

    @property
    def regex(self) -> str:
        return case_insensitive([self.pattern])


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
    """An outcome read from the transcript itself (e.g. the agent saying it resolved the ticket): agent-controlled."""

    name: Name
    role: Role = "assistant"
    pattern: Regex

    @property
    def regex(self) -> str:
        return case_insensitive([self.pattern])


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
