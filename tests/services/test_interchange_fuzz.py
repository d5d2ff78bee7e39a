"""Hostile input as a test: every importer, fed hypothesis-generated malformed documents.

For each readable format (the test below fails when a new importer is registered without a
sample here) three kinds of input are generated, seeded and bounded:

* arbitrary JSON values (``st.recursive``, keys and leaves biased towards the formats' own
  vocabulary so that generated documents reach past the first check);
* mutations of a VALID document of the format: structural ones on its JSON (drop a key,
  change a type, NaN/inf/huge integers, wrong node and hook names) and byte-level ones on
  its bytes (truncation at any point, byte flips, insertions, deletions);
* for GraphML, generated GraphML (random keys, attribute types, node ids and values) and
  malformed XML.

Every example must either import, store, read back from the store unchanged and export to
every format (or refuse the export with ``InterchangeError``), or be refused with
``InterchangeError`` (the one error the CLI and the API turn into a clear message) and leave
the store and its artifact directory exactly as they were.
"""

from __future__ import annotations

import copy
import io
import json
import math
import pickle
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import networkx as nx
import numpy as np
import pytest
from hypothesis import HealthCheck, currently_in_test_context, event, example, given, note, settings
from hypothesis import strategies as st
from sqlalchemy import func, inspect, select, table

from circuitreg.schema import CircuitDocument, Component, Edge, MethodRef, ModelRef, TaskRef
from circuitreg.services.artifacts import ArtifactStore
from circuitreg.services.interchange import (
    FORMATS,
    ImportOptions,
    InterchangeError,
    load_document,
    read_document,
    store_document,
    write_document,
)
from circuitreg.services.stores.common import ModelShapeError
from circuitreg.services.stores.embedded import EmbeddedStore
from circuitreg.services.stores.types import GraphStore

FUZZ = settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.large_base_example,
    ],
)
TOY = ImportOptions(model="toy")

# --- valid samples of every readable format ---------------------------------------------


def _doc() -> CircuitDocument:
    names = ["input", "a0.h0", "a0.h1", "m0", "a1.h0", "a1.h1", "m1", "logits"]
    edges = [
        ("input->a0.h0<q>", 0.5, True),
        ("a0.h0->m0", -0.3, True),
        ("a0.h1->a1.h0<k>", 0.125, False),
        ("m0->a1.h1<v>", 1.5, True),
        ("a1.h0->logits", -2.0, True),
        ("m1->logits", 0.0625, False),
    ]
    return CircuitDocument(
        model=ModelRef(name="toy", n_layers=2, n_heads=2),
        task=TaskRef(name="t"),
        method=MethodRef(name="m"),
        components=[Component.from_name(n, in_circuit=n != "m1") for n in names],
        edges=[Edge.from_name(n, score=s, in_circuit=c) for n, s, c in edges],
        labels={"a1.h0": ("induction head",)},
    )


def _neuronpedia() -> bytes:
    node = {"feature": 0, "jsNodeId": "", "clerp": ""}
    nodes = [
        {**node, "node_id": "E_651_3", "layer": "E", "ctx_idx": 3, "feature_type": "embedding"},
        {
            **node,
            "node_id": "0_812_3",
            "layer": "0",
            "ctx_idx": 3,
            "influence": 0.4,
            "feature_type": "cross layer transcoder",
        },
        {
            **node,
            "node_id": "1_-1_3",
            "layer": "1",
            "ctx_idx": 3,
            "feature_type": "mlp reconstruction error",
        },
        {**node, "node_id": "3_9_3", "layer": "3", "ctx_idx": 3, "feature_type": "logit"},
        {**node, "node_id": "1_77_3", "layer": "1", "ctx_idx": 3, "feature_type": "transcoder"},
    ]
    links = [
        {"source": "E_651_3", "target": "0_812_3", "weight": 1.25},
        {"source": "0_812_3", "target": "1_77_3", "weight": -0.5},
        {"source": "1_-1_3", "target": "3_9_3", "weight": 0.75},
        {"source": "1_77_3", "target": "3_9_3", "weight": 2.0},
    ]
    meta = {"slug": "demo", "scan": "gemma-2-2b", "prompt_tokens": ["a"], "prompt": "a"}
    return json.dumps({"metadata": meta, "nodes": nodes, "links": links}).encode()


