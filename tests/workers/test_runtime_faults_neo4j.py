"""A circuit write cut short by killing Neo4j leaves nothing behind; the retried job stores it once.

The Cypher store writes one circuit as one transaction (``Neo4jSession.run_many``): the model,
its components, the pending circuit, its memberships and its edges in UNWIND batches, and
last the statement that relabels it :Circuit. Here a worker (in this process, as in
test_methods_registry_plugin) runs a real discovery job against a private Neo4j server, which
is SIGKILLed (as a crash or an OOM kill would end it) after the first batch of edges has gone
to the server and before the second. The server is then restarted on the same data directory
and port; the job's retry, in the same worker with the same store, must store the circuit.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from neo4j import GraphDatabase

from circuitreg.services.artifacts import ArtifactStore
from circuitreg.services.db.base import make_engine
from circuitreg.services.queue import JobQueue
from circuitreg.services.stores.cypher import CypherStore, Neo4jSession, writes
from circuitreg.services.stores.cypher import queries as q
from circuitreg.services.stores.types import CircuitFilter
from circuitreg.workers.runtime import JobExecutor, Worker, WorkerOptions

from ..conftest import _local_neo4j, _unavailable
from .runtime_support import discovery_spec, migrate, tiny_toy_checkpoint

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("one_thread")]

AUTH = ("neo4j", "")  # the test server runs without authentication
#: The text of every batch of a circuit's edges (the same for each batch).
FLOWS = q.create_flows("", []).text
#: Rows per UNWIND batch in this test, so that the job's dozen edges take several batches.
BATCH = 4

Hook = Callable[[Any, str, Mapping[str, Any]], None]


class PrivateNeo4j:
    """A Neo4j server of this test alone (it gets killed), restartable on its data and port."""

    def __init__(self, home: Path) -> None:
        self.local = _local_neo4j()
        self.home = home
        self.server = self._start(None)
        self.uri = self.server.uri
        self.port = int(self.uri.rsplit(":", 1)[1])

    def _start(self, port: int | None) -> Any:
        try:
            return self.local.start_local_neo4j(self.home, heap="512m", pagecache_mib=64, port=port)
        except self.local.Neo4jUnavailable as exc:
            _unavailable(str(exc))

    def kill(self) -> None:
        """SIGKILL the java process and wait for it to be gone."""
        self.server.process.kill()
        self.server.process.wait(30)
        self.server.stop()  # closes its pipe and log; the process is dead already

    def restart(self) -> None:
        """A new server on the same data directory (it recovers it) and the same port."""
        self.server = self._start(self.port)
        assert self.server.uri == self.uri

    def close(self) -> None:
        """Its data is thrown away: a kill is quicker than a clean shutdown."""
        if self.server.process.poll() is None:
            self.kill()


@pytest.fixture
def private_neo4j(tmp_path: Path) -> Iterator[PrivateNeo4j]:
    server = PrivateNeo4j(tmp_path / "neo4j")
    try:
        yield server
    finally:
        server.close()


class _HookedTx:
    def __init__(self, tx: Any, hook: Hook) -> None:
        self._tx, self._hook = tx, hook

    def run(self, query: str, parameters: Mapping[str, Any] | None = None, **kw: Any) -> Any:
        self._hook(self._tx, query, parameters or {})
        return self._tx.run(query, parameters, **kw)


class _HookedSession:
    def __init__(self, session: Any, hook: Hook) -> None:
        self._session, self._hook = session, hook

    def __enter__(self) -> _HookedSession:
        self._session.__enter__()
        return self

    def __exit__(self, *exc: object) -> Any:
        return self._session.__exit__(*exc)

    def execute_write(self, work: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        def hooked(tx: Any, *a: Any, **k: Any) -> Any:
            return work(_HookedTx(tx, self._hook), *a, **k)

        return self._session.execute_write(hooked, *args, **kwargs)


class HookedDriver:
    """The real driver; ``hook(tx, query, params)`` runs before each statement of a write
    transaction is sent (``Neo4jSession.run_many`` writes a circuit in one)."""

    def __init__(self, driver: Any, hook: Hook) -> None:
        self._driver, self._hook = driver, hook

    def session(self, **kwargs: Any) -> _HookedSession:
        return _HookedSession(self._driver.session(**kwargs), self._hook)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._driver, name)


@dataclass
class KillMidWrite:
    """Kills the server just before the second batch of a circuit's edges is sent."""

    neo4j: PrivateNeo4j
    flow_batches: int = 0
    circuit_id: str | None = None
    #: In the open transaction just before the kill: pending circuits and edges of the circuit.
    seen_in_transaction: tuple[int, int] | None = None
    killed: bool = False
    statements: list[str] = field(default_factory=list)

    def __call__(self, tx: Any, query: str, params: Mapping[str, Any]) -> None:
        if self.killed:
            return
        self.statements.append(query)
        if query != FLOWS:
            return
        self.flow_batches += 1
        if self.flow_batches < 2:
            return
        self.circuit_id = str(params["circuit"])
        pending = tx.run(
            "MATCH (c:PendingCircuit {id: $id}) RETURN count(c) AS n", {"id": self.circuit_id}
        ).single()["n"]
        flows = tx.run(
            "MATCH ()-[r:FLOWS {circuit: $id}]->() RETURN count(r) AS n", {"id": self.circuit_id}
        ).single()["n"]
        self.seen_in_transaction = (pending, flows)
        self.killed = True
        self.neo4j.kill()


