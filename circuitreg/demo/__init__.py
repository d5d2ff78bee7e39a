"""``circuitreg demo``: model to GraphQL answer on the embedded defaults (see ``pipeline``)."""

from .pipeline import run_demo

__all__ = ["run_demo"]
