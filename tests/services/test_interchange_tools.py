"""ACDC and auto-circuit files, including pickles and torch.save files read without torch."""

from __future__ import annotations

import io
import json
import os
import pickle
import sys
import types
from enum import Enum
from typing import Any

import numpy as np
import pytest

from circuitreg.services.interchange import (
    ImportOptions,
    InterchangeError,
    detect_format,
    read_document,
    write_document,
)

# --- stand-ins for ACDC's own classes, registered as acdc.TLACDCEdge while a test runs ----


class TorchIndex:
    __module__ = "acdc.TLACDCEdge"

    def __init__(self, items: list[Any]) -> None:
        self.as_index = tuple(slice(None) if x is None else x for x in items)
        self.hashable_tuple = tuple(items)


class EdgeType(Enum):
    __module__ = "acdc.TLACDCEdge"
    ADDITION = 0
    DIRECT_COMPUTATION = 1
    PLACEHOLDER = 2


class AcdcEdge:
    __module__ = "acdc.TLACDCEdge"
    __qualname__ = "Edge"

    def __init__(self, edge_type: EdgeType, present: bool = True, effect_size: Any = None):
        self.edge_type = edge_type
        self.present = present
        self.effect_size = effect_size


@pytest.fixture
def acdc_module(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("acdc.TLACDCEdge")
    for cls in (TorchIndex, EdgeType, AcdcEdge):
        setattr(module, cls.__qualname__, cls)
    monkeypatch.setitem(sys.modules, "acdc", types.ModuleType("acdc"))
    monkeypatch.setitem(sys.modules, "acdc.TLACDCEdge", module)


def _acdc_edges() -> dict[tuple[Any, ...], AcdcEdge]:
    """A slice of ACDC's ``all_edges()`` for a 2-layer model, internal edges included."""

    def head(h: int) -> TorchIndex:
        return TorchIndex([None, None, h])

    whole = TorchIndex([None])
    add, direct = EdgeType.ADDITION, EdgeType.DIRECT_COMPUTATION
    result0, result1 = "blocks.0.attn.hook_result", "blocks.1.attn.hook_result"
    embed, logits = "blocks.0.hook_resid_pre", "blocks.1.hook_resid_post"
    return {
        ("blocks.1.hook_q_input", head(0), result0, head(1)): AcdcEdge(add, True, 0.3),
        (logits, whole, result1, head(0)): AcdcEdge(add, True, 0.5),
        (logits, whole, embed, whole): AcdcEdge(add, False),
        ("blocks.1.attn.hook_q", head(0), "blocks.1.hook_q_input", head(0)): AcdcEdge(direct),
        (result1, head(0), "blocks.1.attn.hook_q", head(0)): AcdcEdge(EdgeType.PLACEHOLDER),
        ("blocks.0.hook_q_input", head(1), embed, whole): AcdcEdge(add, True, -0.2),
    }


EXPECTED_ACDC = {
    ("a0.h1->a1.h0<q>", 0.3, True),
    ("a1.h0->logits", 0.5, True),
    ("input->logits", None, False),
    ("input->a0.h1<q>", -0.2, True),
}


def _edges(doc: Any) -> set[tuple[str, float | None, bool]]:
    return {(e.name, e.score, e.in_circuit) for e in doc.edges}


def test_acdc_pickle_of_its_own_classes(acdc_module: None) -> None:
    data = pickle.dumps(_acdc_edges())
    assert detect_format(data) == "acdc"
    doc = read_document(data, options=ImportOptions(model="redwood-2l", task="ioi"))
    assert _edges(doc) == EXPECTED_ACDC
    assert (doc.model.n_layers, doc.model.n_heads, doc.method.name) == (2, 2, "acdc")
    assert doc.provenance.extra["acdc_skipped_internal_edges"] == 2
    assert {c.name for c in doc.circuit_components()} == {"input", "a0.h1", "a1.h0", "logits"}


def test_acdc_torch_save_is_read_without_running_code(acdc_module: None) -> None:
    torch = pytest.importorskip("torch")
    buffer = io.BytesIO()
    torch.save(_acdc_edges(), buffer)
    doc = read_document(buffer.getvalue(), "acdc")
    assert _edges(doc) == EXPECTED_ACDC


def test_acdc_json_forms_and_export_round_trip(acdc_module: None) -> None:
    printed = {
        "('blocks.1.hook_k_input', [:, :, 1], 'blocks.0.hook_mlp_out', [:])": True,
        "('blocks.1.hook_mlp_in', [:], 'blocks.1.attn.hook_result', [:, :, 0])": 0.75,
    }
    doc = read_document(json.dumps(printed).encode(), options=ImportOptions(n_heads=4))
    assert _edges(doc) == {("m0->a1.h1<k>", None, True), ("a1.h0->m1", 0.75, True)}
    assert doc.model.n_heads == 4
    original = read_document(pickle.dumps(_acdc_edges()), "acdc")
    back = read_document(write_document(original, "acdc"), "acdc")
    assert _edges(back) == _edges(original)
    assert back.id == original.id


def test_acdc_errors_say_which_key() -> None:
    bad = [[["blocks.1.hook_z_input", [None, None, 0]], ["blocks.0.hook_resid_pre", [None]], True]]
    with pytest.raises(
        InterchangeError, match=r"unknown receiver hook 'blocks\.1\.hook_z_input'"
    ) as e:
        read_document(json.dumps(bad).encode(), "acdc")
    assert e.value.location == "item [0]"
    score = [{"receiver": ["blocks.0.hook_mlp_in", [None]], "sender": ["blocks.0.hook_resid_pre",
              [None]], "present": True, "effect_size": "big"}]  # fmt: skip
    with pytest.raises(InterchangeError, match="expected a number") as e:
        read_document(json.dumps(score).encode(), "acdc")
    assert e.value.location == "item [0]"


class _Evil:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("echo pwned",))


