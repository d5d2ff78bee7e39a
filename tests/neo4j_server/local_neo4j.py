"""Start the Neo4j Community server of this Maven module on a free loopback port.

Used by the pytest session (tests/conftest.py) and by bench/store_bench.py, so both run the
same server build the compose file pins. It needs only Java 17 and Maven: ``mvn package``
resolves Neo4j from Maven Central once, and the server runs until its standard input closes.
Raises ``Neo4jUnavailable`` with the reason when it cannot start.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

MODULE_DIR = Path(__file__).resolve().parent
JAR = MODULE_DIR / "target" / "neo4j-test-server-0.1.0.jar"
CLASSPATH = MODULE_DIR / "target" / "classpath.txt"


class Neo4jUnavailable(RuntimeError):
    """Neo4j could not be built or started here (the message says why)."""


@dataclass
class LocalNeo4j:
    """A running server: its Bolt URI and the process to stop."""

    uri: str
    process: subprocess.Popen[str]
    log: IO[str]

    def stop(self) -> None:
        """Close its standard input (it shuts down cleanly), kill it if it hangs."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:  # pragma: no cover - a hung shutdown
            self.process.kill()
        self.log.close()


def launcher_command() -> list[str]:
    """``java ... Launcher``, building the jar first when it is older than its sources."""
    java, mvn = shutil.which("java"), shutil.which("mvn")
    if not java or not mvn:
        raise Neo4jUnavailable("java or mvn is not on PATH")
    sources = [MODULE_DIR / "pom.xml", *MODULE_DIR.glob("src/**/*.java")]
    stale = not JAR.exists() or JAR.stat().st_mtime < max(p.stat().st_mtime for p in sources)
    if stale or not CLASSPATH.exists():
        built = subprocess.run(
            [mvn, "-q", "-B", "package"], cwd=MODULE_DIR, capture_output=True, text=True
        )
        if built.returncode != 0:
            raise Neo4jUnavailable(f"mvn package in {MODULE_DIR} failed:\n{built.stdout[-3000:]}")
    classpath = f"{JAR}{os.pathsep}{CLASSPATH.read_text().strip()}"
    return [java, "-cp", classpath, "circuitreg.testserver.Launcher"]


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_local_neo4j(
    home: Path,
    *,
    heap: str = "1g",
    pagecache_mib: int = 256,
    timeout_s: float = 120,
    port: int | None = None,
) -> LocalNeo4j:
    """Start a server with its data under ``home`` and wait until Bolt answers.

    ``home`` may hold the data of an earlier server (one that was killed recovers it), and
    ``port`` may be that server's port, so a client's URI stays valid across the restart.
    """
    port = free_port() if port is None else port
    command = [*launcher_command(), str(home), str(port), str(pagecache_mib)]
    # Serial GC: the test machine has 2 cores shared with PyTorch.
    command[1:1] = [f"-Xmx{heap}", "-XX:+UseSerialGC"]
    home.mkdir(parents=True, exist_ok=True)
    log = (home / "launcher.log").open("a")  # a restart on the same home keeps the first log
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, text=True
    )
    server = LocalNeo4j(f"bolt://127.0.0.1:{command[-2]}", process, log)
    try:
        wait_for_bolt(server.uri, process, timeout_s)
    except BaseException:
        server.stop()
        raise
    return server


def wait_for_bolt(uri: str, process: subprocess.Popen[str] | None, timeout_s: float) -> None:
    """Return once ``uri`` accepts a connection; raise if the process exits or time runs out."""
    from neo4j import GraphDatabase

    deadline = time.monotonic() + timeout_s
    while True:
        if process is not None and process.poll() is not None:
            raise Neo4jUnavailable(f"the Neo4j launcher exited with {process.returncode}")
        try:
            with GraphDatabase.driver(uri, auth=("neo4j", "")) as driver:
                driver.verify_connectivity()
            return
        except Exception as exc:
            if time.monotonic() > deadline:
                raise Neo4jUnavailable(
                    f"Bolt at {uri} did not answer in {timeout_s:.0f} s: {exc}"
                ) from exc
            time.sleep(0.5)
