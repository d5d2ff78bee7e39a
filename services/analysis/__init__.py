"""Torch-free analysis of stored circuits: consistency between two circuits and plots.

Everything here runs on the API container (pure Python, numpy, scipy, networkx, matplotlib),
so the API can compare circuits and draw validation charts without torch or the workers.
"""

from .consistency import Alignment, EdgeDiff, compare_circuits, diff_edges, performance_of
from .results import (
    ABLATION_CONTROLS,
    COMPLETENESS,
    FAITHFULNESS,
    FAITHFULNESS_CURVE,
    FIDELITY,
    MINIMALITY,
    STABILITY,
    SUFFIX_ABLATION,
    latest_result,
)

__all__ = [
    "ABLATION_CONTROLS",
    "COMPLETENESS",
    "FAITHFULNESS",
    "FAITHFULNESS_CURVE",
    "FIDELITY",
    "MINIMALITY",
    "STABILITY",
    "SUFFIX_ABLATION",
    "Alignment",
    "EdgeDiff",
    "compare_circuits",
    "diff_edges",
    "latest_result",
    "performance_of",
]