def graph_counts(uri: str) -> Counter[str]:
    """Every node by its labels and every relationship by its type, on a fresh connection."""
    with GraphDatabase.driver(uri, auth=AUTH) as driver:
        nodes, _, _ = driver.execute_query("MATCH (n) RETURN labels(n) AS l, count(*) AS n")
        rels, _, _ = driver.execute_query("MATCH ()-[r]->() RETURN type(r) AS t, count(*) AS n")
    counts: Counter[str] = Counter()
    for row in nodes:
        counts["(:" + ":".join(sorted(row["l"])) + ")"] += row["n"]
    for row in rels:
        counts["[:" + row["t"] + "]"] += row["n"]
    return counts


def circuit_footprint(uri: str, circuit_id: str) -> dict[str, int]:
    """What the graph holds of one circuit: its nodes by id, the run, its edges and links."""
    queries = {
        "circuit": "MATCH (c:Circuit {id: $id}) RETURN count(c) AS n",
        "pending": "MATCH (c:PendingCircuit {id: $id}) RETURN count(c) AS n",
        "any node": "MATCH (n) WHERE n.id = $id OR n.circuit = $id RETURN count(n) AS n",
        "run": "MATCH (r:Run {circuit: $id}) RETURN count(r) AS n",
        "flows": "MATCH ()-[r:FLOWS {circuit: $id}]->() RETURN count(r) AS n",
        "flow keys": "MATCH ()-[r:FLOWS {circuit: $id}]->() RETURN count(DISTINCT r.key) AS n",
        "contains": "MATCH (:Circuit {id: $id})-[m:CONTAINS]->() RETURN count(m) AS n",
        "orphans": "MATCH (n) WHERE NOT n:Migration AND NOT (n)--() RETURN count(n) AS n",
    }
    with GraphDatabase.driver(uri, auth=AUTH) as driver:
        return {
            name: int(driver.execute_query(text, {"id": circuit_id})[0][0]["n"])
            for name, text in queries.items()
        }


