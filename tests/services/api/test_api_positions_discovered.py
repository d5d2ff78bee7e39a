"""Positional circuits from discovery to GraphQL (issue 18, "done when"): ``circuitreg discover
--positions spans`` on induction and on a JSONL task whose prompts differ in length stores
circuits that GraphQL filters by span."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from circuitreg.cli import app
from circuitreg.schema import CircuitDocument

from .conftest import Registry, gql

pytestmark = pytest.mark.graph_backends("embedded")

EDGES = """
query($id: String!, $span: String, $component: String) {
  circuit(id: $id) {
    positions { mode labels indices }
    edges(span: $span, component: $component, positional: true, first: 100) {
      totalCount nodes { name position span score }
    }
  }
}
"""


def _discover(tmp_path: Path, task: str, method: str = "eap") -> CircuitDocument:
    out = tmp_path / f"{method}.json"
    args = ["discover", "--model", "toy:induction", "--task", task, "--method", method,
            "--positions", "spans", "--out", str(out), "--quiet", "--top-k", "40"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / f"{method}.positions.safetensors").stat().st_size > 0
    return CircuitDocument.from_json(out.read_text())


async def test_induction_spans_are_stored_and_filtered(
    tmp_path: Path, registry: Registry, reader: httpx.AsyncClient
) -> None:
    doc = _discover(tmp_path, "induction:n=16,read=last")
    assert doc.positions is not None and doc.positions.labels[:3] == (
        "A-first",
        "B-first",
        "A-second",
    )
    positional = [e for e in doc.edges if e.positional]
    assert len(positional) == 40 and all(e.span in doc.positions.labels for e in positional)
    assert doc.provenance.extra["positional_selection"]["mode"] == "top_k"
    cid = registry.store.put_circuit(doc)
    body = await gql(reader, EDGES, id=cid, span="A-second")
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
    doc = _discover(tmp_path, f"jsonl:{path}")
    assert doc.positions is not None
    labels = dict(zip(doc.positions.labels, doc.positions.indices, strict=True))
    # S1 and IO sit at the same index in every prompt (BOS added: 1 and 3); S2 and END move
    assert labels == {"S1": 1, "IO": 3, "S2": None, "END": None, "other": None}
    cid = registry.store.put_circuit(doc)
    body = await gql(reader, EDGES, id=cid, span="END")
    nodes = body["data"]["circuit"]["edges"]["nodes"]
    assert nodes and all(n["span"] == "END" and n["position"] is None for n in nodes)
    assert {n["name"] for n in nodes} == {e.name for e in doc.edges if e.span == "END"}
    # the logits read END only: every positional edge into the logits is at END
    logits = await gql(reader, EDGES, id=cid, component="logits")
    spans = {n["span"] for n in logits["data"]["circuit"]["edges"]["nodes"]}
    assert spans == {"END"}


def test_a_method_without_positions_refuses_the_option(tmp_path: Path) -> None:
    out = str(tmp_path / "x.json")
    args = ["discover", "--model", "toy:induction", "--task", "induction:n=4", "--method",
            "cd_t", "--positions", "spans", "--out", out, "--quiet"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0
    assert "does not score positions" in result.output and "eap" in result.output
    assert not (tmp_path / "x.json").exists()