def _plain_graphml() -> bytes:
    """GraphML someone else wrote: canonical node ids, receiver and score attributes."""
    graph = nx.MultiDiGraph()
    for name in ("input", "a0.h0", "a1.h1", "logits"):
        graph.add_node(name, score=0.5)
    graph.add_edge("input", "a0.h0", receiver="q", score=1.0)
    graph.add_edge("a0.h0", "a1.h1", receiver="v", score=-0.25, in_circuit=False)
    graph.add_edge("a1.h1", "logits", score=2.0, position=0)
    out = io.BytesIO()
    nx.write_graphml(graph, out)
    return out.getvalue()


def _acdc_pickle() -> bytes:
    """ACDC's edge dict as plain data (tuples for TorchIndex), pickled."""
    whole, head = (None,), lambda h: (None, None, h)
    return pickle.dumps(
        {
            ("blocks.1.hook_q_input", head(0), "blocks.0.attn.hook_result", head(1)): 0.3,
            ("blocks.1.hook_resid_post", whole, "blocks.1.attn.hook_result", head(0)): True,
            ("blocks.1.hook_resid_post", whole, "blocks.0.hook_resid_pre", whole): False,
            ("blocks.0.hook_q_input", head(1), "blocks.0.hook_resid_pre", whole): -0.2,
        }
    )


def _acdc_printed() -> bytes:
    key = "('blocks.1.hook_resid_post', [:], 'blocks.0.attn.hook_result', [:, :, 1])"
    return json.dumps({key: {"present": True, "effect_size": 0.5}}).encode()


def _prune_arrays() -> dict[str, np.ndarray]:
    loaded = np.load(io.BytesIO(write_document(_doc(), "auto-circuit")))
    return {name: loaded[name] for name in loaded.files}


def _auto_circuit_json() -> bytes:
    return json.dumps({k: v.tolist() for k, v in _prune_arrays().items()}).encode()


def _auto_circuit_safetensors() -> bytes:
    from safetensors.numpy import save

    return save({k: np.ascontiguousarray(v) for k, v in _prune_arrays().items()})


def _auto_circuit_pickle() -> bytes:
    return pickle.dumps({k: v.tolist() for k, v in _prune_arrays().items()})


# name -> (format, builder of valid bytes, options); every readable format has one or more.
SAMPLES: dict[str, tuple[str, Callable[[], bytes], ImportOptions | None]] = {
    "circuitreg": ("circuitreg", lambda: write_document(_doc(), "circuitreg"), None),
    "mib": ("mib", lambda: write_document(_doc(), "mib"), TOY),
    "neuronpedia": ("neuronpedia", _neuronpedia, TOY),
    "acdc-json": ("acdc", lambda: write_document(_doc(), "acdc"), TOY),
    "acdc-printed": ("acdc", _acdc_printed, TOY),
    "acdc-pickle": ("acdc", _acdc_pickle, TOY),
    "auto-circuit-npz": ("auto-circuit", lambda: write_document(_doc(), "auto-circuit"), TOY),
    "auto-circuit-json": ("auto-circuit", _auto_circuit_json, TOY),
    "auto-circuit-safetensors": ("auto-circuit", _auto_circuit_safetensors, TOY),
    "auto-circuit-pickle": ("auto-circuit", _auto_circuit_pickle, TOY),
    "graphml-own": ("graphml", lambda: write_document(_doc(), "graphml"), None),
    "graphml-plain": ("graphml", _plain_graphml, TOY),
}
JSON_SAMPLES = [
    n for n in SAMPLES if n in ("circuitreg", "mib", "neuronpedia") or n.endswith("json")
] + ["acdc-printed"]


def test_every_importer_has_a_fuzzed_sample() -> None:
    assert {fmt for fmt, _, _ in SAMPLES.values()} == set(FORMATS.readable())


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_samples_are_valid(name: str) -> None:
    fmt, build, options = SAMPLES[name]
    doc = read_document(build(), fmt, options)
    assert doc.edges and doc.components


