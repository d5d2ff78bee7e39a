"""The GraphQL request context: the shared services, the caller, and fresh DataLoaders."""

from __future__ import annotations

from typing import Any

from strawberry.fastapi import BaseContext
from strawberry.types import Info as StrawberryInfo

from ..auth import Principal, bearer_token, lookup_token
from ..services import ApiServices
from .loaders import Loaders


class ApiContext(BaseContext):
    """What every resolver sees as ``info.context``."""

    def __init__(self, services: ApiServices, principal: Principal) -> None:
        super().__init__()
        self.services = services
        self.principal = principal
        self.loaders = Loaders.create(services)
        self.token_rejected = False
        self._params_checked = False

    async def caller(self) -> Principal:
        """The caller; over WebSockets, a token may come in ``connection_init`` instead.

        Browsers cannot set headers on a WebSocket, so graphql-transport-ws clients send
        ``{"Authorization": "Bearer <token>"}`` as the connection payload.
        """
        if not self.principal.anonymous or self._params_checked:
            return self.principal
        self._params_checked = True
        params = self.connection_params if isinstance(self.connection_params, dict) else {}
        header = params.get("Authorization") or params.get("authorization")
        if not isinstance(header, str):
            return self.principal
        token = bearer_token(header)
        found = None
        if token is not None:
            found = self.services.tokens.get(token) or await self.services.call(
                lookup_token, self.services.engine, token
            )
        if found is None:
            self.token_rejected = True
        else:
            self.services.tokens.put(token or "", found)
            self.principal = found
        return self.principal


Info = StrawberryInfo[ApiContext, Any]
