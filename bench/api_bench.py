"""API benchmark: requests/s and p50/p95/p99 latency of the main GraphQL queries.

Seeds an embedded (SQLite) registry in a temporary directory, starts the real server
(``circuitreg serve``) as one process on the loopback, and drives it from a separate load
generator process (this script with ``--client``) with concurrent httpx clients, bounded in
request count and time per query. Writes ``bench/results/api.md``.

    python bench/api_bench.py [--concurrency 8] [--requests 1500] [--seconds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "api.md"
N_MODELS, N_CHECKPOINTS, N_SEEDS = 4, 10, 5  # 200 circuits

CIRCUIT = """query($id: String!) { circuit(id: $id) { id nEdges faithfulness
  run { method } edges(first: 50) { nodes { name score } } } }"""
CIRCUITS = """query($m: String!) { circuits(filter: {model: $m}, first: 20) {
  nodes { id step nEdges model { name } task { name } } pageInfo { hasNextPage } } }"""
SHARED = """query($ids: [String!]) { sharedSubcircuits(circuitIds: $ids, minSupport: 3) {
  nEdges edges(first: 20) { nodes { edge support } } } }"""
EVOLUTION = """query($m: String!) { circuitEvolution(model: $m, task: "induction", method: "eap") {
  steps(first: 20) { nodes { step appeared disappeared } } } }"""
COMPARE = """query($a: String!, $b: String!) { compareCircuits(a: $a, b: $b) {
  consistency { edgeJaccard rankCorrelation } onlyA { totalCount } } }"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def seed(data_dir: Path) -> dict[str, Any]:
    """Migrate a fresh registry, store 200 circuits, create a read token."""
    import random

    from circuitreg.migrations.relational import upgrade
    from circuitreg.schema import CircuitDocument, Component, Edge, MethodRef, ModelRef, TaskRef
    from circuitreg.services.api.auth import create_token
    from circuitreg.services.db import make_engine
    from circuitreg.services.stores.factory import migrate_store, open_store
    from circuitreg.settings import Settings

    settings = Settings(data_dir=data_dir)
    upgrade(settings.resolved_database_url)
    migrate_store(settings)
    store = open_store(settings)
    rng = random.Random(0)
    candidates = [
        f"a{l1}.h{h1}->a{l2}.h{h2}<{r}>"
        for l1 in range(3)
        for l2 in range(l1 + 1, 4)
        for h1 in range(4)
        for h2 in range(4)
        for r in "qkv"
    ] + [f"a{layer}.h{h}->logits" for layer in range(4) for h in range(4)]
    ids: dict[str, list[str]] = {}
    for m in range(N_MODELS):
        for step in range(N_CHECKPOINTS):
            for seed_ in range(N_SEEDS):
                edges = [
                    Edge.from_name(e, score=rng.uniform(-1, 1)) for e in rng.sample(candidates, 40)
                ]
                names = sorted({n for e in edges for n in (e.source, e.target)})
                doc = CircuitDocument(
                    model=ModelRef(
                        name=f"model-{m}", n_layers=4, n_heads=4,
                        checkpoint=f"step-{step * 100}", step=step * 100,
                    ),
                    task=TaskRef(name="induction"),
                    method=MethodRef(name="eap" if seed_ == 0 else f"eap-s{seed_}"),
                    seed=seed_,
                    components=tuple(Component.from_name(n) for n in names),
                    edges=tuple(edges),
                )  # fmt: skip
                ids.setdefault(f"model-{m}", []).append(store.put_circuit(doc))
    store.close()
    engine = make_engine(settings.resolved_database_url)
    token = create_token(engine, "bench", "read")
    engine.dispose()
    return {"ids": ids, "token": token}


def workloads(ids: dict[str, list[str]]) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """(name, query, list of variable sets cycled through) for each measured query."""
    models = sorted(ids)
    every = [i for m in models for i in ids[m]]
    return [
        ("circuit(id) + 50 edges", CIRCUIT, [{"id": i} for i in every]),
        ("circuits(first: 20) + model/task", CIRCUITS, [{"m": m} for m in models]),
        (
            "sharedSubcircuits(5 circuits)",
            SHARED,
            [{"ids": ids[m][k : k + 5]} for m in models for k in range(0, 45, 5)],
        ),
        ("circuitEvolution(10 checkpoints)", EVOLUTION, [{"m": m} for m in models]),
        (
            "compareCircuits(a, b)",
            COMPARE,
            [{"a": ids[m][k], "b": ids[m][k + 1]} for m in models for k in range(0, 40, 5)],
        ),
    ]


