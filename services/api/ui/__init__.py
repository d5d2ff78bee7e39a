"""The circuit viewer: static HTML + ES modules served at ``/ui``, reading only ``/graphql``.

The page is plain files (no server-side rendering) so that everything it shows comes through
the public GraphQL API; the vendored Cytoscape.js build lives in ``static/vendor`` and is
rebuilt from the pinned npm packages with ``npm ci && npm run build`` in this directory.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent / "static"


def mount_ui(app: FastAPI, path: str = "/ui") -> None:
    """Serve the viewer's static files at ``path`` (``/ui/`` answers with ``index.html``)."""
    if not (STATIC_DIR / "index.html").is_file():
        raise RuntimeError(f"viewer files missing: {STATIC_DIR / 'index.html'} not found")
    app.mount(path, StaticFiles(directory=STATIC_DIR, html=True), name="ui")
