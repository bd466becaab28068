"""The question registry: shape checks, catalog checks, and hostile configs rejected before anything runs."""

from __future__ import annotations

import pytest

from configs.questions import ConfigError, validate_against_catalog
from convocausal.questions.registry import load_registry as load_questions
from convocausal.questions.registry import parse_registry as parse_questions
from convocausal.questions.registry import question_columns, spec_for

CATALOG = [
    {"name": "resolved", "kind": "outcome", "measured_at": "end", "agent_controlled": False, "source": "outcomes"},
    {"name": "agent_marked_resolved", "kind": "outcome", "measured_at": "end", "agent_controlled": True,
     "source": "transcript"},
    {"name": "asked_email_first", "kind": "behaviour", "measured_at": "turn", "agent_controlled": False},
    {"name": "intent", "kind": "covariate", "measured_at": "start", "agent_controlled": False},
    {"name": "channel", "kind": "covariate", "measured_at": "start", "agent_controlled": False},
    {"name": "n_turns", "kind": "covariate", "measured_at": "end", "agent_controlled": False},
    {"name": "tool_lookup_order", "kind": "tool", "measured_at": "turn", "agent_controlled": False},
]


def _psm(**over) -> str:
    q = {"id": "q1", "design": "coexisting_variants", "outcome": "resolved", "treatment": "asked_email_first",
         "covariates": "[intent, channel]"}
    q.update(over)
    body = "\n".join(f"    {k}: {v}" for k, v in q.items())
    return "questions:\n  - " + body.lstrip()


def test_default_registry_loads_and_routes():
    qs = load_questions()
    methods = {q.id: spec_for(q).name for q in qs.questions}
    assert methods == {"email_early_vs_late": "propensity_matching", "prompt_v2_launch": "synthetic_control",
                       "lookup_order_rollout": "diff_in_diff"}


def test_unknown_column_lists_available():
    qs = parse_questions(_psm(covariates="[intent, mood]"))
    with pytest.raises(ConfigError, match="`mood` is not a signals column. Available: .*intent"):
        validate_against_catalog(qs.questions[0], CATALOG, question_columns(qs.questions[0]))


def test_post_treatment_covariate_rejected_with_reason():
    qs = parse_questions(_psm(covariates="[intent, n_turns]"))
    with pytest.raises(ConfigError, match="n_turns.*end of the conversation.*mediator or collider"):
        validate_against_catalog(qs.questions[0], CATALOG, question_columns(qs.questions[0]))
    qs = parse_questions(_psm(covariates="[intent, tool_lookup_order]"))
    with pytest.raises(ConfigError, match="during the conversation"):
        validate_against_catalog(qs.questions[0], CATALOG, question_columns(qs.questions[0]))


def test_outcome_must_be_an_outcome():
    qs = parse_questions(_psm(outcome="intent"))
    with pytest.raises(ConfigError, match="not an outcome"):
        validate_against_catalog(qs.questions[0], CATALOG, question_columns(qs.questions[0]))


@pytest.mark.parametrize("hostile", [
    "resolved ~ C(intent) + __import__('os').system('x')",   # patsy formula term
    "resolved; DROP TABLE signals",                          # SQL fragment
    'resolved" OR 1=1 --',
    "Resolved",                                              # not a plain identifier
])
def test_hostile_names_rejected_by_shape(hostile):
    with pytest.raises(ConfigError, match="outcome"):
        parse_questions(_psm(outcome=repr(hostile)))


def test_yaml_python_tags_rejected():
    text = "questions: !!python/object/apply:os.system ['echo pwned']\n"
    with pytest.raises(ConfigError, match="not plain YAML"):
        parse_questions(text)


def test_absurd_sizes_rejected(tmp_path):
    big = tmp_path / "q.yaml"
    big.write_text("# " + "x" * 1_100_000)
    with pytest.raises(ConfigError, match="too large"):
        load_questions(big)
    many = "[" + ", ".join(["intent"] * 101) + "]"
    with pytest.raises(ConfigError, match="covariates"):
        parse_questions(_psm(covariates=many))


def test_unknown_keys_and_missing_fields():
    with pytest.raises(ConfigError, match="formula"):
        parse_questions(_psm(formula="'y ~ x'"))
    with pytest.raises(ConfigError, match="treatment"):
        parse_questions("questions:\n  - id: q1\n    design: coexisting_variants\n    outcome: resolved\n"
                        "    covariates: [intent]\n")
    with pytest.raises(ConfigError, match="launch"):
        parse_questions("questions:\n  - id: q2\n    design: partial_rollout\n    outcome: resolved\n"
                        "    treated: {skill: [a]}\n")


def test_duplicate_ids_rejected():
    one = _psm()
    two = one + "\n  - " + one.split("  - ", 1)[1]
    with pytest.raises(ConfigError, match="appears twice"):
        parse_questions(two)


def test_fingerprint_changes_only_when_content_changes():
    a = parse_questions(_psm()).questions[0]
    b = parse_questions(_psm()).questions[0]
    c = parse_questions(_psm(covariates="[intent]")).questions[0]
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


@pytest.mark.parametrize("field, value, words", [
    ("fixed_effects", "[intent, n_turns]", "fixed effect `n_turns` is measured at the end"),
    ("fixed_effects", "[tool_lookup_order]", "fixed effect `tool_lookup_order` is measured during"),
    ("cluster", "n_turns", "cluster `n_turns`"),
])
def test_post_treatment_names_refused_in_every_role(field, value, words):
    """A rollout that adjusts for the very tool it rolled out (or a count of turns) is refused (issue 13)."""
    base = {"id": "q1", "design": "partial_rollout", "outcome": "resolved", "treated": "{channel: [chat]}",
            "launch": "2026-03-30", "fixed_effects": "[intent]", field: value}
    text = "questions:\n  - " + "\n".join(f"    {k}: {v}" for k, v in base.items()).lstrip()
    q = parse_questions(text).questions[0]
    with pytest.raises(ConfigError, match=words):
        validate_against_catalog(q, CATALOG, question_columns(q))
    clean = parse_questions(text.replace(f"{field}: {value}", f"{field}: {'[intent]' if field != 'cluster' else 'channel'}"))
    assert validate_against_catalog(clean.questions[0], CATALOG, question_columns(clean.questions[0])) == []
