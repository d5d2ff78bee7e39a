"""MIB / EAP-IG import and export against the real MIB IOI circuit (158 nodes, 32,491 edges)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

from circuitreg.schema import CircuitDocument
from circuitreg.services.interchange import (
    ImportOptions,
    InterchangeError,
    detect_format,
    read_document,
    write_document,
)

GPT2_IOI = ImportOptions(model="gpt2", task="ioi", method="eap-ig")


@functools.cache
def _imported(path: Path) -> CircuitDocument:
    """The MIB file parsed once per session (32,491 edges take seconds on a busy CPU)."""
    return read_document(path.read_bytes(), "mib", GPT2_IOI)


def _same_json_exactly(a: object, b: object) -> None:
    """Equal as parsed JSON, with the same key order at every level and the same floats."""
    assert a == b
    if isinstance(a, dict) and isinstance(b, dict):
        assert list(a) == list(b)
        for key in a:
            _same_json_exactly(a[key], b[key])
    if isinstance(a, float):
        assert isinstance(b, float) and a.hex() == b.hex()


def test_mib_import_maps_every_node_and_edge(mib_ioi_path: Path) -> None:
    doc = _imported(mib_ioi_path)
    assert len(doc.components) == 158
    assert len(doc.edges) == 32_491
    assert len(doc.circuit_edges()) == 756
    assert (doc.model.n_layers, doc.model.n_heads, doc.model.d_model) == (12, 12, 768)
    assert not doc.model.attn_only and not doc.model.parallel_attn_mlp
    assert (doc.model.name, doc.task.name, doc.method.name) == ("gpt2", "ioi", "eap-ig")
    first = doc.edges[0]
    assert (first.name, first.score, first.in_circuit) == (
        "input->a0.h0<q>",
        -0.0002955848758574575,
        False,
    )


def test_mib_round_trip_is_exact(mib_ioi_path: Path) -> None:
    original = json.loads(mib_ioi_path.read_bytes())
    exported = json.loads(write_document(_imported(mib_ioi_path), "mib"))
    _same_json_exactly(original, exported)


def test_mib_id_depends_on_the_metadata_given(mib_ioi_path: Path) -> None:
    doc = _imported(mib_ioi_path)
    relabelled = doc.model_copy(update={"method": doc.method.model_copy(update={"name": "eap"})})
    assert relabelled.id != doc.id


def test_mib_is_detected(mib_ioi_path: Path) -> None:
    assert detect_format(mib_ioi_path) == "mib"


def _corrupt(path: Path, old: str, new: str) -> bytes:
    text = path.read_text()
    assert old in text
    return text.replace(old, new, 1).encode()


@pytest.mark.parametrize(
    ("old", "new", "where", "what"),
    [
        (
            '"a0.h1->a1.h2<k>": {"score"',
            '"a0.h1->a1.h2<x>": {"score"',
            '$.edges["a0.h1->a1.h2<x>"]',
            "not a canonical edge name",
        ),
        (
            '"a0.h1->a1.h2<k>": {"score": ',
            '"a0.h1->a1.h2<k>": {"score": "oops", "was": ',
            '$.edges["a0.h1->a1.h2<k>"].score',
            "expected a number, got the string 'oops'",
        ),
        (
            '"a0.h1->a1.h2<k>": {"score"',
            '"a0.h1->a1.h12<k>": {"score"',
            '$.edges["a0.h1->a1.h12<k>"]',
            "names node 'a1.h12', which is not in $.nodes",
        ),
        ('"n_heads": 12', '"n_heads": "12"', "$.cfg.n_heads", "expected an integer"),
        (
            '"m3": {"in_graph": true}',
            '"m3": {"in_graph": 1}',
            "$.nodes.m3.in_graph",
            "true or false",
        ),
    ],
)
def test_corrupted_mib_is_refused_saying_where(
    mib_ioi_path: Path, old: str, new: str, where: str, what: str
) -> None:
    with pytest.raises(InterchangeError) as caught:
        read_document(_corrupt(mib_ioi_path, old, new), "mib", GPT2_IOI)
    assert caught.value.location == where
    assert what in caught.value.message
    assert str(caught.value).startswith(f"mib: at {where}: ")


def test_truncated_mib_reports_line_and_column(mib_ioi_path: Path) -> None:
    data = mib_ioi_path.read_bytes()
    with pytest.raises(InterchangeError) as caught:
        read_document(data[: len(data) // 2], "mib", GPT2_IOI)
    assert caught.value.location is not None
    assert caught.value.location.startswith("line 1 column ")
    assert "invalid JSON" in caught.value.message
    with pytest.raises(InterchangeError, match="invalid JSON"):
        detect_format(data[:1000])


def test_mib_export_refuses_unscored_edges(mib_ioi_path: Path) -> None:
    doc = _imported(mib_ioi_path)
    edges = (doc.edges[0].model_copy(update={"score": None}), *doc.edges[1:])
    with pytest.raises(InterchangeError, match="has none"):
        write_document(doc.model_copy(update={"edges": edges}), "mib")
