"""Index the positions of circuits stored before V0005 (imports whose edges carry token
positions): their positional edges become FLOWS_AT between the components at those
positions, as a write since V0005 makes them, so the position queries find them.

A data migration in Python, like V0004: it reads each such circuit back and runs the same
statement builders a write uses. Idempotent: a circuit with FLOWS_AT is not visited again.
"""

from __future__ import annotations

from circuitreg.services.stores.cypher.session import CypherSession


def apply(session: CypherSession) -> None:
    """Write the FLOWS_AT (and CONTAINS_AT) of every older positioned circuit."""
    from circuitreg.services.stores.cypher.store import CypherStore

    CypherStore(session).backfill_positions()