def small_batches(items: Sequence[Any], size: int = BATCH) -> list[list[Any]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def test_neo4j_killed_mid_circuit_write_leaves_nothing_and_retry_stores_once(
    private_neo4j: PrivateNeo4j,
    postgres_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(writes, "batches", small_batches)
    migrate(postgres_url)
    queue = JobQueue(make_engine(postgres_url), retry_base_seconds=0.2)
    kill = KillMidWrite(private_neo4j)
    # As ``Neo4jSession.connect`` opens it, but the driver gives up on a dead server after 0.5 s
    # (its default is 30 s of retries, which only make the test slower).
    driver = GraphDatabase.driver(
        private_neo4j.uri,
        auth=AUTH,
        notifications_min_severity="OFF",
        max_transaction_retry_time=0.5,
    )
    store = CypherStore(Neo4jSession(HookedDriver(driver, kill)))
    artifacts = tmp_path / "artifacts"
    executor = JobExecutor(store, device="cpu", artifacts=ArtifactStore(str(artifacts)))
    try:
        store.migrate()
        before = graph_counts(private_neo4j.uri)
        job = queue.enqueue(discovery_spec(str(tiny_toy_checkpoint(tmp_path / "toy")), seed=7))

        def run_once() -> int:
            options = WorkerOptions(worker_id="w", once=True, poll_seconds=0.01)
            return Worker(queue, executor, options).run()

        # First attempt: the server dies mid-write; the worker records a failed attempt.
        assert run_once() == 1
        assert kill.killed, f"the write never reached a second batch of edges: {kill.statements}"
        circuit_id = kill.circuit_id
        assert circuit_id is not None
        pending, flows_so_far = kill.seen_in_transaction or (0, 0)
        assert pending == 1 and flows_so_far == BATCH, "the kill did not land mid-write"
        assert kill.statements[-1] == FLOWS and kill.statements.count(FLOWS) == 2
        assert any("PendingCircuit" in s for s in kill.statements[:-2])
        assert q.commit_circuit("", "", None).text not in kill.statements
        failed = queue.get(job.id)
        assert failed is not None
        assert (failed.status, failed.attempts, failed.lease_expires_at) == ("queued", 1, None)
        headline = (failed.error or "").splitlines()[0]
        assert headline.startswith(("ServiceUnavailable:", "SessionExpired:")), failed.error
        assert queue.events(job.id)[-1].event == "retry"
        assert not list(artifacts.rglob("*.safetensors")), "the dense scores were not undone"

        # The restarted server recovers its data: nothing of the circuit, nothing else added.
        private_neo4j.restart()
        assert graph_counts(private_neo4j.uri) == before
        assert circuit_footprint(private_neo4j.uri, circuit_id) == dict.fromkeys(
            ("circuit", "pending", "any node", "run", "flows", "flow keys", "contains", "orphans"),
            0,
        )

        # The retry, in the same worker with the same store (its driver reconnects).
        time.sleep(max(0.0, (failed.run_after - datetime.now(UTC)).total_seconds()))
        assert run_once() == 1
        done = queue.get(job.id)
        assert done is not None and done.status == "succeeded", done and done.error
        assert done.attempts == 2 and done.result is not None
        assert done.result["circuit_id"] == circuit_id  # the same content, the same id
        n_edges = int(done.result["n_edges"])
        assert math.ceil(n_edges / BATCH) >= 2

        stored = store.get_circuit(circuit_id)
        assert stored is not None and len(stored.circuit_edges()) == n_edges
        assert [s.id for s in store.list_circuits(CircuitFilter(), first=10).items] == [circuit_id]
        footprint = circuit_footprint(private_neo4j.uri, circuit_id)
        assert footprint == {
            "circuit": 1,
            "pending": 0,
            "any node": 2,  # the circuit and its run
            "run": 1,
            "flows": n_edges,
            "flow keys": n_edges,
            "contains": len(stored.components),
            "orphans": 0,
        }
        after = graph_counts(private_neo4j.uri)
        assert after["(:Circuit)"] == 1 and after["[:FLOWS]"] == n_edges
        assert len(list(artifacts.rglob("*.safetensors"))) == 1
    finally:
        executor.store.close()
        queue.engine.dispose()
