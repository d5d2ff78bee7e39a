"""The method registry: every discovery method by name, with its config class.

A method declares itself where it is written, with ``@register_method("eap", config=...,
description=...)``; ``BUILTIN_MODULES`` lists the modules that hold methods, in one place, so
``circuitreg methods``, the worker and (through ``schema/methods.json``) the API all see the
same list. Adding a method is one new module and one line in that list. A name registered
twice is refused (two implementations answering to one name would make stored circuits
ambiguous).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TypeVar

from circuitreg.registry import Registry
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


class MethodRegistry(Registry[MethodInfo]):
    """Methods by name; refuses duplicates."""

    def __init__(self) -> None:
        super().__init__("method", error=RegistryError)

    def register(
        self, name: str, fn: Method, config_cls: type[MethodConfig], description: str
    ) -> None:
        """Add a method; ``RegistryError`` if the name is taken or disagrees with the config."""
        if config_cls.method_name != name:
            raise RegistryError(
                f"method {name!r} uses config {config_cls.__name__}, "
                f"whose method_name is {config_cls.method_name!r}"
            )
        self.add(name, MethodInfo(name, fn, config_cls, description))

    def load(self, module: ModuleType) -> list[str]:
        """Register every ``@register_method`` function defined in ``module``."""
        found = [
            info
            for value in vars(module).values()
            if (info := getattr(value, _MARK, None)) is not None
            and getattr(value, "__module__", None) == module.__name__
        ]
        for info in found:
            self.register(info.name, info.fn, info.config_cls, info.description)
        return [info.name for info in found]

    def describe(self) -> list[dict[str, Any]]:
        """Every method with its options (for the CLI, the worker and the API)."""
        return [self.get(n).describe() for n in self.names()]

    def config_from_dict(self, data: Mapping[str, Any]) -> MethodConfig:
        """Rebuild a config from ``to_dict`` output (its ``method`` key picks the class)."""
        if "method" not in data:
            raise ConfigError("serialised config has no 'method' key")
        return self.get(str(data["method"])).config(data)


# Every module that defines methods; a new method is a new module and a line here.
BUILTIN_MODULES = (
    "circuitreg.workers.methods.eap",
    "circuitreg.workers.methods.eap_ig",
    "circuitreg.workers.methods.relp",
    "circuitreg.workers.methods.cd_t",
    "circuitreg.workers.methods.acdc",
    "circuitreg.workers.methods.masks",
    "circuitreg.workers.methods.patching",
    "circuitreg.workers.methods.patching_path",
    "circuitreg.workers.methods.ensemble",
    "circuitreg.workers.methods.bootstrap",
    "circuitreg.workers.methods.verified",
)

_MARK = "__circuitreg_method__"
F = TypeVar("F", bound=Callable[..., Any])


def register_method(name: str, *, config: type[MethodConfig], description: str) -> Callable[[F], F]:
    """Declare ``fn`` as the method ``name``; registered when its module is loaded."""

    def mark(fn: F) -> F:
        setattr(fn, _MARK, MethodInfo(name, fn, config, description))
        return fn

    return mark


_DEFAULT: MethodRegistry | None = None


def default_registry() -> MethodRegistry:
    """The process-wide registry with every built-in method."""
    global _DEFAULT
    if _DEFAULT is None:
        registry = MethodRegistry()
        for module_name in BUILTIN_MODULES:
            registry.load(importlib.import_module(module_name))
        _DEFAULT = registry
    return _DEFAULT
