"""``circuitreg import`` / ``export`` through the real store factory and artifact store
(the MIB round trip on the embedded store and on the real Neo4j)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from circuitreg.cli import app
from circuitreg.schema import CircuitDocument, Component, Edge, MethodRef, ModelRef, TaskRef
from circuitreg.services.artifacts import ArtifactStore
from circuitreg.services.interchange import load_document, store_document, write_document
from circuitreg.services.stores.factory import open_store
from circuitreg.services.stores.types import CircuitFilter
from circuitreg.settings import get_settings

runner = CliRunner()


def _small_doc() -> CircuitDocument:
    names = ["input", "a0.h0", "a0.h1", "m0", "a1.h0", "m1", "logits"]
    edges = [
        ("input->a0.h0<q>", 0.5, True),
        ("input->a0.h1<k>", -0.25, False),
        ("a0.h0->m0", 0.75, True),
        ("a0.h1->a1.h0<v>", 0.125, False),
        ("m0->a1.h0<k>", 1.5, True),
        ("a1.h0->logits", -2.0, True),
        ("m1->logits", 0.0625, False),
    ]
    return CircuitDocument(
        model=ModelRef(name="toy-2l", n_layers=2, n_heads=2),
        task=TaskRef(name="induction"),
        method=MethodRef(name="eap-ig"),
        components=[Component.from_name(n, in_circuit=n not in ("a0.h1", "m1")) for n in names],
        edges=[Edge.from_name(n, score=s, in_circuit=c) for n, s, c in edges],
    )


def _stored_ids() -> list[str]:
    store = open_store(get_settings())
    try:
        store.migrate()
        return [s.id for s in store.list_circuits(CircuitFilter(), first=100).items]
    finally:
        store.close()


def _artifact_files() -> list[Path]:
    root = Path(get_settings().resolved_artifact_url)
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_mib_through_the_store_round_trips_exactly(
    mib_ioi_path: Path, tmp_path: Path, settings_graph_backend: str
) -> None:
    args = ["import", str(mib_ioi_path), "--model", "gpt2", "--task", "ioi", "--method", "eap-ig"]
    imported = runner.invoke(app, args)
    assert imported.exit_code == 0, imported.output
    circuit_id = imported.output.strip()
    assert circuit_id.startswith("c_")

    store = open_store(get_settings())
    try:
        stored = store.get_circuit(circuit_id)
        assert stored is not None and len(stored.edges) == 756  # only the circuit's own edges
        full = load_document(store, ArtifactStore(get_settings().resolved_artifact_url), circuit_id)
    finally:
        store.close()
    assert len(full.edges) == 32_491
    assert full.id == circuit_id  # circuit + dense scores rebuild the very document imported

    out = tmp_path / "out.json"
    exported = runner.invoke(app, ["export", circuit_id, "--format", "mib", "--out", str(out)])
    assert exported.exit_code == 0, exported.output
    original, written = json.loads(mib_ioi_path.read_bytes()), json.loads(out.read_bytes())
    assert written == original
    assert list(written["edges"]) == list(original["edges"])
    assert list(written["nodes"]) == list(original["nodes"])
    assert list(written["cfg"]) == list(original["cfg"])


@pytest.mark.parametrize(
    ("old", "new", "where"),
    [
        (
            '"a0.h1->a1.h2<k>": {"score"',
            '"a0.h1->a1.h2<z>": {"score"',
            '$.edges["a0.h1->a1.h2<z>"]',
        ),
        ('"a0.h1->a1.h2<k>": {"score": ', '"a0.h1->a1.h2<k>": {"score": "x", "y": ', "score"),
        ('"a0.h1->a1.h2<k>": {"score"', '"a0.h1->a1.h13<k>": {"score"', "a1.h13"),
        (None, None, "line 1 column"),
    ],
)
def test_corrupted_import_leaves_the_store_unchanged(
    mib_ioi_path: Path, tmp_path: Path, old: str | None, new: str | None, where: str
) -> None:
    good = tmp_path / "good.json"
    good.write_bytes(write_document(_small_doc(), "circuitreg"))
    first = runner.invoke(app, ["import", str(good)])
    assert first.exit_code == 0, first.output
    before_ids, before_files = _stored_ids(), _artifact_files()
    assert before_ids == [first.output.strip()] and len(before_files) == 1

    text = mib_ioi_path.read_text()
    if old is None:
        text = text[: len(text) * 2 // 3]
    else:
        assert old is not None and new is not None and old in text
        text = text.replace(old, new, 1)
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    result = runner.invoke(app, ["import", str(bad), "--model", "gpt2"])
    assert result.exit_code == 2
    assert where in result.output and "error:" in result.output
    assert _stored_ids() == before_ids
    assert _artifact_files() == before_files


def test_failed_store_write_removes_the_new_artifact(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = get_settings()
    artifacts = ArtifactStore(settings.resolved_artifact_url)
    store = open_store(settings)
    try:
        store.migrate()

        def broken(*args: object, **kwargs: object) -> str:
            raise RuntimeError("database went away")

        monkeypatch.setattr(store, "put_circuit", broken)
        with pytest.raises(RuntimeError, match="went away"):
            store_document(store, artifacts, _small_doc())
    finally:
        store.close()
    assert _artifact_files() == []
    assert _stored_ids() == []


def test_export_of_unknown_circuit_and_unknown_format(tmp_path: Path) -> None:
    missing = runner.invoke(
        app, ["export", "c_nope", "--format", "mib", "--out", str(tmp_path / "x")]
    )
    assert missing.exit_code == 2 and "no stored circuit 'c_nope'" in missing.output
    good = tmp_path / "good.json"
    good.write_bytes(write_document(_small_doc(), "circuitreg"))
    circuit_id = runner.invoke(app, ["import", str(good)]).output.strip()
    bad_format = runner.invoke(
        app, ["export", circuit_id, "--format", "xml", "--out", str(tmp_path / "x")]
    )
    assert bad_format.exit_code == 2 and "unknown format 'xml'" in bad_format.output
    assert not (tmp_path / "x").exists()


def test_small_circuit_round_trips_through_the_store_in_each_format(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CIRCUITREG_DATABASE_URL", database_url)  # SQLite, then PostgreSQL
    get_settings.cache_clear()
    doc = _small_doc()
    source = tmp_path / "doc.json"
    source.write_bytes(write_document(doc, "circuitreg"))
    circuit_id = runner.invoke(app, ["import", str(source)]).output.strip()
    assert circuit_id == doc.id
    for fmt in ("circuitreg", "mib", "graphml", "acdc", "dot"):
        out = tmp_path / f"out.{fmt}"
        result = runner.invoke(app, ["export", circuit_id, "--format", fmt, "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert out.stat().st_size > 0
    again = runner.invoke(app, ["import", str(tmp_path / "out.mib"), "--model", "toy-2l",
                                "--task", "induction", "--method", "eap-ig"])  # fmt: skip
    assert again.exit_code == 0, again.output
    assert again.output.strip() == circuit_id
    assert _stored_ids() == [circuit_id]
    with_scores = ArtifactStore(get_settings().resolved_artifact_url)
    store = open_store(get_settings())
    try:
        assert load_document(store, with_scores, circuit_id).edges == doc.edges
    finally:
        store.close()
