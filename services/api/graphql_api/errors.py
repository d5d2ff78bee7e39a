"""Errors a client can act on: each names the argument or field that is wrong."""

from __future__ import annotations


class InputError(ValueError):
    """A bad argument; the message starts with the argument's path, e.g. ``filter.minEdges``."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class NotFoundError(LookupError):
    """A referenced object (circuit, job) does not exist."""


class PermissionDeniedError(PermissionError):
    """The caller's token lacks the scope an operation needs."""
