"""Several real processes against one queue: concurrent submissions and concurrent claims."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from sqlalchemy import func, select

from circuitreg.migrations.relational import upgrade
from circuitreg.services.db.base import make_engine
from circuitreg.services.queue import JobQueue, JobSpec
from circuitreg.services.queue.tables import JobRow

# Each child connects, says it is ready, and waits for a shared go signal (a file), so that
# they really hit the database together.
CHILD = """
import json, os, sys, time
from circuitreg.services.db.base import make_engine
from circuitreg.services.queue import JobQueue, JobSpec
url, go, mode = sys.argv[1], sys.argv[2], sys.argv[3]
queue = JobQueue(make_engine(url))
queue.engine.connect().close()
spec = JobSpec(kind="discovery", model="toy:attn2", task="induction", method="eap",
               params={"top_k": 5})
print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.002)
if mode == "enqueue":
    print(json.dumps([queue.enqueue(spec).id]))
else:
    ids = []
    while (job := queue.claim(mode, 30)) is not None:
        ids.append(job.id)
        queue.complete(job.id, mode, {"by": mode})
    print(json.dumps(ids))
"""


def run_children(url: str, modes: list[str], go: Path) -> list[list[str]]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, url, str(go), mode],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for mode in modes
    ]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    go.touch()
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        outputs.append(json.loads(out))
    return outputs


def test_queue_concurrent_submissions_from_processes_give_one_job(
    database_url: str, tmp_path: Path
) -> None:
    upgrade(database_url)
    outputs = run_children(database_url, ["enqueue"] * 6, tmp_path / "go")
    ids = {job_id for out in outputs for job_id in out}
    assert len(ids) == 1
    engine = make_engine(database_url)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(JobRow)).scalar() == 1
    queue = JobQueue(engine)
    events = [e.event for e in queue.events(ids.pop())]
    assert events == ["enqueued"] + ["duplicate"] * 5
    engine.dispose()


def test_queue_concurrent_claimers_never_share_a_job(database_url: str, tmp_path: Path) -> None:
    upgrade(database_url)
    engine = make_engine(database_url)
    queue = JobQueue(engine)
    submitted = {
        queue.enqueue(
            JobSpec(kind="discovery", model="m", task="t", method="eap", params={"i": i})
        ).id
        for i in range(60)
    }
    outputs = run_children(database_url, [f"w{i}" for i in range(4)], tmp_path / "go")
    claimed = [job_id for out in outputs for job_id in out]
    assert sorted(claimed) == sorted(submitted)  # each job exactly once
    assert queue.stats()["succeeded"] == 60
    engine.dispose()
