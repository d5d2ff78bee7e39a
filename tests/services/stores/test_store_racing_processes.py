"""Eight processes write the same circuit at the same moment: exactly one circuit and one copy
of every node and relationship remain (uniqueness constraints and idempotent MERGE / INSERT,
not a clean-up afterwards). Real processes, each with its own driver or connection pool."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from circuitreg.schema import CircuitDocument
from circuitreg.services.stores.cypher import CypherStore
from circuitreg.services.stores.embedded import EmbeddedStore
from circuitreg.services.stores.types import CircuitFilter, GraphStore

from .conftest import corpus, postgres_clean_url

WRITERS = 8

# Each writer opens the store through the settings factory, as a worker does, waits for the
# start signal (a file), writes, and prints the circuit id.
WRITER = """
import json, sys, time
from pathlib import Path
from circuitreg.schema import CircuitDocument
from circuitreg.services.stores.factory import open_store
from circuitreg.settings import Settings
settings = Settings(**json.loads(sys.argv[1]))
doc = CircuitDocument.model_validate_json(Path(sys.argv[2]).read_text())
store = open_store(settings)
store.ping()
print("ready", flush=True)
go = Path(sys.argv[3])
while not go.exists():
    time.sleep(0.001)
print(store.put_circuit(doc, job_id="race"), flush=True)
store.close()
"""


def _settings(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    data = {"data_dir": str(tmp_path / "data")}
    if backend == "sqlite":
        path = tmp_path / "graph.sqlite"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return {**data, "database_url": f"sqlite:///{path}"}
    if backend == "postgres":
        return {**data, "database_url": postgres_clean_url(request)}
    store = request.getfixturevalue("connect_neo4j")()
    try:
        store.wipe()
        store.migrate()
    finally:
        store.close()
    return {**data, "graph_backend": "neo4j", "neo4j_uri": request.getfixturevalue("neo4j_uri")}


def _open(settings: dict[str, Any], request: pytest.FixtureRequest) -> GraphStore:
    if settings.get("graph_backend") == "neo4j":
        store: GraphStore = request.getfixturevalue("connect_neo4j")()
        return store
    return EmbeddedStore(settings["database_url"])


def _race(settings: dict[str, Any], doc: CircuitDocument, tmp_path: Path) -> list[str]:
    doc_path, go = tmp_path / "doc.json", tmp_path / "go"
    doc_path.write_text(doc.model_dump_json())
    args = [sys.executable, "-c", WRITER, json.dumps(settings), str(doc_path), str(go)]
    writers = [
        subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(WRITERS)
    ]
    try:
        for writer in writers:  # all connected before any writes
            assert writer.stdout is not None
            line = writer.stdout.readline()
            assert line == "ready\n", line + (writer.stderr.read() if writer.stderr else "")
        go.touch()
        outputs = [writer.communicate(timeout=120) for writer in writers]
    finally:
        for writer in writers:
            writer.kill()
    assert all(w.returncode == 0 for w in writers), [err[-2000:] for _, err in outputs]
    return [out.strip() for out, _ in outputs]


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "neo4j"]
)
def test_store_racing_writer_processes_leave_one_copy(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    doc = corpus()["step1000"]
    settings = _settings(backend, request, tmp_path)
    assert set(_race(settings, doc, tmp_path)) == {doc.id}
    store = _open(settings, request)
    try:
        page = store.list_circuits(CircuitFilter(), first=10)
        assert [s.id for s in page.items] == [doc.id]
        got = store.get_circuit(doc.id)
        assert got is not None
        assert sorted(e.key for e in got.edges) == sorted(e.key for e in doc.circuit_edges())
        assert len(got.validation) == len(doc.validation)
        if isinstance(store, CypherStore):
            _assert_no_duplicate_in_the_graph(store, doc)
    finally:
        store.close()


def _assert_no_duplicate_in_the_graph(store: CypherStore, doc: CircuitDocument) -> None:
    """No two relationships of one type join the same nodes with the same properties, and
    every node key is held by one node (what a constraint-less MERGE race would break)."""
    run = store.session.run
    duplicated = run(
        "MATCH (a)-[r]->(b) WITH a, b, type(r) AS t, properties(r) AS p, count(*) AS n "
        "WHERE n > 1 RETURN t, n LIMIT 5"
    )
    assert duplicated == []
    flows = run("MATCH ()-[r:FLOWS {circuit: $id}]->() RETURN count(r) AS n", {"id": doc.id})
    assert flows == [{"n": len(doc.circuit_edges())}]
    for label, key in (("Circuit", "id"), ("Component", "key"), ("Run", "circuit")):
        rows = run(f"MATCH (n:{label}) WITH n.{key} AS k, count(*) AS c WHERE c > 1 RETURN k")
        assert rows == [], label
    assert run("MATCH (n:PendingCircuit) RETURN count(n) AS n") == [{"n": 0}]
