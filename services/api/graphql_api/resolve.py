"""Turning a client's circuit reference (id or alias) into a stored circuit id."""

from __future__ import annotations

from .context import Info
from .errors import InputError
from .inputs import check_text

HEX = frozenset("0123456789abcdef")


async def resolve_circuit_ref(info: Info, field: str, ref: str) -> str | None:
    """The circuit id for an id or alias, or None when nothing has that name."""
    value = check_text(field, ref, required=True)
    assert value is not None
    if looks_like_id(value):
        # Skip the alias lookup (aliases may not look like ids); the summary DataLoader
        # then tells whether the circuit exists, in the same batch as its siblings.
        summary = await info.context.loaders.summary.load(value)
        return None if summary is None else value
    services = info.context.services
    return await services.call(services.store.resolve, value)


def looks_like_id(ref: str) -> bool:
    """A content id: ``c_`` and 32 lowercase hex digits."""
    return len(ref) == 34 and ref.startswith("c_") and all(c in HEX for c in ref[2:])


async def require_circuit(info: Info, field: str, ref: str) -> str:
    """Like ``resolve_circuit_ref`` but a missing circuit is an error naming ``field``."""
    circuit_id = await resolve_circuit_ref(info, field, ref)
    if circuit_id is None:
        raise InputError(field, f"no circuit with id or alias {ref!r}")
    return circuit_id
