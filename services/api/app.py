"""The application factory: one FastAPI app with the GraphQL endpoint and REST routes.

``create_app(settings, store)`` is what ``circuitreg serve``, the tests and the demo call;
given no store it opens the configured one (``open_store(settings)``). Migrations are not run
here: ``circuitreg serve`` (or ``circuitreg migrate``) runs them before the app starts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from circuitreg.services.artifacts import ArtifactStore
from circuitreg.services.db import make_engine
from circuitreg.services.queue import JobQueue
from circuitreg.services.stores.types import GraphStore
from circuitreg.settings import Settings, get_settings

from .body_limit import BodyLimitMiddleware
from .graphql_api.router import graphql_router
from .observability import Metrics, RequestContextMiddleware, configure_logging
from .routes_circuits import router as circuits_router
from .routes_health import router as health_router
from .services import ApiServices
from .ui import mount_ui


def create_app(settings: Settings | None = None, store: GraphStore | None = None) -> FastAPI:
    """Build the API app; a store given by the caller is not closed when the app stops."""
    settings = settings or get_settings()
    owns_store = store is None
    if store is None:
        from circuitreg.services.stores.factory import open_store

        store = open_store(settings)
    engine = make_engine(settings.resolved_database_url)
    services = ApiServices(
        settings=settings,
        store=store,
        engine=engine,
        queue=JobQueue(
            engine,
            default_max_attempts=settings.job_max_attempts,
            lease_seconds=settings.worker_lease_seconds,
        ),
        artifacts=ArtifactStore(settings.resolved_artifact_url),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if owns_store:
            services.store.close()
        engine.dispose()

    configure_logging(settings.log_level)
    app = FastAPI(
        title="Circuit Registry API",
        version="1",
        description="Query, import and export transformer circuits; submit discovery jobs.",
        lifespan=lifespan,
    )
    app.state.services = services
    app.state.metrics = Metrics()
    app.include_router(health_router)
    app.include_router(circuits_router)
    app.include_router(graphql_router(services), prefix="/graphql", include_in_schema=False)
    mount_ui(app)  # the circuit viewer at /ui (services/api/ui)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID"],
        )
    app.add_middleware(
        BodyLimitMiddleware,
        max_request_bytes=settings.max_request_bytes,
        max_upload_bytes=settings.max_upload_bytes,
    )
    app.add_middleware(RequestContextMiddleware, metrics=app.state.metrics)
    return app
