"""Positional circuits from discovery to GraphQL (issue 18, "done when"): ``circuitreg discover
--positions spans --store`` on IOI (a tiny GPT-2 with a local tokenizer), induction and a JSONL
task whose prompts differ in length stores positional circuits, with their dense positional
scores, that the store and GraphQL filter by span."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from circuitreg.cli import app
from circuitreg.schema import CircuitDocument
from circuitreg.services.artifacts import ArtifactStore
from circuitreg.services.positional_scores import PROVENANCE_KEY, load_positional

from .conftest import Registry, gql

pytestmark = pytest.mark.graph_backends("embedded")

EDGES = """
query($id: String!, $span: String, $component: String) {
  circuit(id: $id) {
    positions { mode labels indices tokens }
    edges(span: $span, component: $component, positional: true, first: 100) {
      totalCount nodes { name position span score }
    }
  }
}
"""


@pytest.fixture(scope="module")
def ioi_gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer GPT-2 with a word-level tokenizer of the IOI generator's words, saved
    as a Hugging Face directory (no hub), so ``ioi`` builds real text prompts for it."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from circuitreg.workers.tasks import generators

    pre = pre_tokenizers.Whitespace()
    vocab = {"[UNK]": 0, "[BOS]": 1, ".": 2, ",": 3}
    for text in (*generators.NAMES, *generators.PLACES, *generators.OBJECTS,
                 *generators.IOI_TEMPLATES):  # fmt: skip
        for piece, _ in pre.pre_tokenize_str(text):
            vocab.setdefault(piece, len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre
    path = tmp_path_factory.mktemp("ioi-gpt2")
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", bos_token="[BOS]")
    fast.save_pretrained(path)
    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=len(vocab), n_positions=32,
                        bos_token_id=1, eos_token_id=1)  # fmt: skip
    GPT2LMHeadModel(config).save_pretrained(path)
    return path


def _discover(tmp_path: Path, model: str, task: str, top_k: int = 40) -> CircuitDocument:
    out = tmp_path / "circuit.json"
    args = ["discover", "--model", model, "--task", task, "--method", "eap",
            "--positions", "spans", "--out", str(out), "--quiet", "--top-k", str(top_k),
            "--store"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return CircuitDocument.from_json(out.read_text())


def _stored(registry: Registry, doc: CircuitDocument) -> CircuitDocument:
    """The stored circuit, checked to name its dense positional scores, which hold every
    edge at every span and sum to the document's summed scores."""
    stored = registry.store.get_circuit(doc.id)
    assert stored is not None and stored.positions == doc.positions
    assert PROVENANCE_KEY in stored.provenance.extra
    artifacts = ArtifactStore(registry.settings.resolved_artifact_url)
    scores = load_positional(registry.store, artifacts, doc.id)
    assert scores is not None and doc.positions is not None
    summed = {e.name: e.score or 0.0 for e in doc.edges if not e.positional}
    assert scores.scores.shape == (len(summed), len(doc.positions.labels))
    totals = scores.summed()
    assert all(np.isclose(totals[n], v, rtol=1e-4, atol=1e-6) for n, v in summed.items())
    return stored


async def test_ioi_spans_are_stored_and_filtered(
    tmp_path: Path, ioi_gpt2: Path, registry: Registry, reader: httpx.AsyncClient
) -> None:
    doc = _discover(tmp_path, str(ioi_gpt2), "ioi:n=12,seed=3")
    assert doc.positions is not None and doc.positions.mode == "spans"
    assert doc.positions.labels == ("S1", "IO", "S2", "END", "other")
    assert doc.positions.tokens[0] == "[BOS]"  # the first prompt, decoded by its tokenizer
    # the templates differ in length: S2 and END sit at different indices across prompts
    assert doc.positions.indices[2:4] == (None, None)
    _stored(registry, doc)
    positional = [e for e in doc.edges if e.positional]
    assert len(positional) == 40
    at_end = sorted(e.name for e in positional if e.span == "END")
    assert at_end, "the logits read END: some kept edge must be there"
    assert sorted(e.name for e in registry.store.edges_at(doc.id, span="END")) == at_end
    body = await gql(reader, EDGES, id=doc.id, span="END")
    nodes = body["data"]["circuit"]["edges"]["nodes"]
    assert sorted(n["name"] for n in nodes) == at_end
    assert all(n["span"] == "END" and n["position"] is None for n in nodes)
    assert body["data"]["circuit"]["positions"]["tokens"][0] == "[BOS]"
    edge = positional[0]
    found = registry.store.circuits_with_edge(doc.model.name, edge.name, span=edge.span)
    assert doc.id in {c.id for c in found}


