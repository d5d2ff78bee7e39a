"""The intervention engine: exact, batched patching of edge sets (see ``engine``)."""

from circuitreg.workers.engine.engine import InterventionEngine, PreparedBatch
from circuitreg.workers.engine.forward import Override, embed, run_forward
from circuitreg.workers.engine.hooked import HookedEdgePatcher
from circuitreg.workers.engine.reference import reference_forward
from circuitreg.workers.engine.strategies import Strategies
from circuitreg.workers.engine.weights import EngineError, ModelWeights, read_weights

__all__ = [
    "EngineError",
    "HookedEdgePatcher",
    "InterventionEngine",
    "ModelWeights",
    "Override",
    "PreparedBatch",
    "Strategies",
    "embed",
    "read_weights",
    "reference_forward",
    "run_forward",
]
