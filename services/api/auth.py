"""API tokens: created once, stored only as SHA-256 hashes, each with read/write/admin scope.

Scopes are ordered: ``admin`` implies ``write`` implies ``read``. A request carries
``Authorization: Bearer <token>``; without one it may read only when
``settings.anonymous_read`` is on, and it can never write.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError

from circuitreg.services.db import ApiToken, session_factory
from circuitreg.services.db.base import utcnow

TOKEN_PREFIX = "crg_"


class Scope(StrEnum):
    """What a token may do; each scope includes the ones before it."""

    READ = "read"
    WRITE = "write"
    ADMIN = "admin"


_RANK = {Scope.READ: 1, Scope.WRITE: 2, Scope.ADMIN: 3}


class TokenError(ValueError):
    """A token that cannot be created (duplicate name, empty name)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a token's name and scope, or anonymous (``scope`` None or read)."""

    name: str
    scope: Scope | None

    @property
    def anonymous(self) -> bool:
        return self.name == "anonymous"

    def allows(self, needed: Scope) -> bool:
        """Whether this caller holds ``needed`` (writes are never anonymous)."""
        if self.scope is None:
            return False
        if self.anonymous and needed is not Scope.READ:
            return False
        return _RANK[self.scope] >= _RANK[needed]


NOBODY = Principal(name="anonymous", scope=None)
ANONYMOUS_READER = Principal(name="anonymous", scope=Scope.READ)


def hash_token(token: str) -> str:
    """The SHA-256 hex digest stored instead of the token."""
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(engine: Engine, name: str, scope: Scope | str) -> str:
    """Create a token and return it; only its hash is stored, so this is the one chance to see it.

    A token of scope ``s`` is stored with every scope it implies, so the row reads plainly.
    """
    scope = Scope(scope)
    if not name.strip():
        raise TokenError("token name must not be empty")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    implied = [s.value for s in Scope if _RANK[s] <= _RANK[scope]]
    with session_factory(engine)() as session:
        session.add(ApiToken(name=name, token_hash=hash_token(token), scopes=implied))
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            raise TokenError(f"a token named {name!r} already exists") from None
    return token


def revoke_token(engine: Engine, name: str) -> bool:
    """Revoke the live token called ``name``; False if there is none. Caches forget it within
    their TTL (10 s by default)."""
    with session_factory(engine)() as session:
        row = session.scalars(
            select(ApiToken).where(ApiToken.name == name, ApiToken.revoked_at.is_(None))
        ).first()
        if row is None:
            return False
        row.revoked_at = utcnow()
        session.commit()
    return True


@dataclass(frozen=True)
class TokenInfo:
    """What ``token list`` shows of a token: never the token, which is not stored."""

    name: str
    scope: str
    created_at: datetime
    revoked_at: datetime | None


def list_tokens(engine: Engine) -> list[TokenInfo]:
    """Every token, live and revoked, oldest first."""
    with session_factory(engine)() as session:
        rows = session.scalars(select(ApiToken).order_by(ApiToken.created_at, ApiToken.id)).all()
        return [
            TokenInfo(row.name, _highest(row.scopes), row.created_at, row.revoked_at)
            for row in rows
        ]


def _highest(scopes: list[str]) -> str:
    held = [Scope(s) for s in scopes if s in {m.value for m in Scope}]
    return max(held, key=_RANK.__getitem__).value if held else "none"


def lookup_token(engine: Engine, token: str) -> Principal | None:
    """The principal of a live (not revoked) token, or None."""
    with session_factory(engine)() as session:
        row = session.scalars(
            select(ApiToken).where(
                ApiToken.token_hash == hash_token(token), ApiToken.revoked_at.is_(None)
            )
        ).first()
    if row is None:
        return None
    held = [Scope(s) for s in row.scopes if s in {m.value for m in Scope}]
    return Principal(name=row.name, scope=max(held, key=_RANK.__getitem__) if held else None)


def bearer_token(header: str | None) -> str | None:
    """The token inside an ``Authorization: Bearer ...`` header value."""
    if not header:
        return None
    kind, _, value = header.partition(" ")
    if kind.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
