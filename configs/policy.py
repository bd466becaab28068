"""A candidate routing policy written as data, never code (logged-policy evaluation, issue 17).

The file (YAML or JSON, read by ``configs/safe_yaml.py``'s loader: unique keys, size limit,
nothing evaluated) holds ordered rules; the first rule whose conditions all hold picks the action,
and rows no rule matches get ``default``::

    rules:
      - when: {risk: {gt: 1.0}}
        action: human
      - when: {difficulty: {gt: -0.3}, channel: {in: [chat, email]}}
        action: large_model
    default: small_model

Operators: ``gt ge lt le`` (numbers), ``eq`` (a number, text or true/false) and ``in`` (a list of
them). Conditions in one ``when`` are joined by AND (so are several operators on one column, e.g.
``{gt: 0, le: 1}`` is 0 < x <= 1). Column names and action labels must be plain identifiers. A
missing value in a column never satisfies a condition. ``Policy.as_plain()`` is the plain-dict form
``methods/ope`` evaluates (with numpy masks).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from configs.safe_yaml import load_yaml, parse_yaml

MAX_RULES = 200
MAX_IN_VALUES = 1000
Identifier = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
ActionLabel = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")]
Scalar = bool | int | float | Annotated[str, StringConstraints(max_length=256)]


class Condition(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    eq: Scalar | None = None
    in_: list[Scalar] | None = Field(default=None, alias="in", min_length=1, max_length=MAX_IN_VALUES)

    @model_validator(mode="after")
    def _some_operator(self) -> Condition:
        if all(getattr(self, f) is None for f in ("gt", "ge", "lt", "le", "eq", "in_")):
            raise ValueError("a condition needs at least one operator of gt, ge, lt, le, eq, in")
        return self


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    when: dict[Identifier, Condition] = Field(min_length=1)
    action: ActionLabel

    @field_validator("action", mode="before")
    @classmethod
    def _action_text(cls, v):
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: list[Rule] = Field(default_factory=list, max_length=MAX_RULES)
    default: ActionLabel

    @field_validator("default", mode="before")
    @classmethod
    def _default_text(cls, v):
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    def columns(self) -> list[str]:
        return list(dict.fromkeys(c for r in self.rules for c in r.when))

    def actions(self) -> list[str]:
        return list(dict.fromkeys([*(r.action for r in self.rules), self.default]))

    def as_plain(self) -> dict:
        """``{"rules": [{"when": {col: {op: value}}, "action": a}], "default": d}``, set operators only."""
        return {
            "rules": [{"when": {c: cond.model_dump(by_alias=True, exclude_none=True) for c, cond in r.when.items()},
                       "action": r.action} for r in self.rules],
            "default": self.default,
        }


def _validate(data: object, source: str) -> Policy:
    from configs.questions import ConfigError  # configs/questions.py holds a policy inline: import it lazily

    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a policy is a mapping with `rules` (a list) and `default` (an action)")
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "policy"
        raise ConfigError(f"{source}: `{where}`: {err['msg']}") from None


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    """A policy from YAML/JSON text (JSON is YAML); ConfigError naming the field on a bad one."""
    from configs.questions import ConfigError

    return _validate(parse_yaml(text, source, ConfigError), source)


def load_policy(path: str | Path) -> Policy:
    from configs.questions import ConfigError

    return _validate(load_yaml(path, "policy file", ConfigError), str(path))
