"""Queue throughput: trivial jobs (claim + complete) per second with 1, 4 and 16 workers.

Each worker is a separate process with its own engine, as real workers are. The jobs are
enqueued first; all workers start together at a shared instant and drain the queue; the
rate is jobs / (last worker done - start). Run against PostgreSQL (the production queue):

    python bench/queue_bench.py --url postgresql+psycopg://postgres@127.0.0.1:5432/test

A fresh database is created for each run and dropped afterwards. Results are printed and
written to bench/results/queue.md.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from circuitreg.migrations.relational import upgrade
from circuitreg.services.db.base import make_engine
from circuitreg.services.queue import JobQueue, JobSpec

RESULTS = Path(__file__).resolve().parent / "results" / "queue.md"


def drain(url: str, worker_id: str, ready: Any, out: Any) -> None:
    """One worker process: claim and complete until the queue is empty."""
    queue = JobQueue(make_engine(url, pool_size=1))
    queue.engine.connect().close()  # connect before the clock starts
    ready.wait()
    done = 0
    while (job := queue.claim(worker_id, 30)) is not None:
        queue.complete(job.id, worker_id, {"ok": True})
        done += 1
    out.put((worker_id, done, time.time()))


def fresh_database(base_url: str) -> tuple[str, str]:
    name = f"circuitreg_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(base_url).set(database=name).render_as_string(hide_password=False), name


def drop_database(base_url: str, name: str) -> None:
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def run(base_url: str, n_workers: int, n_jobs: int) -> tuple[float, int]:
    """Jobs per second for ``n_workers`` processes draining ``n_jobs`` trivial jobs."""
    url, name = fresh_database(base_url)
    try:
        upgrade(url)
        queue = JobQueue(make_engine(url))
        for i in range(n_jobs):
            queue.enqueue(
                JobSpec(kind="discovery", model="m", task="t", method="x", params={"i": i})
            )
        ctx = mp.get_context("spawn")
        results = ctx.Queue()
        ready = ctx.Barrier(n_workers + 1)  # the clock starts when every worker is connected
        procs = [
            ctx.Process(target=drain, args=(url, f"w{i}", ready, results)) for i in range(n_workers)
        ]
        for p in procs:
            p.start()
        ready.wait(timeout=300)
        start_at = time.time()
        finished = [results.get(timeout=600) for _ in procs]
        for p in procs:
            p.join()
        total = sum(done for _, done, _ in finished)
        if total != n_jobs or queue.stats()["succeeded"] != n_jobs:
            raise RuntimeError(f"drained {total} of {n_jobs} jobs: the queue lost or repeated one")
        elapsed = max(t for _, _, t in finished) - start_at
        queue.engine.dispose()
        return n_jobs / elapsed, total
    finally:
        drop_database(base_url, name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4, 16])
    args = parser.parse_args()
    rows = []
    for n in args.workers:
        load = os.getloadavg()[0]
        rate, total = run(args.url, n, args.jobs)
        print(f"{n:>3} worker process(es): {rate:8.1f} jobs/s ({total} jobs)", flush=True)
        rows.append(f"| {n} | {total} | {rate:.1f} | {load:.1f} |")
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.python_version()}"
    with create_engine(args.url).connect() as conn:
        server = conn.execute(text("SHOW server_version")).scalar()
    RESULTS.write_text(
        "# Queue throughput (bench/queue_bench.py)\n\n"
        f"Trivial jobs (claim + complete, each its own transaction) on PostgreSQL {server}, "
        f"one process per worker, {machine}. The database runs on the same machine, so with "
        "more workers than cores the processes and the server compete for the CPU. The last "
        "column is the machine's 1-minute load average when the run started (other work on "
        "the machine slows every number).\n\n"
        "| worker processes | jobs | jobs per second | load average |\n|---|---|---|---|\n"
        + "\n".join(rows)
        + "\n"
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
