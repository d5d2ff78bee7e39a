"""The statements that write one circuit to a Cypher store, in order.

Everything is MERGEd on stable keys: components on ``model|name|position`` (``|span`` after
it for a component at a span), edges on (circuit, ``edge@position[@span]``), so a retried or
concurrent write adds nothing twice; the circuit is written as (:PendingCircuit) and only
the last statement relabels it (:Circuit).

Positions (issue 18): the circuit's graph is CONTAINS and FLOWS as before (for a circuit
with a position axis, its summed entries; see ``common.on_axis``); every positional entry
is also written as CONTAINS_AT / FLOWS_AT, between the model's (:Component) nodes at that
position and span, so "this head at S2" starts at the head's node at S2 and expands only
the relationships there.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from circuitreg.schema import CircuitDocument, Component, Edge, ModelRef

from ..common import EndpointIndex, utc
from ..embedding import canonical_embedding, dense, role_aligned_embedding
from ..positions import (
    graph_components,
    graph_edges,
    position_free_names,
    positional_components,
    positional_edges,
    summary_counts,
)
from . import queries as q
from .edge_arrays import array_props, flow_key

BATCH = 1000


def batches(items: Sequence[Any], size: int = BATCH) -> list[list[Any]]:
    """Consecutive slices of at most ``size`` items (UNWIND batch size)."""
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def component_key(model: str, name: str, position: int | None, span: str | None = None) -> str:
    """Stable key of a model's component at a position (and span)."""
    key = f"{model}|{name}|{'' if position is None else position}"
    return key if span is None else f"{key}|{span}"


def checkpoint_key(model: str, checkpoint: str) -> str:
    """Stable key of a model's checkpoint."""
    return f"{model}|{checkpoint}"


def write_statements(
    doc: CircuitDocument,
    job_id: str | None,
    dense_scores_uri: str | None,
    *,
    atomic: bool,
    embeddings: q.Statement | None = None,
) -> list[q.Statement]:
    """The statements that write one circuit, ending with the one that makes it visible.

    ``atomic``: the engine runs them in one transaction (Neo4j), so edges are CREATEd (see
    ``queries.create_flows``); otherwise (FalkorDB) they are MERGEd so that a retry is exact.
    ``embeddings`` sets the pending circuit's hashed embeddings (the dialect's statement,
    see ``embedding_row``), so the circuit is indexed as it becomes visible.

    The order is what makes a half-finished write harmless: the model, checkpoint, run and
    components exist before the pending circuit links to them, and only the last statement
    relabels the circuit so that readers see it.
    """
    model = doc.model
    circuit_id = doc.id
    comps = graph_components(doc)
    job = job_id or doc.provenance.job_id
    ckpt_key = None if model.checkpoint is None else checkpoint_key(model.name, model.checkpoint)
    stmts = [q.merge_model(model.name, _model_props(model))]
    if ckpt_key is not None:
        stmts.append(q.merge_checkpoint(model.name, ckpt_key, _checkpoint_props(model)))
    stmts.append(q.merge_task_and_run(doc.task.name, circuit_id, _run_props(doc, job)))
    comp_rows = _component_rows(model.name, comps)
    at_rows = _component_rows(model.name, positional_components(doc))
    node_rows = {r["key"]: r for r in (*_node_rows(model.name, doc), *at_rows, *comp_rows)}
    stmts.extend(q.merge_components(b) for b in batches(list(node_rows.values())))
    stmts.append(q.merge_pending_circuit(circuit_id, _circuit_props(doc, job, dense_scores_uri)))
    stmts.extend(q.merge_memberships(circuit_id, b) for b in batches(comp_rows))
    stmts.extend(q.merge_position_memberships(circuit_id, b) for b in batches(at_rows))
    write_flows = q.create_flows if atomic else q.merge_flows
    flow_rows = _flow_rows(model.name, comps, graph_edges(doc))
    stmts.extend(write_flows(circuit_id, b) for b in batches(flow_rows))
    write_at = q.create_position_flows if atomic else q.merge_position_flows
    stmts.extend(write_at(circuit_id, b) for b in batches(_position_flow_rows(model.name, doc)))
    label_rows = _label_rows(model.name, doc.labels)
    if label_rows:
        stmts.append(q.merge_role_labels(label_rows))
    if embeddings is not None:
        stmts.append(embeddings)
    stmts.append(q.commit_circuit(circuit_id, model.name, ckpt_key))
    return stmts


def position_statements(doc: CircuitDocument) -> list[q.Statement]:
    """The statements indexing a committed circuit's positional entries (the V0006
    backfill of circuits written before V0005): their nodes, CONTAINS_AT and FLOWS_AT."""
    model, circuit_id = doc.model.name, doc.id
    at_rows = _component_rows(model, positional_components(doc))
    node_rows = {r["key"]: r for r in (*_node_rows(model, doc), *at_rows)}
    stmts = [q.merge_components(b) for b in batches(list(node_rows.values()))]
    stmts.extend(
        q.merge_position_memberships(circuit_id, b, pending=False) for b in batches(at_rows)
    )
    rows = _position_flow_rows(model, doc)
    stmts.extend(q.merge_position_flows(circuit_id, b) for b in batches(rows))
    return stmts


def _model_props(model: ModelRef) -> dict[str, Any]:
    """The (:Model) node's shape, which every circuit of the model must share."""
    return {
        "architecture": model.architecture,
        "n_layers": model.n_layers,
        "n_heads": model.n_heads,
        "d_model": model.d_model,
        "parallel_attn_mlp": model.parallel_attn_mlp,
        "attn_only": model.attn_only,
    }


def _checkpoint_props(model: ModelRef) -> dict[str, Any]:
    """The (:Checkpoint) node: which training step and weights the circuit was found in."""
    return {"label": model.checkpoint, "step": model.step, "revision": model.revision}


