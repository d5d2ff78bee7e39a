"""Discovery methods as the workers publish them (``schema/methods.json``).

The API cannot import the method registry (it imports torch), so it reads the catalogue the
workers generate; a test keeps that file equal to the registry. ``check_discovery`` refuses
an unknown method or parameter at submission, naming the field, instead of queuing a job
that can only fail on a GPU later.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

import strawberry
from strawberry.scalars import JSON

from .errors import InputError


@lru_cache(maxsize=1)
def load_catalogue() -> dict[str, dict[str, Any]]:
    """Methods by name, read once from the packaged ``methods.json``."""
    text = resources.files("circuitreg.schema").joinpath("methods.json").read_text()
    return {str(m["name"]): m for m in json.loads(text)}


@strawberry.type(description="One option of a discovery method.")
class MethodOption:
    name: str
    type: str
    default: JSON | None
    help: str


@strawberry.type(description="A discovery method the workers run.")
class DiscoveryMethod:
    name: str
    description: str
    options: list[MethodOption]

    @classmethod
    def of(cls, entry: dict[str, Any]) -> DiscoveryMethod:
        return cls(
            name=str(entry["name"]),
            description=str(entry["description"]),
            options=[
                MethodOption(
                    name=str(o["name"]), type=str(o["type"]), default=o["default"], help=o["help"]
                )
                for o in entry["options"]
            ],
        )


def list_methods() -> list[DiscoveryMethod]:
    """Every method, sorted by name."""
    return [DiscoveryMethod.of(entry) for _, entry in sorted(load_catalogue().items())]


def check_discovery(method: str, params: dict[str, Any]) -> None:
    """Refuse an unknown method, or a parameter the method does not take."""
    methods = load_catalogue()
    if method not in methods:
        raise InputError("input.method", f"unknown method {method!r}; known: {sorted(methods)}")
    known = {str(o["name"]) for o in methods[method]["options"]}
    unknown = sorted(set(params) - known)
    if unknown:
        raise InputError(
            "input.params", f"method {method!r} takes no {unknown}; its options: {sorted(known)}"
        )
