"""Running builder statements while counting which builders ran.

The contract suite asserts that every builder in ``queries`` is executed; counting here,
at the one place statements meet a session, makes that check exact and costs a dict update.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from .queries import Statement

EXECUTED: Counter[str] = Counter()


class Runner(Protocol):
    """Anything that runs Cypher text with parameters."""

    def run(self, query: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run one statement and return its rows."""
        ...


class BatchRunner(Runner, Protocol):
    """A runner that can also run several statements as one unit of work."""

    def run_many(self, statements: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        """Run the statements in order (in one transaction where the engine has them)."""
        ...


def execute(session: Runner, stmt: Statement) -> list[dict[str, Any]]:
    """Run one built statement."""
    EXECUTED[stmt.name] += 1
    return session.run(stmt.text, stmt.params)


def execute_many(session: BatchRunner, stmts: Sequence[Statement]) -> None:
    """Run built statements as one unit of work."""
    for stmt in stmts:
        EXECUTED[stmt.name] += 1
    session.run_many([(s.text, s.params) for s in stmts])
