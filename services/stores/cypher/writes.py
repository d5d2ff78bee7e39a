"""The statements that write one circuit to a Cypher store, in order.

Everything is MERGEd on stable keys: components on ``model|name|position``, edges on
(circuit, ``edge@position``), so a retried or concurrent write adds nothing twice; the
circuit is written as (:PendingCircuit) and only the last statement relabels it (:Circuit).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from circuitreg.schema import CircuitDocument, Component, Edge, ModelRef

from ..common import EndpointIndex, stored_components, utc
from ..embedding import canonical_embedding, dense, role_aligned_embedding
from . import queries as q
from .edge_arrays import array_props, flow_key

BATCH = 1000


def batches(items: Sequence[Any], size: int = BATCH) -> list[list[Any]]:
    """Consecutive slices of at most ``size`` items (UNWIND batch size)."""
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def component_key(model: str, name: str, position: int | None) -> str:
    """Stable key of a model's component at a position."""
    return f"{model}|{name}|{'' if position is None else position}"


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
    comps = stored_components(doc)
    edges = doc.circuit_edges()
    job = job_id or doc.provenance.job_id
    ckpt_key = None if model.checkpoint is None else checkpoint_key(model.name, model.checkpoint)
    stmts = [q.merge_model(model.name, _model_props(model))]
    if ckpt_key is not None:
        stmts.append(q.merge_checkpoint(model.name, ckpt_key, _checkpoint_props(model)))
    stmts.append(q.merge_task_and_run(doc.task.name, circuit_id, _run_props(doc, job)))
    comp_rows = _component_rows(model.name, comps)
    stmts.extend(q.merge_components(b) for b in batches(comp_rows))
    circuit = _circuit_props(doc, comps, edges, job, dense_scores_uri)
    stmts.append(q.merge_pending_circuit(circuit_id, circuit))
    stmts.extend(q.merge_memberships(circuit_id, b) for b in batches(comp_rows))
    write_flows = q.create_flows if atomic else q.merge_flows
    flow_rows = _flow_rows(model.name, comps, edges)
    stmts.extend(write_flows(circuit_id, b) for b in batches(flow_rows))
    label_rows = _label_rows(model.name, doc.labels)
    if label_rows:
        stmts.append(q.merge_role_labels(label_rows))
    if embeddings is not None:
        stmts.append(embeddings)
    stmts.append(q.commit_circuit(circuit_id, model.name, ckpt_key))
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
            "key": component_key(model, c.name, c.position),
            "model": model,
            "name": c.name,
            "position": c.position,
            "kind": c.kind.value,
            "layer": c.layer,
            "head": c.head,
            "hook_name": c.hook_name,
            "score": c.score,
            "in_circuit": c.in_circuit,
        }
        for c in comps
    ]


def _circuit_props(
    doc: CircuitDocument,
    comps: Sequence[Component],
    edges: Sequence[Edge],
    job_id: str | None,
    dense_scores_uri: str | None,
) -> dict[str, Any]:
    """The (:PendingCircuit) node: its summary fields, provenance and edge arrays.

    The summary is denormalised onto the node so that listing circuits reads one node each;
    faithfulness and tags start empty and are set by validation and tagging.
    """
    model, prov = doc.model, doc.provenance
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
        "n_components": sum(1 for c in comps if c.in_circuit),
        "n_edges": len(edges),
        "faithfulness": None,
        "tags": [],
        "job_id": job_id,
        "dense_scores_uri": dense_scores_uri,
        "created_at": utc(prov.created_at).isoformat(),
        "provenance": prov.model_dump_json(),
        **array_props(edges),
    }


def _flow_rows(
    model: str, comps: Sequence[Component], edges: Sequence[Edge]
) -> list[dict[str, Any]]:
    """One row per circuit edge, with the keys of the stored components it joins."""
    endpoint = EndpointIndex(comps)
    rows = []
    for e in edges:
        src = endpoint(e.source, e.position)
        dst = endpoint(e.target, e.position)
        rows.append(
            {
                "key": flow_key(e),
                "edge": e.name,
                "source": e.source,
                "target": e.target,
                "receiver": None if e.receiver is None else e.receiver.value,
                "score": e.score,
                "position": e.position,
                "source_key": component_key(model, src.name, src.position),
                "target_key": component_key(model, dst.name, dst.position),
            }
        )
    return rows


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
    return [q.dedupe_flows(circuit_id), q.dedupe_circuit_links(circuit_id)]