def _run_props(doc: CircuitDocument, job_id: str | None) -> dict[str, Any]:
    """The (:Run) node: everything needed to rerun the discovery that found the circuit.

    Spec and params are JSON text (sorted keys) because graph properties hold no maps.
    """
    prov = doc.provenance
    return {
        "task_spec": json.dumps(doc.task.spec, sort_keys=True),
        "method": doc.method.name,
        "params": json.dumps(doc.method.params, sort_keys=True),
        "ablation": doc.ablation,
        "metric": doc.metric,
        "seed": doc.seed,
        "corruption": doc.task.corruption,
        "dataset_hash": doc.task.dataset_hash,
        "n_examples": doc.task.n_examples,
        "code_version": prov.code_version,
        "tl_version": prov.transformer_lens_version,
        "job_id": job_id,
    }


def _component_rows(model: str, comps: Sequence[Component]) -> list[dict[str, Any]]:
    """One row per stored component, keyed so that circuits of a model share its nodes."""
    return [
        {
            "key": component_key(model, c.name, c.position, c.span),
            "model": model,
            "name": c.name,
            "position": c.position,
            "span": c.span,
            "kind": c.kind.value,
            "layer": c.layer,
            "head": c.head,
            "hook_name": c.hook_name,
            "score": c.score,
            "in_circuit": c.in_circuit,
        }
        for c in comps
    ]


def _node_rows(model: str, doc: CircuitDocument) -> list[dict[str, Any]]:
    """Component nodes the positional relationships need beyond the document's components:
    each positional edge's ends at its position and span, and the position-free node of
    every name that the graph may hold only at positions (``EndpointIndex``'s fallback)."""
    ends = {(n, e.position, e.span) for e in positional_edges(doc) for n in (e.source, e.target)}
    ends.update((n, None, None) for n in position_free_names(doc))
    return _component_rows(
        model,
        [Component.from_name(n, position=p, span=s) for n, p, s in sorted(ends, key=str)],
    )


def _circuit_props(
    doc: CircuitDocument, job_id: str | None, dense_scores_uri: str | None
) -> dict[str, Any]:
    """The (:PendingCircuit) node: its summary fields, provenance, axis and edge arrays.

    The summary is denormalised onto the node so that listing circuits reads one node each;
    faithfulness and tags start empty and are set by validation and tagging. The edge
    arrays hold the circuit's graph edges (its summed ones, for a positional circuit).
    """
    model, prov = doc.model, doc.provenance
    n_components, n_edges = summary_counts(doc)
    return {
        "model": model.name,
        "checkpoint": model.checkpoint,
        "step": model.step,
        "revision": model.revision,
        "task": doc.task.name,
        "method": doc.method.name,
        "ablation": doc.ablation,
        "metric": doc.metric,
        "seed": doc.seed,
        "n_components": n_components,
        "n_edges": n_edges,
        "faithfulness": None,
        "tags": [],
        "job_id": job_id,
        "dense_scores_uri": dense_scores_uri,
        "created_at": utc(prov.created_at).isoformat(),
        "provenance": prov.model_dump_json(),
        "positions": None if doc.positions is None else doc.positions.model_dump_json(),
        **array_props(graph_edges(doc)),
    }


def _flow_row(e: Edge) -> dict[str, Any]:
    return {
        "key": flow_key(e),
        "edge": e.name,
        "source": e.source,
        "target": e.target,
        "receiver": None if e.receiver is None else e.receiver.value,
        "score": e.score,
        "position": e.position,
        "span": e.span,
    }


def _flow_rows(
    model: str, comps: Sequence[Component], edges: Sequence[Edge]
) -> list[dict[str, Any]]:
    """One row per graph edge, with the keys of the stored components it joins."""
    endpoint = EndpointIndex(comps)
    return [
        {
            **_flow_row(e),
            "source_key": component_key(model, *endpoint(e.source, e.position)),
            "target_key": component_key(model, *endpoint(e.target, e.position)),
        }
        for e in edges
    ]


def _position_flow_rows(model: str, doc: CircuitDocument) -> list[dict[str, Any]]:
    """One row per positional edge, joining its ends' nodes at its position and span."""
    return [
        {
            **_flow_row(e),
            "source_key": component_key(model, e.source, e.position, e.span),
            "target_key": component_key(model, e.target, e.position, e.span),
        }
        for e in positional_edges(doc)
    ]


def _label_rows(model: str, labels: Mapping[str, Sequence[str]]) -> list[dict[str, Any]]:
    """One row per (component, role label); labels belong to the model, not the circuit."""
    return [
        {
            "key": f"{model}|{name}|{label}",
            "model": model,
            "component": name,
            "label": label,
        }
        for name, labels_of in sorted(labels.items())
        for label in labels_of
    ]


def embedding_row(
    circuit_id: str,
    edges: Sequence[tuple[str, float | None]],
    labels: Mapping[str, Sequence[str]],
) -> dict[str, Any]:
    """One circuit's row for ``set_embeddings``: its hashed canonical and role-aligned
    embeddings (null when it has no weighted edge, so the vector index skips it)."""
    return {
        "id": circuit_id,
        "embedding": dense(canonical_embedding(edges)),
        "role_embedding": dense(role_aligned_embedding(edges, labels)),
    }


def dedupe_statements(circuit_id: str) -> list[q.Statement]:
    """Remove what racing writers of the same circuit duplicated on an engine whose MERGE is
    not atomic and whose writes are not transactional (FalkorDB; see the query builders)."""
    return [
        q.dedupe_flows(circuit_id),
        q.dedupe_position_flows(circuit_id),
        q.dedupe_circuit_links(circuit_id),
    ]
