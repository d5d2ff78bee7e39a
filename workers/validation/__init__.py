"""Validation of circuits: faithfulness and its curve, fidelity, minimality, completeness,
ablation controls, the suffix-vector ablation check and stability, all measured with the
shared intervention engine.

``validate`` is the entry point; the measurements are also usable one by one with any
``MaskEvaluator`` (``EngineEvaluator`` wraps the engine).
"""

from .api import EngineEvaluator, validate, validate_document, validate_stability
from .base import MaskEvaluator, ValidationConfig, ValidationError
from .completeness import completeness, knockout_sets
from .controls import ablation_controls
from .faithfulness import CURVE_PERCENTAGES, faithfulness, faithfulness_curve, fidelity
from .minimality import minimality
from .stability import stability
from .suffix import suffix_ablation

__all__ = [
    "CURVE_PERCENTAGES",
    "EngineEvaluator",
    "MaskEvaluator",
    "ValidationConfig",
    "ValidationError",
    "ablation_controls",
    "completeness",
    "faithfulness",
    "faithfulness_curve",
    "fidelity",
    "knockout_sets",
    "minimality",
    "stability",
    "suffix_ablation",
    "validate",
    "validate_document",
    "validate_stability",
]
