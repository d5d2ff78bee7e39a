"""GraphQL says what a faithfulness figure means: the gap it was normalised by, and why it is
undefined where that gap is noise (null value, the reason beside it)."""

from __future__ import annotations

import httpx

from circuitreg.schema import ValidationResult

from .conftest import INDUCTION, Registry, gql, make_doc

QUERY = """query($id: String!) { circuit(id: $id) {
  faithfulness faithfulnessGap faithfulnessUndefined } }"""


def _validated(values: dict[str, object]) -> ValidationResult:
    return ValidationResult(
        name="faithfulness", ablation="resample", metric="logit_diff", values=values,
        passed=None if values.get("faithfulness") is None else True,
    )  # fmt: skip


async def test_api_faithfulness_carries_its_gap_or_why_it_is_undefined(
    registry: Registry, reader: httpx.AsyncClient
) -> None:
    reason = "the clean-ablated gap 0.001 is within 2 standard errors (0.02) of zero"
    noisy = make_doc(INDUCTION, task="noisy").with_validation(
        _validated({"faithfulness": None, "gap": 0.001, "undefined": reason})
    )
    clear = make_doc(INDUCTION, task="clear").with_validation(
        _validated({"faithfulness": 0.93, "gap": 1.52})
    )
    plain = make_doc(INDUCTION, task="plain")
    for doc in (noisy, clear, plain):
        registry.store.put_circuit(doc)
    got = {
        doc.task.name: (await gql(reader, QUERY, id=doc.id))["data"]["circuit"]
        for doc in (noisy, clear, plain)
    }
    assert got["noisy"] == {
        "faithfulness": None, "faithfulnessGap": 0.001, "faithfulnessUndefined": reason,
    }  # fmt: skip
    assert got["clear"] == {
        "faithfulness": 0.93, "faithfulnessGap": 1.52, "faithfulnessUndefined": None,
    }  # fmt: skip
    assert got["plain"] == {
        "faithfulness": None, "faithfulnessGap": None, "faithfulnessUndefined": None,
    }  # fmt: skip
