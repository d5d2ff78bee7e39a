"""Circuit store benchmark: write throughput and the latency of the six registry questions
as the registry grows to 10, 100, 1,000 and 10,000 circuits of 1,000 edges.

Backends: embedded SQLite, embedded PostgreSQL (``--postgres-url``), FalkorDB (when
falkordblite is installed) and Neo4j (``--neo4j-uri``, or else the Neo4j Community server of
tests/neo4j_server, started here with a larger page cache). Circuits are MIB-named edges of a
gpt2-small-shaped model (12 layers x 12 heads); 40% of each circuit's edges come from a core
shared by all circuits (one task over checkpoints and seeds), the rest at random. After each
growth stage the six questions are timed (median of ``--repeats``):

* sharedSubcircuits over every stored circuit, min_support = half of them;
* componentUsage of one head; circuitsWithEdge of one core edge;
* motifSearch head -> head <k> in consecutive layers (first 100 matches);
* circuitEvolution of the task over every checkpoint;
* similarCircuits of the newest circuit (first 10, role-aligned): the vector index's
  candidates on Neo4j and FalkorDB, an exact scan of the hashed vectors on the embedded
  store, each re-ranked by exact cosine.

``--questions`` times a subset (e.g. ``--questions similarCircuits`` with ``--edges 100``
to reach 10,000 circuits in minutes).

On Neo4j the slowest question at the largest size is run again under ``PROFILE`` and its plan
goes into the results file. A 100,000-circuit registry is extrapolated from the growth
between the two largest sizes (latency ~ size^slope).

    python bench/store_bench.py --backends sqlite,neo4j --sizes 10,100,1000,10000
    python bench/store_bench.py --backends sqlite,neo4j --sizes 1000,10000 --edges 100 \
        --questions similarCircuits --output /tmp/similar.md
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from circuitreg.schema import (
    CircuitDocument,
    Component,
    Edge,
    MethodRef,
    ModelRef,
    TaskRef,
    edge_name,
    head_name,
    mlp_name,
    node_order_key,
)
from circuitreg.services.stores.types import GraphStore, Motif, MotifEdge, NodePattern

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "store.md"
MODEL, TASK, METHOD = "gpt2-bench", "ioi", "eap-ig"
N_LAYERS = N_HEADS = 12
QUESTIONS = (
    "sharedSubcircuits",
    "componentUsage",
    "circuitsWithEdge",
    "motifSearch",
    "circuitEvolution",
    "similarCircuits",
)


def candidate_edges() -> list[str]:
    """Every canonical edge of a 12-layer, 12-head model (32,491), in a fixed order."""
    nodes = ["input"]
    for layer in range(N_LAYERS):
        nodes.extend(head_name(layer, h) for h in range(N_HEADS))
        nodes.append(mlp_name(layer))
    nodes.append("logits")
    edges = []
    for i, src in enumerate(nodes):
        for dst in nodes[i + 1 :]:
            if node_order_key(src)[0] >= node_order_key(dst)[0] and dst != "logits":
                continue  # readers are in a later layer (or the logits)
            if dst.startswith("a"):
                edges.extend(edge_name(src, dst, r) for r in "qkv")
            else:
                edges.append(edge_name(src, dst))
    return edges


class CircuitMaker:
    """Circuit ``i`` of the corpus, made on demand (10,000 documents do not fit in memory)."""

    def __init__(self, n_edges: int, seed: int = 0) -> None:
        rng = random.Random(seed)
        self.pool = candidate_edges()
        self.core = rng.sample(self.pool, int(n_edges * 0.4))
        in_core = set(self.core)
        self.rest = [e for e in self.pool if e not in in_core]
        self.n_edges = n_edges
        self.seed = seed

    def make(self, i: int) -> CircuitDocument:
        """The ``i``-th circuit: the core plus its own random edges, checkpoint step ``i``."""
        rng = random.Random(self.seed * 1_000_003 + i)
        names = self.core + rng.sample(self.rest, self.n_edges - len(self.core))
        edges = tuple(Edge.from_name(e, score=round(rng.uniform(-1, 1), 6)) for e in names)
        ends = sorted({x for e in edges for x in (e.source, e.target)})
        model = ModelRef(name=MODEL, n_layers=N_LAYERS, n_heads=N_HEADS)
        return CircuitDocument(
            model=model.model_copy(update={"checkpoint": f"step-{i}", "step": i}),
            task=TaskRef(name=TASK),
            method=MethodRef(name=METHOD, params={"top_n": self.n_edges}),
            seed=i,
            components=tuple(Component.from_name(c) for c in ends),
            edges=edges,
        )


@dataclass
class Timings:
    """Per backend: write rate per stage and each question's latency per size."""

    write_edges_per_s: dict[int, float] = field(default_factory=dict)
    latency_s: dict[tuple[str, int], float] = field(default_factory=dict)
    answer_size: dict[tuple[str, int], int] = field(default_factory=dict)
    profile: str = ""


