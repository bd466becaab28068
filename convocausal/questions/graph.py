"""The causal graph a matching question rests on, built from the signal catalogue, identified by DoWhy.

Why a graph: "adjust for signals known at conversation start, never for what happens after the
treatment" is the backdoor criterion applied to the order in which signals are measured. Writing
that order down as a graph lets DoWhy (the field's reference implementation) say which signals
an unbiased comparison must adjust for, and lets the memo show the assumption instead of
implying it. The graph, from the catalogue's ``measured_at`` and turn order:

* every start signal (routing, customer, memory, agent build, opening intent, hour) → treatment
  and → outcome: any of them may push the agent's behaviour and the result;
* a turn-level signal the data show happening *before* the treatment's turn (see
  ``turn_order.py``) is a pre-treatment signal: start → it → treatment, it → outcome;
* every other turn-level signal and every end-of-conversation signal (length, duration) lies
  after the treatment: treatment → it → outcome (a mediator; adjusting for it blocks part of the
  effect, and conditioning on a common effect opens a collider path);
* treatment → outcome.

DoWhy's backdoor identification (``identify_effect_auto``) on that graph gives the adjustment
set; ``dowhy.graph.check_valid_backdoor_set`` says whether the question's covariates block every
backdoor path. The signals the covariates leave unadjusted are the candidates the
``omitted_confounder`` check measures in the data (``confounding.py``): the graph says which
paths are open, the data say whether they matter. Unlogged causes cannot be in the graph; the
sensitivity refutation covers them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import networkx as nx

from configs.questions import Question

# identifiers and calendar columns that describe *when*, not *who*: no causal role of their own
NOT_CONFOUNDERS = {"conversation_id", "customer_key", "started_at", "date", "week", "day_of_week"}
START_KINDS = ("covariate", "time")


@dataclass
class QuestionGraph:
    graph: nx.DiGraph
    treatment: str
    outcome: str
    backdoor_set: list[str]  # DoWhy's adjustment set (start and verified pre-treatment signals)
    covariates_valid: bool  # do the question's covariates block every backdoor path?
    unadjusted: list[str] = field(default_factory=list)  # backdoor-set signals not among the covariates
    mediators: list[str] = field(default_factory=list)  # descendants of the treatment on a path to the outcome

    def edges_text(self, limit: int = 60) -> list[str]:
        """The graph as ``a -> b`` lines (treatment and outcome edges first), for the memo."""
        key = {self.treatment: 0, self.outcome: 1}
        edges = sorted(self.graph.edges, key=lambda e: (key.get(e[0], 2), e[0], key.get(e[1], 2), e[1]))
        return [f"{a} -> {b}" for a, b in edges[:limit]]

    def to_dot(self) -> str:
        lines = [f'  "{a}" -> "{b}";' for a, b in sorted(self.graph.edges)]
        return "digraph question {\n" + "\n".join(lines) + "\n}"


def start_signals(catalog: list[dict]) -> list[str]:
    """Signals known at conversation start that may cause both treatment and outcome."""
    return [row["name"] for row in catalog
            if row.get("measured_at") == "start" and row.get("kind") in START_KINDS
            and row["name"] not in NOT_CONFOUNDERS]


def build_graph(question: Question, catalog: list[dict], pre_treatment_turn_signals: frozenset[str] = frozenset()
                ) -> nx.DiGraph:
    """The graph above for a matching question (``treatment`` and ``outcome`` set)."""
    t, y = question.treatment, question.outcome
    g = nx.DiGraph()
    g.add_edge(t, y)
    starts = [s for s in start_signals(catalog) if s not in (t, y)]
    for s in starts:
        g.add_edge(s, t)
        g.add_edge(s, y)
    for row in catalog:
        name = row["name"]
        if name in (t, y) or name in starts or name in NOT_CONFOUNDERS:
            continue
        if row.get("kind") == "outcome":
            continue  # other outcomes are not on the path from this treatment to this outcome
        if name in pre_treatment_turn_signals:
            for s in starts:
                g.add_edge(s, name)
            g.add_edge(name, t)
            g.add_edge(name, y)
        elif row.get("measured_at") in ("turn", "end"):
            g.add_edge(t, name)
            g.add_edge(name, y)
    return g


def identify(question: Question, catalog: list[dict],
             pre_treatment_turn_signals: frozenset[str] = frozenset()) -> QuestionGraph:
    """DoWhy's backdoor adjustment set for the question, and whether its covariates satisfy it."""
    from dowhy.graph import check_valid_backdoor_set

    g = build_graph(question, catalog, pre_treatment_turn_signals)
    t, y = question.treatment, question.outcome
    logging.getLogger("dowhy").setLevel(logging.ERROR)  # DoWhy logs every identification at INFO
    # The maximal valid set (every pre-treatment cause) is the one matching should approximate:
    # on this graph each start signal opens its own backdoor path, so the minimal set is the same set.
    backdoor = dowhy_backdoor_set(g, t, y)
    covs = [c for c in question.covariates if c in g]
    valid = bool(check_valid_backdoor_set(g, [t], [y], covs)["is_dseparated"])
    descendants = nx.descendants(g, t)
    mediators = sorted(n for n in descendants if n != y and nx.has_path(g, n, y))
    return QuestionGraph(g, t, y, backdoor, valid, sorted(set(backdoor) - set(covs)), mediators)


def dowhy_backdoor_set(g: nx.DiGraph, t: str, y: str) -> list[str]:
    """DoWhy's default backdoor adjustment set, by the backdoor step of ``identify_effect_auto`` alone.

    Why not ``identify_effect_auto`` itself: for a non-parametric ATE it also searches for
    instruments, frontdoor sets (every subset of the treatment's descendants: 32,766 d-separation
    tests for the demo's 15 later signals, 2 s per question) and general adjustment sets, none of
    which matching uses. The three calls below are the ones ``identify_ate_effect`` makes for its
    ``backdoor`` estimand, so the set is the same (tests/test_graph_identify.py compares them)."""
    from dowhy.causal_identifier import BackdoorAdjustment
    from dowhy.causal_identifier.auto_identifier import (
        build_adjustment_set_estimands_dict,
        get_default_adjustment_set_id,
        identify_backdoor,
    )

    observed = list(g.nodes)
    sets = identify_backdoor(g, [t], [y], observed, BackdoorAdjustment.BACKDOOR_DEFAULT)
    _, by_id = build_adjustment_set_estimands_dict([t], [y], observed, sets, {})
    default_id = get_default_adjustment_set_id(g, [t], [y], by_id)
    return sorted(by_id.get(str(default_id)) or []) if default_id is not None else []
