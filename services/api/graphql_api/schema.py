"""The schema object with its safety limits, and the SDL exported to ``schema/registry.graphql``.

Depth, token, alias and cost limits (``cost.py``) run at parse/validation time, so an abusive
query is refused before any resolver runs. Unexpected exceptions are masked (the client sees a
generic message and the log keeps the traceback); errors meant for the client pass through.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import (
    AddValidationRules,
    MaskErrors,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    ValidationCache,
)
from strawberry.schema.config import StrawberryConfig
from strawberry.schema.schema import DEFAULT_ALLOWED_OPERATION_TYPES
from strawberry.types import ExecutionContext, ExecutionResult
from strawberry.types.graphql import OperationType

from circuitreg import schema as circuit_schema
from circuitreg.settings import Settings

from .cost import query_cost_rule
from .errors import InputError, NotFoundError, PermissionDeniedError
from .mutation import Mutation
from .query import Query
from .subscription import Subscription

SDL_PATH = Path(circuit_schema.__file__).parent / "registry.graphql"
log = logging.getLogger("circuitreg.api.graphql")
CACHED_QUERIES = 512
_CLIENT_ERRORS = (InputError, NotFoundError, PermissionDeniedError)


def _should_mask(error: GraphQLError) -> bool:
    """Mask only unexpected exceptions; parse, validation and permission errors stay readable."""
    original = error.original_error
    if original is None or isinstance(original, GraphQLError):
        return False
    if error.path is None and error.message.startswith("Expected value of type"):
        # Validation of a literal whose scalar parser raised (an Int of 5,000 digits is a
        # ValueError in int()): graphql-core's message names the value; no resolver ran.
        return False
    return not isinstance(original, _CLIENT_ERRORS)


class RegistrySchema(strawberry.Schema):
    """Logs client errors as one line and unexpected ones with their traceback."""

    async def execute(
        self,
        query: str | None,
        variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None,
        root_value: Any | None = None,
        operation_name: str | None = None,
        allowed_operation_types: Iterable[OperationType] | None = None,
        operation_extensions: dict[str, Any] | None = None,
    ) -> ExecutionResult:
        """Queries and mutations only: strawberry would run a subscription POSTed as JSON as
        if it were a query (its resolver then fails); subscriptions go over WebSocket."""
        if allowed_operation_types is None:
            allowed_operation_types = DEFAULT_ALLOWED_OPERATION_TYPES
        allowed = set(allowed_operation_types)
        allowed.discard(OperationType.SUBSCRIPTION)
        return await super().execute(
            query,
            variable_values,
            context_value,
            root_value,
            operation_name,
            allowed,
            operation_extensions,
        )

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        for error in errors:
            original = error.original_error
            if _should_mask(error) and original is not None:
                log.error(
                    "graphql resolver failed",
                    exc_info=(type(original), original, original.__traceback__),
                    extra={"path": error.path},
                )
            else:
                log.info(
                    "graphql request refused", extra={"error": error.message, "path": error.path}
                )


def build_schema(settings: Settings | None = None) -> strawberry.Schema:
    """The executable schema; limits come from ``settings`` (defaults when None)."""
    extensions: list[Any] = []  # instances configured from settings
    if settings is not None:
        extensions = [
            QueryDepthLimiter(max_depth=settings.max_query_depth),
            MaxTokensLimiter(max_token_count=settings.max_query_tokens),
            MaxAliasesLimiter(max_alias_count=settings.max_aliases),
            AddValidationRules([query_cost_rule(settings.max_query_cost)]),
            MaskErrors(should_mask_error=_should_mask, error_message="internal error"),
            # Clients repeat the same query texts; parsing and validating one costs more than
            # resolving it, so both are cached (bounded LRU; keys include the limits above).
            ParserCache(maxsize=CACHED_QUERIES),
            ValidationCache(maxsize=CACHED_QUERIES),
        ]
    return RegistrySchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        extensions=extensions,
        config=StrawberryConfig(auto_camel_case=True),
    )


def schema_sdl() -> str:
    """The schema in SDL, as committed to ``schema/registry.graphql``."""
    return build_schema().as_str() + "\n"


def export_sdl(path: Path = SDL_PATH) -> Path:
    """Write the SDL file (run after changing the schema; a test checks it is current)."""
    path.write_text(schema_sdl(), encoding="utf-8")
    return path