def test_pickles_naming_other_callables_are_refused() -> None:
    with pytest.raises(InterchangeError, match=r"asks for (posix|os|nt)\.system"):
        read_document(pickle.dumps({("a", 1, "b", 2): _Evil()}), "acdc")
    with pytest.raises(InterchangeError, match=r"asks for (posix|os|nt)\.system"):
        detect_format(pickle.dumps(_Evil()))


# --- auto-circuit ---------------------------------------------------------------------------


def _prune_scores(seed: int = 0) -> dict[str, np.ndarray]:
    """Prune scores of a 2-layer, 2-head model with MLPs; some exactly zero."""
    rng = np.random.default_rng(seed)
    shapes = {
        "blocks.0.hook_q_input": (2, 1), "blocks.0.hook_k_input": (2, 1),
        "blocks.0.hook_v_input": (2, 1), "blocks.0.hook_mlp_in": (3,),
        "blocks.1.hook_q_input": (2, 4), "blocks.1.hook_k_input": (2, 4),
        "blocks.1.hook_v_input": (2, 4), "blocks.1.hook_mlp_in": (6,),
        "blocks.1.hook_resid_post": (7,),
    }  # fmt: skip
    scores = {k: rng.normal(size=s) for k, s in shapes.items()}
    scores["blocks.1.hook_mlp_in"][2] = 0.0
    return scores


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    out = io.BytesIO()
    np.savez(out, **arrays)  # type: ignore[arg-type]
    return out.getvalue()


def test_auto_circuit_npz_maps_sources_in_model_order() -> None:
    scores = _prune_scores()
    doc = read_document(_npz(scores), options=ImportOptions(model="toy", task="t"))
    assert (doc.model.n_layers, doc.model.n_heads, doc.model.attn_only) == (2, 2, False)
    by_name = {e.name: e for e in doc.edges}
    assert len(by_name) == 3 * 2 * 1 + 3 + 3 * 2 * 4 + 6 + 7
    assert by_name["input->a0.h1<k>"].score == scores["blocks.0.hook_k_input"][1, 0]
    assert by_name["a0.h1->a1.h0<v>"].score == scores["blocks.1.hook_v_input"][0, 2]
    assert by_name["m0->a1.h1<q>"].score == scores["blocks.1.hook_q_input"][1, 3]
    assert by_name["a1.h1->m1"].score == scores["blocks.1.hook_mlp_in"][5]
    assert by_name["m1->logits"].score == scores["blocks.1.hook_resid_post"][6]
    assert not by_name["a0.h1->m1"].in_circuit  # the zero score
    assert sum(e.in_circuit for e in doc.edges) == len(doc.edges) - 1


