"""The strawberry GraphQL router, its per-request context, and its WebSocket protocols."""

from __future__ import annotations

from strawberry.fastapi import GraphQLRouter
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL

from ..deps import PrincipalDep
from ..services import ApiServices
from .context import ApiContext
from .schema import build_schema


def graphql_router(services: ApiServices) -> GraphQLRouter[ApiContext, None]:
    """``/graphql``: queries and mutations over HTTP, subscriptions over graphql-transport-ws."""

    async def context(principal: PrincipalDep) -> ApiContext:
        return ApiContext(services, principal)

    return GraphQLRouter(
        build_schema(services.settings),
        context_getter=context,
        subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
        graphql_ide="graphiql",
        allow_queries_via_get=False,
    )