async def _drive(
    url: str, token: str, query: str, variables: list[dict[str, Any]], args: argparse.Namespace
) -> dict[str, Any]:
    import httpx

    latencies: list[float] = []
    errors = 0
    counter = 0
    limits = httpx.Limits(max_connections=args.concurrency)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=30) as c:

        async def one_client() -> None:
            nonlocal counter, errors
            while counter < args.requests and time.perf_counter() < deadline:
                body = {"query": query, "variables": variables[counter % len(variables)]}
                counter += 1
                started = time.perf_counter()
                response = await c.post("/graphql", json=body)
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200 or response.json().get("errors"):
                    errors += 1

        for _ in range(min(20, args.requests)):  # warm-up, not measured
            await c.post("/graphql", json={"query": query, "variables": variables[0]})
        started = time.perf_counter()
        deadline = started + args.seconds
        await asyncio.gather(*(one_client() for _ in range(args.concurrency)))
        elapsed = time.perf_counter() - started
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "requests": len(latencies),
        "errors": errors,
        "seconds": elapsed,
        "rps": len(latencies) / elapsed,
        "p50_ms": q[49] * 1000,
        "p95_ms": q[94] * 1000,
        "p99_ms": q[98] * 1000,
    }


def client_main(args: argparse.Namespace) -> None:
    """The load generator process: reads the plan on stdin, prints results as JSON."""
    plan = json.loads(sys.stdin.read())
    out = []
    for name, query, variables in plan["workloads"]:
        stats = asyncio.run(_drive(plan["url"], plan["token"], query, variables, args))
        out.append({"name": name, **stats})
    print(json.dumps(out))


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("server did not become ready")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--requests", type=int, default=1500, help="Per query, at most.")
    parser.add_argument("--seconds", type=float, default=15.0, help="Per query, at most.")
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.client:
        client_main(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        t0 = time.perf_counter()
        seeded = seed(data_dir)
        seed_s = time.perf_counter() - t0
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "CIRCUITREG_DATA_DIR": str(data_dir),
            "CIRCUITREG_LOG_LEVEL": "WARNING",
        }
        server = subprocess.Popen(
            [sys.executable, "-m", "circuitreg", "serve", "--port", str(port)],
            env=env,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_ready(url, server)
            plan = {"url": url, "token": seeded["token"], "workloads": workloads(seeded["ids"])}
            client = subprocess.run(
                [sys.executable, __file__, "--client",
                 "--concurrency", str(args.concurrency),
                 "--requests", str(args.requests), "--seconds", str(args.seconds)],
                input=json.dumps(plan), stdout=subprocess.PIPE, text=True, check=True,
                timeout=60 + 2 * len(plan["workloads"]) * args.seconds,
            )  # fmt: skip
        finally:
            server.terminate()
            server.wait(timeout=30)
    results = json.loads(client.stdout)
    write_report(args, results, seed_s)


def write_report(args: argparse.Namespace, results: list[dict[str, Any]], seed_s: float) -> None:
    lines = [
        "# API benchmark (embedded SQLite backend)",
        "",
        f"Generated by `python bench/api_bench.py` on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {platform.platform()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}; machine load average "
        f"(1 min) at the end of the run: {os.getloadavg()[0]:.1f}.",
        "",
        f"Data: {N_MODELS * N_CHECKPOINTS * N_SEEDS} circuits ({N_MODELS} models x "
        f"{N_CHECKPOINTS} checkpoints x {N_SEEDS} seeds/methods, 40 edges each), seeded in "
        f"{seed_s:.1f} s. Server: one `circuitreg serve` process (uvicorn, one worker) on the "
        f"loopback. Load: a separate process with {args.concurrency} concurrent httpx clients, "
        f"at most {args.requests} requests or {args.seconds:.0f} s per query, after 20 warm-up "
        "requests. Every request carries a bearer token (verified, then cached for 10 s).",
        "",
        "| query | requests | errors | req/s | p50 ms | p95 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['name']} | {r['requests']} | {r['errors']} | {r['rps']:.1f} | "
            f"{r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} |"
        )
    lines += [
        "",
        "Client and server share the machine's cores, so these are lower bounds for a server "
        "with cores of its own; other work running on the machine at the same time adds noise.",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