async def test_induction_spans_are_stored_and_filtered(
    tmp_path: Path, registry: Registry, reader: httpx.AsyncClient
) -> None:
    doc = _discover(tmp_path, "toy:induction", "induction:n=16,read=last")
    assert doc.positions is not None and doc.positions.labels[:3] == (
        "A-first",
        "B-first",
        "A-second",
    )
    positional = [e for e in doc.edges if e.positional]
    assert len(positional) == 40 and all(e.span in doc.positions.labels for e in positional)
    assert doc.provenance.extra["positional_selection"]["mode"] == "top_k"
    _stored(registry, doc)
    body = await gql(reader, EDGES, id=doc.id, span="A-second")
    nodes = body["data"]["circuit"]["edges"]["nodes"]
    expected = sorted(e.name for e in positional if e.span == "A-second")
    assert sorted(n["name"] for n in nodes) == expected and expected
    assert all(n["span"] == "A-second" and n["position"] == 15 for n in nodes)
    assert body["data"]["circuit"]["positions"]["indices"][:3] == [7, 8, 15]


async def test_jsonl_spans_align_prompts_of_different_lengths(
    tmp_path: Path, registry: Registry, reader: httpx.AsyncClient
) -> None:
    rows = []
    for i in range(8):  # IOI-shaped token ids: S1 IO ... S2 ... END, with i % 3 filler tokens
        filler = [20 + j for j in range(i % 3)]
        s, io = 10 + i, 30 + i
        clean = [s, 5, io, *filler, 6, s, 7]
        corrupted = [40 + i, 5, 50 + i, *filler, 6, 60 - i, 7]
        end = len(clean)
        rows.append({"clean": clean, "corrupted": corrupted, "answer": io, "distractor": s,
                     "spans": {"S1": [0, 1], "IO": [2, 3], "S2": [end - 2, end - 1],
                               "END": [end - 1, end]}})  # fmt: skip
    path = tmp_path / "ioi_ids.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    doc = _discover(tmp_path, "toy:induction", f"jsonl:{path}")
    assert doc.positions is not None
    labels = dict(zip(doc.positions.labels, doc.positions.indices, strict=True))
    # S1 and IO sit at the same index in every prompt (BOS added: 1 and 3); S2 and END move
    assert labels == {"S1": 1, "IO": 3, "S2": None, "END": None, "other": None}
    _stored(registry, doc)
    body = await gql(reader, EDGES, id=doc.id, span="END")
    nodes = body["data"]["circuit"]["edges"]["nodes"]
    assert nodes and all(n["span"] == "END" and n["position"] is None for n in nodes)
    assert {n["name"] for n in nodes} == {e.name for e in doc.edges if e.span == "END"}
    # the logits read END only: every positional edge into the logits is at END
    logits = await gql(reader, EDGES, id=doc.id, component="logits")
    spans = {n["span"] for n in logits["data"]["circuit"]["edges"]["nodes"]}
    assert spans == {"END"}


def test_a_method_without_positions_refuses_the_option(tmp_path: Path) -> None:
    out = str(tmp_path / "x.json")
    args = ["discover", "--model", "toy:induction", "--task", "induction:n=4", "--method",
            "cd_t", "--positions", "spans", "--out", out, "--quiet"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0
    assert "method 'cd_t' does not score positions" in result.output and "eap" in result.output
    assert not (tmp_path / "x.json").exists()


def test_the_api_queues_positions_only_for_methods_that_take_them() -> None:
    """The API (no torch) checks job params against schema/methods.json: the positional
    methods take ``positions``; one that does not is refused, naming it."""
    from circuitreg.services.api.graphql_api.errors import InputError
    from circuitreg.services.api.graphql_api.methods import check_discovery

    for method in ("eap", "eap_ig", "relp", "acdc", "activation_patching"):
        check_discovery(method, {"positions": "index"})
    with pytest.raises(InputError, match=r"method 'cd_t' takes no \['positions'\]"):
        check_discovery("cd_t", {"positions": "spans"})
