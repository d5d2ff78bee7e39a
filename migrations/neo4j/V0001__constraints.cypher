// Uniqueness constraints on every key the store MERGEs on (Community edition: uniqueness
// constraints only). Each statement is idempotent (IF NOT EXISTS).
CREATE CONSTRAINT migration_version IF NOT EXISTS FOR (n:Migration) REQUIRE n.version IS UNIQUE;
CREATE CONSTRAINT model_name IF NOT EXISTS FOR (n:Model) REQUIRE n.name IS UNIQUE;
CREATE CONSTRAINT checkpoint_key IF NOT EXISTS FOR (n:Checkpoint) REQUIRE n.key IS UNIQUE;
CREATE CONSTRAINT task_name IF NOT EXISTS FOR (n:Task) REQUIRE n.name IS UNIQUE;
CREATE CONSTRAINT run_circuit IF NOT EXISTS FOR (n:Run) REQUIRE n.circuit IS UNIQUE;
CREATE CONSTRAINT circuit_id IF NOT EXISTS FOR (n:Circuit) REQUIRE n.id IS UNIQUE;
CREATE CONSTRAINT pending_circuit_id IF NOT EXISTS FOR (n:PendingCircuit) REQUIRE n.id IS UNIQUE;
CREATE CONSTRAINT component_key IF NOT EXISTS FOR (n:Component) REQUIRE n.key IS UNIQUE;
CREATE CONSTRAINT role_label_key IF NOT EXISTS FOR (n:RoleLabel) REQUIRE n.key IS UNIQUE;
CREATE CONSTRAINT alias_name IF NOT EXISTS FOR (n:Alias) REQUIRE n.name IS UNIQUE;
CREATE CONSTRAINT validation_key IF NOT EXISTS FOR (n:ValidationResult) REQUIRE n.key IS UNIQUE;
