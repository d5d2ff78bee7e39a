"""Backend-independent pieces of the store contract.

Every backend fetches rows its own way (SQL, Cypher) and hands them to these functions to
shape the answer, so that equal data gives equal answers on every backend: the ordering of
paths and bindings, how an edge's importance in a circuit is defined, what "latest
faithfulness" means, and the typed errors bad input gets.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import networkx as nx
from networkx.algorithms.isomorphism import DiGraphMatcher

from circuitreg.schema import (
    INPUT,
    LOGITS,
    CircuitDocument,
    Component,
    ModelRef,
    ValidationResult,
    node_order_key,
    parse_edge,
    parse_node,
)

from .types import (
    CircuitDiff,
    CircuitSummary,
    EvolutionStep,
    Motif,
    NodePattern,
    SharedEdge,
)

FAITHFULNESS_VALIDATION = "faithfulness"
FAITHFULNESS_KEYS = ("faithfulness", "value", "score")


class StoreError(ValueError):
    """Bad input to a store; the message names what is wrong."""


MODEL_SHAPE_FIELDS = ("n_layers", "n_heads", "d_model", "attn_only", "parallel_attn_mlp")
"""What a model name stands for: one shape per name, so graph queries across circuits of a
model (shared subcircuits, component usage) compare like with like."""


class ModelShapeError(StoreError):
    """A circuit names a stored model but has another shape; nothing of it is written."""


def check_model_shape(ref: ModelRef, stored: Mapping[str, Any] | None) -> None:
    """Refuse ``ref`` when the store holds its model name with a different shape.

    A field unknown on either side (``d_model`` of an imported circuit, say) is not compared.
    """
    if stored is None:
        return
    clashes = [
        f"{name} {stored[name]!r} stored, {getattr(ref, name)!r} here"
        for name in MODEL_SHAPE_FIELDS
        if stored.get(name) is not None
        and getattr(ref, name) is not None
        and stored[name] != getattr(ref, name)
    ]
    if clashes:
        raise ModelShapeError(
            f"model {ref.name!r} is stored with another shape ({'; '.join(clashes)}); "
            "a model name stands for one shape: give this model its own name"
        )


class UnknownCircuitError(StoreError, KeyError):
    """A circuit id (or alias) that the store does not hold."""

    def __init__(self, ref: str) -> None:
        super().__init__(f"no circuit {ref!r} in the store")
        self.ref = ref

    def __str__(self) -> str:
        return str(self.args[0])


class UnknownModelError(StoreError, KeyError):
    """A model name that no stored circuit uses."""

    def __init__(self, model: str) -> None:
        super().__init__(f"no model {model!r} in the store (store one of its circuits first)")
        self.model = model

    def __str__(self) -> str:
        return str(self.args[0])


def check_page_size(first: int) -> None:
    """Reject a page size below one."""
    if first < 1:
        raise StoreError(f"page size must be at least 1, got {first}")


def check_component_name(name: str) -> None:
    """Raise ``StoreError`` unless ``name`` is canonical."""
    try:
        parse_node(name)
    except ValueError as exc:
        raise StoreError(str(exc)) from None


def check_edge_name(name: str) -> None:
    """Raise ``StoreError`` unless ``name`` is a canonical edge name."""
    try:
        parse_edge(name)
    except ValueError as exc:
        raise StoreError(str(exc)) from None


def check_nonempty(what: str, value: str) -> None:
    """Reject empty tags, aliases and labels."""
    if not value or not value.strip():
        raise StoreError(f"{what} must not be empty")


def utc(value: datetime) -> datetime:
    """Stores differ in how they keep time zones; answers are always aware UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


# The summary's fields both stores keep as plain columns/properties under the same names;
# tags, aliases and the creation time each store reads its own way.
ROW_FIELDS = tuple(
    name for name in CircuitSummary.model_fields if name not in ("tags", "aliases", "created_at")
)


def circuit_summary(
    row: Mapping[Any, Any],
    tags: Iterable[str],
    aliases: Iterable[str],
    created_at: datetime | None,
) -> CircuitSummary:
    """A summary from a store's row: both stores name their columns as the summary does."""
    return CircuitSummary(
        **{name: row[name] for name in ROW_FIELDS},
        tags=tuple(sorted(tags)),
        aliases=tuple(sorted(aliases)),
        created_at=None if created_at is None else utc(created_at),
    )


