// Positions (issue 18): positional edges are FLOWS_AT relationships between the components
// at their position and span, positional components CONTAINS_AT memberships. "Edges at END"
// in a circuit seeks its FLOWS_AT by circuit; "this head at S2" and "this edge at position
// 7" seek the component's nodes at that span or position (model, name, span | position) and
// expand only their FLOWS_AT. Neo4j's composite indexes hold nodes that have every
// property, so positional nodes only.
CREATE INDEX flows_at_circuit IF NOT EXISTS FOR ()-[r:FLOWS_AT]-() ON (r.circuit);
CREATE INDEX component_model_name_span IF NOT EXISTS FOR (n:Component) ON (n.model, n.name, n.span);
CREATE INDEX component_model_name_position IF NOT EXISTS FOR (n:Component) ON (n.model, n.name, n.position);
