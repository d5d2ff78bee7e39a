"""Every Cypher statement of the registry, as builders returning text and parameters.

Rules this module keeps, so that its statements are safe and portable:

* values travel only as parameters; labels, relationship types and property names are
  constants of this module, and the one generated pattern (motifs) names its variables
  ``n0, n1, ...`` and ``e0, e1, ...`` itself, never from user input;
* bulk writes are ``UNWIND`` batches and every write ``MERGE``\\ s on a stable key
  (``Component.key``, ``(FLOWS.circuit, FLOWS.key)``, ...), so a retried write never
  duplicates; the one exception, ``create_flows``, runs only inside the single transaction
  that creates its circuit under a uniqueness constraint (Neo4j), where CREATE is exact;
* the text runs unchanged on Neo4j 5 and FalkorDB; what differs (constraint syntax) lives in
  ``dialect.py``.

Graph model. (:Model)-[:HAS_CHECKPOINT]->(:Checkpoint); (:Task); (:Run) per circuit;
(:Circuit) -[:OF_MODEL|AT_CHECKPOINT|FOR_TASK|FROM_RUN]-> those, and -[:CONTAINS]->
(:Component) nodes shared by all circuits of the model (one per model + name + position).
A circuit's edges are ``FLOWS`` relationships between those shared components, carrying
``circuit``, ``edge`` (canonical name), ``source``/``target`` names, ``receiver``, ``score``
and ``position``. Relationships rather than (:CircuitEdge) nodes because both questions the
store exists for are then plain patterns: shared subcircuits group the FLOWS relationships
of the chosen circuits by ``edge`` (one indexed scan on ``FLOWS.circuit``), and a motif is a
path pattern over FLOWS with ``e.circuit = c.id``, visited circuit by circuit. Positional
entries (issue 18) are CONTAINS_AT and FLOWS_AT, the same shapes between the components at
the entry's position and span (nodes keyed ``model|name|position|span``), beside CONTAINS
and FLOWS, which hold a positional circuit's summed graph; the position queries start at a
component's nodes at a position (indexes of migration V0005). Role labels
are (:RoleLabel) nodes keyed by model + component + label (they apply to every position);
tags are a list property of the circuit; aliases are (:Alias)-[:NAMES]->(:Circuit);
validation results are (:ValidationResult)-[:VALIDATES]->(:Circuit).

A circuit is first written as (:PendingCircuit) and relabelled (:Circuit) by its last
statement: every read matches :Circuit, so a write interrupted on an engine without
multi-statement transactions (FalkorDB) is never visible, and its retry MERGEs onto it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, ParamSpec

P = ParamSpec("P")


class Statement(NamedTuple):
    """One Cypher statement: the builder that made it, its text and its parameters."""

    name: str
    text: str
    params: dict[str, Any]


BUILDERS: dict[str, Callable[..., Statement]] = {}


def builder(fn: Callable[P, Statement]) -> Callable[P, Statement]:
    """Register a query builder (the contract suite checks every one is executed)."""
    BUILDERS[fn.__name__] = fn
    return fn


SUMMARY_RETURN = """
RETURN c.id AS id, c.model AS model, c.checkpoint AS checkpoint, c.step AS step,
       c.task AS task, c.method AS method, c.ablation AS ablation, c.metric AS metric,
       c.seed AS seed, c.n_components AS n_components, c.n_edges AS n_edges,
       c.faithfulness AS faithfulness, c.tags AS tags, aliases, c.job_id AS job_id,
       c.dense_scores_uri AS dense_scores_uri, c.created_at AS created_at
