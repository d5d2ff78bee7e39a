"""Consistency on real models: the same mechanism across seeds, and different mechanisms.

Two toys trained from different seeds both learn induction, with the work spread over
different head indices (seed 0's best previous-token head is a0.h3, seed 1's a0.h1), so
canonical names under-state their agreement: EAP-IG picks different head-to-head edges.
Labelling heads with the roles head_detector assigns and comparing by ``roles`` alignment
(heads of one role merge into one node) recovers it. A tracr program shares no mechanism with
the toy; with no shared shape or labels ``auto`` compares by relative depth, the coarsest
alignment, and the two must still compare as unrelated.
"""

from __future__ import annotations

import pytest

from circuitreg.schema import CircuitDocument
from circuitreg.services.analysis.consistency import compare_circuits
from circuitreg.workers.methods.selection import Selection
from circuitreg.workers.toy import ToyRun
from circuitreg.workers.validation import ValidationConfig, faithfulness
from circuitreg.workers.validation.circuit import circuit_mask

from .groundtruth_support import (
    INDUCTION,
    PREVIOUS_TOKEN,
    Setup,
    document,
    eap_ig_scores,
    heads_with,
    toy_roles,
    toy_run,
    toy_setup,
    tracr_setup,
    tracr_truth,
)

# Both seeds' EAP-IG circuits reach faithfulness >= 0.9 at this size (about half the graph).
CIRCUIT_EDGES = 40


def _validated(setup: Setup, doc: CircuitDocument) -> CircuitDocument:
    """The document with its faithfulness attached (compare_circuits reads it)."""
    result = faithfulness(setup.evaluator(), circuit_mask(doc, setup.graph), ValidationConfig())
    return doc.with_validation(result)


def _toy_document(seed: int, root: pytest.TempPathFactory) -> CircuitDocument:
    run: ToyRun = toy_run(seed, root.getbasetemp() / "groundtruth-toys")
    setup = toy_setup(run)
    labels = toy_roles(run, setup.bridge)
    assert heads_with(labels, PREVIOUS_TOKEN) and heads_with(labels, INDUCTION)
    selection = Selection("greedy", CIRCUIT_EDGES)
    return _validated(setup, document(setup, eap_ig_scores(setup), selection, labels))


@pytest.fixture(scope="module")
def toy_docs(tmp_path_factory: pytest.TempPathFactory) -> tuple[CircuitDocument, CircuitDocument]:
    return _toy_document(0, tmp_path_factory), _toy_document(1, tmp_path_factory)


def test_two_seeds_of_the_toy_agree_by_roles(
    toy_docs: tuple[CircuitDocument, CircuitDocument],
) -> None:
    seed0, seed1 = toy_docs
    by_roles = compare_circuits(seed0, seed1, alignment="roles")
    by_names = compare_circuits(seed0, seed1, alignment="canonical")
    print(f"seed 0 vs seed 1, roles: {by_roles}")
    print(f"seed 0 vs seed 1, canonical: {by_names}")
    assert by_roles.alignment == "roles"
    assert by_roles.edge_jaccard >= 0.8
    assert by_roles.node_jaccard == 1.0
    assert by_roles.weighted_overlap >= 0.8
    assert by_roles.performance_agrees is True
    assert by_roles.performance_a is not None and by_roles.performance_a >= 0.9
    assert by_roles.performance_b is not None and by_roles.performance_b >= 0.9
    assert by_roles.edge_jaccard > by_names.edge_jaccard, "roles see past the head indices"


def test_the_toy_and_a_tracr_program_compare_as_unrelated(
    toy_docs: tuple[CircuitDocument, CircuitDocument],
) -> None:
    setup = tracr_setup("frac_prevs")
    truth = setup.mask(tracr_truth(setup))
    tracr_doc = _validated(setup, document(setup, eap_ig_scores(setup), truth))
    toy_doc = toy_docs[0]
    report = compare_circuits(toy_doc, tracr_doc)
    print(f"toy vs tracr frac_prevs: {report}")
    assert report.alignment == "relative_depth"
    assert report.edge_jaccard <= 0.25
    other_seed = compare_circuits(toy_doc, toy_docs[1], alignment="relative_depth")
    print(f"seed 0 vs seed 1, relative_depth: {other_seed}")
    assert other_seed.edge_jaccard > report.edge_jaccard + 0.5
