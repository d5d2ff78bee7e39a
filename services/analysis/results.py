"""Names of the validation results and how to read them back from a circuit document.

The workers write ``ValidationResult`` objects under these names; the stores, the API, the
plots and the consistency report read them with ``latest_result``. Keeping the names in this
torch-free module means both sides agree without the API importing the workers.
"""

from __future__ import annotations

from circuitreg.schema import CircuitDocument, ValidationResult

FAITHFULNESS = "faithfulness"
"""values: faithfulness, m_circuit, m_full, m_empty, n_edges, n_total_edges."""
FAITHFULNESS_CURVE = "faithfulness_curve"
"""values: percentages, n_edges, faithfulness_signed, faithfulness_abs, cpr, cmd, ..."""
FIDELITY = "fidelity"
"""values: fidelity, baseline, circuit_ablated, everything_ablated."""
MINIMALITY = "minimality"
"""values: tolerance, components (per-component effects), redundant, minimal_components."""
COMPLETENESS = "completeness"
"""values: knockouts (sets with both faithfulness values), mean_gap, max_gap, tolerance."""
ABLATION_CONTROLS = "ablation_controls"
"""values: rows (name, metric, normalised, expectation, held), m_full, m_empty."""
STABILITY = "stability"
"""values: n_runs, frequencies (edge -> fraction of runs), stable_fraction, threshold."""
SUFFIX_ABLATION = "suffix_ablation"
"""values: circuit and control (mean, standard_error of the logit change's L2 norm), ratio,
n_heads, n_prompts, note."""


def latest_result(
    doc: CircuitDocument,
    name: str,
    *,
    ablation: str | None = None,
    metric: str | None = None,
) -> ValidationResult | None:
    """The most recent result called ``name`` (optionally under one ablation and metric).

    A circuit can be validated several times (under resample, then zero ablation, say); all
    results are kept on the document and the last one written wins here.
    """
    matches = [
        r
        for r in doc.validation
        if r.name == name
        and (ablation is None or r.ablation == ablation)
        and (metric is None or r.metric == metric)
    ]
    if not matches:
        return None
    return max(enumerate(matches), key=lambda pair: (pair[1].created_at, pair[0]))[1]