def test_auto_circuit_round_trip_and_containers() -> None:
    scores = _prune_scores(1)
    doc = read_document(_npz(scores), "auto-circuit")
    back = read_document(write_document(doc, "auto-circuit"))
    assert back.edges == doc.edges and back.components == doc.components
    assert back.id == doc.id
    as_json = json.dumps({k: v.tolist() for k, v in scores.items()}).encode()
    assert detect_format(as_json) == "auto-circuit"
    assert read_document(as_json).id == doc.id
    from safetensors.numpy import save

    as_safetensors = save({k: np.ascontiguousarray(v) for k, v in scores.items()})
    assert detect_format(as_safetensors) == "auto-circuit"
    assert read_document(as_safetensors).id == doc.id


def test_auto_circuit_torch_save_without_torch_in_services() -> None:
    torch = pytest.importorskip("torch")
    scores = _prune_scores(2)
    buffer = io.BytesIO()
    tensors = {k: torch.tensor(v, dtype=torch.float64) for k, v in scores.items()}
    tensors["blocks.1.hook_q_input"] = torch.tensor(scores["blocks.1.hook_q_input"]).t().t()
    torch.save(tensors, buffer)
    assert detect_format(buffer.getvalue()) == "auto-circuit"
    assert read_document(buffer.getvalue()).id == read_document(_npz(scores)).id
    half = io.BytesIO()
    torch.save({k: torch.tensor(v, dtype=torch.bfloat16) for k, v in scores.items()}, half)
    expected = {
        k: torch.tensor(v, dtype=torch.bfloat16).double().numpy() for k, v in scores.items()
    }
    assert read_document(half.getvalue()).id == read_document(_npz(expected)).id


def test_auto_circuit_top_k_and_positions() -> None:
    scores = _prune_scores(3)
    doc = read_document(_npz(scores), options=ImportOptions(top_k=5))
    chosen = sorted((abs(e.score or 0.0) for e in doc.edges), reverse=True)[:5]
    assert sorted(abs(e.score or 0.0) for e in doc.circuit_edges()) == sorted(chosen)
    positioned = {k: np.stack([v, -v, 2 * v]) for k, v in scores.items()}
    pdoc = read_document(_npz(positioned), "auto-circuit")
    assert {e.position for e in pdoc.edges} == {0, 1, 2}
    assert len(pdoc.edges) == 3 * len(doc.edges)


def test_auto_circuit_errors_name_the_key() -> None:
    scores = _prune_scores()
    scores["blocks.1.hook_mlp_in"] = np.zeros(5)
    with pytest.raises(InterchangeError, match=r"expected shape \[seq\?, 6\]") as caught:
        read_document(_npz(scores), "auto-circuit")
    assert caught.value.location == "key 'blocks.1.hook_mlp_in'"
    fused = {"blocks.0.hook_attn_in": np.zeros((2, 1))}
    with pytest.raises(InterchangeError, match="separate_qkv=True"):
        read_document(_npz(fused), "auto-circuit")
    with pytest.raises(
        InterchangeError,
        match="must be json or npz or safetensors or torch or pickle, but this looks like xml",
    ):
        read_document(b"<graphml/>", "auto-circuit")


def test_tensor_claiming_more_than_its_storage_is_refused() -> None:
    """as_strided does not check bounds: a forged size must not read past the storage."""
    torch = pytest.importorskip("torch")
    import zipfile

    buffer = io.BytesIO()
    torch.save({"blocks.0.hook_mlp_in": torch.zeros(2)}, buffer)
    source = zipfile.ZipFile(io.BytesIO(buffer.getvalue()))
    forged = io.BytesIO()
    with zipfile.ZipFile(forged, "w") as target:
        for name in source.namelist():
            data = source.read(name)
            if name.endswith("data.pkl"):
                assert b"K\x00K\x02\x85" in data  # storage offset 0, size (2,)
                data = data.replace(b"K\x00K\x02\x85", b"K\x00K\xff\x85")  # size (255,)
            target.writestr(name, data)
    with pytest.raises(InterchangeError, match="tensor extends past its storage"):
        read_document(forged.getvalue(), "auto-circuit")
