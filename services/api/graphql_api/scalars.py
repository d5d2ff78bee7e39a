"""GraphQL enums shared with the schema package, registered with strawberry once."""

from __future__ import annotations

import strawberry

from circuitreg.schema import ComponentKind, Receiver

# strawberry.enum registers the shared enums in place; their values are the canonical strings.
ComponentKindEnum = strawberry.enum(ComponentKind, description="What a graph node is.")
ReceiverEnum = strawberry.enum(Receiver, description="Which input of a head an edge feeds.")
