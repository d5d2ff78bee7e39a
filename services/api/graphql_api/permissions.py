"""Field permissions by token scope (read, write, admin)."""

from __future__ import annotations

from typing import Any, ClassVar

from strawberry.permission import BasePermission

from ..auth import Scope
from .context import Info


class _NeedsScope(BasePermission):
    scope: ClassVar[Scope]

    async def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        principal = await info.context.caller()
        if principal.allows(self.scope):
            return True
        if info.context.token_rejected:
            self.message = "unknown or revoked API token in the connection payload"
            return False
        who = "an anonymous request" if principal.anonymous else f"token {principal.name!r}"
        self.message = f"{who} lacks the {self.scope.value!r} scope this field needs"
        return False


class CanRead(_NeedsScope):
    """Any token; anonymous callers only when ``anonymous_read`` is on."""

    scope = Scope.READ


class CanWrite(_NeedsScope):
    """Tokens with write or admin scope; never anonymous."""

    scope = Scope.WRITE


class CanAdmin(_NeedsScope):
    """Admin tokens only."""

    scope = Scope.ADMIN


#: Typed lists for ``permission_classes`` (strawberry expects ``list[type[BasePermission]]``).
READ: list[type[BasePermission]] = [CanRead]
WRITE: list[type[BasePermission]] = [CanWrite]
ADMIN: list[type[BasePermission]] = [CanAdmin]
