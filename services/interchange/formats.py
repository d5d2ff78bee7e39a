"""The formats circuitreg reads and writes, registered in one place.

Registration order is detection order: the most specific signatures come first
(``circuitreg`` documents before MIB's ``cfg/nodes/edges``, before looser shapes).
"""

from __future__ import annotations

from .acdc import read_acdc, sniff_acdc, write_acdc
from .auto_circuit import read_auto_circuit, sniff_auto_circuit, write_auto_circuit
from .dot import write_dot
from .graphml import read_graphml, sniff_graphml, write_graphml
from .mib import read_mib, sniff_mib, write_mib
from .native import read_circuitreg, sniff_circuitreg, write_circuitreg
from .neuronpedia import read_neuronpedia, sniff_neuronpedia, write_neuronpedia
from .registry import Format, FormatRegistry

_SHAPE = frozenset({"n_layers", "n_heads"})  # for files that do not state the model's shape


def default_registry() -> FormatRegistry:
    """A registry holding every built-in format."""
    registry = FormatRegistry()
    registry.register(
        Format("circuitreg", "circuitreg interchange document (JSON)", ".json",
               "application/json", read_circuitreg, write_circuitreg, sniff_circuitreg)
    )  # fmt: skip
    registry.register(
        Format("mib", "MIB / EAP-IG graph JSON (cfg, nodes, edges)", ".json",
               "application/json", read_mib, write_mib, sniff_mib)
    )  # fmt: skip
    registry.register(
        Format("neuronpedia", "Neuronpedia / circuit-tracer attribution graph JSON", ".json",
               "application/json", read_neuronpedia, write_neuronpedia, sniff_neuronpedia,
               _SHAPE | {"aggregate"})
    )  # fmt: skip
    registry.register(
        Format("auto-circuit", "auto-circuit prune scores (npz; JSON, safetensors, torch in)",
               ".npz", "application/octet-stream", read_auto_circuit, write_auto_circuit,
               sniff_auto_circuit, _SHAPE | {"top_k"})
    )  # fmt: skip
    registry.register(
        Format("acdc", "ACDC edge dictionary (JSON out; JSON, pickle, torch in)", ".json",
               "application/json", read_acdc, write_acdc, sniff_acdc, _SHAPE)
    )  # fmt: skip
    registry.register(
        Format("graphml", "GraphML (networkx)", ".graphml", "application/graphml+xml",
               read_graphml, write_graphml, sniff_graphml, _SHAPE)
    )  # fmt: skip
    registry.register(
        Format("dot", "Graphviz DOT of the circuit (export only)", ".dot",
               "text/vnd.graphviz", None, write_dot, None)
    )  # fmt: skip
    return registry


FORMATS = default_registry()
