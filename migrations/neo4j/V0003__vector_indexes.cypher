// Vector indexes over the circuits' hashed mechanism embeddings (services/stores/embedding.py:
// 256 = DIMENSIONS, the canonical and the role-aligned vector), which similarCircuits asks
// for candidates before ranking them by exact cosine. Neo4j 5.26 syntax; the FalkorDB
// dialect translates it. Neo4j's creation waits until the index is online.
CREATE VECTOR INDEX circuit_embedding IF NOT EXISTS FOR (n:Circuit) ON (n.embedding) OPTIONS {indexConfig: {`vector.dimensions`: 256, `vector.similarity_function`: 'cosine'}};
CREATE VECTOR INDEX circuit_role_embedding IF NOT EXISTS FOR (n:Circuit) ON (n.role_embedding) OPTIONS {indexConfig: {`vector.dimensions`: 256, `vector.similarity_function`: 'cosine'}};
