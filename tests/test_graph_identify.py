"""The backdoor set from DoWhy's backdoor step alone equals the one ``identify_effect_auto`` gives.

``convocausal.questions.graph.dowhy_backdoor_set`` skips DoWhy's instrument, frontdoor and
general-adjustment searches (2 s per matching question on the demo catalogue); the reference is
DoWhy's own full identification on the same graphs: the shipped signal catalogue's question graphs
and random DAGs with confounders, mediators and instruments.
"""

from __future__ import annotations

import logging

import networkx as nx
import numpy as np
import pytest
from dowhy.causal_identifier import BackdoorAdjustment, EstimandType, identify_effect_auto

from configs.signals import load_signals_config
from convocausal.questions.graph import build_graph, dowhy_backdoor_set
from convocausal.questions.registry import load_registry
from extract.catalog import build_catalog


def _reference(g: nx.DiGraph, t: str, y: str) -> list[str]:
    logging.getLogger("dowhy").setLevel(logging.ERROR)
    est = identify_effect_auto(g, [t], [y], list(g.nodes), EstimandType.NONPARAMETRIC_ATE,
                               backdoor_adjustment=BackdoorAdjustment.BACKDOOR_DEFAULT)
    return sorted(est.get_backdoor_variables() or [])


def test_shipped_questions_get_dowhys_backdoor_set():
    catalog = build_catalog(load_signals_config(None)).to_dicts()
    questions = [q for q in load_registry(None).questions if q.treatment and q.outcome]
    assert questions
    for q in questions:
        g = build_graph(q, catalog)
        assert dowhy_backdoor_set(g, q.treatment, q.outcome) == _reference(g, q.treatment, q.outcome), q.id


@pytest.mark.parametrize("seed", range(12))
def test_random_graphs_get_dowhys_backdoor_set(seed):
    rng = np.random.default_rng(seed)
    g = nx.DiGraph([("t", "y")])
    for i in range(int(rng.integers(2, 6))):  # confounders, some of them chained
        g.add_edges_from([(f"c{i}", "t"), (f"c{i}", "y")])
        if i and rng.random() < 0.5:
            g.add_edge(f"c{i - 1}", f"c{i}")
    for i in range(int(rng.integers(0, 4))):  # mediators
        g.add_edges_from([("t", f"m{i}"), (f"m{i}", "y")])
    if rng.random() < 0.5:  # an instrument
        g.add_edge("z", "t")
    assert nx.is_directed_acyclic_graph(g)
    assert dowhy_backdoor_set(g, "t", "y") == _reference(g, "t", "y")
