"""The Cypher ``GraphStore``: the same contract on Neo4j and FalkorDB.

All statement text comes from ``queries``; this module chooses which to run, batches the
bulk writes and shapes rows into the contract's types with the helpers the embedded store
uses too (``..common``), so both answer identically.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from itertools import chain
from typing import Any

from circuitreg.schema import (
    CircuitDocument,
    Component,
    ComponentKind,
    Edge,
    MethodRef,
    ModelRef,
    Provenance,
    Receiver,
    TaskRef,
    ValidationResult,
)
from circuitreg.schema.circuit import PositionAxis

from ..common import (
    UnknownCircuitError,
    UnknownModelError,
    check_component_name,
    check_edge_name,
    check_model_shape,
    check_motif,
    check_nonempty,
    check_page_size,
    check_shared_args,
    circuit_summary,
    evolution_steps,
    io_paths,
    latest_faithfulness,
    make_diff,
    order_validation,
    shape_shared,
    sort_bindings,
    utc,
    validation_key,
)
from ..embedding import candidate_count, dense, document_edges, embedding, rank
from ..positions import (
    check_position_filter,
    check_spans,
    component_order,
    edge_order,
    positional_matches,
)
from ..types import (
    CircuitDiff,
    CircuitFilter,
    CircuitSummary,
    ComponentUse,
    Evolution,
    Motif,
    MotifMatch,
    Page,
    SharedSubcircuit,
    SimilarCircuit,
)
from . import queries as q
from .edge_arrays import (
    array_triples,
    candidate_keys,
    edge_ends,
    edge_of,
    flow_triples,
    importances,
)
from .recording import execute, execute_many
from .session import CypherSession
from .writes import (
    batches,
    dedupe_statements,
    embedding_row,
    position_statements,
    write_statements,
)


class CypherStore:
    """``GraphStore`` over a ``CypherSession`` (Neo4j or FalkorDB)."""

    def __init__(self, session: CypherSession) -> None:
        self.session = session

    def _run(self, stmt: q.Statement) -> list[dict[str, Any]]:
        return execute(self.session, stmt)

    # -- lifecycle -------------------------------------------------------------------------
    def migrate(self) -> None:
        """Apply the Cypher migrations (constraints and indexes) not yet recorded."""
        from circuitreg.migrations.neo4j import apply_cypher_migrations

        apply_cypher_migrations(self.session)

    def ping(self) -> None:
        """Raise if the engine does not answer."""
        self._run(q.ping())

    def close(self) -> None:
        """Close the session."""
        self.session.close()

    def wipe(self) -> None:
        """Delete every node of the graph, migrations included (tests and benchmarks)."""
        self._run(q.delete_everything())

    # -- writes ----------------------------------------------------------------------------
    def put_circuit(
        self,
        doc: CircuitDocument,
        *,
        job_id: str | None = None,
        dense_scores_uri: str | None = None,
    ) -> str:
        """MERGE everything under stable keys, then make the circuit visible in one step."""
        circuit_id = doc.id
        check_spans(doc)
        atomic = self.session.dialect.atomic_writes
        if not self._run(q.circuit_exists(circuit_id)):
            shape = self._run(q.model_shape(doc.model.name))
            check_model_shape(doc.model, shape[0] if shape else None)
            # The role-aligned embedding reads the model's stored labels and the document's.
            names = sorted({n for e in doc.circuit_edges() for n in (e.source, e.target)})
            stored = self._labels_of([doc.model.name], names).get(doc.model.name, {})
            labels = {n: sorted({*stored.get(n, ()), *doc.labels.get(n, ())}) for n in names}
            row = embedding_row(circuit_id, document_edges(doc), labels)
            statements = write_statements(
                doc,
                job_id,
                dense_scores_uri,
                atomic=atomic,
                embeddings=self.session.dialect.set_embeddings([row], pending=True),
            )
            try:
                execute_many(self.session, statements)
            except Exception:
                # A concurrent writer of the same id wins the unique constraint; its
                # circuit is the same content, so only a still-missing circuit is an error.
                if not self._run(q.circuit_exists(circuit_id)):
                    raise
            if not atomic:
                # FalkorDB: writers racing this one may have MERGEd the same relationships;
                # each cleans up after its own writes, so the last leaves one of each.
                execute_many(self.session, dedupe_statements(circuit_id))
            # Labels the document brings re-align the model's other circuits holding them.
            self._refresh_role_embeddings(
                doc.model.name,
                [n for n, ls in doc.labels.items() if set(ls) - set(stored.get(n, ()))],
            )
        self._add_validations(circuit_id, doc.validation)
        return circuit_id

    def _add_validations(self, circuit_id: str, results: Sequence[ValidationResult]) -> None:
        if not results:
            return
        rows = [
            {
                # keyed per circuit: the same result may validate two circuits
                "key": f"{circuit_id}|{validation_key(r)}",
                "name": r.name,
                "body": r.model_dump_json(),
                "created_at": utc(r.created_at).isoformat(),
            }
            for r in results
        ]
        self._run(q.merge_validations(circuit_id, rows))
        stored = self._validations(circuit_id)
        self._run(q.set_faithfulness(circuit_id, latest_faithfulness(stored)))

    def _validations(self, circuit_id: str) -> tuple[ValidationResult, ...]:
        rows = self._run(q.validation_bodies(circuit_id))
        return order_validation(ValidationResult.model_validate_json(r["body"]) for r in rows)

    def add_validation(self, circuit_id: str, result: ValidationResult) -> None:
        """Attach a validation result (a repeated identical result is ignored)."""
        self._require(circuit_id)
        self._add_validations(circuit_id, [result])

    def tag(self, circuit_id: str, tag: str) -> None:
        """Add a free tag (idempotent)."""
        check_nonempty("tag", tag)
        if not self._run(q.add_tag(circuit_id, tag)):
            raise UnknownCircuitError(circuit_id)

    def set_alias(self, alias: str, circuit_id: str) -> None:
        """Point ``alias`` at the circuit, moving it if needed."""
        check_nonempty("alias", alias)
        self._require(circuit_id)
        execute_many(self.session, [q.clear_alias(alias), q.point_alias(alias, circuit_id)])

    def label_component(self, model: str, component: str, label: str) -> None:
        """Attach a role label to a model's component (idempotent)."""
        check_component_name(component)
        check_nonempty("label", label)
        if not self._run(q.model_exists(model)):
            raise UnknownModelError(model)
        known = self._labels_of([model], [component]).get(model, {}).get(component, [])
        row = {
            "key": f"{model}|{component}|{label}",
            "model": model,
            "component": component,
            "label": label,
        }
        self._run(q.merge_role_labels([row]))
        if label not in known:  # the circuits holding the component now align it by role
            self._refresh_role_embeddings(model, [component])

    # -- reads -----------------------------------------------------------------------------
    def resolve(self, ref: str) -> str | None:
        """The circuit id for an id or an alias."""
        rows = self._run(q.circuit_exists(ref)) or self._run(q.alias_target(ref))
        return str(rows[0]["id"]) if rows else None

    def get_summary(self, circuit_id: str) -> CircuitSummary | None:
        """One circuit's summary, or None."""
        return self.get_summaries([circuit_id]).get(circuit_id)

    def get_summaries(self, circuit_ids: list[str]) -> dict[str, CircuitSummary]:
        """Summaries of the given ids that exist."""
        out: dict[str, CircuitSummary] = {}
        for batch in batches(sorted(set(circuit_ids))):
            out.update((s.id, s) for s in map(_summary, self._run(q.summaries_by_id(batch))))
        return out

    def list_circuits(self, filt: CircuitFilter, first: int, after: str | None = None) -> Page:
        """Circuits matching ``filt`` ordered by id, after ``after``."""
        check_page_size(first)
        alias_id = None
        if filt.alias is not None:
            rows = self._run(q.alias_target(filt.alias))
            if not rows:
                return Page(items=(), has_next=False, end_cursor=None)
            alias_id = str(rows[0]["id"])
        filters = filt.model_dump(exclude={"alias"}, exclude_none=True)
        rows = self._run(q.list_circuits(filters, first + 1, after, alias_id))
        items = [_summary(r) for r in rows]
        page = tuple(items[:first])
        return Page(
            items=page, has_next=len(items) > first, end_cursor=page[-1].id if page else None
        )

    def get_circuit(self, circuit_id: str) -> CircuitDocument | None:
        """Rebuild the stored document, or None if absent.

        Components and edges come back in the graph's order, so they are sorted the way
        documents order them; then an export equals what was put.
        """
        heads = self._run(q.circuit_head(circuit_id))
        if not heads:
            return None
        head = heads[0]
        comps = self._run(q.circuit_components(circuit_id))
        flows = self._run(q.circuit_flows([circuit_id]))
        axis = None
        if head["positions"] is not None:  # positional entries are beside its graph
            axis = PositionAxis.model_validate_json(head["positions"])
            comps += self._run(q.circuit_position_components(circuit_id))
            flows += self._run(q.position_flows(circuit_id, None, None, None))
        names = sorted({str(c["name"]) for c in comps})
        labels = _grouped_labels(self._run(q.role_labels(head["model"], names)))
        return CircuitDocument(
            model=_model_ref(head),
            task=_task_ref(head),
            method=MethodRef(name=head["method"], params=json.loads(head["params"])),
            ablation=head["ablation"],
            metric=head["metric"],
            seed=head["seed"],
            components=tuple(sorted(map(_component, comps), key=component_order)),
            edges=tuple(sorted(map(_edge, flows), key=edge_order)),
            labels=labels,
            positions=axis,
            validation=self._validations(circuit_id),
            provenance=Provenance.model_validate_json(head["provenance"]),
        )

    def component_labels(self, model: str) -> dict[str, tuple[str, ...]]:
        """Role labels of a model's components (empty for an unknown model)."""
        return _grouped_labels(self._run(q.role_labels(model)))

    def component_usage(
        self,
        model: str,
        component: str,
        *,
        position: int | None = None,
        span: str | None = None,
    ) -> list[ComponentUse]:
        """Circuits of ``model`` with ``component`` in them, and its degree in each; at a
        position or span, from the component's nodes there (``queries._component_at``)."""
        check_component_name(component)
        if position is not None or span is not None:
            check_position_filter(position, span)
            degrees = self._component_at(model, component, position, span)
            found = self.get_summaries(sorted(degrees))
            return [ComponentUse(circuit=found[i], degree=degrees[i]) for i in sorted(found)]
        ids = sorted(str(r["id"]) for r in self._run(q.circuits_containing(model, component)))
        if not ids:
            return []
        degrees = {
            str(r["circuit"]): int(r["degree"])
            for r in self._run(q.component_degrees(component, ids))
        }
        summaries = self.get_summaries(ids)
        return [ComponentUse(circuit=summaries[i], degree=degrees.get(i, 0)) for i in ids]

    def circuits_with_edge(
        self,
        model: str,
        edge: str,
        *,
        position: int | None = None,
        span: str | None = None,
    ) -> list[CircuitSummary]:
        """Circuits of ``model`` containing the canonical edge (at a position), by id."""
        check_edge_name(edge)
        source = edge.split("->", 1)[0]
        stmt = q.circuits_with_edge(model, source, edge)
        if position is not None or span is not None:
            check_position_filter(position, span)
            stmt = q.circuits_with_edge_at(model, source, edge, position, span)
        ids = [str(r["id"]) for r in self._run(stmt)]
        summaries = self.get_summaries(ids)
        return [summaries[i] for i in sorted(summaries)]

    def edges_at(
        self,
        circuit_id: str,
        *,
        position: int | None = None,
        span: str | None = None,
        component: str | None = None,
    ) -> list[Edge]:
        """The circuit's positional edges at a position and span (``queries.position_flows``)."""
        if component is not None:
            check_component_name(component)
        if position is not None or span is not None:
            check_position_filter(position, span)
        self._require(circuit_id)
        rows = self._run(q.position_flows(circuit_id, position, span, component))
        return positional_matches(map(_edge, rows), position, span, component)

    def shared_subcircuit(
        self, circuit_ids: list[str], min_support: int, min_importance: float = 0.0
    ) -> SharedSubcircuit:
        """Edges in at least ``min_support`` of the circuits (from their edge arrays)."""
        check_shared_args(circuit_ids, min_support)
        ids = sorted(set(circuit_ids))
        with_arrays, without = self._edge_arrays(ids)
        keep = candidate_keys(with_arrays, min_support)
        triples = chain(
            array_triples(with_arrays, keep),
            flow_triples(self._run(q.shared_edges(without, 1))) if without else (),
        )
        by_edge = importances(triples, min_importance)
        edges, comps = shape_shared(by_edge, edge_ends(by_edge), min_support)
        return SharedSubcircuit(
            circuit_ids=tuple(ids), min_support=min_support, edges=edges, components=comps
        )

    def _edge_arrays(self, ids: Sequence[str]) -> tuple[list[dict[str, Any]], list[str]]:
        """Rows of the circuits with edge arrays, and the ids of those without any."""
        rows = [r for batch in batches(list(ids)) for r in self._run(q.circuit_edge_arrays(batch))]
        found = {str(r["id"]) for r in rows}
        for cid in ids:
            if cid not in found:
                raise UnknownCircuitError(cid)
        return [r for r in rows if r["keys"] is not None], [
            str(r["id"]) for r in rows if r["keys"] is None
        ]

    def diff(self, a: str, b: str) -> CircuitDiff:
        """Edge names only in a, only in b, and in both."""
        self._require_all([a, b])
        names = self._edge_names([a, b])
        return make_diff(a, b, names.get(a, set()), names.get(b, set()))

    def evolution(self, model: str, task: str, method: str) -> Evolution:
        """The model's circuits for a task and method in step order."""
        rows = self._run(q.circuits_for_evolution(model, task, method))
        circuits = [(str(r["id"]), r["checkpoint"], r["step"]) for r in rows]
        names = self._edge_names([c[0] for c in circuits])
        steps = evolution_steps(circuits, names)
        return Evolution(model=model, task=task, method=method, steps=steps)

    def paths(self, circuit_id: str, max_paths: int = 100) -> list[tuple[str, ...]]:
        """Paths input -> logits through the circuit's edges."""
        self._require(circuit_id)
        flows = self._run(q.circuit_flows([circuit_id]))
        return io_paths(((f["source"], f["target"]) for f in flows), max_paths)

    def motif_search(self, motif: Motif, limit: int = 100) -> list[MotifMatch]:
        """Circuits containing the motif, by circuit id (one generated MATCH pattern)."""
        check_motif(motif)
        variables = sorted(motif.nodes)
        index = {v: i for i, v in enumerate(variables)}
        nodes = [
            {
                "name": pattern.name,
                "kind": None if pattern.kind is None else pattern.kind.value,
                "layer": pattern.layer,
                "label": pattern.label,
            }
            for pattern in (motif.nodes[v] for v in variables)
        ]
        edges = [
            (index[e.source], index[e.target], None if e.receiver is None else e.receiver.value)
            for e in motif.edges
        ]
        rows = self._run(q.motif_matches(nodes, edges, motif.model, limit))
        return [
            MotifMatch(
                circuit_id=str(r["circuit"]),
                bindings=sort_bindings(
                    dict(zip(variables, found, strict=True)) for found in r["found"]
                ),
            )
            for r in rows
        ]

    def similar_circuits(
        self, circuit_id: str, first: int = 10, aligned: bool = True
    ) -> list[SimilarCircuit]:
        """Candidates from the vector index, re-ranked by exact sparse cosine."""
        check_page_size(first)
        edges, models = self._edge_scores([circuit_id])
        labels = self._labels_of([models[circuit_id]]) if aligned else {}
        query = embedding(edges[circuit_id], labels.get(models[circuit_id], {}), aligned=aligned)
        vector = dense(query)
        if vector is None:
            return []
        statement = self.session.dialect.vector_candidates(
            aligned, candidate_count(first) + 1, vector
        )
        near = sorted({str(r["id"]) for r in self._run(statement)} - {circuit_id})
        cand_edges, cand_models = self._edge_scores(near)
        if aligned:
            labels.update(self._labels_of(sorted(set(cand_models.values()) - set(labels))))
        vectors = {
            cid: embedding(cand_edges[cid], labels.get(cand_models[cid], {}), aligned=aligned)
            for cid in near
        }
        ranked = rank(query, vectors, first, exclude=circuit_id)
        summaries = self.get_summaries([cid for cid, _ in ranked])
        return [SimilarCircuit(circuit=summaries[cid], similarity=sim) for cid, sim in ranked]

    def backfill_embeddings(self, page: int = 500) -> int:
        """Set the hashed embeddings of every circuit without them (migration V0004)."""
        done, after = 0, ""
        while rows := self._run(q.circuits_without_embedding(after, page)):
            ids = [str(r["id"]) for r in rows]
            self._set_embeddings(ids)
            done += len(ids)
            after = ids[-1]
        return done

    def backfill_positions(self, page: int = 200) -> int:
        """Index the positioned edges of circuits written before V0005 (migration V0006)."""
        done, after = 0, ""
        while rows := self._run(q.circuits_with_positioned_flows(after, page)):
            for circuit_id in (str(r["id"]) for r in rows):
                doc = self.get_circuit(circuit_id)
                if doc is not None:
                    execute_many(self.session, position_statements(doc))
                    done += 1
                after = circuit_id
        return done

    # -- helpers ---------------------------------------------------------------------------
    def _set_embeddings(self, circuit_ids: Sequence[str]) -> None:
        """Recompute both hashed embeddings of committed circuits from their edges."""
        for batch in batches(list(circuit_ids), 200):
            edges, models = self._edge_scores(batch)
            labels = self._labels_of(sorted(set(models.values())))
            rows = [embedding_row(cid, edges[cid], labels.get(models[cid], {})) for cid in batch]
            self._run(self.session.dialect.set_embeddings(rows))

    def _refresh_role_embeddings(self, model: str, components: Sequence[str]) -> None:
        """A new role label changes the role-aligned embedding of exactly the model's
        circuits holding that component (canonical embeddings never read labels)."""
        if components:
            rows = self._run(q.circuits_holding(model, sorted(set(components))))
            self._set_embeddings(sorted(str(r["id"]) for r in rows))

    def _edge_scores(
        self, circuit_ids: Sequence[str]
    ) -> tuple[dict[str, list[tuple[str, float | None]]], dict[str, str]]:
        """(edge name, score) per stored edge of each circuit, and each circuit's model."""
        with_arrays, without = self._edge_arrays(list(circuit_ids))
        edges: dict[str, list[tuple[str, float | None]]] = {}
        models: dict[str, str] = {}
        for row in with_arrays:
            cid = str(row["id"])
            models[cid] = str(row["model"])
            pairs: list[tuple[str, float | None]] = [
                (edge_of(k), float(v)) for k, v in zip(row["keys"], row["scores"], strict=True)
            ]
            pairs.extend((edge_of(k), None) for k in row["unscored"])
            edges[cid] = pairs
        if without:
            for summary in self.get_summaries(without).values():
                models[summary.id] = summary.model
                edges[summary.id] = []
            for batch in batches(without, 200):
                for f in self._run(q.circuit_flows(batch)):
                    score = f["score"]
                    edges[str(f["circuit"])].append(
                        (str(f["edge"]), None if score is None else float(score))
                    )
        return edges, models

    def _labels_of(
        self, models: Sequence[str], components: Sequence[str] | None = None
    ) -> dict[str, dict[str, list[str]]]:
        """Role labels per model and component (all components, or those named)."""
        out: dict[str, dict[str, list[str]]] = {m: {} for m in models}
        if not models:
            return out
        if components is not None and len(models) == 1:
            rows = [
                {"model": models[0], **r} for r in self._run(q.role_labels(models[0], components))
            ]
        else:
            rows = self._run(q.models_role_labels(models))
        for row in rows:
            out[str(row["model"])].setdefault(str(row["component"]), []).append(str(row["label"]))
        return out

    def _component_at(
        self, model: str, component: str, position: int | None, span: str | None
    ) -> dict[str, int]:
        """Circuit id -> positional edges at the position touching the component, for every
        circuit where it is there (an end of such an edge, or a positional component)."""
        args = (model, component, position, span)
        degrees = {
            str(r["circuit"]): int(r["degree"])
            for r in self._run(q.component_position_degrees(*args))
        }
        for row in self._run(q.component_position_members(*args)):
            degrees.setdefault(str(row["circuit"]), 0)
        return degrees

    def _require(self, circuit_id: str) -> None:
        if not self._run(q.circuit_exists(circuit_id)):
            raise UnknownCircuitError(circuit_id)

    def _require_all(self, circuit_ids: Sequence[str]) -> None:
        wanted = sorted(set(circuit_ids))
        found = set(self.get_summaries(wanted))
        for cid in wanted:
            if cid not in found:
                raise UnknownCircuitError(cid)

    def _edge_names(self, circuit_ids: Sequence[str]) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        with_arrays, without = self._edge_arrays(list(circuit_ids))
        for row in with_arrays:
            keys = chain(row["keys"], row["unscored"])
            out[str(row["id"])] = {edge_of(k) for k in keys}
        for batch in batches(without, 200):
            for row in self._run(q.circuit_edge_lists(batch)):
                out.setdefault(str(row["circuit"]), set()).update(map(str, row["edges"]))
        return out