# --- the store every example is imported into -------------------------------------------


class Target:
    """A migrated SQLite circuit store and an artifact directory, shared by the module."""

    def __init__(self, root: Path) -> None:
        store = EmbeddedStore(f"sqlite:///{root / 'graph.sqlite'}")
        store.migrate()
        self.store: GraphStore = store
        self.engine = store.engine
        self.tables = sorted(inspect(self.engine).get_table_names())
        self.artifact_root = root / "artifacts"
        self.artifacts = ArtifactStore(str(self.artifact_root))
        self.imported = 0

    def own_model(self, doc: CircuitDocument) -> CircuitDocument:
        """``doc`` with a model name of its own: the stores keep one shape per model name
        (see ``test_same_model_name_with_another_shape``), so examples must not share one."""
        self.imported += 1
        model = doc.model.model_copy(update={"name": f"fuzz-{self.imported}"})
        return doc.model_copy(update={"model": model})

    def fingerprint(self) -> tuple[Any, ...]:
        """Row counts of every table of the store, and the artifact files with their sizes."""
        with self.engine.connect() as conn:
            counts = tuple(
                conn.execute(select(func.count()).select_from(table(name))).scalar()
                for name in self.tables
            )
        files = tuple(
            sorted(
                (str(p.relative_to(self.artifact_root)), p.stat().st_size)
                for p in self.artifact_root.rglob("*")
                if p.is_file()
            )
        )
        return counts, files


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    made = Target(tmp_path_factory.mktemp("fuzz-store"))
    yield made
    made.store.close()


def _edges(doc: CircuitDocument) -> list[tuple[Any, ...]]:
    """What the stores keep of the edges: the circuit's own and every scored one.

    An edge outside the circuit without a score is in neither the graph store nor the dense
    scores, so it does not come back (ACDC files list such edges as ``present: False``).
    """
    return sorted(
        (e.name, e.position or -1, e.score, e.in_circuit)
        for e in doc.edges
        if e.in_circuit or e.score is not None
    )


def check_import(
    target: Target, data: bytes, fmt: str | None, options: ImportOptions | None
) -> str:
    """Import ``data`` into the store; it must work all the way or be refused cleanly."""
    if currently_in_test_context():
        note(f"input: {data!r} as {fmt or 'detected'} with {options}")
    before = target.fingerprint()
    try:
        doc = target.own_model(read_document(data, fmt, options))
        stored = store_document(target.store, target.artifacts, doc)
    except InterchangeError as exc:
        assert str(exc).strip(), "a refusal without a message"
        assert target.fingerprint() == before, "a refused import changed the store"
        if currently_in_test_context():
            event("refused")
        return "refused"
    # Imported: the stored circuit reads back as the document that was read, ...
    assert stored.circuit_id == doc.id
    back = load_document(target.store, target.artifacts, doc.id)
    assert _edges(back) == _edges(doc)
    assert back.model == doc.model and back.task == doc.task and back.method == doc.method
    if len(_edges(doc)) == len(doc.edges):
        assert back.id == doc.id
    assert {c.key for c in doc.circuit_components()} <= {c.key for c in back.components}
    # ... round-trips through the native format, and exports to every format or says why not.
    again = read_document(write_document(back, "circuitreg"), "circuitreg")
    assert again.id == back.id and _edges(again) == _edges(doc)
    for name in FORMATS.writable():
        try:
            write_document(back, name)
        except InterchangeError as exc:
            assert str(exc).strip()
    if currently_in_test_context():
        event("imported")
    return "imported"


# --- strategies ---------------------------------------------------------------------------

