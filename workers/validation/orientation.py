"""Orient a document's edge scores so that positive helps (see
``circuitreg.services.analysis.orientation`` for which methods report which sign)."""

from __future__ import annotations

import torch

from circuitreg.schema import CircuitDocument
from circuitreg.services.analysis.orientation import document_sign


def helpful_scores(doc: CircuitDocument, scores: torch.Tensor) -> tuple[torch.Tensor, str]:
    """The scores oriented so that positive helps, with a note saying what was done."""
    sign, why = document_sign(doc)
    return scores * sign, why
