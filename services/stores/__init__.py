"""Circuit stores: one ``GraphStore`` contract, embedded (SQL), Neo4j and FalkorDB backends.

Open the configured store with ``circuitreg.services.stores.factory.open_store(settings)``
and create its schema with ``migrate_store(settings)``; the contract and its result types
are in ``types``, the typed errors (``StoreError``, ``UnknownCircuitError``,
``UnknownModelError``) in ``common``.
"""