NODE_NAMES = [
    "input",
    "logits",
    "a0.h0",
    "a1.h1",
    "m0",
    "m1",
    "f0.3",
    "a9.h9",
    "a0.h99",
    "m-1",
    "a01.h0",
    "A0.H0",
    "a99999999999999999999.h0",
    "a" + "9" * 5000 + ".h0",
    "",
    "input ",
    "\x00",
]
EDGE_NAMES = [
    "input->logits",
    "a0.h0->logits",
    "input->a0.h0<q>",
    "a0.h0->a1.h1<k>",
    "logits->input",
    "a0.h0->a0.h0<q>",
    "input->a0.h0<z>",
    "input->a0.h0",
    "m0->m0",
    "->",
    "a0.h0->",
    "input->m99",
]
HOOKS = [
    "blocks.0.hook_resid_pre",
    "hook_embed",
    "blocks.0.attn.hook_result",
    "blocks.1.hook_mlp_out",
    "blocks.1.hook_q_input",
    "blocks.0.hook_k_input",
    "blocks.1.hook_mlp_in",
    "blocks.1.hook_resid_post",
    "blocks.0.hook_attn_in",
    "blocks.999.hook_q_input",
    "blocks.99999999999.hook_resid_post",
    "blocks." + "9" * 5000 + ".hook_resid_post",
    "blocks.x.hook_v_input",
    "blocks.1.attn.hook_q",
]
WORDS = [
    "format",
    "circuitreg/1",
    "model",
    "task",
    "method",
    "name",
    "n_layers",
    "n_heads",
    "components",
    "edges",
    "kind",
    "layer",
    "head",
    "position",
    "score",
    "in_circuit",
    "source",
    "target",
    "receiver",
    "cfg",
    "nodes",
    "in_graph",
    "links",
    "node_id",
    "feature_type",
    "ctx_idx",
    "weight",
    "metadata",
    "scan",
    "present",
    "effect_size",
    "sender",
    "labels",
    "validation",
    "provenance",
    "embedding",
    "logit",
    "transcoder",
    "mlp reconstruction error",
    "q",
    "k",
    "v",
]
VOCABULARY = st.sampled_from(WORDS + NODE_NAMES + EDGE_NAMES + HOOKS)
NUMBERS = (
    st.integers(-3, 12)
    | st.integers()
    | st.sampled_from([2**63, 2**64, -(2**63) - 1, 10**30, 10**400])
    | st.floats()  # NaN and infinities included: json.dumps writes them as NaN/Infinity
)
SCALARS = st.none() | st.booleans() | NUMBERS | st.text(max_size=12) | VOCABULARY
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(VOCABULARY | st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=30,
)
REPLACEMENTS = (
    st.sampled_from(
        [
            None,
            True,
            False,
            0,
            -1,
            1.5,
            2**64,
            10**30,
            math.nan,
            math.inf,
            -math.inf,
            "",
            "x",
            "0.5",
            [],
            {},
            [None],
            {"x": 1},
            "circuitreg/2",
        ]
    )
    | VOCABULARY
    | JSON_VALUES
)


def _dumps(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """The path of every value inside ``value`` (the root excluded)."""
    children: list[tuple[Any, Any]] = []
    if isinstance(value, dict):
        children = list(value.items())
    elif isinstance(value, list):
        children = list(enumerate(value))
    for key, item in children:
        yield (*prefix, key)
        yield from _paths(item, (*prefix, key))


@st.composite
def mutated_json(draw: st.DrawFn, original: Any) -> bytes:
    """A valid JSON document with one to three structural mutations."""
    value = copy.deepcopy(original)
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(value))
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = value
        for key in path[:-1]:
            parent = parent[key]
        last = path[-1]
        op = draw(st.sampled_from(["drop", "replace", "rename", "wrap", "duplicate"]))
        if op == "drop":
            del parent[last]
        elif op == "replace":
            parent[last] = draw(REPLACEMENTS)
        elif op == "rename" and isinstance(parent, dict):
            new = draw(VOCABULARY | st.text(max_size=6))
            parent[new] = parent.pop(last)
        elif op == "wrap":
            parent[last] = draw(st.sampled_from([[parent[last]], {"x": parent[last]}]))
        elif op == "duplicate" and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[last]))
    return _dumps(value)


INSERTS = [
    b'"',
    b"null",
    b"[",
    b"]",
    b"{}",
    b",",
    b"1e999",
    b"NaN",
    b"-Infinity",
    b"<",
    b">",
    b"\x00",
    b"\xff",
    b"\x80",
    b"</node>",
    b"<node id='a0.h0'/>",
    b"&amp;",
    b"&x;",
    b"\\u0000",
    b"\\ud800",
    b'"a0.h0"',
    b"99999999999999999999",
    b"9" * 5000,
]


