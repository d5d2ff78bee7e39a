"""FastAPI dependencies as typed aliases: services, store, settings, and the caller's scope."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, status
from starlette.requests import HTTPConnection

from circuitreg.services.stores.types import GraphStore
from circuitreg.settings import Settings

from .auth import ANONYMOUS_READER, NOBODY, Principal, Scope, bearer_token, lookup_token
from .services import ApiServices


def get_services(conn: HTTPConnection) -> ApiServices:
    """The app's shared services (set by ``create_app``)."""
    services: ApiServices = conn.app.state.services
    return services


ServicesDep = Annotated[ApiServices, Depends(get_services)]


def get_store(services: ServicesDep) -> GraphStore:
    return services.store


def get_app_settings(services: ServicesDep) -> Settings:
    return services.settings


StoreDep = Annotated[GraphStore, Depends(get_store)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]


async def get_principal(conn: HTTPConnection, services: ServicesDep) -> Principal:
    """Who is calling, from ``Authorization: Bearer``; a bad or unknown token is a 401."""
    header = conn.headers.get("authorization")
    if header is None:
        return ANONYMOUS_READER if services.settings.anonymous_read else NOBODY
    token = bearer_token(header)
    if token is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "Authorization header must be 'Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    principal = services.tokens.get(token)
    if principal is None:
        principal = await services.call(lookup_token, services.engine, token)
        if principal is not None:
            services.tokens.put(token, principal)
    if principal is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "unknown or revoked API token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require(scope: Scope) -> object:
    """A dependency refusing callers without ``scope`` (401 anonymous, 403 too weak)."""

    async def check(principal: PrincipalDep) -> Principal:
        if principal.allows(scope):
            return principal
        if principal.anonymous:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                f"this needs a token with the {scope.value!r} scope",
                headers={"WWW-Authenticate": "Bearer"},
            )
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, f"token {principal.name!r} lacks the {scope.value!r} scope"
        )

    return Depends(check)


ReaderDep = Annotated[Principal, require(Scope.READ)]
WriterDep = Annotated[Principal, require(Scope.WRITE)]
