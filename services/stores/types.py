"""Types of the ``GraphStore`` contract: what every backend takes and returns.

Backends (embedded SQL, Neo4j, FalkorDB) must return equal values for equal inputs; the
shared contract test suite compares them answer for answer. Lists are returned in a defined
order (documented per method) so that answers compare exactly.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from circuitreg.schema import CircuitDocument, ComponentKind, Edge, Receiver, ValidationResult


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CircuitSummary(_Frozen):
    """A stored circuit without its edges: what lists and searches return."""

    id: str
    model: str
    checkpoint: str | None
    step: int | None
    task: str
    method: str
    ablation: str
    metric: str
    seed: int | None
    n_components: int
    n_edges: int
    faithfulness: float | None = Field(default=None, description="Latest faithfulness, if any.")
    tags: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    job_id: str | None = None
    dense_scores_uri: str | None = None
    created_at: datetime | None = None


class CircuitFilter(_Frozen):
    """Conjunctive filter on circuits; None means any."""

    model: str | None = None
    checkpoint: str | None = None
    task: str | None = None
    method: str | None = None
    tag: str | None = None
    alias: str | None = None
    min_faithfulness: float | None = None
    max_faithfulness: float | None = None
    min_edges: int | None = None
    max_edges: int | None = None


class Page(_Frozen):
    """A page of circuit summaries ordered by id; ``end_cursor`` is the last id."""

    items: tuple[CircuitSummary, ...]
    has_next: bool
    end_cursor: str | None


class SharedEdge(_Frozen):
    """An edge present in at least ``min_support`` circuits, with its score in each."""

    edge: str
    source: str
    target: str
    receiver: Receiver | None
    support: int
    scores: dict[str, float | None] = Field(description="circuit id -> importance")


class SharedSubcircuit(_Frozen):
    """Edges (sorted by support desc, then name) and components common to the circuits."""

    circuit_ids: tuple[str, ...]
    min_support: int
    edges: tuple[SharedEdge, ...]
    components: tuple[str, ...]


class CircuitDiff(_Frozen):
    """Edge names only in a, only in b, and in both (each sorted)."""

    a: str
    b: str
    only_a: tuple[str, ...]
    only_b: tuple[str, ...]
    both: tuple[str, ...]


class EvolutionStep(_Frozen):
    """The circuit at one checkpoint, with the edges that appeared or vanished there."""

    circuit_id: str
    checkpoint: str | None
    step: int | None
    edges: tuple[str, ...]
    appeared: tuple[str, ...]
    disappeared: tuple[str, ...]


class Evolution(_Frozen):
    """A model's circuits for one task and method, in training order (by step)."""

    model: str
    task: str
    method: str
    steps: tuple[EvolutionStep, ...]


class NodePattern(_Frozen):
    """Constraints on one motif node; every given field must match."""

    name: str | None = None
    kind: ComponentKind | None = None
    layer: int | None = None
    label: str | None = Field(default=None, description="A role label, e.g. 'induction head'.")


class MotifEdge(_Frozen):
    """A motif edge between two pattern variables, optionally into a given head input."""

    source: str
    target: str
    receiver: Receiver | None = None


class Motif(_Frozen):
    """A small pattern, e.g. previous-token head -> induction head <k>."""

    nodes: dict[str, NodePattern]
    edges: tuple[MotifEdge, ...]
    model: str | None = None


class MotifMatch(_Frozen):
    """One circuit and the bindings (variable -> component name) that match the motif."""

    circuit_id: str
    bindings: tuple[dict[str, str], ...]


class SimilarCircuit(_Frozen):
    """A circuit and the cosine of its mechanism embedding with the query circuit's."""

    circuit: CircuitSummary
    similarity: float = Field(description="Exact cosine of the sparse embeddings, in (0, 1].")


class ComponentUse(_Frozen):
    """A circuit that contains a component, with the component's incident edge count."""

    circuit: CircuitSummary
    degree: int


