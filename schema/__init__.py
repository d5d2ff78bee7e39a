"""The typed circuit graph shared by everything; imports nothing else of ours."""

if __name__ != "circuitreg.schema":  # one name per module: the folder is linked into circuitreg
    raise ImportError(f"{__name__}: import it as circuitreg.schema")

from .circuit import (
    FORMAT_VERSION,
    CircuitDocument,
    Component,
    ConsistencyReport,
    Edge,
    MethodRef,
    ModelRef,
    Provenance,
    TaskRef,
    ValidationResult,
    json_schema,
)
from .names import (
    INPUT,
    LOGITS,
    CanonicalNameError,
    ComponentKind,
    Receiver,
    edge_name,
    head_name,
    hook_name,
    mlp_name,
    node_order_key,
    parse_edge,
    parse_node,
)

__all__ = [
    "FORMAT_VERSION",
    "INPUT",
    "LOGITS",
    "CanonicalNameError",
    "CircuitDocument",
    "Component",
    "ComponentKind",
    "ConsistencyReport",
    "Edge",
    "MethodRef",
    "ModelRef",
    "Provenance",
    "Receiver",
    "TaskRef",
    "ValidationResult",
    "edge_name",
    "head_name",
    "hook_name",
    "json_schema",
    "mlp_name",
    "node_order_key",
    "parse_edge",
    "parse_node",
]
