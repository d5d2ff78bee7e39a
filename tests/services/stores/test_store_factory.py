"""``open_store`` and ``migrate_store`` pick the backend from the settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from circuitreg.services.stores.common import StoreError
from circuitreg.services.stores.cypher import CypherStore, FalkorSession
from circuitreg.services.stores.embedded import EmbeddedStore
from circuitreg.services.stores.factory import migrate_store, open_store
from circuitreg.services.stores.types import CircuitFilter, GraphStore
from circuitreg.settings import Settings, get_settings

from .conftest import STEP0, circuit


def test_store_factory_defaults_to_embedded_sqlite_in_data_dir() -> None:
    settings = get_settings()
    migrate_store()
    store = open_store()
    try:
        assert isinstance(store, EmbeddedStore) and isinstance(store, GraphStore)
        assert store.url == f"sqlite:///{settings.data_dir / 'registry.sqlite'}"
        cid = store.put_circuit(circuit(STEP0))
        assert [s.id for s in store.list_circuits(CircuitFilter(), first=5).items] == [cid]
    finally:
        store.close()


def test_store_factory_uses_graph_database_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'graph.sqlite'}"
    store = open_store(Settings(graph_database_url=url))
    assert isinstance(store, EmbeddedStore) and store.url == url
    store.close()


def test_store_factory_opens_embedded_falkordb(tmp_path: Path) -> None:
    settings = Settings(graph_backend="falkordb", falkordb_path=tmp_path / "fk")
    migrate_store(settings)
    store = open_store(settings)
    try:
        assert isinstance(store, CypherStore) and isinstance(store.session, FalkorSession)
        store.ping()
        cid = store.put_circuit(circuit(STEP0))
        assert store.resolve(cid) == cid
    finally:
        store.close()
    assert (tmp_path / "fk" / "graph.db").exists()


def test_store_factory_neo4j_needs_a_uri() -> None:
    with pytest.raises(StoreError, match="CIRCUITREG_NEO4J_URI"):
        open_store(Settings(graph_backend="neo4j"))
