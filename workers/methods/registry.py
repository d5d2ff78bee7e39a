"""The method registry: every discovery method by name, with its config class.

Methods are registered in one place, ``_register_builtin``, so ``circuitreg methods``, the
worker and the API all see the same list. Registering a name twice is an error (two
implementations answering to one name would make stored circuits ambiguous). Other modules
(mask pruning, patching) add themselves to ``BUILTIN_MODULES`` below; each exposes a
``METHOD`` tuple ``(name, function, config class, description)``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from circuitreg.workers.methods.base import ConfigError, Method, MethodConfig


class RegistryError(KeyError):
    """An unknown or duplicate method name."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class MethodInfo:
    """A registered method."""

    name: str
    fn: Method
    config_cls: type[MethodConfig]
    description: str

    def config(self, params: Mapping[str, Any] | None = None) -> MethodConfig:
        """Build this method's config from parameters (strings are converted)."""
        return self.config_cls.from_dict(dict(params or {}))

    def describe(self) -> dict[str, Any]:
        """Name, description and options, JSON-safe."""
        return {
            "name": self.name,
            "description": self.description,
            "options": self.config_cls.options(),
        }


class MethodRegistry:
    """Methods by name; refuses duplicates."""

    def __init__(self) -> None:
        self._methods: dict[str, MethodInfo] = {}

    def register(
        self, name: str, fn: Method, config_cls: type[MethodConfig], description: str
    ) -> None:
        """Add a method; ``RegistryError`` if the name is taken or disagrees with the config."""
        if name in self._methods:
            raise RegistryError(f"method {name!r} is already registered")
        if config_cls.method_name != name:
            raise RegistryError(
                f"method {name!r} uses config {config_cls.__name__}, "
                f"whose method_name is {config_cls.method_name!r}"
            )
        self._methods[name] = MethodInfo(name, fn, config_cls, description)

    def get(self, name: str) -> MethodInfo:
        """The method called ``name``; ``RegistryError`` lists the known ones."""
        try:
            return self._methods[name]
        except KeyError:
            raise RegistryError(
                f"unknown method {name!r}; known methods: {', '.join(sorted(self._methods))}"
            ) from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._methods)

    def describe(self) -> list[dict[str, Any]]:
        """Every method with its options (for the CLI, the worker and the API)."""
        return [self._methods[n].describe() for n in self.names()]

    def config_from_dict(self, data: Mapping[str, Any]) -> MethodConfig:
        """Rebuild a config from ``to_dict`` output (its ``method`` key picks the class)."""
        if "method" not in data:
            raise ConfigError("serialised config has no 'method' key")
        return self.get(str(data["method"])).config(data)


# Optional method modules written elsewhere; each defines METHOD = (name, fn, cls, text).
BUILTIN_MODULES = (
    "circuitreg.workers.methods.masks",
    "circuitreg.workers.methods.patching",
)


def _register_builtin(registry: MethodRegistry) -> None:
    from circuitreg.workers.methods.acdc import ACDCConfig, acdc
    from circuitreg.workers.methods.eap import EAPConfig, eap
    from circuitreg.workers.methods.eap_ig import EAPIGConfig, eap_ig

    registry.register(
        "eap", eap, EAPConfig, "Edge attribution patching: one backward pass scores all edges"
    )
    registry.register(
        "eap_ig", eap_ig, EAPIGConfig, "EAP with integrated gradients (inputs or activations)"
    )
    registry.register(
        "acdc", acdc, ACDCConfig, "ACDC: greedy exact pruning of edges whose removal costs < tau"
    )
    for module_name in BUILTIN_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        for entry in _entries(module):
            registry.register(*entry)


def _entries(module: Any) -> list[tuple[str, Method, type[MethodConfig], str]]:
    entries = getattr(module, "METHODS", None)
    if entries is None:
        single = getattr(module, "METHOD", None)
        entries = [] if single is None else [single]
    return list(entries)


_DEFAULT: MethodRegistry | None = None


def default_registry() -> MethodRegistry:
    """The process-wide registry with every built-in method."""
    global _DEFAULT
    if _DEFAULT is None:
        registry = MethodRegistry()
        _register_builtin(registry)
        _DEFAULT = registry
    return _DEFAULT
