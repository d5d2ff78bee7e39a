"""Circuit store benchmark: bulk write throughput and shared-subcircuit latency.

For each available backend (embedded SQLite; embedded PostgreSQL with ``--postgres-url``;
embedded FalkorDB when falkordblite is installed) it writes ``--circuits`` circuits of
``--edges`` edges each (a gpt2-small-sized model: 12 layers x 12 heads, MIB edge names),
timing the writes, then times ``shared_subcircuit`` over the first 10, 100 and 1,000 of
them (median of ``--repeats`` runs, min_support = half the circuits). Circuits share a
core of edges with varying scores plus random others, as circuits of one task found at
different checkpoints and seeds do. Peak memory is the Python heap peak (tracemalloc)
during the largest query and the process's maximum resident set size.

    python bench/store_bench.py --postgres-url postgresql+psycopg://postgres@127.0.0.1:5432/test

Results are printed and written to bench/results/store.md.
"""

from __future__ import annotations

import argparse
import platform
import random
import resource
import statistics
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

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
from circuitreg.services.stores.types import GraphStore

RESULTS = Path(__file__).resolve().parent / "results" / "store.md"
N_LAYERS = 12
N_HEADS = 12


def candidate_edges() -> list[str]:
    """Every canonical edge of a 12-layer model (about 32k), in a fixed order."""
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


def make_circuits(n: int, n_edges: int, seed: int = 0) -> list[CircuitDocument]:
    """``n`` circuits: 40% of edges from a shared core, the rest drawn at random."""
    rng = random.Random(seed)
    pool = candidate_edges()
    core = rng.sample(pool, int(n_edges * 0.4))
    in_core = set(core)
    rest = [e for e in pool if e not in in_core]
    model = ModelRef(name="gpt2-bench", n_layers=N_LAYERS, n_heads=N_HEADS)
    docs = []
    for i in range(n):
        names = core + rng.sample(rest, n_edges - len(core))
        edges = tuple(Edge.from_name(e, score=round(rng.uniform(-1, 1), 6)) for e in names)
        comps = tuple(
            Component.from_name(c) for c in sorted({x for e in edges for x in (e.source, e.target)})
        )
        docs.append(
            CircuitDocument(
                model=model.model_copy(update={"checkpoint": f"step-{i}", "step": i}),
                task=TaskRef(name="ioi"),
                method=MethodRef(name="eap-ig", params={"top_n": n_edges}),
                seed=i,
                components=comps,
                edges=edges,
            )
        )
    return docs


@contextmanager
def open_backends(
    postgres_url: str | None, backends: set[str]
) -> Iterator[list[tuple[str, GraphStore]]]:
    """The stores to measure, each fresh, closed (and their databases dropped) afterwards."""
    from circuitreg.services.stores.embedded import EmbeddedStore

    stores: list[tuple[str, GraphStore]] = []
    cleanups: list[Callable[[], None]] = []
    tmp = Path(tempfile.mkdtemp(prefix="store-bench-"))
    if "sqlite" in backends:
        stores.append(("embedded SQLite", EmbeddedStore(f"sqlite:///{tmp / 'graph.sqlite'}")))
    if postgres_url and "postgres" in backends:
        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url

        admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
        name = f"circuitreg_bench_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
        stores.append(("embedded PostgreSQL", EmbeddedStore(url)))

        def drop() -> None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()

        cleanups.append(drop)
    if "falkordb" in backends:
        from circuitreg.services.stores.cypher import CypherStore, FalkorSession

        session = FalkorSession.open_embedded(tmp / "fk", timeout_s=600)
        stores.append(("FalkorDB (embedded)", CypherStore(session)))
    try:
        for _, store in stores:
            store.migrate()
        yield stores
    finally:
        for _, store in stores:
            store.close()
        for cleanup in cleanups:
            cleanup()


def measure(
    store: GraphStore, docs: list[CircuitDocument], sizes: list[int], repeats: int
) -> dict[str, float]:
    """Write all circuits, then query shared subcircuits over growing selections."""
    out: dict[str, float] = {}
    ids: list[str] = []
    n_edges = 0
    start = time.perf_counter()
    for doc in docs:
        ids.append(store.put_circuit(doc))
        n_edges += len(doc.edges)
    elapsed = time.perf_counter() - start
    out["write_s"] = elapsed
    out["edges_per_s"] = n_edges / elapsed
    for size in sizes:
        chosen = ids[:size]
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            shared = store.shared_subcircuit(chosen, min_support=max(1, size // 2))
            times.append(time.perf_counter() - t0)
        out[f"shared_{size}_s"] = statistics.median(times)
        out[f"shared_{size}_edges"] = len(shared.edges)
    tracemalloc.start()
    store.shared_subcircuit(ids[: sizes[-1]], min_support=max(1, sizes[-1] // 2))
    out["query_heap_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--circuits", type=int, default=1000)
    parser.add_argument("--edges", type=int, default=1000, help="edges per circuit")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--postgres-url", default=None)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument(
        "--backends", default="sqlite,postgres,falkordb", help="comma-separated subset"
    )
    args = parser.parse_args()
    sizes = [s for s in (10, 100, 1000) if s <= args.circuits]
    docs = make_circuits(args.circuits, args.edges)
    rows = []
    with open_backends(args.postgres_url, set(args.backends.split(","))) as stores:
        for label, store in stores:
            print(f"{label}: writing {len(docs)} circuits x {args.edges} edges ...", flush=True)
            result = measure(store, docs, sizes, args.repeats)
            print(label, {k: round(v, 4) for k, v in result.items()}, flush=True)
            rows.append((label, result))
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lines = [
        "# Circuit store (bench/store_bench.py)",
        "",
        f"{args.circuits} circuits x {args.edges} edges (gpt2-small-sized model, 40% shared"
        f" core), {platform.machine()}, Python {platform.python_version()},"
        f" run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}."
        " Shared subcircuit: min_support = half the selected circuits, median of"
        f" {args.repeats} runs; the answer includes every shared edge's score in every circuit."
        " Servers (PostgreSQL, FalkorDB) run on the same 2-core machine.",
        "",
        "| backend | write (edges/s) | "
        + " | ".join(f"shared over {s} (ms, edges)" for s in sizes)
        + " | heap peak of largest query (MiB) |",
        "|---|---|" + "---|" * len(sizes) + "---|",
    ]
    for label, r in rows:
        cells = [
            f"{r[f'shared_{s}_s'] * 1000:.0f} ms ({int(r[f'shared_{s}_edges'])})" for s in sizes
        ]
        lines.append(
            f"| {label} | {r['edges_per_s']:,.0f} | "
            + " | ".join(cells)
            + f" | {r['query_heap_peak_mb']:.1f} |"
        )
    lines += ["", f"Peak resident set size of the benchmark process: {rss_mb:.0f} MiB.", ""]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