def questions(store: GraphStore, ids: list[str], core_edge: str) -> dict[str, Callable[[], int]]:
    """The six questions over the stored circuits; each returns the size of its answer."""
    motif = Motif(
        nodes={"a": NodePattern(kind="attn_head", layer=0), "b": NodePattern(layer=1)},
        edges=(MotifEdge(source="a", target="b", receiver="k"),),
        model=MODEL,
    )
    return {
        "sharedSubcircuits": lambda: len(
            store.shared_subcircuit(ids, min_support=max(1, len(ids) // 2)).edges
        ),
        "componentUsage": lambda: len(store.component_usage(MODEL, "a5.h3")),
        "circuitsWithEdge": lambda: len(store.circuits_with_edge(MODEL, core_edge)),
        "motifSearch": lambda: len(store.motif_search(motif, limit=100)),
        "circuitEvolution": lambda: len(store.evolution(MODEL, TASK, METHOD).steps),
        "similarCircuits": lambda: len(store.similar_circuits(ids[-1], first=10)),
    }


def measure(
    store: GraphStore,
    maker: CircuitMaker,
    sizes: list[int],
    repeats: int,
    out: Timings,
    after_stage: Callable[[], None],
    asked: tuple[str, ...] = QUESTIONS,
) -> None:
    """Grow the registry stage by stage; after each stage time every question (a question
    whose first run takes over 20 s is run once)."""
    ids: list[str] = []
    for size in sizes:
        start, written = time.perf_counter(), 0
        while len(ids) < size:
            doc = maker.make(len(ids))
            ids.append(store.put_circuit(doc))
            written += len(doc.edges)
        out.write_edges_per_s[size] = written / (time.perf_counter() - start)
        for name, ask in questions(store, ids, maker.core[0]).items():
            if name not in asked:
                continue
            times: list[float] = []
            while len(times) < repeats and sum(times) < 20:
                t0 = time.perf_counter()
                out.answer_size[(name, size)] = ask()
                times.append(time.perf_counter() - t0)
            out.latency_s[(name, size)] = statistics.median(times)
        row = {q: round(out.latency_s[(q, size)], 3) for q in asked}
        rate = out.write_edges_per_s[size]
        print(f"  {size} circuits: write {rate:,.0f} edges/s, seconds {row}", flush=True)
        after_stage()


class RecordingSession:
    """Wraps a Cypher session and remembers each statement's text, parameters and time."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.dialect = inner.dialect
        self.calls: list[tuple[float, str, Mapping[str, Any]]] = []

    def run(self, query: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        t0 = time.perf_counter()
        rows: list[dict[str, Any]] = self.inner.run(query, params)
        self.calls.append((time.perf_counter() - t0, query, dict(params or {})))
        return rows

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def profile_slowest(store: Any, maker: CircuitMaker, timings: Timings, size: int) -> str:
    """``PROFILE`` of the slowest statement of the slowest question at ``size`` (Neo4j)."""
    slowest = max(
        (q for q in QUESTIONS if (q, size) in timings.latency_s),
        key=lambda name: timings.latency_s[(name, size)],
    )
    recorder = RecordingSession(store.session)
    store.session = recorder
    try:
        ids = [maker.make(i).id for i in range(size)]
        questions(store, ids, maker.core[0])[slowest]()
    finally:
        store.session = recorder.inner
    seconds, text, params = max(recorder.calls, key=lambda call: call[0])
    with store.session.driver.session(database=store.session.database) as session:
        result = session.run("PROFILE " + text, params)
        rows = len(list(result))  # the plan's statistics exist once the rows are read
        summary = result.consume()
    lines = [
        f"Slowest question at {size:,} circuits: **{slowest}**; its slowest statement took "
        f"{seconds * 1000:.0f} ms ({rows:,} rows). `PROFILE` (rows, db hits per operator):",
        "",
        "```",
        text,
        "",
        *_plan_lines(summary.profile),
        "```",
    ]
    return "\n".join(lines)


def _plan_lines(plan: Mapping[str, Any], depth: int = 0) -> list[str]:
    details = plan.get("args", {}).get("Details", "")
    line = (
        f"{'  ' * depth}{plan['operatorType']} rows={plan.get('rows', '?')} "
        f"dbHits={plan.get('dbHits', '?')}" + (f"  {details}" if details else "")
    )
    lines = [line[:220]]
    for child in plan.get("children", []):
        lines.extend(_plan_lines(child, depth + 1))
    return lines


def _local_neo4j_module() -> Any:
    path = ROOT / "tests" / "neo4j_server" / "local_neo4j.py"
    spec = importlib.util.spec_from_file_location("local_neo4j", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@contextmanager
def open_backend(name: str, args: argparse.Namespace, tmp: Path) -> Iterator[GraphStore]:
    """One fresh, migrated store of backend ``name``; closed (and dropped) afterwards."""
    from circuitreg.services.stores.cypher import CypherStore, FalkorSession, Neo4jSession
    from circuitreg.services.stores.embedded import EmbeddedStore

    cleanup: Callable[[], None] = lambda: None  # noqa: E731
    if name == "sqlite":
        store: GraphStore = EmbeddedStore(f"sqlite:///{tmp / 'graph.sqlite'}")
    elif name == "postgres":
        store = EmbeddedStore(args.postgres_url)
    elif name == "falkordb":
        store = CypherStore(FalkorSession.open_embedded(tmp / "fk", timeout_s=600))
    elif name == "neo4j":
        uri, server = args.neo4j_uri, None
        if uri is None:
            server = _local_neo4j_module().start_local_neo4j(
                tmp / "neo4j", heap="3g", pagecache_mib=args.neo4j_pagecache_mib
            )
            uri = server.uri
            cleanup = server.stop
        cypher = CypherStore(Neo4jSession.connect(uri, user="neo4j", password=args.password))
        cypher.wipe()
        store = cypher
    else:
        raise SystemExit(f"unknown backend {name!r}")
    try:
        store.migrate()
        yield store
    finally:
        store.close()
        cleanup()


LABELS = {
    "sqlite": "embedded SQLite",
    "postgres": "embedded PostgreSQL",
    "falkordb": "FalkorDB (embedded)",
    "neo4j": "Neo4j Community 5.26",
}


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f}" if seconds >= 0.01 else f"{seconds * 1000:.1f}"


def extrapolate(latency: dict[tuple[str, int], float], name: str, sizes: list[int]) -> str:
    """Latency at 100,000 circuits from the growth between the two largest sizes."""
    if len(sizes) < 2:
        return "n/a"
    small, large = sizes[-2], sizes[-1]
    a, b = latency[(name, small)], latency[(name, large)]
    slope = math.log(b / a) / math.log(large / small) if a > 0 and b > 0 else 1.0
    return f"{_ms(b * (100_000 / large) ** slope)} (x^{slope:.2f})"


def report(results: dict[str, Timings], sizes: list[int], args: argparse.Namespace) -> str:
    """The results file: one table per backend, the write rates and the Neo4j plan."""
    head = (
        f"# Circuit store (bench/store_bench.py)\n\n"
        f"`python bench/store_bench.py --backends {args.backends} --sizes "
        f"{','.join(map(str, sizes))} --edges {args.edges} --questions {args.questions}`, "
        f"run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
        f" on {platform.machine()}, Python {platform.python_version()}, 2 cores. Circuits of"
        f" {args.edges:,} edges on a gpt2-small-shaped model (40% shared core); latency is the"
        f" median of {args.repeats} runs, in ms. Servers run on the same machine as the client."
        "\n"
    )
    parts = [head]
    asked = [q for q in QUESTIONS if q in args.questions.split(",")]
    for backend, t in results.items():
        done = [s for s in sizes if (asked[-1], s) in t.latency_s]
        if not done:
            continue
        cols = [f"{s:,}" for s in done]
        lines = [
            f"## {LABELS[backend]}",
            "",
            "| question | " + " | ".join(cols) + " | 100,000 (extrapolated) |",
            "|---|" + "---|" * (len(done) + 1),
        ]
        rate = " | ".join(f"{t.write_edges_per_s[s]:,.0f}" for s in done)
        lines.append(f"| write (edges/s) | {rate} | |")
        for name in asked:
            cells = " | ".join(_ms(t.latency_s[(name, s)]) for s in done)
            lines.append(f"| {name} | {cells} | {extrapolate(t.latency_s, name, done)} |")
        lines.append("")
        for name, unit in (("sharedSubcircuits", "edges"), ("similarCircuits", "circuits")):
            if name in asked:
                answers = " | ".join(str(t.answer_size[(name, s)]) for s in done)
                lines += [f"{name} answer size ({unit}): {answers}.", ""]
        if t.profile:
            lines += [t.profile, ""]
        parts.append("\n".join(lines))
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000,10000")
    parser.add_argument("--edges", type=int, default=1000, help="edges per circuit")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backends", default="sqlite,neo4j", help="comma-separated")
    parser.add_argument("--postgres-url", default=None, help="an empty database to use")
    parser.add_argument("--neo4j-uri", default=None, help="default: start tests/neo4j_server")
    parser.add_argument("--password", default="", help="Neo4j password for --neo4j-uri")
    parser.add_argument("--neo4j-pagecache-mib", type=int, default=4096)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument(
        "--questions", default=",".join(QUESTIONS), help="comma-separated subset to time"
    )
    args = parser.parse_args()
    unknown = set(args.questions.split(",")) - set(QUESTIONS)
    if unknown:
        raise SystemExit(f"unknown questions {sorted(unknown)}; known: {', '.join(QUESTIONS)}")
    asked = tuple(q for q in QUESTIONS if q in args.questions.split(","))
    sizes = sorted(int(s) for s in args.sizes.split(","))
    maker = CircuitMaker(args.edges)
    results: dict[str, Timings] = {}

    def write_report() -> None:  # after every stage: a long run keeps what it measured
        args.output.write_text(report(results, sizes, args))

    for backend in args.backends.split(","):
        print(f"{LABELS[backend]}:", flush=True)
        with (
            tempfile.TemporaryDirectory(prefix="store-bench-") as tmp,
            open_backend(backend, args, Path(tmp)) as store,
        ):
            timings = results[backend] = Timings()
            measure(store, maker, sizes, args.repeats, timings, write_report, asked)
            if backend == "neo4j":
                timings.profile = profile_slowest(store, maker, timings, sizes[-1])
            write_report()
    print(args.output.read_text())


if __name__ == "__main__":
    sys.exit(main())
