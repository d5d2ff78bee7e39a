"""How big a positional circuit's dense artifact is, at GPT-2 small's shape (issue 18).

A positional run scores every edge at every position label: 32,491 edges x Q. The stores
keep them as one artifact per circuit (``circuitreg.services.positional_scores``: float32
``[n_edges, Q]`` plus the edge names, labels and indices in the safetensors header), and the
document only the summed edges and the kept positional ones. This writes that artifact
through the real ``ArtifactStore`` for Q = 5 (IOI's S1, IO, S2, END and other), 16 and 128
tokens, and reports the file size, the header's share, the time to write and to read it back
(verified), beside the size of a document that keeps the top 100 and 1,000 positional edges.
Scores are random normals: the file's size does not depend on them.

Writes ``bench/results/positional_artifact.md``.

    python bench/positional_artifact.py
"""

from __future__ import annotations

import datetime as dt
import platform
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from circuitreg.schema.circuit import CircuitDocument, ModelRef, TaskRef
from circuitreg.services.artifacts import ArtifactStore
from circuitreg.services.positional_scores import get_positional, put_positional
from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.methods.base import ScoreResult, to_document
from circuitreg.workers.methods.positional_document import positional_scores
from circuitreg.workers.methods.selection import Selection
from circuitreg.workers.positions import PositionMap

RESULTS = Path(__file__).resolve().parent / "results" / "positional_artifact.md"
GPT2_SMALL = SimpleNamespace(n_layers=12, n_heads=12, attn_only=False)
AXES = {
    "spans (S1, IO, S2, END, other)": PositionMap(
        "spans", ("S1", "IO", "S2", "END", "other"), (2, 4, None, None, None)
    ),
    "index, 16 tokens": PositionMap("index", tuple(str(i) for i in range(16)), tuple(range(16))),
    "index, 128 tokens": PositionMap("index", tuple(str(i) for i in range(128)), tuple(range(128))),
}


def measure(graph: ComputationalGraph, positions: PositionMap, root: Path) -> dict[str, float]:
    """Write and read one artifact; its size, header size and seconds, and document sizes."""
    scores = torch.randn(graph.n_edges, positions.size, generator=torch.Generator().manual_seed(0))
    dense = positional_scores(graph, positions, scores)
    artifacts = ArtifactStore(str(root))
    started = time.perf_counter()
    ref, _ = put_positional(artifacts, f"c_{positions.mode}{positions.size}", dense)
    written = time.perf_counter() - started
    started = time.perf_counter()
    back = get_positional(artifacts, ref)
    read = time.perf_counter() - started
    assert np.array_equal(back.scores, dense.scores)
    data = Path(ref.uri).read_bytes()
    row = {
        "bytes": len(data),
        "header": int.from_bytes(data[:8], "little"),
        "write_s": written,
        "read_s": read,
    }
    for k in (100, 1000):
        row[f"doc_{k}"] = len(_document(graph, positions, scores, k).to_json())
    return row


def _document(
    graph: ComputationalGraph, positions: PositionMap, scores: torch.Tensor, k: int
) -> CircuitDocument:
    result = ScoreResult(
        edge_scores=scores.sum(-1), method="eap", params={}, n_forward=2, n_backward=1,
        seconds=0.0, position_scores=scores, positions=positions,
    )  # fmt: skip
    model = ModelRef(name="gpt2-small-shape", n_layers=12, n_heads=12)
    return to_document(result, graph, Selection("top_k", k), model, TaskRef(name="bench"))


def main() -> None:
    graph = ComputationalGraph.from_cfg(GPT2_SMALL)
    lines = [
        "# Dense positional artifact at GPT-2 small's shape",
        "",
        f"{dt.date.today()}, {platform.machine()}, {platform.python_version()}, "
        f"{graph.n_edges:,} edges. Command: `python bench/positional_artifact.py`. The "
        "artifact is float32 `[n_edges, Q]` plus the edge names, labels and indices in the "
        "safetensors header, written and read back (checksum verified) through "
        "`ArtifactStore` on a local directory. Documents keep every summed edge plus the "
        "top-k positional edges (`to_document`), as JSON.",
        "",
        "| positions | Q | positional edges | artifact bytes | MB | header bytes | write s "
        "| read s | document JSON, top 100 | top 1,000 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for name, positions in AXES.items():
            r = measure(graph, positions, Path(tmp))
            lines.append(
                f"| {name} | {positions.size} | {graph.n_edges * positions.size:,} "
                f"| {int(r['bytes']):,} | {r['bytes'] / 1e6:.2f} | {int(r['header']):,} "
                f"| {r['write_s']:.3f} | {r['read_s']:.3f} | {int(r['doc_100']):,} "
                f"| {int(r['doc_1000']):,} |"
            )
            print(lines[-1], flush=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
