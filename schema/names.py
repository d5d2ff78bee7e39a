"""Canonical component and edge names, identical to those of MIB and EAP-IG.

Nodes are ``input``, ``a{layer}.h{head}``, ``m{layer}`` and ``logits``; an edge is
``{source}->{target}``, suffixed ``<q>``, ``<k>`` or ``<v>`` when the target is an attention
head's query, key or value input. Positions never appear in names: they are a field.
Using the benchmark's own names means a circuit exchanged with MIB needs no mapping table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache


class ComponentKind(StrEnum):
    """What a node of the computational graph is."""

    EMBED = "embed"
    ATTN_HEAD = "attn_head"
    MLP = "mlp"
    LOGITS = "logits"
    FEATURE = "feature"


class Receiver(StrEnum):
    """Which input of an attention head an edge feeds."""

    Q = "q"
    K = "k"
    V = "v"


INPUT = "input"
LOGITS = "logits"

_HEAD = re.compile(r"^a(?P<layer>\d+)\.h(?P<head>\d+)$")
_MLP = re.compile(r"^m(?P<layer>\d+)$")
_FEATURE = re.compile(r"^f(?P<layer>\d+)\.(?P<index>\d+)$")
_EDGE = re.compile(r"^(?P<source>[^<>\-]+)->(?P<target>[^<>\-]+)(?:<(?P<recv>[qkv])>)?$")


class CanonicalNameError(ValueError):
    """A component or edge name that is not canonical."""


@dataclass(frozen=True, slots=True)
class ParsedNode:
    """The parts of a canonical node name."""

    name: str
    kind: ComponentKind
    layer: int | None
    head: int | None


@dataclass(frozen=True, slots=True)
class ParsedEdge:
    """The parts of a canonical edge name."""

    source: str
    target: str
    receiver: Receiver | None


def head_name(layer: int, head: int) -> str:
    """``a{layer}.h{head}``."""
    return f"a{layer}.h{head}"


def mlp_name(layer: int) -> str:
    """``m{layer}``."""
    return f"m{layer}"


def edge_name(source: str, target: str, receiver: Receiver | str | None = None) -> str:
    """``source->target`` with ``<q|k|v>`` when the target is a head input."""
    if receiver is None:
        return f"{source}->{target}"
    return f"{source}->{target}<{Receiver(receiver).value}>"


_MAX_DIGITS = 9  # layer, head and feature numbers; int() refuses 4,300 digits and more


def _number(digits: str, name: str) -> int:
    if len(digits) > _MAX_DIGITS:
        shown = name if len(name) <= 40 else name[:37] + "..."
        raise CanonicalNameError(
            f"not a canonical component name: {shown!r} (a number of {len(digits)} digits; "
            f"at most {_MAX_DIGITS})"
        )
    return int(digits)


@lru_cache(maxsize=65536)
def parse_node(name: str) -> ParsedNode:
    """Parse a canonical node name; raise ``CanonicalNameError`` naming the bad name."""
    if name == INPUT:
        return ParsedNode(name, ComponentKind.EMBED, None, None)
    if name == LOGITS:
        return ParsedNode(name, ComponentKind.LOGITS, None, None)
    if m := _HEAD.match(name):
        layer, head = _number(m["layer"], name), _number(m["head"], name)
        return ParsedNode(name, ComponentKind.ATTN_HEAD, layer, head)
    if m := _MLP.match(name):
        return ParsedNode(name, ComponentKind.MLP, _number(m["layer"], name), None)
    if m := _FEATURE.match(name):
        _number(m["index"], name)
        return ParsedNode(name, ComponentKind.FEATURE, _number(m["layer"], name), None)
    raise CanonicalNameError(
        f"not a canonical component name: {name!r} "
        "(expected input, logits, a<layer>.h<head> or m<layer>)"
    )


@lru_cache(maxsize=262144)
def parse_edge(name: str) -> ParsedEdge:
    """Parse ``src->dst[<q|k|v>]``; the receiver is required exactly when dst is a head."""
    m = _EDGE.match(name)
    if not m:
        raise CanonicalNameError(
            f"not a canonical edge name: {name!r} (expected 'src->dst[<q|k|v>]')"
        )
    source, target = parse_node(m["source"]), parse_node(m["target"])
    receiver = Receiver(m["recv"]) if m["recv"] else None
    if target.kind is ComponentKind.ATTN_HEAD and receiver is None:
        raise CanonicalNameError(f"edge {name!r} targets a head but names no <q>, <k> or <v> input")
    if target.kind is not ComponentKind.ATTN_HEAD and receiver is not None:
        raise CanonicalNameError(
            f"edge {name!r} has a <{receiver}> input but its target is not a head"
        )
    if source.name == LOGITS or target.name == INPUT:
        raise CanonicalNameError(f"edge {name!r} leaves logits or enters input")
    return ParsedEdge(source.name, target.name, receiver)


def hook_name(node: str) -> str | None:
    """The TransformerLens hook where a node's output (or, for logits, input) is read."""
    parsed = parse_node(node)
    if parsed.kind is ComponentKind.EMBED:
        return "hook_embed"
    if parsed.kind is ComponentKind.LOGITS:
        return "unembed.hook_in"
    if parsed.kind is ComponentKind.ATTN_HEAD:
        return f"blocks.{parsed.layer}.attn.hook_z"
    if parsed.kind is ComponentKind.MLP:
        return f"blocks.{parsed.layer}.hook_mlp_out"
    return None


def node_order_key(name: str) -> tuple[int, int, int]:
    """Topological sort key: input, then per layer the heads then the MLP, then logits."""
    parsed = parse_node(name)
    if parsed.kind is ComponentKind.EMBED:
        return (-1, 0, 0)
    if parsed.kind is ComponentKind.LOGITS:
        return (10**9, 0, 0)
    layer = parsed.layer if parsed.layer is not None else 0
    if parsed.kind is ComponentKind.ATTN_HEAD:
        return (layer, 0, parsed.head or 0)
    return (layer, 1, 0)