"""

# -- housekeeping ------------------------------------------------------------------------


@builder
def ping() -> Statement:
    """A trivial round trip."""
    return Statement("ping", "RETURN 1 AS ok", {})


@builder
def applied_migrations() -> Statement:
    """Versions of the Cypher migrations already applied."""
    return Statement("applied_migrations", "MATCH (m:Migration) RETURN m.version AS version", {})


@builder
def record_migration(version: str, description: str, applied_at: str) -> Statement:
    """Record one applied migration (idempotent)."""
    return Statement(
        "record_migration",
        "MERGE (m:Migration {version: $version}) "
        "ON CREATE SET m.description = $description, m.applied_at = $applied_at "
        "RETURN m.version AS version",
        {"version": version, "description": description, "applied_at": applied_at},
    )


@builder
def delete_everything() -> Statement:
    """Remove every node and relationship (tests and benchmarks only)."""
    return Statement("delete_everything", "MATCH (n) DETACH DELETE n", {})


# -- writes ------------------------------------------------------------------------------


@builder
def model_shape(name: str) -> Statement:
    """The stored shape of a model, to refuse a circuit that gives its name another shape."""
    return Statement(
        "model_shape",
        "MATCH (m:Model {name: $name}) RETURN m.n_layers AS n_layers, m.n_heads AS n_heads, "
        "m.d_model AS d_model, m.attn_only AS attn_only, "
        "m.parallel_attn_mlp AS parallel_attn_mlp",
        {"name": name},
    )


@builder
def merge_model(name: str, props: dict[str, Any]) -> Statement:
    """The model node (first writer's properties win)."""
    return Statement(
        "merge_model",
        "MERGE (m:Model {name: $name}) ON CREATE SET m += $props RETURN m.name AS name",
        {"name": name, "props": props},
    )


@builder
def merge_checkpoint(model: str, key: str, props: dict[str, Any]) -> Statement:
    """A checkpoint of a model."""
    return Statement(
        "merge_checkpoint",
        "MATCH (m:Model {name: $model}) "
        "MERGE (k:Checkpoint {key: $key}) ON CREATE SET k += $props "
        "MERGE (m)-[:HAS_CHECKPOINT]->(k) RETURN k.key AS key",
        {"model": model, "key": key, "props": props},
    )


@builder
def merge_task_and_run(task: str, circuit_id: str, props: dict[str, Any]) -> Statement:
    """The task and the run that produced one circuit."""
    return Statement(
        "merge_task_and_run",
        "MERGE (t:Task {name: $task}) "
        "MERGE (r:Run {circuit: $circuit}) ON CREATE SET r += $props "
        "MERGE (r)-[:FOR_TASK]->(t) RETURN r.circuit AS circuit",
        {"task": task, "circuit": circuit_id, "props": props},
    )


@builder
def merge_components(rows: Sequence[dict[str, Any]]) -> Statement:
    """Model-scoped components, keyed by ``model|name|position`` (``|span`` at a span)."""
    return Statement(
        "merge_components",
        "UNWIND $rows AS row "
        "MERGE (x:Component {key: row.key}) "
        "ON CREATE SET x.model = row.model, x.name = row.name, x.position = row.position, "
        "x.span = row.span, x.kind = row.kind, x.layer = row.layer, x.head = row.head, "
        "x.hook_name = row.hook_name "
        "RETURN count(x) AS n",
        {"rows": list(rows)},
    )


@builder
def merge_pending_circuit(circuit_id: str, props: dict[str, Any]) -> Statement:
    """The circuit node, not yet visible to reads (see the module docstring)."""
    return Statement(
        "merge_pending_circuit",
        # A concurrent writer may have committed the circuit already: then write nothing.
        "OPTIONAL MATCH (done:Circuit {id: $id}) WITH done WHERE done IS NULL "
        "MERGE (c:PendingCircuit {id: $id}) ON CREATE SET c += $props RETURN c.id AS id",
        {"id": circuit_id, "props": props},
    )


@builder
def merge_memberships(circuit_id: str, rows: Sequence[dict[str, Any]]) -> Statement:
    """CONTAINS relationships from the pending circuit to its components."""
    return Statement(
        "merge_memberships",
        "MATCH (c:PendingCircuit {id: $id}) "
        "UNWIND $rows AS row "
        "MATCH (x:Component {key: row.key}) "
        "MERGE (c)-[m:CONTAINS]->(x) "
        "ON CREATE SET m.score = row.score, m.in_circuit = row.in_circuit "
        "RETURN count(m) AS n",
        {"id": circuit_id, "rows": list(rows)},
    )


@builder
def merge_position_memberships(
    circuit_id: str, rows: Sequence[dict[str, Any]], *, pending: bool = True
) -> Statement:
    """CONTAINS_AT relationships from the circuit (pending while written; committed when
    the V0006 backfill indexes an older circuit) to its positional components."""
    return Statement(
        "merge_position_memberships",
        f"MATCH (c:{'PendingCircuit' if pending else 'Circuit'} {{id: $id}}) "
        "UNWIND $rows AS row "
        "MATCH (x:Component {key: row.key}) "
        "MERGE (c)-[m:CONTAINS_AT]->(x) "
        "ON CREATE SET m.score = row.score, m.in_circuit = row.in_circuit "
        "RETURN count(m) AS n",
        {"id": circuit_id, "rows": list(rows)},
    )


_FLOW_PROPS = (
    "SET r.edge = row.edge, r.source = row.source, r.target = row.target, "
    "r.receiver = row.receiver, r.score = row.score, r.position = row.position, "
    "r.span = row.span "
)


def _merge_flows_text(rel_type: str) -> str:
    return (
        "UNWIND $rows AS row "
        "MATCH (s:Component {key: row.source_key}) "
        "MATCH (t:Component {key: row.target_key}) "
        f"MERGE (s)-[r:{rel_type} {{circuit: $circuit, key: row.key}}]->(t) "
        "ON CREATE " + _FLOW_PROPS + "RETURN count(r) AS n"
    )


def _create_flows_text(rel_type: str) -> str:
    return (
        # Only while this transaction holds the pending circuit: a writer that lost the
        # race (the circuit committed meanwhile) matches nothing and creates nothing.
        "MATCH (:PendingCircuit {id: $circuit}) "
        "UNWIND $rows AS row "
        "MATCH (s:Component {key: row.source_key}) "
        "MATCH (t:Component {key: row.target_key}) "
        f"CREATE (s)-[r:{rel_type} {{circuit: $circuit, key: row.key}}]->(t) "
        + _FLOW_PROPS
        + "RETURN count(r) AS n"
    )


@builder
def merge_flows(circuit_id: str, rows: Sequence[dict[str, Any]]) -> Statement:
    """A batch of the circuit's edges as FLOWS relationships keyed by circuit and key.

    For engines without multi-statement transactions (FalkorDB): a retried, half-written
    circuit MERGEs onto what the first try wrote.
    """
    return Statement(
        "merge_flows", _merge_flows_text("FLOWS"), {"circuit": circuit_id, "rows": list(rows)}
    )


@builder
def create_flows(circuit_id: str, rows: Sequence[dict[str, Any]]) -> Statement:
    """The same batch, CREATEd: for Neo4j, where a circuit is written in one transaction.

    A relationship MERGE between two shared components scans the relationships they already
    have, which grow with every stored circuit (O(registry) per edge). CREATE is exact here:
    the transaction that writes these edges also CREATEs the pending circuit under a
    uniqueness constraint and relabels it :Circuit under another, so a racing writer of the
    same circuit fails at its commit and leaves nothing, and a failed try leaves nothing.
    """
    return Statement(
        "create_flows", _create_flows_text("FLOWS"), {"circuit": circuit_id, "rows": list(rows)}
    )


@builder
def merge_position_flows(circuit_id: str, rows: Sequence[dict[str, Any]]) -> Statement:
    """A batch of the circuit's positional edges as FLOWS_AT relationships between the
    components at their position and span, MERGEd as ``merge_flows`` (FalkorDB)."""
    return Statement(
        "merge_position_flows",
        _merge_flows_text("FLOWS_AT"),
        {"circuit": circuit_id, "rows": list(rows)},
    )


@builder
def create_position_flows(circuit_id: str, rows: Sequence[dict[str, Any]]) -> Statement:
    """The same batch, CREATEd inside the circuit's one transaction (Neo4j; see
    ``create_flows``)."""
    return Statement(
        "create_position_flows",
        _create_flows_text("FLOWS_AT"),
        {"circuit": circuit_id, "rows": list(rows)},
    )


@builder
def merge_role_labels(rows: Sequence[dict[str, Any]]) -> Statement:
    """Role labels of components (model, component, label)."""
    return Statement(
        "merge_role_labels",
        "UNWIND $rows AS row "
        "MERGE (l:RoleLabel {key: row.key}) "
        "ON CREATE SET l.model = row.model, l.component = row.component, l.label = row.label "
        "RETURN count(l) AS n",
        {"rows": list(rows)},
    )


@builder
def commit_circuit(circuit_id: str, model: str, checkpoint_key: str | None) -> Statement:
    """Link the pending circuit and relabel it :Circuit, making it visible in one step."""
    return Statement(
        "commit_circuit",
        "MATCH (c:PendingCircuit {id: $id}) "
        "MATCH (m:Model {name: $model}) "
        "MATCH (r:Run {circuit: $id})-[:FOR_TASK]->(t:Task) "
        "MERGE (c)-[:OF_MODEL]->(m) MERGE (c)-[:FROM_RUN]->(r) MERGE (c)-[:FOR_TASK]->(t) "
        "WITH c "
        "OPTIONAL MATCH (k:Checkpoint {key: $checkpoint}) "
        "FOREACH (_ IN CASE WHEN k IS NULL THEN [] ELSE [1] END | "
        "MERGE (c)-[:AT_CHECKPOINT]->(k)) "
        "SET c:Circuit REMOVE c:PendingCircuit "
        "RETURN c.id AS id",
        {"id": circuit_id, "model": model, "checkpoint": checkpoint_key},
    )


@builder
def dedupe_circuit_links(circuit_id: str) -> Statement:
    """Delete repeated relationships of one committed circuit, keeping one of each.

    ``MERGE`` matches and creates in separate steps on FalkorDB, so two writers of the same
    circuit racing each other can both create a relationship (seen: 27 of 60 races of four
    writers). Every writer runs this after its writes, so the last one to finish leaves one
    relationship per (type, direction, other node).
    """
    return Statement(
        "dedupe_circuit_links",
        "MATCH (c:Circuit {id: $id})-[r]-(x) "
        "WITH type(r) AS kind, startNode(r) = c AS outgoing, x, collect(r) AS rs "
        "WHERE size(rs) > 1 "
        "UNWIND tail(rs) AS extra DELETE extra RETURN count(*) AS n",
        {"id": circuit_id},
    )


@builder
def dedupe_flows(circuit_id: str) -> Statement:
    """Delete repeated FLOWS of one circuit (same key), for the race described above."""
    return Statement(
        "dedupe_flows",
        "MATCH ()-[r:FLOWS {circuit: $circuit}]->() "
        "WITH r.key AS key, collect(r) AS rs WHERE size(rs) > 1 "
        "UNWIND tail(rs) AS extra DELETE extra RETURN count(*) AS n",
        {"circuit": circuit_id},
    )


@builder
def dedupe_position_flows(circuit_id: str) -> Statement:
    """Delete repeated FLOWS_AT of one circuit (same key), as ``dedupe_flows``."""
    return Statement(
        "dedupe_position_flows",
        "MATCH ()-[r:FLOWS_AT {circuit: $circuit}]->() "
        "WITH r.key AS key, collect(r) AS rs WHERE size(rs) > 1 "
        "UNWIND tail(rs) AS extra DELETE extra RETURN count(*) AS n",
        {"circuit": circuit_id},
    )


@builder
def circuits_with_positioned_flows(after: str, limit: int) -> Statement:
    """A page (by id) of committed circuits with a FLOWS at a position and no FLOWS_AT:
    written before V0005, so the V0006 backfill indexes their positions."""
    return Statement(
        "circuits_with_positioned_flows",
        "MATCH ()-[r:FLOWS]->() WHERE r.position IS NOT NULL AND r.circuit > $after "
        "WITH DISTINCT r.circuit AS id "
        "MATCH (c:Circuit {id: id}) "
        "OPTIONAL MATCH ()-[a:FLOWS_AT]->() WHERE a.circuit = id "
        "WITH id, count(a) AS indexed WHERE indexed = 0 "
        "RETURN id ORDER BY id LIMIT $limit",
        {"after": after, "limit": limit},
    )


@builder
def circuit_exists(circuit_id: str) -> Statement:
    """The id if a committed circuit has it."""
    return Statement(
        "circuit_exists", "MATCH (c:Circuit {id: $id}) RETURN c.id AS id", {"id": circuit_id}
    )


@builder
def merge_validations(circuit_id: str, rows: Sequence[dict[str, Any]]) -> Statement:
    """Validation results keyed by content hash, so re-adding one is a no-op."""
    return Statement(
        "merge_validations",
        "MATCH (c:Circuit {id: $id}) "
        "UNWIND $rows AS row "
        "MERGE (v:ValidationResult {key: row.key}) "
        "ON CREATE SET v.circuit = $id, v.name = row.name, v.body = row.body, "
        "v.created_at = row.created_at "
        "MERGE (v)-[:VALIDATES]->(c) "
        "RETURN count(v) AS n",
        {"id": circuit_id, "rows": list(rows)},
    )


@builder
def validation_bodies(circuit_id: str) -> Statement:
    """JSON bodies of a circuit's validation results."""
    return Statement(
        "validation_bodies",
        "MATCH (v:ValidationResult)-[:VALIDATES]->(c:Circuit {id: $id}) RETURN v.body AS body",
        {"id": circuit_id},
    )


@builder
def set_faithfulness(circuit_id: str, value: float | None) -> Statement:
    """Store the latest faithfulness on the circuit for range filters."""
    return Statement(
        "set_faithfulness",
        "MATCH (c:Circuit {id: $id}) SET c.faithfulness = $value RETURN c.id AS id",
        {"id": circuit_id, "value": value},
    )


@builder
def add_tag(circuit_id: str, tag: str) -> Statement:
    """Add a tag to the circuit's tag list unless present."""
    return Statement(
        "add_tag",
        "MATCH (c:Circuit {id: $id}) "
        "SET c.tags = CASE WHEN $tag IN c.tags THEN c.tags ELSE c.tags + $tag END "
        "RETURN c.id AS id",
        {"id": circuit_id, "tag": tag},
    )


@builder
def clear_alias(alias: str) -> Statement:
    """Detach an alias from whatever circuit it named."""
    return Statement(
        "clear_alias",
        "MATCH (a:Alias {name: $alias})-[old:NAMES]->() DELETE old RETURN count(old) AS n",
        {"alias": alias},
    )


@builder
def point_alias(alias: str, circuit_id: str) -> Statement:
    """Point an alias at a circuit."""
    return Statement(
        "point_alias",
        "MATCH (c:Circuit {id: $id}) "
        "MERGE (a:Alias {name: $alias}) MERGE (a)-[:NAMES]->(c) RETURN c.id AS id",
        {"alias": alias, "id": circuit_id},
    )


@builder
def model_exists(model: str) -> Statement:
    """The model name if any circuit of it is stored."""
    return Statement(
        "model_exists", "MATCH (m:Model {name: $model}) RETURN m.name AS name", {"model": model}
    )


# -- reads -------------------------------------------------------------------------------


@builder
def alias_target(alias: str) -> Statement:
    """The circuit an alias names."""
    return Statement(
        "alias_target",
        "MATCH (:Alias {name: $alias})-[:NAMES]->(c:Circuit) RETURN c.id AS id",
        {"alias": alias},
    )


@builder
def summaries_by_id(circuit_ids: Sequence[str]) -> Statement:
    """Summaries of the given circuits."""
    return Statement(
        "summaries_by_id",
        "MATCH (c:Circuit) WHERE c.id IN $ids "
        "OPTIONAL MATCH (a:Alias)-[:NAMES]->(c) "
        "WITH c, collect(a.name) AS aliases" + SUMMARY_RETURN,
        {"ids": list(circuit_ids)},
    )


@builder
def list_circuits(
    filters: dict[str, Any], first: int, after: str | None, alias_id: str | None
) -> Statement:
    """A page of summaries; each filter is a parameter that is null when unused."""
    params = {
        "model": None,
        "checkpoint": None,
        "task": None,
        "method": None,
        "tag": None,
        "min_faithfulness": None,
        "max_faithfulness": None,
        "min_edges": None,
        "max_edges": None,
        **filters,
        "after": after,
        "alias_id": alias_id,
        "limit": first,
    }
    return Statement(
        "list_circuits",
        "MATCH (c:Circuit) "
        "WHERE ($model IS NULL OR c.model = $model) "
        "AND ($checkpoint IS NULL OR c.checkpoint = $checkpoint) "
        "AND ($task IS NULL OR c.task = $task) "
        "AND ($method IS NULL OR c.method = $method) "
        "AND ($tag IS NULL OR $tag IN c.tags) "
        "AND ($alias_id IS NULL OR c.id = $alias_id) "
        "AND ($min_faithfulness IS NULL OR c.faithfulness >= $min_faithfulness) "
        "AND ($max_faithfulness IS NULL OR c.faithfulness <= $max_faithfulness) "
        "AND ($min_edges IS NULL OR c.n_edges >= $min_edges) "
        "AND ($max_edges IS NULL OR c.n_edges <= $max_edges) "
        "AND ($after IS NULL OR c.id > $after) "
        "WITH c ORDER BY c.id LIMIT $limit "
        "OPTIONAL MATCH (a:Alias)-[:NAMES]->(c) "
        "WITH c, collect(a.name) AS aliases" + SUMMARY_RETURN + "ORDER BY id",
        params,
    )


@builder
def circuit_head(circuit_id: str) -> Statement:
    """Everything of a circuit but its components, edges, labels and validation."""
    return Statement(
        "circuit_head",
        "MATCH (c:Circuit {id: $id})-[:FROM_RUN]->(r:Run) "
        "MATCH (c)-[:OF_MODEL]->(m:Model) "
        "RETURN c.id AS id, c.provenance AS provenance, m.name AS model, "
        "m.architecture AS architecture, m.n_layers AS n_layers, m.n_heads AS n_heads, "
        "m.d_model AS d_model, m.parallel_attn_mlp AS parallel_attn_mlp, "
        "m.attn_only AS attn_only, c.checkpoint AS checkpoint, c.step AS step, "
        "c.revision AS revision, c.task AS task, r.task_spec AS task_spec, "
        "r.corruption AS corruption, r.dataset_hash AS dataset_hash, "
        "r.n_examples AS n_examples, c.method AS method, r.params AS params, "
        "c.ablation AS ablation, c.metric AS metric, c.seed AS seed, "
        "c.positions AS positions",
        {"id": circuit_id},
    )


@builder
def circuit_components(circuit_id: str) -> Statement:
    """The components a circuit contains, with their scores."""
    return Statement("circuit_components", _components_text("CONTAINS"), {"id": circuit_id})


def _components_text(rel_type: str) -> str:
    return (
        f"MATCH (c:Circuit {{id: $id}})-[m:{rel_type}]->(x:Component) "
        "RETURN x.name AS name, x.kind AS kind, x.layer AS layer, x.head AS head, "
        "x.position AS position, x.span AS span, x.hook_name AS hook_name, "
        "m.score AS score, m.in_circuit AS in_circuit"
    )


@builder
def circuit_position_components(circuit_id: str) -> Statement:
    """The positional components of a circuit (CONTAINS_AT), with their scores."""
    return Statement(
        "circuit_position_components", _components_text("CONTAINS_AT"), {"id": circuit_id}
    )


@builder
def circuit_flows(circuit_ids: Sequence[str]) -> Statement:
    """The edges of some circuits (name, ends, receiver, score, position)."""
    return Statement(
        "circuit_flows",
        "MATCH ()-[r:FLOWS]->() WHERE r.circuit IN $ids "
        "RETURN r.circuit AS circuit, r.edge AS edge, r.source AS source, "
        "r.target AS target, r.receiver AS receiver, r.score AS score, r.position AS position",
        {"ids": list(circuit_ids)},
    )


_FLOW_RETURN = (
    "RETURN r.edge AS edge, r.source AS source, r.target AS target, r.receiver AS receiver, "
    "r.score AS score, r.position AS position, r.span AS span"
)


def _at_conditions(var: str, position: int | None, span: str | None) -> list[str]:
    """``var.span = $span`` / ``var.position = $position`` for the filters given: written
    only when given, so that an index on the property can serve them."""
    conds = []
    if span is not None:
        conds.append(f"{var}.span = $span")
    if position is not None:
        conds.append(f"{var}.position = $position")
    return conds


@builder
def position_flows(
    circuit_id: str, position: int | None, span: str | None, component: str | None
) -> Statement:
    """A circuit's positional edges (FLOWS_AT, by the ``flows_at_circuit`` index) at the
    position and span, touching ``component`` (each None: any)."""
    conds = ["r.circuit = $id", *_at_conditions("r", position, span)]
    if component is not None:
        conds.append("(r.source = $component OR r.target = $component)")
    return Statement(
        "position_flows",
        "MATCH ()-[r:FLOWS_AT]->() WHERE " + " AND ".join(conds) + " " + _FLOW_RETURN,
        {"id": circuit_id, "position": position, "span": span, "component": component},
    )


def _component_at(position: int | None, span: str | None) -> str:
    """The model's nodes of a component at the position and span: a seek of the
    ``component_model_name_span`` or ``_position`` index."""
    conds = ["x.model = $model", "x.name = $name", *_at_conditions("x", position, span)]
    return "MATCH (x:Component) WHERE " + " AND ".join(conds) + " "


@builder
def component_position_degrees(
    model: str, component: str, position: int | None, span: str | None
) -> Statement:
    """Per committed circuit, the positional edges at the position touching the component:
    the component's nodes there, and only the FLOWS_AT relationships they have."""
    return Statement(
        "component_position_degrees",
        _component_at(position, span) + "MATCH (x)-[r:FLOWS_AT]-() "
        "WITH r.circuit AS circuit, count(r) AS degree "
        "MATCH (c:Circuit {id: circuit}) RETURN c.id AS circuit, degree",
        {"model": model, "name": component, "position": position, "span": span},
    )


@builder
def component_position_members(
    model: str, component: str, position: int | None, span: str | None
) -> Statement:
    """Committed circuits holding the component at the position, in the circuit."""
    return Statement(
        "component_position_members",
        _component_at(position, span) + "MATCH (c:Circuit)-[m:CONTAINS_AT]->(x) "
        "WHERE m.in_circuit RETURN DISTINCT c.id AS circuit",
        {"model": model, "name": component, "position": position, "span": span},
    )


@builder
def circuits_with_edge_at(
    model: str, source: str, edge: str, position: int | None, span: str | None
) -> Statement:
    """Committed circuits holding the edge at the position: its source's nodes there, and
    their outgoing FLOWS_AT of that edge."""
    return Statement(
        "circuits_with_edge_at",
        _component_at(position, span) + "MATCH (x)-[r:FLOWS_AT]->() WHERE r.edge = $edge "
        # WITH first: FalkorDB then seeks each circuit by id instead of a hash join over a
        # scan of every circuit
        "WITH DISTINCT r.circuit AS circuit "
        "MATCH (c:Circuit {id: circuit}) RETURN c.id AS id",
        {"model": model, "name": source, "edge": edge, "position": position, "span": span},
    )


@builder
def role_labels(model: str, components: Sequence[str] | None = None) -> Statement:
    """Role labels of a model's components (all, or those named)."""
    return Statement(
        "role_labels",
        "MATCH (l:RoleLabel {model: $model}) "
        "WHERE $components IS NULL OR l.component IN $components "
        "RETURN l.component AS component, l.label AS label",
        {"model": model, "components": None if components is None else list(components)},
    )


@builder
def circuits_containing(model: str, component: str) -> Statement:
    """Circuits of a model with the component (any position) in them."""
    return Statement(
        "circuits_containing",
        "MATCH (c:Circuit)-[m:CONTAINS]->(x:Component {model: $model, name: $name}) "
        "WHERE m.in_circuit RETURN DISTINCT c.id AS id",
        {"model": model, "name": component},
    )


@builder
def component_degrees(component: str, circuit_ids: Sequence[str]) -> Statement:
    """How many of each circuit's edges touch the component."""
    return Statement(
        "component_degrees",
        "MATCH ()-[r:FLOWS]->() WHERE r.circuit IN $ids "
        "AND (r.source = $name OR r.target = $name) "
        "RETURN r.circuit AS circuit, count(r) AS degree",
        {"name": component, "ids": list(circuit_ids)},
    )


@builder
def circuits_with_edge(model: str, source: str, edge: str) -> Statement:
    """Circuits of a model containing a canonical edge."""
    return Statement(
        "circuits_with_edge",
        "MATCH (:Component {model: $model, name: $source})-[r:FLOWS]->() "
        "WHERE r.edge = $edge "
        "MATCH (c:Circuit {id: r.circuit}) RETURN DISTINCT c.id AS id",
        {"model": model, "source": source, "edge": edge},
    )


@builder
def shared_edges(circuit_ids: Sequence[str], min_support: int) -> Statement:
    """Per edge of the chosen circuits: its ends and every (circuit, score) pair.

    One row per edge with lists, not one row per relationship: the Python driver decodes
    about 60k rows/s, so a million (circuit, edge) rows would cost seconds on the client.
    Positions of one edge are summed and ``min_importance`` applied by the store, in Python;
    here the relationship count prefilters, an upper bound on the circuits supporting it.
    """
    return Statement(
        "shared_edges",
        "MATCH ()-[r:FLOWS]->() WHERE r.circuit IN $ids "
        "WITH r.edge AS edge, min(r.source) AS source, min(r.target) AS target, "
        "min(r.receiver) AS receiver, collect([r.circuit, r.score]) AS per "
        "WHERE size(per) >= $min_support "
        "RETURN edge, source, target, receiver, per",
        {"ids": list(circuit_ids), "min_support": min_support},
    )


@builder
def circuit_edge_arrays(circuit_ids: Sequence[str]) -> Statement:
    """Each chosen circuit's edge arrays (see ``edge_arrays``); null for older circuits."""
    return Statement(
        "circuit_edge_arrays",
        "MATCH (c:Circuit) WHERE c.id IN $ids "
        "RETURN c.id AS id, c.model AS model, c.edge_keys AS keys, c.edge_scores AS scores, "
        "c.unscored_keys AS unscored",
        {"ids": list(circuit_ids)},
    )


@builder
def circuit_edge_lists(circuit_ids: Sequence[str]) -> Statement:
    """Each chosen circuit's edge names, one row per circuit (diffs, evolution)."""
    return Statement(
        "circuit_edge_lists",
        "MATCH ()-[r:FLOWS]->() WHERE r.circuit IN $ids "
        "RETURN r.circuit AS circuit, collect(r.edge) AS edges",
        {"ids": list(circuit_ids)},
    )


@builder
def circuits_for_evolution(model: str, task: str, method: str) -> Statement:
    """A model's circuits for one task and method, with checkpoint and step."""
    return Statement(
        "circuits_for_evolution",
        "MATCH (c:Circuit {model: $model, task: $task, method: $method}) "
        "RETURN c.id AS id, c.checkpoint AS checkpoint, c.step AS step",
        {"model": model, "task": task, "method": method},
    )


@builder
def motif_matches(
    nodes: Sequence[dict[str, Any]],
    edges: Sequence[tuple[int, int, str | None]],
    model: str | None,
    limit: int,
) -> Statement:
    """Circuits and name bindings matching a motif, at the level of component names.

    ``nodes[i]`` holds the constraints of variable ``n{i}`` (name, kind, layer, label; None
    means any); ``edges`` are (source index, target index, receiver or None). The pattern's
    shape is generated here from indices only; every value is a parameter. Variables bind to
    distinct component names, like the embedded store's VF2 subgraph monomorphism.

    Why it is shaped this way: circuits are visited in id order, one subquery each, and the
    outer ``LIMIT`` stops the visit once ``limit`` circuits have matched. Inside a circuit
    the pattern is driven by its edges, each an index seek on ``FLOWS.circuit`` whose
    endpoints bind the variables (an edge's endpoints are components of its circuit), and
    only variables on no edge are bound through ``CONTAINS``. Binding every variable through
    ``CONTAINS`` first, and joining all FLOWS of the registry on ``circuit`` afterwards, was
    95 s at 10,000 circuits (bench/results/store.md).
    """
    params: dict[str, Any] = {"model": model, "limit": limit}
    inner = _motif_edge_clauses(edges, params)
    on_edges = {i for src, dst, _ in edges for i in (src, dst)}
    inner.extend(
        f"MATCH (c)-[:CONTAINS]->(n{i}:Component)" for i in range(len(nodes)) if i not in on_edges
    )
    conds = _motif_node_conditions(nodes, params)
    labels = _motif_label_clauses(nodes, params)
    names = ", ".join(f"n{i}.name" for i in range(len(nodes)))
    variables = ", ".join(["c"] + [f"n{i}" for i in range(len(nodes))])
    if conds:
        inner.append(f"WITH {variables} WHERE " + " AND ".join(conds))
    inner.extend(labels)
    inner.append(f"RETURN collect(DISTINCT [{names}]) AS found")
    lines = [
        "MATCH (c:Circuit) WHERE ($model IS NULL OR c.model = $model)",
        "WITH c ORDER BY c.id",
        "CALL { WITH c",
        *inner,
        "}",
        "WITH c, found WHERE size(found) > 0",
        # The ORDER BY repeats the order the circuits arrive in: Neo4j sees it is already
        # provided and keeps the LIMIT lazy; FalkorDB needs it to apply LIMIT after the filter.
        "RETURN c.id AS circuit, found ORDER BY circuit LIMIT $limit",
    ]
    return Statement("motif_matches", "\n".join(lines), params)


def _motif_edge_clauses(
    edges: Sequence[tuple[int, int, str | None]], params: dict[str, Any]
) -> list[str]:
    """One FLOWS seek of the circuit per motif edge (it binds both endpoints' variables).

    Adds each edge's receiver constraint to ``params``.
    """
    clauses: list[str] = []
    for k, (src, dst, receiver) in enumerate(edges):
        clauses.append(
            f"MATCH (n{src}:Component)-[e{k}:FLOWS]->(n{dst}:Component) WHERE e{k}.circuit = c.id"
        )
        if receiver is not None:
            params[f"e{k}_receiver"] = receiver
            clauses.append(f"AND e{k}.receiver = $e{k}_receiver")
    return clauses


def _motif_node_conditions(nodes: Sequence[dict[str, Any]], params: dict[str, Any]) -> list[str]:
    """Each variable's name, kind and layer constraints, and distinct names for all pairs.

    The distinctness is what makes the match a monomorphism, as in the embedded store.
    Adds the constraint values to ``params``.
    """
    conds: list[str] = []
    for i, node in enumerate(nodes):
        for field in ("name", "kind", "layer"):
            if node.get(field) is not None:
                params[f"n{i}_{field}"] = node[field]
                conds.append(f"n{i}.{field} = $n{i}_{field}")
        conds.extend(f"n{j}.name <> n{i}.name" for j in range(i))
    return conds


def _motif_label_clauses(nodes: Sequence[dict[str, Any]], params: dict[str, Any]) -> list[str]:
    """One role-label lookup per labelled variable (labels belong to the model's component).

    They come after the other conditions, so they are looked up only for candidate bindings.
    Adds the labels to ``params``.
    """
    clauses: list[str] = []
    for i, node in enumerate(nodes):
        if node.get("label") is not None:
            params[f"n{i}_label"] = node["label"]
            clauses.append(
                f"MATCH (l{i}:RoleLabel) WHERE l{i}.model = c.model "
                f"AND l{i}.component = n{i}.name AND l{i}.label = $n{i}_label"
            )
    return clauses


# -- mechanism embeddings (see ..embedding) ----------------------------------------------
#
# Each circuit node carries its hashed canonical embedding (``embedding``) and role-aligned
# embedding (``role_embedding``), DIMENSIONS floats each, under the vector indexes of
# migration V0003. Neo4j keeps plain float lists and is queried through
# ``db.index.vector.queryNodes``; FalkorDB indexes only ``vecf32`` values and is queried
# through ``db.idx.vector.queryNodes``, so those two statements have a FalkorDB twin each
# (the dialect picks one). A circuit with no weighted edge has null vectors: unindexed.

EMBEDDING = "embedding"
ROLE_EMBEDDING = "role_embedding"
VECTOR_INDEXES = {EMBEDDING: "circuit_embedding", ROLE_EMBEDDING: "circuit_role_embedding"}


def _embedding_property(aligned: bool) -> str:
    return ROLE_EMBEDDING if aligned else EMBEDDING


def _embedding_target(pending: bool) -> str:
    # A new circuit gets its vectors while pending (in its write, before it is visible);
    # refreshes and the backfill set them on committed circuits.
    return "PendingCircuit" if pending else "Circuit"


@builder
def set_embeddings(rows: Sequence[dict[str, Any]], *, pending: bool = False) -> Statement:
    """Set both hashed embeddings of circuits (rows: id, embedding, role_embedding)."""
    return Statement(
        "set_embeddings",
        f"UNWIND $rows AS row MATCH (c:{_embedding_target(pending)} {{id: row.id}}) "
        "SET c.embedding = row.embedding, c.role_embedding = row.role_embedding "
        "RETURN count(c) AS n",
        {"rows": list(rows)},
    )


@builder
def falkor_set_embeddings(rows: Sequence[dict[str, Any]], *, pending: bool = False) -> Statement:
    """``set_embeddings`` for FalkorDB, whose vector index reads only ``vecf32`` values."""
    return Statement(
        "falkor_set_embeddings",
        f"UNWIND $rows AS row MATCH (c:{_embedding_target(pending)} {{id: row.id}}) "
        "SET c.embedding = CASE WHEN row.embedding IS NULL THEN NULL "
        "ELSE vecf32(row.embedding) END, "
        "c.role_embedding = CASE WHEN row.role_embedding IS NULL THEN NULL "
        "ELSE vecf32(row.role_embedding) END "
        "RETURN count(c) AS n",
        {"rows": list(rows)},
    )


@builder
def vector_candidates(aligned: bool, k: int, vector: Sequence[float]) -> Statement:
    """The ``k`` circuits nearest ``vector`` in Neo4j's vector index (approximate, HNSW)."""
    return Statement(
        "vector_candidates",
        "CALL db.index.vector.queryNodes($index, $k, $vector) YIELD node RETURN node.id AS id",
        {"index": VECTOR_INDEXES[_embedding_property(aligned)], "k": k, "vector": list(vector)},
    )


@builder
def falkor_vector_candidates(aligned: bool, k: int, vector: Sequence[float]) -> Statement:
    """The same from FalkorDB's vector index on (:Circuit)."""
    return Statement(
        "falkor_vector_candidates",
        "CALL db.idx.vector.queryNodes('Circuit', $attribute, $k, vecf32($vector)) "
        "YIELD node RETURN node.id AS id",
        {"attribute": _embedding_property(aligned), "k": k, "vector": list(vector)},
    )


@builder
def circuits_holding(model: str, components: Sequence[str]) -> Statement:
    """Circuits of a model holding any of the components (in the circuit or an edge end)."""
    return Statement(
        "circuits_holding",
        "MATCH (c:Circuit)-[:CONTAINS]->(x:Component {model: $model}) "
        "WHERE x.name IN $names RETURN DISTINCT c.id AS id",
        {"model": model, "names": list(components)},
    )


@builder
def models_role_labels(models: Sequence[str]) -> Statement:
    """Role labels of the components of several models."""
    return Statement(
        "models_role_labels",
        "MATCH (l:RoleLabel) WHERE l.model IN $models "
        "RETURN l.model AS model, l.component AS component, l.label AS label",
        {"models": list(models)},
    )


@builder
def circuits_without_embedding(after: str, limit: int) -> Statement:
    """A page (by id) of circuits with no embedding yet: the backfill's work list."""
    return Statement(
        "circuits_without_embedding",
        "MATCH (c:Circuit) WHERE c.id > $after AND c.embedding IS NULL "
        "RETURN c.id AS id ORDER BY id LIMIT $limit",
        {"after": after, "limit": limit},
    )


@builder
def await_index(name: str) -> Statement:
    """Wait until a Neo4j index is online (a new vector index populates in the background)."""
    return Statement("await_index", "CALL db.awaitIndex($name, 300)", {"name": name})


# -- FalkorDB schema (its index syntax differs from Neo4j's; see dialect.py) -------------

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _identifier(value: str) -> str:
    """Labels and property names are spliced into schema text, so they must be plain."""
    if not IDENTIFIER.match(value):
        raise ValueError(f"not a plain Cypher identifier: {value!r}")
    return value


@builder
def falkor_node_index(label: str, properties: Sequence[str]) -> Statement:
    """FalkorDB's ``CREATE INDEX`` for node properties (no name, no IF NOT EXISTS)."""
    props = ", ".join(f"n.{_identifier(p)}" for p in properties)
    return Statement(
        "falkor_node_index", f"CREATE INDEX FOR (n:{_identifier(label)}) ON ({props})", {}
    )


@builder
def falkor_relationship_index(rel_type: str, prop: str) -> Statement:
    """FalkorDB's ``CREATE INDEX`` for a relationship property."""
    return Statement(
        "falkor_relationship_index",
        f"CREATE INDEX FOR ()-[r:{_identifier(rel_type)}]-() ON (r.{_identifier(prop)})",
        {},
    )


@builder
def falkor_vector_index(label: str, prop: str, dimensions: int, similarity: str) -> Statement:
    """FalkorDB's ``CREATE VECTOR INDEX`` (no name, no IF NOT EXISTS, its own options)."""
    return Statement(
        "falkor_vector_index",
        f"CREATE VECTOR INDEX FOR (n:{_identifier(label)}) ON (n.{_identifier(prop)}) "
        f"OPTIONS {{dimension: {int(dimensions)}, "
        f"similarityFunction: '{_identifier(similarity)}'}}",
        {},
    )