@runtime_checkable
class GraphStore(Protocol):
    """The circuit store used by workers and the API. Every write is idempotent."""

    def migrate(self) -> None:
        """Create constraints, indexes or tables (idempotent)."""

    def ping(self) -> None:
        """Raise if the store is unreachable."""

    def close(self) -> None:
        """Release connections."""

    def put_circuit(
        self,
        doc: CircuitDocument,
        *,
        job_id: str | None = None,
        dense_scores_uri: str | None = None,
    ) -> str:
        """Store a circuit (only in-circuit edges go to the graph); return its content id.

        Writing the same document twice writes nothing new; validation results in ``doc``
        are added if not present. A failed write leaves no partial circuit.
        """

    def get_circuit(self, circuit_id: str) -> CircuitDocument | None:
        """The stored document (in-circuit components and edges, labels, validation)."""

    def get_summary(self, circuit_id: str) -> CircuitSummary | None:
        """One circuit's summary."""

    def get_summaries(self, circuit_ids: list[str]) -> dict[str, CircuitSummary]:
        """Many summaries in one call (for DataLoaders)."""

    def list_circuits(self, filt: CircuitFilter, first: int, after: str | None = None) -> Page:
        """Circuits matching ``filt`` ordered by id, after the cursor ``after``."""

    def add_validation(self, circuit_id: str, result: ValidationResult) -> None:
        """Attach a validation result (kept alongside earlier ones)."""

    def tag(self, circuit_id: str, tag: str) -> None:
        """Add a free tag (idempotent)."""

    def set_alias(self, alias: str, circuit_id: str) -> None:
        """Point a unique alias (e.g. ``canonical``) at a circuit, moving it if needed."""

    def resolve(self, ref: str) -> str | None:
        """A circuit id from an id or an alias."""

    def label_component(self, model: str, component: str, label: str) -> None:
        """Attach a role label to a model's component (idempotent)."""

    def component_labels(self, model: str) -> dict[str, tuple[str, ...]]:
        """Role labels of a model's components, each tuple sorted."""

    def component_usage(
        self,
        model: str,
        component: str,
        *,
        position: int | None = None,
        span: str | None = None,
    ) -> list[ComponentUse]:
        """Every circuit of ``model`` containing ``component``, ordered by circuit id.

        With ``position`` and/or ``span`` ("this head at S2"): the circuits where it is at
        that position, as a positional component or an end of a positional edge there;
        ``degree`` then counts those positional edges. Answered from the positional index
        (by component, span and position) without reading any circuit's edges.
        """

    def circuits_with_edge(
        self,
        model: str,
        edge: str,
        *,
        position: int | None = None,
        span: str | None = None,
    ) -> list[CircuitSummary]:
        """Every circuit of ``model`` containing the canonical edge, ordered by id; with
        ``position`` and/or ``span``, containing it at that position."""

    def edges_at(
        self,
        circuit_id: str,
        *,
        position: int | None = None,
        span: str | None = None,
        component: str | None = None,
    ) -> list[Edge]:
        """The circuit's in-circuit positional edges at ``position`` and ``span`` (None:
        any; both None: every positional edge) touching ``component`` (None: any), in
        document order ("edges at END"). Read through the positional index."""

    def shared_subcircuit(
        self, circuit_ids: list[str], min_support: int, min_importance: float = 0.0
    ) -> SharedSubcircuit:
        """Edges in at least ``min_support`` circuits with |score| >= ``min_importance``."""

    def diff(self, a: str, b: str) -> CircuitDiff:
        """Edges only in a, only in b, and in both."""

    def evolution(self, model: str, task: str, method: str) -> Evolution:
        """The circuits at each checkpoint of ``model`` in step order."""

    def paths(self, circuit_id: str, max_paths: int = 100) -> list[tuple[str, ...]]:
        """Paths input -> logits inside the circuit, sorted, at most ``max_paths``."""

    def motif_search(self, motif: Motif, limit: int = 100) -> list[MotifMatch]:
        """Circuits containing the motif, ordered by circuit id."""

    def similar_circuits(
        self, circuit_id: str, first: int = 10, aligned: bool = True
    ) -> list[SimilarCircuit]:
        """The ``first`` circuits whose mechanism embedding is closest to this circuit's.

        Ranked by exact cosine (``embedding.cosine``), best first, ties by id; the circuit
        itself and circuits sharing no edge key with it are left out. ``aligned`` compares
        role-aligned embeddings (heads by their labelled roles), else canonical ones.
        Candidates come from the backend's index over the hashed embeddings (an exact scan
        on the embedded store, HNSW on Neo4j and FalkorDB; ``embedding.candidate_count`` of
        them), so backends agree exactly whenever the registry holds no more circuits than
        that, and beyond it wherever the approximate indexes find the exact neighbours.
        """
