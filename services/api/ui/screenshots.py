"""Capture a PNG of every viewer page from a populated data directory, for the README.

    python -m circuitreg.services.api.ui.screenshots DATA_DIR docs/screenshots [--alias NAME]
        [--positional NAME]

It serves DATA_DIR read-only (anonymous read) with uvicorn on a free local port, drives the
system Chromium through Playwright, and writes browse.png, circuit.png, compare.png,
shared.png, evolution.png and jobs.png, and positions.png (a positional circuit drawn over
its prompt's tokens) when ``--positional`` names one. Nothing in DATA_DIR is written by
the page; point it at a copy of a demo directory (``circuitreg demo``) to get the demo's
real circuits.
"""

from __future__ import annotations

import argparse
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
]
TARGET = """query Target($id: String!) { circuit(id: $id) { id modelName taskName method } }"""
EVOLUTION = """query Ev($model: String!, $task: String!, $method: String!) {
  circuitEvolution(model: $model, task: $task, method: $method) {
    steps(first: 100) { nodes { checkpoint circuitId appeared } } } }"""


@contextmanager
def serving(data_dir: Path) -> Iterator[str]:
    """The API app over ``data_dir`` on 127.0.0.1; yields its base URL."""
    import uvicorn

    from circuitreg.services.api.app import create_app
    from circuitreg.settings import Settings

    settings = Settings(data_dir=data_dir, anonymous_read=True, log_level="WARNING")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the API did not start over {data_dir}")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _ask(base_url: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    import httpx

    body = httpx.post(f"{base_url}/graphql", json={"query": query, "variables": variables}).json()
    if body.get("errors"):
        raise RuntimeError(f"GraphQL errors: {body['errors']}")
    data: dict[str, Any] = body["data"]
    return data


def _views(
    base_url: str, alias: str, positional: str | None = None
) -> list[tuple[str, str, str | None]]:
    """(file name, hash route, node to hover) for each view, chosen from the stored circuits."""
    target = _ask(base_url, TARGET, {"id": alias})["circuit"]
    if target is None:
        raise SystemExit(f"no circuit with id or alias {alias!r} in this data directory")
    series = {"model": target["modelName"], "task": target["taskName"], "method": target["method"]}
    steps = _ask(base_url, EVOLUTION, series)["circuitEvolution"]["steps"]["nodes"]
    first = steps[0]["circuitId"] if steps else target["id"]
    # The evolution picture shows the first checkpoint at which a K-composition edge appears.
    formed = next((i for i, s in enumerate(steps) if any("<k>" in e for e in s["appeared"])), 0)
    k = max(2, len(steps) // 2)
    extra = (
        []
        if positional is None
        else [("positions.png", f"circuit?{urlencode({'id': positional})}", None)]
    )
    return [
        *extra,
        ("browse.png", "browse", None),
        ("circuit.png", f"circuit?{urlencode({'id': alias})}", "induction head"),
        ("compare.png", f"compare?{urlencode({'a': first, 'b': alias})}", None),
        ("shared.png", f"shared?{urlencode({**series, 'k': k})}", None),
        ("evolution.png", f"evolution?{urlencode(series)}#{formed}", None),
        ("jobs.png", "jobs", None),
    ]


def capture(
    data_dir: Path, out_dir: Path, alias: str, chromium: str, positional: str | None = None
) -> list[Path]:
    """Write one screenshot per view into ``out_dir``; returns the files written."""
    from playwright.sync_api import sync_playwright

    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with serving(data_dir) as base_url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 860})
        for name, route, hover_label in _views(base_url, alias, positional):
            route, _, slider = route.partition("#")
            page.goto(f"{base_url}/ui/#{route}")
            page.wait_for_selector("main[data-state=ready], main[data-state=error]")
            if page.get_attribute("main", "data-state") != "ready":
                raise RuntimeError(f"{route}: {page.inner_text('main')}")
            if slider:
                page.fill("#evolution-slider", slider)
            if hover_label:
                page.evaluate(
                    "(label) => { const cy = window.circuitViewer.cy;"
                    " cy.nodes().filter((n) => (n.data('labels') || []).includes(label))"
                    ".emit('tap'); }",
                    hover_label,
                )
            path = out_dir / name
            page.screenshot(path=path, full_page=True)
            written.append(path)
        browser.close()
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--alias", default="toy-induction-final", help="circuit for the views")
    parser.add_argument("--positional", help="a positional circuit, for positions.png")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    for path in capture(args.data_dir, args.out_dir, args.alias, args.chromium, args.positional):
        print(path)


if __name__ == "__main__":
    main()
