"""The embedded ``GraphStore``: SQLAlchemy tables on SQLite or PostgreSQL, networkx on top.

Filters, lookups and the shared-subcircuit aggregation run in SQL (one grouped query over
the narrow ``circuit_edges`` table); path and motif search load one circuit's edges and
use networkx, which is where graph algorithms belong at circuit sizes (thousands of edges).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    delete,
    func,
    insert,
    or_,
    select,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from circuitreg.migrations.relational import upgrade
from circuitreg.schema import (
    CircuitDocument,
    Edge,
    ValidationResult,
)
from circuitreg.services.db.base import make_engine

from ..common import (
    UnknownCircuitError,
    UnknownModelError,
    check_component_name,
    check_edge_name,
    check_motif,
    check_nonempty,
    check_page_size,
    check_shared_args,
    evolution_steps,
    io_paths,
    make_diff,
    motif_bindings,
    shape_shared,
)
from ..embedding import candidate_count, dense, embedding, rank
from ..positions import check_position_filter, positional_matches
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
from .documents import load_document
from .models import (
    CircuitAlias,
    CircuitComponent,
    CircuitEdge,
    CircuitRow,
    CircuitTag,
    ComponentLabel,
    ComponentRow,
    GraphCheckpoint,
    GraphEdge,
    GraphModel,
    GraphTask,
    Run,
)
from .positions import circuits_with_edge_at, component_at, edges_at
from .shared import shared_edges_sql
from .summaries import apply_filter, load_summaries, summary_select
from .vectors import edge_scores, model_labels, nearest, refresh_aligned
from .writer import add_validations, insert_ignore, write_circuit

MOTIF_CHUNK = 200
# Walk the whole edge index when the selection is at least 1/SCAN_SHARE of all circuits.
SCAN_SHARE = 10


class EmbeddedStore:
    """``GraphStore`` on a SQLAlchemy engine (SQLite by default, PostgreSQL in production)."""

    def __init__(self, url: str, *, engine: Engine | None = None) -> None:
        self.url = url
        self.engine = engine or make_engine(url)

    # -- lifecycle -------------------------------------------------------------------------
    def migrate(self) -> None:
        """Apply the Alembic revisions (0002 creates the graph tables)."""
        upgrade(self.url, "heads")

    def ping(self) -> None:
        """Raise if the database cannot be reached."""
        with self.engine.connect() as conn:
            conn.execute(select(1))

    def close(self) -> None:
        """Dispose of the engine's connections."""
        self.engine.dispose()

    # -- writes ----------------------------------------------------------------------------
    def put_circuit(
        self,
        doc: CircuitDocument,
        *,
        job_id: str | None = None,
        dense_scores_uri: str | None = None,
    ) -> str:
        """Write the circuit in one transaction; a concurrent duplicate is retried once."""
        try:
            with self.engine.begin() as conn:
                return write_circuit(conn, doc, job_id=job_id, dense_scores_uri=dense_scores_uri)
        except IntegrityError:
            # A concurrent writer committed the same circuit between our check and insert on
            # a unique key we could not pre-empt; the retry sees its row and adds nothing.
            with self.engine.begin() as conn:
                return write_circuit(conn, doc, job_id=job_id, dense_scores_uri=dense_scores_uri)

    def add_validation(self, circuit_id: str, result: ValidationResult) -> None:
        """Attach a validation result (a repeated identical result is ignored)."""
        with self.engine.begin() as conn:
            add_validations(conn, self._pk(conn, circuit_id), [result])

    def tag(self, circuit_id: str, tag: str) -> None:
        """Add a free tag (idempotent)."""
        check_nonempty("tag", tag)
        with self.engine.begin() as conn:
            pk = self._pk(conn, circuit_id)
            insert_ignore(conn, CircuitTag.__table__, [{"circuit_pk": pk, "tag": tag}])  # type: ignore[arg-type]

    def set_alias(self, alias: str, circuit_id: str) -> None:
        """Point ``alias`` at the circuit, moving it from another circuit if needed."""
        check_nonempty("alias", alias)
        with self.engine.begin() as conn:
            pk = self._pk(conn, circuit_id)
            conn.execute(delete(CircuitAlias).where(CircuitAlias.alias == alias))
            conn.execute(insert(CircuitAlias).values(alias=alias, circuit_pk=pk))

    def label_component(self, model: str, component: str, label: str) -> None:
        """Attach a role label to a model's component (idempotent)."""
        check_component_name(component)
        check_nonempty("label", label)
        with self.engine.begin() as conn:
            model_id = self._model_id(conn, model)
            added = insert_ignore(
                conn,
                ComponentLabel.__table__,  # type: ignore[arg-type]
                [{"model_id": model_id, "component": component, "label": label}],
            )
            if added:  # the circuits holding the component now align it by its new role
                refresh_aligned(conn, model_id, [component])

    # -- reads -----------------------------------------------------------------------------
    def resolve(self, ref: str) -> str | None:
        """The circuit id for an id or an alias."""
        with self.engine.connect() as conn:
            found = conn.execute(select(CircuitRow.id).where(CircuitRow.id == ref)).scalar()
            if found is None:
                found = conn.execute(
                    select(CircuitRow.id)
                    .join(CircuitAlias, CircuitAlias.circuit_pk == CircuitRow.pk)
                    .where(CircuitAlias.alias == ref)
                ).scalar()
        return found

    def get_summary(self, circuit_id: str) -> CircuitSummary | None:
        """One circuit's summary, or None."""
        return self.get_summaries([circuit_id]).get(circuit_id)

    def get_summaries(self, circuit_ids: list[str]) -> dict[str, CircuitSummary]:
        """Summaries of the given ids that exist."""
        out: dict[str, CircuitSummary] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(circuit_ids), 1000):
                chunk = circuit_ids[start : start + 1000]
                stmt = summary_select().where(CircuitRow.id.in_(chunk))
                out.update((s.id, s) for s in load_summaries(conn, stmt))
        return out

    def list_circuits(self, filt: CircuitFilter, first: int, after: str | None = None) -> Page:
        """Circuits matching ``filt`` ordered by id, after ``after``."""
        check_page_size(first)
        stmt = apply_filter(summary_select(), filt)
        if after is not None:
            stmt = stmt.where(CircuitRow.id > after)
        stmt = stmt.order_by(CircuitRow.id).limit(first + 1)
        with self.engine.connect() as conn:
            items = load_summaries(conn, stmt)
        page = tuple(items[:first])
        return Page(
            items=page, has_next=len(items) > first, end_cursor=page[-1].id if page else None
        )

    def get_circuit(self, circuit_id: str) -> CircuitDocument | None:
        """Rebuild the stored document, or None if absent."""
        with Session(self.engine) as session:
            return load_document(session, circuit_id)

    def component_labels(self, model: str) -> dict[str, tuple[str, ...]]:
        """Role labels of a model's components (empty for an unknown model)."""
        labels: dict[str, list[str]] = {}
        with self.engine.connect() as conn:
            rows = (
                conn.execute(
                    select(ComponentLabel.component, ComponentLabel.label)
                    .join(GraphModel, GraphModel.id == ComponentLabel.model_id)
                    .where(GraphModel.name == model)
                )
                .tuples()
                .all()
            )
            for name, label in rows:
                labels.setdefault(name, []).append(label)
        return {k: tuple(sorted(v)) for k, v in sorted(labels.items())}

    def component_usage(
        self,
        model: str,
        component: str,
        *,
        position: int | None = None,
        span: str | None = None,
    ) -> list[ComponentUse]:
        """Circuits of ``model`` with ``component`` in them, and its degree in each; at a
        position or span, from the positional indexes (``positions.component_at``)."""
        check_component_name(component)
        if position is not None or span is not None:
            check_position_filter(position, span)
            with self.engine.connect() as conn:
                degrees = component_at(conn, model, component, position, span)
                return self._uses(conn, degrees)
        with self.engine.connect() as conn:
            pks = (
                select(CircuitComponent.circuit_pk)
                .join(ComponentRow, ComponentRow.id == CircuitComponent.component_id)
                .join(GraphModel, GraphModel.id == ComponentRow.model_id)
                .where(
                    GraphModel.name == model,
                    ComponentRow.name == component,
                    CircuitComponent.in_circuit.is_(True),
                )
            )
            degrees = dict(
                conn.execute(
                    select(CircuitEdge.circuit_pk, func.count())
                    .join(GraphEdge, GraphEdge.id == CircuitEdge.edge_id)
                    .where(
                        CircuitEdge.circuit_pk.in_(pks),
                        or_(GraphEdge.source == component, GraphEdge.target == component),
                    )
                    .group_by(CircuitEdge.circuit_pk)
                )
                .tuples()
                .all()
            )
            stmt = summary_select().where(CircuitRow.pk.in_(pks)).order_by(CircuitRow.id)
            rows = conn.execute(stmt.with_only_columns(CircuitRow.pk, CircuitRow.id)).all()
            summaries = {s.id: s for s in load_summaries(conn, stmt)}
        return [ComponentUse(circuit=summaries[cid], degree=degrees.get(pk, 0)) for pk, cid in rows]

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
        pks = (
            select(CircuitEdge.circuit_pk)
            .join(GraphEdge, GraphEdge.id == CircuitEdge.edge_id)
            .join(GraphModel, GraphModel.id == GraphEdge.model_id)
            .where(GraphModel.name == model, GraphEdge.name == edge)
        )
        if position is not None or span is not None:
            check_position_filter(position, span)
            pks = circuits_with_edge_at(model, edge, position, span)
        with self.engine.connect() as conn:
            return load_summaries(
                conn, summary_select().where(CircuitRow.pk.in_(pks)).order_by(CircuitRow.id)
            )

    def edges_at(
        self,
        circuit_id: str,
        *,
        position: int | None = None,
        span: str | None = None,
        component: str | None = None,
    ) -> list[Edge]:
        """The circuit's positional edges at a position and span (``positions.edges_at``)."""
        if component is not None:
            check_component_name(component)
        if position is not None or span is not None:
            check_position_filter(position, span)
        with self.engine.connect() as conn:
            found = edges_at(conn, self._pk(conn, circuit_id), position, span, component)
        return positional_matches(found, position, span, component)

    def _uses(self, conn: Connection, degrees: dict[int, int]) -> list[ComponentUse]:
        """Component uses, by circuit id, from circuit pk -> degree."""
        stmt = summary_select().where(CircuitRow.pk.in_(list(degrees))).order_by(CircuitRow.id)
        rows = conn.execute(stmt.with_only_columns(CircuitRow.pk, CircuitRow.id)).all()
        summaries = {s.id: s for s in load_summaries(conn, stmt)}
        return [ComponentUse(circuit=summaries[cid], degree=degrees[pk]) for pk, cid in rows]

    def shared_subcircuit(
        self, circuit_ids: list[str], min_support: int, min_importance: float = 0.0
    ) -> SharedSubcircuit:
        """Edges in at least ``min_support`` of the circuits, aggregated in one SQL query."""
        check_shared_args(circuit_ids, min_support)
        ids = sorted(set(circuit_ids))
        with self.engine.connect() as conn:
            pk_rows = self._pks(conn, ids)
            pk_to_id = {pk: cid for cid, (pk, _) in pk_rows.items()}
            one_model = len({model for _, model in pk_rows.values()}) == 1
            total = conn.execute(select(func.count()).select_from(CircuitRow)).scalar_one()
            positional = conn.execute(
                select(func.count()).where(
                    CircuitRow.pk.in_(list(pk_to_id)), CircuitRow.positional.is_(True)
                )
            ).scalar_one()
            stmt = shared_edges_sql(
                conn.dialect.name,
                list(pk_to_id),
                min_support,
                min_importance,
                one_model,
                positional=positional > 0,
                scan_index=len(pk_to_id) * SCAN_SHARE >= total,
            )
            rows = conn.execute(stmt).all()
            edge_ids = sorted({row[0] for row in rows})
            ends: dict[int, tuple[str, str, str, str | None]] = {}
            for start in range(0, len(edge_ids), 2000):
                chunk = edge_ids[start : start + 2000]
                for eid, name, src, dst, recv in (
                    conn.execute(
                        select(
                            GraphEdge.id,
                            GraphEdge.name,
                            GraphEdge.source,
                            GraphEdge.target,
                            GraphEdge.receiver,
                        ).where(GraphEdge.id.in_(chunk))
                    )
                    .tuples()
                    .all()
                ):
                    ends[eid] = (name, src, dst, recv)
        by_edge: dict[str, dict[str, float | None]] = {}
        id_of = {str(pk): cid for pk, cid in pk_to_id.items()}  # JSON keys are text
        for eid, scores in rows:
            per_circuit = by_edge.setdefault(ends[eid][0], {})
            per_circuit.update({id_of[pk]: v for pk, v in json.loads(scores).items()})
        edges, comps = shape_shared(
            by_edge,
            {name: (src, dst, recv) for name, src, dst, recv in ends.values()},
            min_support,
        )
        return SharedSubcircuit(
            circuit_ids=tuple(ids), min_support=min_support, edges=edges, components=comps
        )

    def diff(self, a: str, b: str) -> CircuitDiff:
        """Edge names only in a, only in b, and in both."""
        with self.engine.connect() as conn:
            pks = self._pks(conn, [a, b])
            names = self._edge_names(conn, [pks[a][0], pks[b][0]])
        return make_diff(a, b, names.get(pks[a][0], set()), names.get(pks[b][0], set()))

    def evolution(self, model: str, task: str, method: str) -> Evolution:
        """The model's circuits for a task and method in step order."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(CircuitRow.pk, CircuitRow.id, GraphCheckpoint.label, GraphCheckpoint.step)
                .join(GraphModel, GraphModel.id == CircuitRow.model_id)
                .join(Run, Run.id == CircuitRow.run_id)
                .join(GraphTask, GraphTask.id == Run.task_id)
                .outerjoin(GraphCheckpoint, GraphCheckpoint.id == CircuitRow.checkpoint_id)
                .where(GraphModel.name == model, GraphTask.name == task, Run.method == method)
            ).all()
            names = self._edge_names(conn, [row[0] for row in rows])
        steps = evolution_steps(
            ((cid, label, step) for _, cid, label, step in rows),
            {cid: names.get(pk, set()) for pk, cid, _, _ in rows},
        )
        return Evolution(model=model, task=task, method=method, steps=steps)

    def paths(self, circuit_id: str, max_paths: int = 100) -> list[tuple[str, ...]]:
        """Paths input -> logits through the circuit's edges."""
        with self.engine.connect() as conn:
            pk = self._pk(conn, circuit_id)
            pairs = (
                conn.execute(
                    select(GraphEdge.source, GraphEdge.target)
                    .join(CircuitEdge, CircuitEdge.edge_id == GraphEdge.id)
                    .where(CircuitEdge.circuit_pk == pk)
                )
                .tuples()
                .all()
            )
            return io_paths(pairs, max_paths)

    def motif_search(self, motif: Motif, limit: int = 100) -> list[MotifMatch]:
        """Circuits containing the motif (networkx VF2 per circuit), by circuit id."""
        check_motif(motif)
        matches: list[MotifMatch] = []
        with self.engine.connect() as conn:
            stmt = select(CircuitRow.pk, CircuitRow.id, CircuitRow.model_id).order_by(CircuitRow.id)
            if motif.model is not None:
                stmt = stmt.join(GraphModel, GraphModel.id == CircuitRow.model_id).where(
                    GraphModel.name == motif.model
                )
            candidates = conn.execute(stmt).all()
            labels_by_model: dict[int, dict[str, list[str]]] = {}
            for start in range(0, len(candidates), MOTIF_CHUNK):
                chunk = candidates[start : start + MOTIF_CHUNK]
                graphs = self._circuit_graphs(conn, [pk for pk, _, _ in chunk])
                for pk, cid, model_id in chunk:
                    if model_id not in labels_by_model:
                        labels_by_model[model_id] = self._labels_of(conn, model_id)
                    nodes, edges = graphs.get(pk, ({}, []))
                    found = motif_bindings(motif, edges, nodes, labels_by_model[model_id])
                    if found:
                        matches.append(MotifMatch(circuit_id=cid, bindings=found))
                        if len(matches) >= limit:
                            return matches
        return matches

    def similar_circuits(
        self, circuit_id: str, first: int = 10, aligned: bool = True
    ) -> list[SimilarCircuit]:
        """Nearest hashed vectors by an exact scan, re-ranked by exact sparse cosine."""
        check_page_size(first)
        with self.engine.connect() as conn:
            pk, model_id = self._pks(conn, [circuit_id])[circuit_id]
            labels = model_labels(conn, [model_id]) if aligned else {}
            query = embedding(
                edge_scores(conn, [pk])[pk], labels.get(model_id, {}), aligned=aligned
            )
            vector = dense(query)
            if vector is None:
                return []
            near = nearest(conn, vector, aligned=aligned, k=candidate_count(first) + 1)
            rows = (
                conn.execute(
                    select(CircuitRow.pk, CircuitRow.id, CircuitRow.model_id).where(
                        CircuitRow.pk.in_([p for p in near if p != pk])
                    )
                )
                .tuples()
                .all()
            )
            edges = edge_scores(conn, [p for p, _, _ in rows])
            if aligned:
                labels.update(model_labels(conn, {m for _, _, m in rows} - set(labels)))
            vectors = {
                cid: embedding(edges[p], labels.get(m, {}), aligned=aligned) for p, cid, m in rows
            }
            ranked = rank(query, vectors, first, exclude=circuit_id)
            stmt = summary_select().where(CircuitRow.id.in_([cid for cid, _ in ranked]))
            summaries = {s.id: s for s in load_summaries(conn, stmt)}
        return [SimilarCircuit(circuit=summaries[cid], similarity=sim) for cid, sim in ranked]

    # -- helpers ---------------------------------------------------------------------------
    def _pk(self, conn: Connection, circuit_id: str) -> int:
        return self._pks(conn, [circuit_id])[circuit_id][0]

    def _pks(self, conn: Connection, circuit_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
        """id -> (pk, model id); raises ``UnknownCircuitError`` naming a missing id."""
        found: dict[str, tuple[int, int]] = {}
        unique = sorted(set(circuit_ids))
        for start in range(0, len(unique), 1000):
            chunk = unique[start : start + 1000]
            for cid, pk, model_id in (
                conn.execute(
                    select(CircuitRow.id, CircuitRow.pk, CircuitRow.model_id).where(
                        CircuitRow.id.in_(chunk)
                    )
                )
                .tuples()
                .all()
            ):
                found[cid] = (pk, model_id)
        for cid in unique:
            if cid not in found:
                raise UnknownCircuitError(cid)
        return found

    def _model_id(self, conn: Connection, model: str) -> int:
        found = conn.execute(select(GraphModel.id).where(GraphModel.name == model)).scalar()
        if found is None:
            raise UnknownModelError(model)
        return found

    def _edge_names(self, conn: Connection, pks: Sequence[int]) -> dict[int, set[str]]:
        out: dict[int, set[str]] = {}
        for start in range(0, len(pks), 500):
            chunk = list(pks[start : start + 500])
            for pk, name in (
                conn.execute(
                    select(CircuitEdge.circuit_pk, GraphEdge.name)
                    .join(GraphEdge, GraphEdge.id == CircuitEdge.edge_id)
                    .where(CircuitEdge.circuit_pk.in_(chunk))
                )
                .tuples()
                .all()
            ):
                out.setdefault(pk, set()).add(name)
        return out

    def _labels_of(self, conn: Connection, model_id: int) -> dict[str, list[str]]:
        labels: dict[str, list[str]] = {}
        for name, label in (
            conn.execute(
                select(ComponentLabel.component, ComponentLabel.label).where(
                    ComponentLabel.model_id == model_id
                )
            )
            .tuples()
            .all()
        ):
            labels.setdefault(name, []).append(label)
        return labels

    def _circuit_graphs(
        self, conn: Connection, pks: Sequence[int]
    ) -> dict[int, tuple[dict[str, tuple[str, int | None]], list[tuple[str, str, str | None]]]]:
        """Per circuit: stored components (name -> kind, layer) and name-level edges."""
        out: dict[int, Any] = {pk: ({}, []) for pk in pks}
        for pk, name, kind, layer in (
            conn.execute(
                select(
                    CircuitComponent.circuit_pk,
                    ComponentRow.name,
                    ComponentRow.kind,
                    ComponentRow.layer,
                )
                .join(ComponentRow, ComponentRow.id == CircuitComponent.component_id)
                .where(CircuitComponent.circuit_pk.in_(list(pks)))
            )
            .tuples()
            .all()
        ):
            out[pk][0][name] = (kind, layer)
        for pk, src, dst, recv in (
            conn.execute(
                select(
                    CircuitEdge.circuit_pk, GraphEdge.source, GraphEdge.target, GraphEdge.receiver
                )
                .join(GraphEdge, and_(GraphEdge.id == CircuitEdge.edge_id))
                .where(CircuitEdge.circuit_pk.in_(list(pks)))
            )
            .tuples()
            .all()
        ):
            out[pk][1].append((src, dst, recv))
        return out
