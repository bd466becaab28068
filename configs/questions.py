"""Typed loader for ``configs/questions.yaml``: the question registry.

Every name in a question becomes an SQL identifier or a design-matrix column, so names are
checked twice: first by shape (a plain lower-case identifier, nothing else), then against the
signals catalog (the column must exist, the outcome must be an outcome, and a covariate must be
measured before the treatment). The YAML is read with ``safe_load`` only: tags such as
``!!python/object`` are rejected, nothing in the file is ever evaluated.
"""

from __future__ import annotations

import hashlib
import json
from datetime import date
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from configs.policy import Policy  # a candidate routing policy, inline as data (logged_policy questions)
from configs.safe_yaml import load_yaml, parse_yaml  # the one reader and size limit (MAX_CONFIG_BYTES)

DEFAULT_PATH = Path(__file__).with_name("questions.yaml")
MAX_QUESTIONS = 500

Identifier = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
QuestionId = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
# Selector values are data, compared through query parameters, never pasted into SQL.
SelectorValue = Annotated[str, StringConstraints(max_length=200)] | int | bool

class ConfigError(ValueError):
    """A question config that cannot run: the message names the question, the field and the fix."""


class Window(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start: date | None = None
    end: date | None = None


class Guardrail(BaseModel):
    """An outcome that must not get worse: ``better`` says which direction is good, ``tolerance`` how
    much worse (in the outcome's units) is still acceptable."""
    model_config = ConfigDict(extra="forbid", frozen=True)
    outcome: Identifier
    better: Literal["lower", "higher"]
    tolerance: float = Field(default=0.0, ge=0, allow_inf_nan=False)


MAX_SEGMENT_COLUMNS = 3
# Fields a question gained with issue 16 (guardrails, net value, segments): left out of the fingerprint
# while unset, so adding them to the loader does not re-run every existing question
DECISION_FIELDS = ("guardrails", "value", "segments", "project_to")
# Fields of the measurement and mechanism designs (issue 17), left out of the fingerprint while unset too
MEASUREMENT_FIELDS = ("score", "bias_covariates", "action", "propensity_prefix", "policy", "mediators")
MAX_MEDIATORS = 1  # regression mediation separates one 0/1 mediator at a time


class Question(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: QuestionId
    description: str = Field(default="", max_length=2000)
    # Which designs and methods exist is the method registry's (convocausal/questions/registry.py),
    # which also checks that the fields a method needs are set.
    design: Identifier | None = None
    method: Identifier | None = None
    outcome: Identifier
    estimand: Literal["ATT", "ATE"] = "ATT"
    window: Window | None = None
    # propensity matching
    treatment: Identifier | None = None
    covariates: list[Identifier] = Field(default_factory=list, max_length=100)
    caliper: float | None = Field(default=0.2, gt=0, le=10)
    # synthetic control / diff-in-diff
    treated: dict[Identifier, list[SelectorValue]] | None = Field(default=None, max_length=10)
    launch: date | None = None
    unit_by: list[Identifier] = Field(default_factory=list, max_length=5)
    time_bucket: Literal["week", "date", "hour"] = "week"  # hour: synthetic control only
    min_volume: int = Field(default=30, ge=1, le=1_000_000)
    fixed_effects: list[Identifier] = Field(default_factory=lambda: ["intent", "hour_of_day"], max_length=20)
    cluster: Identifier | None = None
    # randomized designs (an A/B test): the arm column, known before the conversation; the column saying
    # whether the treatment was actually used (1/true; 0, false or null: not used); the arm the others are
    # compared with (default: 0/false, else the most frequent arm); the design's arm shares for the
    # sample-ratio check (default equal); further outcomes for the per-arm table
    assignment: Identifier | None = None
    uptake: Identifier | None = None
    baseline: SelectorValue | None = None
    assignment_shares: dict[SelectorValue, Annotated[float, Field(gt=0)]] | None = Field(default=None, max_length=50)
    secondary_outcomes: list[Identifier] = Field(default_factory=list, max_length=20)
    # decision-grade answers (issue 16): outcomes that must not get worse, weights per outcome for a
    # net-value estimate, start-of-conversation columns to estimate the effect per level of, and a
    # target mix of one segment column's levels to re-weight the segment effects to
    guardrails: list[Guardrail] = Field(default_factory=list, max_length=10)
    value: dict[Identifier, Annotated[float, Field(allow_inf_nan=False)]] | None = Field(default=None, max_length=20)
    segments: list[Identifier] = Field(default_factory=list, max_length=MAX_SEGMENT_COLUMNS)
    project_to: dict[Identifier, dict[SelectorValue, Annotated[float, Field(ge=0, allow_inf_nan=False)]]] | None = \
        Field(default=None, max_length=MAX_SEGMENT_COLUMNS)

    # judged_outcome (issue 17): `outcome` is the human score (set on an audited sample, null elsewhere),
    # `score` the automated judge's score of every conversation, `bias_covariates` what the judge may be
    # biased by (e.g. response length; measured after the treatment on purpose: they calibrate, not adjust)
    score: Identifier | None = None
    bias_covariates: list[Identifier] = Field(default_factory=list, max_length=20)
    # logged_policy: `outcome` is the reward, `action` the logged action, the logging probability of action
    # `a` in column `propensity_prefix + a`, `covariates` the reward model's context, `policy` the candidate
    # as data (ordered rules, first match wins; configs/policy.py)
    action: Identifier | None = None
    propensity_prefix: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,40}$")] | None = None
    policy: Policy | None = None
    # mediation: the 0/1 signal the treatment may work through (a tool call, e.g. tool_lookup_order)
    mediators: list[Identifier] = Field(default_factory=list, max_length=MAX_MEDIATORS)

    @model_validator(mode="after")
    def _decision_fields(self) -> Question:
        names = [g.outcome for g in self.guardrails]
        if len(set(names)) != len(names):
            raise ValueError("a guardrail outcome appears twice")
        if self.outcome in names:
            raise ValueError(f"guardrail `{self.outcome}` is the question's own outcome")
        if self.value is not None and (not self.value or not any(self.value.values())):
            raise ValueError("`value` needs at least one non-zero weight (outcome: weight)")
        if len(set(self.segments)) != len(self.segments):
            raise ValueError("a segment column appears twice")
        for col, mix in (self.project_to or {}).items():
            if col not in self.segments:
                raise ValueError(f"`project_to.{col}`: `{col}` is not one of the question's `segments`")
            if not mix or not sum(mix.values()) > 0:
                raise ValueError(f"`project_to.{col}` needs level: weight pairs with a positive total")
        return self

    def fingerprint(self) -> str:
        """Stable hash of the question's content: the sensor re-runs a question when it changes."""
        unset = {f for f in DECISION_FIELDS + MEASUREMENT_FIELDS if getattr(self, f) in (None, [], {})}
        return hashlib.sha256(json.dumps(self.model_dump(mode="json", exclude=unset), sort_keys=True)
                              .encode()).hexdigest()[:16]


class QuestionSet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    questions: list[Question] = Field(max_length=MAX_QUESTIONS)

    @model_validator(mode="after")
    def _unique_ids(self) -> QuestionSet:
        seen: set[str] = set()
        for q in self.questions:
            if q.id in seen:
                raise ValueError(f"question id `{q.id}` appears twice")
            seen.add(q.id)
        return self

    def by_id(self) -> dict[str, Question]:
        return {q.id: q for q in self.questions}


def load_questions(path: str | Path | None = None) -> QuestionSet:
    """Read and shape-check the registry. Raises ConfigError with a readable message.

    Read by the shared safe loader (``configs.safe_yaml``), as the signals config is.
    """
    path = Path(path) if path else DEFAULT_PATH
    return _validate_questions(load_yaml(path, "questions config", ConfigError), source=str(path))


def parse_questions(text: str, source: str = "<questions>") -> QuestionSet:
    return _validate_questions(parse_yaml(text, source, ConfigError), source)


def _validate_questions(raw: object, source: str) -> QuestionSet:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping with a `questions:` list")
    try:
        return QuestionSet.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        qid = _question_id_at(raw, first["loc"])
        raise ConfigError(f"{source}: question {qid or '?'}: `{where}`: {first['msg']}") from exc


def _question_id_at(raw: dict, loc: tuple) -> str | None:
    if len(loc) >= 2 and loc[0] == "questions" and isinstance(loc[1], int):
        try:
            return str(raw["questions"][loc[1]].get("id"))
        except (KeyError, IndexError, AttributeError, TypeError):
            return None
    return None


# Question fields a design conditions on (adjusts for, groups or selects by), with their names in
# messages. A signal measured during or after the conversation may be moved by the treatment.
ADJUSTED_ROLES = {"covariates": "covariate", "fixed_effects": "fixed effect", "unit_by": "cohort column (unit_by)",
                  "cluster": "cluster", "treated": "treated selector column"}


def validate_against_catalog(question: Question, catalog: list[dict], columns: dict[str, list[str]]) -> list[str]:
    """Check every name against the signals catalog; raise ConfigError, return warnings.

    ``catalog`` rows: name, kind, measured_at (start|turn|end), agent_controlled. ``columns``: the
    signals columns the question names, by role (``registry.question_columns``: which fields name
    columns depends on the method).
    """
    by_name = {row["name"]: row for row in catalog}
    available = ", ".join(sorted(by_name))
    for role, names in columns.items():
        for name in names:
            if name not in by_name:
                raise ConfigError(
                    f"question {question.id}: {role} `{name}` is not a signals column. Available: {available}"
                )
    out = by_name[question.outcome]
    if out["kind"] != "outcome":
        raise ConfigError(f"question {question.id}: outcome `{question.outcome}` is a {out['kind']}, not an outcome")
    warnings: list[str] = []
    if question.treatment:
        t = by_name[question.treatment]
        if t["kind"] not in ("behaviour", "tool"):
            warnings.append(f"treatment `{question.treatment}` is a {t['kind']} signal, not a configured behaviour")
    for role, label in ADJUSTED_ROLES.items():  # everything the design conditions on must be known at conversation start
        for name in columns.get(role, []):
            when = by_name[name]["measured_at"]
            if role == "covariates" and _turn_ordered(question, by_name, name):
                warnings.append(f"covariate `{name}` is measured during the conversation: it is used only if the "
                                "data show it before the treatment's turn in every conversation (checked when the "
                                "question runs)")
                continue
            if when != "start":
                raise ConfigError(
                    f"question {question.id}: {label} `{name}` is measured "
                    f"{'at the end of the conversation' if when == 'end' else 'during the conversation'}, "
                    "possibly after the treatment: adjusting for it would control for a mediator or collider. "
                    "Use signals known at conversation start"
                    + (", or a behaviour or tool that happens before the treatment's turn." if when == "turn"
                       and role == "covariates" else ".")
                )
    _validate_decision_fields(question, by_name, available)
    return warnings


def _validate_decision_fields(question: Question, by_name: dict, available: str) -> None:
    """Guardrails and value weights must name outcomes; segments must be known at conversation start
    (a segment defined by something the treatment can move would split on a mediator)."""
    for role, names in (("guardrail", [g.outcome for g in question.guardrails]),
                        ("value weight", list(question.value or {}))):
        for name in names:
            if name not in by_name:
                raise ConfigError(f"question {question.id}: {role} `{name}` is not a signals column. "
                                  f"Available: {available}")
            if by_name[name]["kind"] != "outcome":
                raise ConfigError(f"question {question.id}: {role} `{name}` is a {by_name[name]['kind']}, "
                                  "not an outcome")
    for name in question.segments:
        if name not in by_name:
            raise ConfigError(f"question {question.id}: segment `{name}` is not a signals column. "
                              f"Available: {available}")
        if by_name[name]["measured_at"] != "start" or by_name[name]["kind"] == "outcome":
            raise ConfigError(f"question {question.id}: segment `{name}` is not known at conversation start "
                              f"(measured {by_name[name]['measured_at']}): the treatment could move it, so "
                              "segments must be start-of-conversation covariates")


def _turn_ordered(question: Question, by_name: dict, name: str) -> bool:
    """A turn-level covariate whose order against a turn-level treatment the data can check.

    Both must carry a turn (``turn_column`` in the catalogue); the question layer then refuses the
    question unless the covariate comes first in every conversation (``preflight.turn_order_diagnostic``).
    A signal measured at the end, or a turn-level name in any other role, stays refused here.
    """
    row, treatment = by_name[name], by_name.get(question.treatment or "", {})
    return (row["measured_at"] == "turn" and bool(row.get("turn_column")) and treatment.get("measured_at") == "turn"
            and bool(treatment.get("turn_column")) and name != question.treatment
            and row.get("turn_column") != treatment.get("turn_column"))
