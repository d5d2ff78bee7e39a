// Lookup indexes for the store's reads: circuit filters, components by name, the FLOWS
// relationships of chosen circuits (shared subcircuits, diffs, paths) and role labels.
CREATE INDEX circuit_model IF NOT EXISTS FOR (n:Circuit) ON (n.model);
CREATE INDEX circuit_task IF NOT EXISTS FOR (n:Circuit) ON (n.task);
CREATE INDEX circuit_method IF NOT EXISTS FOR (n:Circuit) ON (n.method);
CREATE INDEX component_model_name IF NOT EXISTS FOR (n:Component) ON (n.model, n.name);
CREATE INDEX role_label_model IF NOT EXISTS FOR (n:RoleLabel) ON (n.model);
CREATE INDEX flows_circuit IF NOT EXISTS FOR ()-[r:FLOWS]-() ON (r.circuit);
CREATE INDEX flows_edge IF NOT EXISTS FOR ()-[r:FLOWS]-() ON (r.edge);
