"""Canonical MIB names: parsing, building and ordering."""

from __future__ import annotations

import pytest

from circuitreg.schema import (
    CanonicalNameError,
    ComponentKind,
    Receiver,
    edge_name,
    head_name,
    hook_name,
    mlp_name,
    node_order_key,
    parse_edge,
    parse_node,
)


@pytest.mark.parametrize(
    ("name", "kind", "layer", "head"),
    [
        ("input", ComponentKind.EMBED, None, None),
        ("logits", ComponentKind.LOGITS, None, None),
        ("a0.h0", ComponentKind.ATTN_HEAD, 0, 0),
        ("a11.h10", ComponentKind.ATTN_HEAD, 11, 10),
        ("m7", ComponentKind.MLP, 7, None),
        ("f3.4096", ComponentKind.FEATURE, 3, None),
    ],
)
def test_parse_node(name: str, kind: ComponentKind, layer: int | None, head: int | None) -> None:
    parsed = parse_node(name)
    assert (parsed.name, parsed.kind, parsed.layer, parsed.head) == (name, kind, layer, head)


@pytest.mark.parametrize("name", ["", "a1", "a1.h", "h1.a1", "M3", "mlp3", "a-1.h0", " m1", "L1H2"])
def test_non_canonical_nodes_are_refused_by_name(name: str) -> None:
    with pytest.raises(CanonicalNameError, match="not a canonical component name"):
        parse_node(name)


@pytest.mark.parametrize(
    ("name", "source", "target", "receiver"),
    [
        ("input->a0.h1<q>", "input", "a0.h1", Receiver.Q),
        ("a0.h1->a1.h2<k>", "a0.h1", "a1.h2", Receiver.K),
        ("m0->a3.h3<v>", "m0", "a3.h3", Receiver.V),
        ("a0.h1->m0", "a0.h1", "m0", None),
        ("m11->logits", "m11", "logits", None),
    ],
)
def test_parse_edge(name: str, source: str, target: str, receiver: Receiver | None) -> None:
    parsed = parse_edge(name)
    assert (parsed.source, parsed.target, parsed.receiver) == (source, target, receiver)
    assert edge_name(source, target, receiver) == name


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("input->a0.h1", "names no <q>, <k> or <v>"),
        ("a0.h1->m0<q>", "its target is not a head"),
        ("logits->m0", "leaves logits or enters input"),
        ("m0->input", "leaves logits or enters input"),
        ("a0.h1-m0", "not a canonical edge name"),
        ("a0.h1->a1.h2<x>", "not a canonical edge name"),
        ("a0.h1->z9", "not a canonical component name"),
    ],
)
def test_bad_edges_are_refused_saying_why(name: str, message: str) -> None:
    with pytest.raises(CanonicalNameError, match=message):
        parse_edge(name)


def test_builders_and_hooks() -> None:
    assert head_name(3, 7) == "a3.h7" and mlp_name(4) == "m4"
    assert edge_name("a0.h0", "a1.h0", "k") == "a0.h0->a1.h0<k>"
    assert hook_name("a2.h1") == "blocks.2.attn.hook_z"
    assert hook_name("m2") == "blocks.2.hook_mlp_out"
    assert hook_name("input") == "hook_embed"
    assert hook_name("logits") == "unembed.hook_in"
    assert hook_name("f1.3") is None


def test_node_order_is_model_order() -> None:
    names = ["logits", "m1", "a1.h0", "m0", "a0.h1", "a0.h0", "input", "a1.h10", "a1.h2"]
    ordered = sorted(names, key=node_order_key)
    assert ordered == ["input", "a0.h0", "a0.h1", "m0", "a1.h0", "a1.h2", "a1.h10", "m1", "logits"]