@st.composite
def damaged(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` truncated, with bytes flipped, inserted or deleted."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 3))):
        if not out:
            break
        at = draw(st.integers(0, len(out) - 1))
        op = draw(st.sampled_from(["truncate", "flip", "insert", "delete"]))
        if op == "truncate":
            del out[at:]
        elif op == "flip":
            out[at] = draw(st.integers(0, 255))
        elif op == "insert":
            out[at:at] = draw(st.sampled_from(INSERTS) | st.binary(min_size=1, max_size=4))
        else:
            del out[at : at + draw(st.integers(1, 40))]
    return bytes(out)


GRAPHML_ATTRS = [
    "name",
    "score",
    "position",
    "in_circuit",
    "receiver",
    "order",
    "kind",
    "layer",
    "head",
    "circuitreg_format",
    "model",
    "task",
    "method",
    "labels",
    "validation",
    "provenance",
    "seed",
    "ablation",
]
GRAPHML_TYPES = ["string", "int", "long", "double", "float", "boolean", "bogus"]
GRAPHML_VALUES = (
    st.sampled_from(
        [
            "0",
            "-1",
            "1.5",
            "NaN",
            "inf",
            "1e999",
            "true",
            "false",
            "q",
            "k",
            "z",
            "",
            "x",
            "99999999999999999999",
            "circuitreg/1",
            '{"name": "toy", "n_layers": 1, "n_heads": 1}',
            '{"name": "t"}',
            "[]",
            "{}",
            "[[[[",
            "null",
        ]
    )
    | VOCABULARY
    | st.text(max_size=8)
)


@st.composite
def graphml_documents(draw: st.DrawFn) -> bytes:
    """GraphML with random keys, attribute types, node ids, edges and values."""
    keys = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["node", "edge", "graph", "all", "bogus"]),
                st.sampled_from(GRAPHML_ATTRS),
                st.sampled_from(GRAPHML_TYPES),
            ),
            max_size=6,
        )
    )
    parts = [
        '<?xml version="1.0" encoding="utf-8"?>',
        '<graphml xmlns="http://graphml.graphdrawing.org/xmlns">',
    ]
    for i, (domain, attr, kind) in enumerate(keys):
        parts.append(f'<key id="d{i}" for="{domain}" attr.name="{attr}" attr.type="{kind}"/>')

    def data() -> str:
        if not keys:
            return ""
        chosen = draw(st.lists(st.integers(0, len(keys) - 1), max_size=3))
        return "".join(f'<data key="d{i}">{escape(draw(GRAPHML_VALUES))}</data>' for i in chosen)

    directed = draw(st.sampled_from(["directed", "undirected"]))
    parts.append(f'<graph edgedefault="{directed}">{data()}')
    node_ids = draw(
        st.lists(st.sampled_from(NODE_NAMES[:-1]) | st.text(max_size=5), max_size=5, unique=True)
    )
    for node in node_ids:
        parts.append(f"<node id={quoteattr(node)}>{data()}</node>")
    ends = st.sampled_from([*node_ids, "a0.h0"])
    for source, end in draw(st.lists(st.tuples(ends, ends), max_size=5)):
        parts.append(f"<edge source={quoteattr(source)} target={quoteattr(end)}>{data()}</edge>")
    parts.append("</graph></graphml>")
    return "".join(parts).encode("utf-8", "surrogatepass")


AUTO_CIRCUIT_KEYS = [
    f"blocks.{layer}.hook_{hook}"
    for layer in range(3)
    for hook in ("q_input", "k_input", "v_input", "mlp_in", "resid_post")
]


@st.composite
def prune_scores(draw: st.DrawFn) -> bytes:
    """auto-circuit prune scores: destination keys of layers 0-2, arrays mostly of the right
    shape for some head count (sometimes positioned, sometimes of a random shape)."""
    n_heads = draw(st.integers(1, 3))
    per_layer = n_heads + (0 if draw(st.booleans()) else 1)
    keys = draw(st.lists(st.sampled_from(AUTO_CIRCUIT_KEYS), min_size=1, max_size=5, unique=True))
    arrays: dict[str, np.ndarray] = {}
    for key in keys:
        layer, hook = int(key.split(".")[1]), key.split(".")[2]
        if hook == "hook_mlp_in":
            shape: tuple[int, ...] = (1 + layer * per_layer + n_heads,)
        elif hook == "hook_resid_post":
            shape = (1 + (layer + 1) * per_layer,)
        else:
            shape = (n_heads, 1 + layer * per_layer)
        if draw(st.integers(0, 3)) == 0:
            shape = (draw(st.integers(1, 2)), *shape)
        if draw(st.integers(0, 5)) == 0:
            shape = tuple(draw(st.lists(st.integers(0, 3), max_size=3)))
        size = int(np.prod(shape))
        leaf = st.sampled_from([0.0, 1.0, -0.5, 2.5]) | st.floats(width=32)
        arrays[key] = np.array(draw(st.lists(leaf, min_size=size, max_size=size))).reshape(shape)
    container = draw(st.sampled_from(["json", "npz", "pickle"]))
    if container == "json":
        return _dumps({k: v.tolist() for k, v in arrays.items()})
    if container == "pickle":
        return pickle.dumps({k: v.tolist() for k, v in arrays.items()})
    out = io.BytesIO()
    np.savez(out, **arrays)  # type: ignore[arg-type]
    return out.getvalue()


# --- the fuzzes ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", [*FORMATS.readable(), None])
def test_arbitrary_json_is_imported_or_refused_cleanly(target: Target, fmt: str | None) -> None:
    options = None if fmt in ("circuitreg", "graphml", None) else TOY

    @FUZZ
    @given(value=JSON_VALUES)
    # Found by this fuzz (each failed before the fix it names):
    # auto-circuit: max() of no keys raised ValueError
    @example(value={})
    # auto-circuit: listed 10^11 source names before checking the array's shape (killed: OOM)
    @example(value={"blocks.99999999999.hook_resid_post": [1.0]})
    # auto-circuit: an integer beyond a float's range raised OverflowError in np.asarray
    @example(value={"blocks.0.hook_resid_post": [2**1100, 0]})
    # acdc: int(inf) for a head index raised OverflowError
    @example(value=[[["blocks.0.hook_q_input", [1e400], "hook_embed", [None]], True]])
    # mib (and graphml, neuronpedia): imported, then OverflowError in the store's INTEGER
    # column; now refused by Format.read (check_storable)
    @example(value={"cfg": {"n_layers": 10**20, "n_heads": 1}, "nodes": {}, "edges": {}})
    # imported, then the auto-circuit export allocated 1.5 * 10^10 zeros (hung, then OOM)
    @example(value={"cfg": {"n_layers": 100_000, "n_heads": 1}, "nodes": {}, "edges": {}})
    def run(value: Any) -> None:
        check_import(target, _dumps(value), fmt, options)

    run()


@pytest.mark.parametrize("name", JSON_SAMPLES)
def test_mutated_valid_json_is_imported_or_refused_cleanly(target: Target, name: str) -> None:
    fmt, build, options = SAMPLES[name]
    original = json.loads(build())

    @FUZZ
    @given(data=mutated_json(original))
    def run(data: bytes) -> None:
        check_import(target, data, fmt, options)

    run()


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_damaged_bytes_are_imported_or_refused_cleanly(target: Target, name: str) -> None:
    fmt, build, options = SAMPLES[name]
    valid = build()

    @settings(FUZZ, max_examples=40)  # twelve samples: 80 to 160 damaged files per format
    @given(data=damaged(valid), detect=st.booleans())
    @example(data=b'{"a": ' + b"1" * 5000 + b"}", detect=False)  # int() digit limit: ValueError
    @example(data=b'{"a": ' + b"1" * 5000 + b"}", detect=True)
    def run(data: bytes, detect: bool) -> None:
        check_import(target, data, None if detect else fmt, None if detect else options)

    run()


def test_generated_and_malformed_graphml_is_imported_or_refused_cleanly(target: Target) -> None:
    @settings(FUZZ, max_examples=80)
    @given(data=graphml_documents() | graphml_documents().flatmap(damaged), detect=st.booleans())
    @example(data=b"<graphml", detect=False)
    @example(data=b"<graphml><graph><node id='a0.h0'></graph></graphml>", detect=False)
    @example(
        data=b"<?xml version='1.0'?><!DOCTYPE g [<!ENTITY e SYSTEM 'file:///etc/passwd'>]>"
        b"<graphml><graph edgedefault='directed'><node id='&e;'/></graph></graphml>",
        detect=False,
    )
    @example(
        data=b"<?xml version='1.0'?><!DOCTYPE g [<!ENTITY a 'aaaaaaaaaa'>"
        + b"".join(
            b"<!ENTITY a%d '%s'>" % (i + 1, (b"&a%d;" % i if i else b"&a;") * 10) for i in range(8)
        )
        + b"]><graphml><graph><node id='&a8;'/></graph></graphml>",
        detect=False,
    )
    def run(data: bytes, detect: bool) -> None:
        check_import(target, data, None if detect else "graphml", None)

    run()


def test_generated_prune_scores_are_imported_or_refused_cleanly(target: Target) -> None:
    @settings(FUZZ, max_examples=80)
    @given(data=prune_scores(), detect=st.booleans())
    # A destination beyond the logits' layer indexed past the source list (IndexError).
    @example(
        data=b'{"blocks.0.hook_resid_post": [0, 0], "blocks.2.hook_q_input": [[0, 0, 0]]}',
        detect=False,
    )
    def run(data: bytes, detect: bool) -> None:
        check_import(target, data, None if detect else "auto-circuit", None if detect else TOY)

    run()


D5000 = "9" * 5000  # int() refuses to read 4,300 digits or more (ValueError)
BEYOND_FLOAT = 2**1100  # float() of it is an OverflowError
GRAPHML_HEAD = '<graphml xmlns="http://graphml.graphdrawing.org/xmlns">'


def _j(value: Any) -> bytes:
    return json.dumps(value).encode()


# Hand-written hostile files; every one failed with a stray exception (or worse) before.
HOSTILE_FILES: list[tuple[str, bytes, str | None]] = [
    ("empty prune scores", b"{}", "auto-circuit"),
    ("layer 10^11 prune scores (OOM)", b'{"blocks.99999999999.hook_resid_post": [1]}', None),
    (
        "destination past the logits",
        _j({"blocks.0.hook_resid_post": [0, 0], "blocks.2.hook_q_input": [[0, 0, 0]]}),
        "auto-circuit",
    ),
    ("prune score beyond a float", _j({"blocks.0.hook_resid_post": [BEYOND_FLOAT, 0]}), None),
    ("5000-digit JSON integer", b'{"a": ' + D5000.encode() + b"}", "circuitreg"),
    ("5000-digit JSON integer, detected", b'{"a": ' + D5000.encode() + b"}", None),
    (
        "infinite ACDC head index",
        b'[[["blocks.0.hook_q_input", [1e400], "hook_embed", []], 1]]',
        "acdc",
    ),
    (
        "ACDC effect size beyond a float",
        _j([[["blocks.0.hook_resid_post", [None], "hook_embed", [None]], BEYOND_FLOAT]]),
        "acdc",
    ),
    (
        "ACDC hook of a 5000-digit layer",
        _j([[[f"blocks.{D5000}.hook_resid_post", [None], "hook_embed", [None]], True]]),
        "acdc",
    ),
    ("prune-score key of a 5000-digit layer", _j({f"blocks.{D5000}.hook_resid_post": [1]}), None),
    (
        "MIB score beyond a float",
        _j(
            {
                "cfg": {"n_layers": 1, "n_heads": 1},
                "nodes": {"input": {"in_graph": True, "score": BEYOND_FLOAT}},
                "edges": {},
            }
        ),
        "mib",
    ),
    (
        "MIB node of a 5000-digit layer",
        _j({"cfg": {"n_layers": 1, "n_heads": 1}, "nodes": {f"a{D5000}.h0": True}, "edges": {}}),
        "mib",
    ),
    (
        "MIB n_layers beyond 64 bits",
        _j({"cfg": {"n_layers": 10**20, "n_heads": 1}, "nodes": {}, "edges": {}}),
        "mib",
    ),
    (
        "MIB NaN score",
        b'{"cfg": {"n_layers": 1, "n_heads": 1}, "nodes": {"input": {"in_graph":'
        b' true, "score": NaN}}, "edges": {}}',
        "mib",
    ),
    (
        "native NaN score",
        write_document(_doc(), "circuitreg").replace(b"0.5", b"NaN", 1),
        "circuitreg",
    ),
    (
        "native 1e999 score",
        write_document(_doc(), "circuitreg").replace(b"0.5", b"1e999", 1),
        "circuitreg",
    ),
    (
        "native seed beyond 32 bits",
        write_document(_doc(), "circuitreg").replace(b'"seed":null', b'"seed":4294967296'),
        "circuitreg",
    ),
    (
        "neuronpedia 5000-digit feature index",
        _j(
            {
                "nodes": [
                    {
                        "node_id": f"1_{D5000}_3",
                        "feature_type": "transcoder",
                        "layer": 1,
                        "ctx_idx": 0,
                    }
                ],
                "links": [],
            }
        ),
        "neuronpedia",
    ),
    (
        "neuronpedia 5000-digit layer string",
        _j(
            {
                "nodes": [
                    {
                        "node_id": "x",
                        "layer": D5000,
                        "feature_type": "mlp reconstruction error",
                        "ctx_idx": 0,
                    }
                ],
                "links": [],
            }
        ),
        "neuronpedia",
    ),
    (
        "neuronpedia influence beyond a float",
        _j(
            {
                "nodes": [
                    {
                        "node_id": "x",
                        "ctx_idx": 0,
                        "feature_type": "embedding",
                        "influence": BEYOND_FLOAT,
                    }
                ],
                "links": [],
            }
        ),
        "neuronpedia",
    ),
    (
        "neuronpedia layer beyond 64 bits",
        _j(
            {
                "nodes": [
                    {
                        "node_id": "1_2_3",
                        "ctx_idx": 0,
                        "feature_type": "transcoder",
                        "layer": 10**20,
                    }
                ],
                "links": [],
            }
        ),
        "neuronpedia",
    ),
    (
        "GraphML head of a 20-digit layer",
        (
            GRAPHML_HEAD + '<graph edgedefault="directed">'
            '<node id="a99999999999999999999.h0"/></graph></graphml>'
        ).encode(),
        "graphml",
    ),
    (
        "GraphML NaN score",
        (
            GRAPHML_HEAD + '<key id="d0" for="node" attr.name="score" '
            'attr.type="double"/><graph edgedefault="directed"><node id="input"><data key="d0">NaN'
            "</data></node></graph></graphml>"
        ).encode(),
        "graphml",
    ),
]


@pytest.mark.parametrize(
    ("data", "fmt"),
    [(d, f) for _, d, f in HOSTILE_FILES],
    ids=[name for name, _, _ in HOSTILE_FILES],
)
def test_hand_written_hostile_files_are_refused_cleanly(
    target: Target, data: bytes, fmt: str | None
) -> None:
    options = None if fmt in ("circuitreg", "graphml", None) else TOY
    assert check_import(target, data, fmt, options) == "refused"


def test_same_model_name_with_another_shape(target: Target) -> None:
    small = _doc().model_copy(update={"model": ModelRef(name="shape-clash", n_layers=2, n_heads=2)})
    store_document(target.store, target.artifacts, small)
    edges = ["input->a2.h0<q>", "a2.h0->logits"]
    deeper = CircuitDocument(
        model=ModelRef(name="shape-clash", n_layers=3, n_heads=1),
        task=TaskRef(name="t"),
        method=MethodRef(name="m"),
        components=[Component.from_name(n) for n in ("input", "a2.h0", "logits")],
        edges=[Edge.from_name(n, score=1.0) for n in edges],
    )
    before = target.fingerprint()
    # Found by this fuzz: the stores kept the first shape and read the second circuit back
    # wrong. A model name now stands for one shape, and another is refused, writing nothing.
    with pytest.raises(ModelShapeError, match="'shape-clash' is stored with another shape"):
        store_document(target.store, target.artifacts, deeper)
    assert target.fingerprint() == before