def validation_key(result: ValidationResult) -> str:
    """Identity of a validation result, so adding the same one twice is a no-op."""
    blob = json.dumps(result.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def faithfulness_of(result: ValidationResult) -> float | None:
    """The faithfulness number a result carries, if it is a faithfulness result."""
    if result.name != FAITHFULNESS_VALIDATION:
        return None
    for key in FAITHFULNESS_KEYS:
        value = result.values.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


def latest_faithfulness(results: Iterable[ValidationResult]) -> float | None:
    """Faithfulness of the newest faithfulness result (ties: the later one in order)."""
    best: tuple[datetime, float] | None = None
    for result in results:
        value = faithfulness_of(result)
        if value is None:
            continue
        stamp = utc(result.created_at)
        if best is None or stamp >= best[0]:
            best = (stamp, value)
    return None if best is None else best[1]


def stored_components(doc: CircuitDocument) -> list[Component]:
    """Components a store keeps: those in the circuit and the ends of in-circuit edges."""
    ends = {name for e in doc.circuit_edges() for name in (e.source, e.target)}
    return [c for c in doc.components if c.in_circuit or c.name in ends]


class EndpointIndex:
    """Which stored component an edge end attaches to: same position, else position-less.

    Edges and components carry positions independently; an edge at position p links the
    components at p when the circuit has them, otherwise the position-free ones, otherwise
    the one at the lowest position; an end with no stored component of its graph (a
    positional circuit may hold some components at positions only) attaches to the
    model's position-free row of its name, which the stores always write for those.
    Indexed once per circuit (edges x components would be quadratic for circuits of
    thousands of edges).
    """

    def __init__(self, components: Sequence[Component]) -> None:
        self._by_key = {(c.name, c.position): c for c in components}
        self._fallback: dict[str, Component] = {}
        for comp in components:
            best = self._fallback.get(comp.name)
            if best is None or _position_rank(comp) < _position_rank(best):
                self._fallback[comp.name] = comp

    def __call__(self, name: str, position: int | None) -> tuple[str, int | None]:
        """(name, position) of the component for edge end ``name`` of an edge at ``position``."""
        comp = (
            self._by_key.get((name, position))
            or self._by_key.get((name, None))
            or self._fallback.get(name)
        )
        return (name, None) if comp is None else (comp.name, comp.position)


def _position_rank(comp: Component) -> int:
    return -1 if comp.position is None else comp.position


def order_validation(results: Iterable[ValidationResult]) -> tuple[ValidationResult, ...]:
    """Validation results in a fixed order (time, then name, then content)."""
    return tuple(sorted(results, key=lambda r: (utc(r.created_at), r.name, validation_key(r))))


def shape_shared_edges(
    rows: Iterable[tuple[str, str, float | None]],
    edge_ends: Mapping[str, tuple[str, str, str | None]],
    min_support: int,
) -> tuple[tuple[SharedEdge, ...], tuple[str, ...]]:
    """Shared edges sorted by support then name, and the components they touch.

    ``rows`` are (edge name, circuit id, importance) for edges that passed the threshold.
    """
    by_edge: dict[str, dict[str, float | None]] = {}
    for name, circuit, score in rows:
        by_edge.setdefault(name, {})[circuit] = score
    return shape_shared(by_edge, edge_ends, min_support)


def shape_shared(
    by_edge: Mapping[str, Mapping[str, float | None]],
    edge_ends: Mapping[str, tuple[str, str, str | None]],
    min_support: int,
) -> tuple[tuple[SharedEdge, ...], tuple[str, ...]]:
    """Like ``shape_shared_edges``, from edge name -> {circuit id: importance}."""
    edges = []
    for name, scores in by_edge.items():
        if len(scores) < min_support:
            continue
        source, target, receiver = edge_ends[name]
        edges.append(
            SharedEdge(
                edge=name,
                source=source,
                target=target,
                receiver=receiver,  # type: ignore[arg-type]
                support=len(scores),
                scores=dict(scores),
            )
        )
    edges.sort(key=lambda e: (-e.support, e.edge))
    comps = {n for e in edges for n in (e.source, e.target)}
    return tuple(edges), tuple(sorted(comps, key=lambda n: (node_order_key(n), n)))


def check_shared_args(circuit_ids: Sequence[str], min_support: int) -> None:
    """Reject an empty selection or a support outside 1..len(ids)."""
    if not circuit_ids:
        raise StoreError("shared_subcircuit needs at least one circuit id")
    if not 1 <= min_support <= len(set(circuit_ids)):
        raise StoreError(
            f"min_support must be between 1 and {len(set(circuit_ids))}, got {min_support}"
        )


def make_diff(a: str, b: str, edges_a: set[str], edges_b: set[str]) -> CircuitDiff:
    """The diff answer from two edge-name sets."""
    return CircuitDiff(
        a=a,
        b=b,
        only_a=tuple(sorted(edges_a - edges_b)),
        only_b=tuple(sorted(edges_b - edges_a)),
        both=tuple(sorted(edges_a & edges_b)),
    )


def evolution_steps(
    circuits: Iterable[tuple[str, str | None, int | None]],
    edges: Mapping[str, set[str]],
) -> tuple[EvolutionStep, ...]:
    """Steps in training order (step, then checkpoint label, then id; unknown steps last)."""
    ordered = sorted(
        circuits,
        key=lambda c: (c[2] is None, c[2] or 0, c[1] or "", c[0]),
    )
    steps = []
    previous: set[str] = set()
    for circuit_id, checkpoint, step in ordered:
        current = edges.get(circuit_id, set())
        steps.append(
            EvolutionStep(
                circuit_id=circuit_id,
                checkpoint=checkpoint,
                step=step,
                edges=tuple(sorted(current)),
                appeared=tuple(sorted(current - previous)),
                disappeared=tuple(sorted(previous - current)),
            )
        )
        previous = current
    return tuple(steps)


def io_paths(edge_pairs: Iterable[tuple[str, str]], max_paths: int) -> list[tuple[str, ...]]:
    """Paths input -> logits by component name, in sorted order, at most ``max_paths``.

    A depth-first walk taking successors in sorted order yields the paths already sorted
    (no path is a prefix of another, since all end at logits), so it can stop after
    ``max_paths`` instead of enumerating the exponentially many paths of a dense circuit.
    """
    if max_paths < 1:
        raise StoreError(f"max_paths must be at least 1, got {max_paths}")
    graph: nx.DiGraph[str] = nx.DiGraph()
    graph.add_edges_from(edge_pairs)
    if INPUT not in graph or LOGITS not in graph:
        return []
    useful = nx.ancestors(graph, LOGITS) | {LOGITS}
    if INPUT not in useful:
        return []
    successors = {n: sorted(s for s in graph.successors(n) if s in useful) for n in useful}
    found: list[tuple[str, ...]] = []

    def walk(path: list[str]) -> Iterator[tuple[str, ...]]:
        node = path[-1]
        if node == LOGITS:
            yield tuple(path)
            return
        for nxt in successors[node]:
            path.append(nxt)
            yield from walk(path)
            path.pop()

    for path in walk([INPUT]):
        found.append(path)
        if len(found) >= max_paths:
            break
    return found


def check_motif(motif: Motif) -> None:
    """A motif needs nodes, and its edges must name declared variables."""
    if not motif.nodes:
        raise StoreError("a motif needs at least one node")
    for edge in motif.edges:
        for var in (edge.source, edge.target):
            if var not in motif.nodes:
                raise StoreError(f"motif edge names undeclared variable {var!r}")


def node_matches(
    pattern: NodePattern, name: str, kind: str, layer: int | None, labels: Iterable[str]
) -> bool:
    """Whether one component satisfies a motif node pattern."""
    if pattern.name is not None and pattern.name != name:
        return False
    if pattern.kind is not None and pattern.kind.value != kind:
        return False
    if pattern.layer is not None and pattern.layer != layer:
        return False
    return pattern.label is None or pattern.label in set(labels)


def motif_bindings(
    motif: Motif,
    edges: Iterable[tuple[str, str, str | None]],
    nodes: Mapping[str, tuple[str, int | None]],
    labels: Mapping[str, Sequence[str]],
) -> tuple[dict[str, str], ...]:
    """All injective name bindings of the motif in one circuit's name-level graph, sorted.

    ``edges`` are (source, target, receiver); ``nodes`` maps name -> (kind, layer). Uses
    networkx's VF2 subgraph monomorphism rather than a hand-written search.
    """
    circuit: nx.DiGraph[str] = nx.DiGraph()
    for name in nodes:
        circuit.add_node(name)
    for source, target, receiver in edges:
        if circuit.has_edge(source, target):
            circuit.edges[source, target]["receivers"].add(receiver)
        else:
            circuit.add_edge(source, target, receivers={receiver})
    pattern: nx.DiGraph[str] = nx.DiGraph()
    for var in motif.nodes:
        pattern.add_node(var)
    for edge in motif.edges:
        wanted = (
            pattern.edges[edge.source, edge.target]["wanted"]
            if pattern.has_edge(edge.source, edge.target)
            else set()
        )
        wanted.add(None if edge.receiver is None else edge.receiver.value)
        pattern.add_edge(edge.source, edge.target, wanted=wanted)

    def node_match(circuit_attrs: dict[str, Any], pattern_attrs: dict[str, Any]) -> bool:
        name = circuit_attrs["name"]
        kind, layer = nodes[name]
        return node_matches(pattern_attrs["pattern"], name, kind, layer, labels.get(name, ()))

    def edge_match(circuit_attrs: dict[str, Any], pattern_attrs: dict[str, Any]) -> bool:
        have: set[str | None] = circuit_attrs["receivers"]
        return all(w is None or w in have for w in pattern_attrs["wanted"])

    for name in circuit.nodes:
        circuit.nodes[name]["name"] = name
    for var, node_pattern in motif.nodes.items():
        pattern.nodes[var]["pattern"] = node_pattern
    matcher = DiGraphMatcher(circuit, pattern, node_match=node_match, edge_match=edge_match)
    found = {
        tuple(sorted((var, name) for name, var in mapping.items()))
        for mapping in matcher.subgraph_monomorphisms_iter()
    }
    return sort_bindings(dict(b) for b in found)


def sort_bindings(bindings: Iterable[dict[str, str]]) -> tuple[dict[str, str], ...]:
    """Bindings in a fixed order: by the bound names, variables taken alphabetically."""
    unique = {tuple(sorted(b.items())): b for b in bindings}
    return tuple(dict(sorted(unique[k].items())) for k in sorted(unique))