def _model_ref(head: dict[str, Any]) -> ModelRef:
    """The document's model, from the circuit head row (model node and circuit node)."""
    return ModelRef(
        name=head["model"],
        architecture=head["architecture"],
        checkpoint=head["checkpoint"],
        step=head["step"],
        revision=head["revision"],
        n_layers=head["n_layers"],
        n_heads=head["n_heads"],
        d_model=head["d_model"],
        parallel_attn_mlp=head["parallel_attn_mlp"],
        attn_only=head["attn_only"],
    )


def _task_ref(head: dict[str, Any]) -> TaskRef:
    """The document's task, from the circuit head row (its spec is stored as JSON text)."""
    return TaskRef(
        name=head["task"],
        spec=json.loads(head["task_spec"]),
        corruption=head["corruption"],
        dataset_hash=head["dataset_hash"],
        n_examples=head["n_examples"],
    )


def _component(row: dict[str, Any]) -> Component:
    """A stored component node as the document's ``Component``."""
    return Component(
        name=row["name"],
        kind=ComponentKind(row["kind"]),
        layer=row["layer"],
        head=row["head"],
        position=row["position"],
        span=row["span"],
        hook_name=row["hook_name"],
        score=row["score"],
        in_circuit=row["in_circuit"],
    )


def _edge(row: dict[str, Any]) -> Edge:
    """A stored FLOWS relationship as the document's ``Edge``."""
    return Edge(
        source=row["source"],
        target=row["target"],
        receiver=None if row["receiver"] is None else Receiver(row["receiver"]),
        score=row["score"],
        position=row["position"],
        span=row.get("span"),
    )


def _grouped_labels(rows: Sequence[dict[str, Any]]) -> dict[str, tuple[str, ...]]:
    """``(component, label)`` rows as each component's sorted labels, components sorted."""
    labels: dict[str, list[str]] = {}
    for row in rows:
        labels.setdefault(row["component"], []).append(row["label"])
    return {k: tuple(sorted(v)) for k, v in sorted(labels.items())}


def _summary(row: dict[str, Any]) -> CircuitSummary:
    created = row["created_at"]
    return circuit_summary(
        row,
        row["tags"] or (),
        row["aliases"] or (),
        None if created is None else datetime.fromisoformat(created),
    )


__all__ = ["CypherStore"]
