"""End-to-end tests of the circuit viewer at /ui in Debian's headless Chromium (Playwright).

The circuits are built here as CircuitDocuments of a 2-layer, 4-head toy at five "checkpoints"
(the K-composition edge a0.h3->a1.h3<k> appears from step 200 on), stored through the real
store, and served by a real uvicorn server; the page reads them only through /graphql.
Screenshots of each view go to the test's tmp dir (``test-artifacts`` when
CIRCUITREG_UI_ARTIFACTS is set).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from circuitreg.schema.circuit import (
    CircuitDocument,
    Component,
    Edge,
    MethodRef,
    ModelRef,
    TaskRef,
    ValidationResult,
)
from circuitreg.settings import Settings

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("CIRCUITREG_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
]
INSTALL_HINT = "`make test` installs it (apt-get install -y chromium; pip install playwright)"
MODEL = "toy-ui"
TASK = "induction"
METHOD = "eap_ig"
STEPS = (0, 100, 200, 300, 400)
PHASE_STEP = 200
K_EDGE = "a0.h3->a1.h3<k>"
PREV_HEAD, INDUCTION_HEAD = "a0.h3", "a1.h3"
N_EXTRA = 18  # circuits of a second model, so browsing needs a second Relay page


def _require_browser() -> None:
    """Chromium and Playwright are required in CI and skipped (with the reason) elsewhere."""
    missing = []
    if shutil.which(CHROMIUM) is None:
        missing.append(f"chromium ({CHROMIUM})")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright Python package")
    if missing:
        message = f"browser tests need {' and '.join(missing)}; {INSTALL_HINT}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def _edges_at(step: int, seed: int = 0) -> dict[str, float]:
    """The toy's circuit at ``step``: scores vary with the step; the K edge forms at PHASE_STEP."""
    edges: dict[str, float] = {}
    for head in range(4):
        edges[f"input->a0.h{head}<v>"] = 0.2 + 0.1 * head + 0.001 * seed
        edges[f"a1.h{head}->logits"] = -0.5 - 0.2 * head
    for src in range(4):
        for dst in range(4):
            if (src + dst + step // 100) % 3 == 0:
                edges[f"a0.h{src}->a1.h{dst}<v>"] = 0.05 * (src - dst) or 0.03
    if step >= PHASE_STEP:
        edges[K_EDGE] = 0.9
        edges["a0.h3->a1.h3<q>"] = -0.15
    return edges


UNDEFINED_REASON = "the clean-ablated gap 0.002 is within 2 standard errors (0.01) of zero"


def _document(step: int, model: str = MODEL, seed: int = 0) -> CircuitDocument:
    scores = _edges_at(step, seed)
    nodes = sorted({n for name in scores for n in name.split("<")[0].split("->")})
    validation: tuple[ValidationResult, ...] = ()
    if step == STEPS[0] and model == MODEL:  # untrained: its clean-ablated gap is noise
        validation = (
            ValidationResult(
                name="faithfulness",
                ablation="resample",
                metric="logit_diff",
                values={"faithfulness": None, "gap": 0.002, "undefined": UNDEFINED_REASON},
                passed=None,
            ),
        )
    if step == STEPS[-1] and model == MODEL:
        validation = (
            ValidationResult(
                name="faithfulness",
                ablation="resample",
                metric="logit_diff",
                values={"faithfulness": 0.91},
                passed=True,
            ),
            ValidationResult(
                name="faithfulness_curve",
                ablation="resample",
                metric="logit_diff",
                values={
                    "percentages": [1, 10, 50, 100],
                    "faithfulness_abs": [0.0, 0.4, 0.9, 1.0],
                    "faithfulness_signed": [0.0, 0.3, 0.7, 1.0],
                    "cpr": 0.6,
                    "cmd": 0.2,
                },
            ),
            ValidationResult(
                name="ablation_controls",
                ablation="resample",
                metric="logit_diff",
                values={
                    "rows": [
                        {
                            "name": "circuit_only",
                            "normalised": 0.91,
                            "expectation": "behaviour kept (>= 0.8)",
                            "held": True,
                        },
                        {
                            "name": "circuit_ablated",
                            "normalised": 0.05,
                            "expectation": "behaviour gone (<= 0.2)",
                            "held": True,
                        },
                    ]
                },
            ),
        )
    return CircuitDocument(
        model=ModelRef(
            name=model,
            checkpoint=f"step-{step}",
            step=step,
            n_layers=2,
            n_heads=4,
            attn_only=True,
        ),
        task=TaskRef(name=TASK),
        method=MethodRef(name=METHOD),
        seed=seed,
        components=tuple(Component.from_name(n, score=0.1) for n in nodes),
        edges=tuple(Edge.from_name(name, score=score) for name, score in scores.items()),
        validation=validation,
    )


# A positional circuit (issue 18) of another model: IOI's spans over an 8-token prompt.
POSITION_LABELS = ("IO", "S1", "S2", "END", "other")
POSITION_TOKENS = ("When", " Mary", " and", " John", " went", " to", " John", " gave")
POSITIONAL_EDGES = {  # (edge, position, span) -> score
    ("input->a0.h3<v>", 3, "S1"): 0.5,
    ("a0.h3->a1.h3<k>", 6, "S2"): 0.8,
    ("input->a1.h3<q>", 7, "END"): 0.25,
    ("a1.h3->logits", 7, "END"): 1.5,
    ("a1.h0->logits", None, "other"): -0.5,
}


def _positional_document() -> CircuitDocument:
    from circuitreg.schema.circuit import PositionAxis

    summed: dict[str, float] = {}
    for (name, _, _), score in POSITIONAL_EDGES.items():
        summed[name] = summed.get(name, 0.0) + score
    edges = [Edge.from_name(n, score=v) for n, v in summed.items()]
    edges += [
        Edge.from_name(n, score=v, position=p, span=sp)
        for (n, p, sp), v in POSITIONAL_EDGES.items()
    ]
    nodes = sorted({n for e in edges for n in (e.source, e.target)})
    return CircuitDocument(
        model=ModelRef(name="toy-ui-pos", n_layers=2, n_heads=4, attn_only=True),
        task=TaskRef(name="ioi"),
        method=MethodRef(name=METHOD, params={"positions": "spans"}),
        components=(
            *(Component.from_name(n, score=0.1) for n in nodes),
            Component.from_name("a1.h3", position=7, span="END", score=0.7),
        ),
        edges=tuple(edges),
        positions=PositionAxis(
            mode="spans",
            labels=POSITION_LABELS,
            indices=(1, 3, 6, 7, None),
            tokens=POSITION_TOKENS,
        ),
    )


@dataclass(frozen=True)
class Served:
    """The running server and what was stored in it."""

    base_url: str
    ids: dict[int, str]
    write_token: str
    settings: Settings


@contextmanager
def _running(app: Any) -> Iterator[str]:
    """Serves ``app`` with uvicorn on a free local port in a thread; yields the base URL."""
    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """Stores the toy's circuits through the real store and serves the app with uvicorn."""
    _require_browser()
    from circuitreg.migrations.relational import upgrade
    from circuitreg.services.api.app import create_app
    from circuitreg.services.api.auth import create_token
    from circuitreg.services.artifacts import ArtifactStore
    from circuitreg.services.db import make_engine
    from circuitreg.services.interchange.stored import store_document
    from circuitreg.services.stores.factory import open_store

    settings = Settings(
        data_dir=tmp_path_factory.mktemp("ui-data"), anonymous_read=True, log_level="WARNING"
    )
    upgrade(settings.resolved_database_url)
    store = open_store(settings)
    store.migrate()
    artifacts = ArtifactStore(settings.resolved_artifact_url)
    ids = {step: store_document(store, artifacts, _document(step)).circuit_id for step in STEPS}
    for seed in range(N_EXTRA):
        store_document(store, artifacts, _document(0, model="toy-ui-other", seed=seed + 1))
    store.label_component(MODEL, PREV_HEAD, "previous-token head")
    store.label_component(MODEL, INDUCTION_HEAD, "induction head")
    store.set_alias("ui-final", ids[STEPS[-1]])
    store.set_alias(
        "ui-positions", store_document(store, artifacts, _positional_document()).circuit_id
    )
    store.tag(ids[STEPS[0]], "untrained")
    engine = make_engine(settings.resolved_database_url)
    write_token = create_token(engine, "ui-writer", "write")
    engine.dispose()

    try:
        with _running(create_app(settings, store)) as base_url:
            yield Served(base_url, ids, write_token, settings)
    finally:
        store.close()


@pytest.fixture(scope="module")
def browser(served: Served) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, served: Served) -> Iterator[Any]:
    """A fresh page that fails the test on any script error or request leaving the service."""
    context = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    page = context.new_page()
    errors: list[str] = []
    outside: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "request",
        lambda req: None if req.url.startswith(served.base_url) else outside.append(req.url),
    )
    yield page
    context.close()
    assert not errors, f"script errors in the page: {errors}"
    assert not outside, f"the page fetched from outside the service: {outside}"


def _artifacts(tmp_path: Path) -> Path:
    target = Path(os.environ.get("CIRCUITREG_UI_ARTIFACTS", tmp_path / "test-artifacts"))
    target.mkdir(parents=True, exist_ok=True)
    return target


def _open(page: Any, served: Served, hash_: str) -> None:
    page.goto(f"{served.base_url}/ui/#{hash_}")
    # The state must be this route's: a hash change keeps the document, and its last state.
    page.wait_for_function(
        "(() => { const m = document.querySelector('main');"
        " return m.dataset.route === location.hash && m.dataset.state !== 'loading'; })()"
    )
    state = page.get_attribute("main", "data-state")
    assert state == "ready", page.inner_text("main")


def _cy(page: Any, script: str) -> Any:
    """Evaluates ``script`` with ``cy`` bound to the view's Cytoscape instance."""
    return page.evaluate(f"(() => {{ const cy = window.circuitViewer.cy; return {script}; }})()")


def _visible_edges(page: Any) -> set[str]:
    return set(_cy(page, "cy.edges().not('.hidden').map((e) => e.id())"))


def test_ui_circuit_view_draws_the_induction_heads(
    page: Any, served: Served, tmp_path: Path
) -> None:
    _open(page, served, "circuit?id=ui-final")
    final = _document(STEPS[-1])
    assert _visible_edges(page) == {e.name for e in final.edges}
    labels = _cy(page, "cy.nodes().map((n) => [n.id(), n.data('label')])")
    assert dict(labels)[INDUCTION_HEAD] == "a1.h3\ninduction head"
    assert dict(labels)[PREV_HEAD] == "a0.h3\nprevious-token head"
    # Layered: input at the bottom, layer 0 below layer 1, logits on top (screen y grows down).
    y = dict(_cy(page, "cy.nodes().map((n) => [n.id(), n.position('y')])"))
    assert y["input"] > y["a0.h0"] > y["a1.h0"] > y["logits"]
    assert y["a0.h0"] == y["a0.h3"]
    # q/k/v distinguishable, colour by sign, width by importance.
    style = dict(
        _cy(
            page,
            "cy.edges().map((e) => [e.id(), [e.style('line-style'), e.style('line-color'),"
            " parseFloat(e.style('width'))]])",
        )
    )
    assert style[K_EDGE][0] == "dashed" and style["a0.h3->a1.h3<q>"][0] == "dotted"
    assert style["input->a0.h0<v>"][0] == "solid"
    assert style[K_EDGE][1] != style["a1.h0->logits"][1]  # positive vs negative score
    assert style[K_EDGE][2] > style["input->a0.h0<v>"][2]  # 0.9 vs 0.2
    # The inspector shows a node's hook and role label.
    _cy(page, f"cy.getElementById('{INDUCTION_HEAD}').emit('tap') && true")
    inspector = page.inner_text("#inspector")
    assert "induction head" in inspector and "blocks.1.attn.hook_z" in inspector
    # The threshold slider hides the weak edges.
    page.fill("#threshold", "0.5")
    max_abs = max(abs(e.score or 0) for e in final.edges)
    strong = {e.name for e in final.edges if abs(e.score or 0) >= 0.5 * max_abs}
    assert _visible_edges(page) == strong
    assert page.inner_text("#edges-shown") == str(len(strong))
    assert page.locator("#faithfulness-curve polyline").count() == 2
    assert page.locator("#controls-table tbody tr").count() == 2
    assert page.inner_text("#faithfulness-value") == "0.910"
    page.screenshot(path=_artifacts(tmp_path) / "circuit.png")


def test_ui_positional_circuit_is_drawn_over_its_prompt(
    page: Any, served: Served, tmp_path: Path
) -> None:
    _open(page, served, "circuit?id=ui-positions")
    page.wait_for_selector("#circuit-graph[data-view=positions]")
    assert "positions (spans): IO · S1 · S2 · END · other" in page.inner_text("#position-axis")
    # One column per position, left to right in prompt order, each headed by its token.
    tokens = _cy(page, "cy.nodes('.token').map((n) => [n.data('label'), n.position('x')])")
    assert [label for label, _ in tokens] == [
        "IO\n Mary",
        "S1\n John",
        "S2\n John",
        "END\n gave",
        "other\n",
    ]
    assert [x for _, x in tokens] == sorted(x for _, x in tokens)
    column_x = {label.split("\n")[0]: x for label, x in tokens}
    expected = {f"{n}@{sp}" for (n, _, sp) in POSITIONAL_EDGES}
    assert set(_cy(page, "cy.edges().map((e) => e.id())")) == expected
    assert _visible_edges(page) == expected
    x = dict(_cy(page, "cy.nodes().not('.token').map((n) => [n.id(), n.position('x')])"))
    y = dict(_cy(page, "cy.nodes().not('.token').map((n) => [n.id(), n.position('y')])"))
    # Nodes per position: each head once per position it is at, in its position's column...
    assert {"a0.h3@S1", "a0.h3@S2", "a1.h3@S2", "a1.h3@END", "logits@END"} <= set(x)
    for node, at in (("a0.h3@S2", "S2"), ("a1.h3@END", "END"), ("a0.h3@S1", "S1")):
        nearest = min(column_x, key=lambda label: abs(column_x[label] - x[node]))
        assert nearest == at, (node, nearest)
    # ... and layered as in the summed drawing: input, layer 0, layer 1, logits upwards.
    assert y["input@END"] > y["a1.h3@END"] > y["logits@END"]
    assert y["a0.h3@S2"] > y["a1.h3@S2"]
    # The score of the head as a positional component, and the edge's span, in the inspector.
    _cy(page, "cy.getElementById('a0.h3->a1.h3<k>@S2').emit('tap') && true")
    inspector = page.inner_text("#inspector")
    assert "S2" in inspector and "0.8000" in inspector and "6" in inspector
    assert _cy(page, "cy.getElementById('a1.h3@END').data('score')") == 0.7
    page.screenshot(path=_artifacts(tmp_path) / "positions.png")
    # Summed over positions it is the ordinary layered circuit of its summed edges.
    page.select_option("#position-view", "summed")
    page.wait_for_selector("#circuit-graph[data-view=summed]")
    assert _visible_edges(page) == {n for (n, _, _) in POSITIONAL_EDGES}
    assert _cy(page, "cy.getElementById('a0.h3->a1.h3<k>').data('score')") == 0.8


def test_ui_undefined_faithfulness_is_shown_with_its_reason(page: Any, served: Served) -> None:
    _open(page, served, f"circuit?id={served.ids[STEPS[0]]}")
    page.wait_for_selector("#faithfulness-value")
    assert page.inner_text("#faithfulness-value") == "undefined"
    assert page.get_attribute("#faithfulness-value", "title") == UNDEFINED_REASON
    assert UNDEFINED_REASON in page.inner_text(".view-head")


def test_ui_browse_filters_and_pages(page: Any, served: Served, tmp_path: Path) -> None:
    _open(page, served, "browse")
    rows = page.locator("#circuits-table tbody tr")
    assert rows.count() == 20
    first_page = set(rows.evaluate_all("rs => rs.map((r) => r.dataset.id)"))
    page.click("#next-page")
    page.wait_for_function("document.querySelectorAll('#circuits-table tbody tr').length === 4")
    second_page = set(rows.evaluate_all("rs => rs.map((r) => r.dataset.id)"))
    assert not first_page & second_page and len(first_page | second_page) == 24
    assert page.is_disabled("#next-page")
    page.fill("#filter-model", MODEL)
    page.fill("#filter-tag", "untrained")
    page.click("#browse-form button[type=submit]")
    page.wait_for_function("document.querySelectorAll('#circuits-table tbody tr').length === 1")
    assert rows.first.get_attribute("data-id") == served.ids[STEPS[0]]
    page.fill("#filter-tag", "")
    page.fill("#filter-alias", "ui-final")
    page.click("#browse-form button[type=submit]")
    page.wait_for_selector(f"#circuits-table tr[data-id='{served.ids[STEPS[-1]]}']")
    assert rows.count() == 1
    page.screenshot(path=_artifacts(tmp_path) / "browse.png")


def test_ui_compare_colours_the_three_edge_sets(page: Any, served: Served, tmp_path: Path) -> None:
    a, b = served.ids[STEPS[0]], served.ids[STEPS[-1]]
    _open(page, served, f"compare?a={a}&b=ui-final")
    edges_a = {e.name for e in _document(STEPS[0]).edges}
    edges_b = {e.name for e in _document(STEPS[-1]).edges}
    colours = dict(_cy(page, "cy.edges().map((e) => [e.id(), e.style('line-color')])"))
    by_colour: dict[str, set[str]] = {}
    for name, colour in colours.items():
        by_colour.setdefault(colour, set()).add(name)
    assert sorted(map(frozenset, by_colour.values()), key=len) == sorted(
        map(frozenset, [edges_a - edges_b, edges_b - edges_a, edges_a & edges_b]), key=len
    )
    assert page.inner_text("#count-onlyA") == str(len(edges_a - edges_b))
    assert page.inner_text("#count-onlyB") == str(len(edges_b - edges_a))
    assert page.inner_text("#count-both") == str(len(edges_a & edges_b))
    assert "edge Jaccard" in page.inner_text("#consistency-table")
    assert "cosine (role-aligned)" in page.inner_text("#consistency-table")
    assert b not in page.inner_text("#count-onlyB")  # sanity: counts, not ids
    page.screenshot(path=_artifacts(tmp_path) / "compare.png")
    page.goto(f"{served.base_url}/ui/#compare?a=no-such-circuit&b=ui-final")
    page.wait_for_selector("main[data-state=error][data-view=compare]")
    assert "no-such-circuit" in page.inner_text("[role=alert]")


def test_ui_shared_subcircuit_highlights_support_k(
    page: Any, served: Served, tmp_path: Path
) -> None:
    ids = ",".join(served.ids[s] for s in STEPS)
    _open(page, served, f"shared?ids={ids}&k=3")
    support: dict[str, int] = {}
    for step in STEPS:
        for name in _edges_at(step):
            support[name] = support.get(name, 0) + 1
    shown = _cy(page, "cy.edges().filter((e) => !e.hasClass('faded')).map((e) => e.id())")
    assert set(shown) == {n for n, s in support.items() if s >= 3}
    assert len(_cy(page, "cy.edges().map((e) => e.id())")) == len(support)
    page.fill("#support", "5")
    page.dispatch_event("#support", "change")
    page.wait_for_selector("#shared-graph[data-k='5']")
    shown = _cy(page, "cy.edges().filter((e) => !e.hasClass('faded')).map((e) => e.id())")
    assert set(shown) == {n for n, s in support.items() if s == len(STEPS)}
    page.screenshot(path=_artifacts(tmp_path) / "shared.png")


def test_ui_evolution_slider_shows_the_induction_edge_forming(
    page: Any, served: Served, tmp_path: Path
) -> None:
    _open(page, served, f"evolution?model={MODEL}&task={TASK}&method={METHOD}")
    phase_index = STEPS.index(PHASE_STEP)
    for index, step in enumerate(STEPS):
        page.fill("#evolution-slider", str(index))
        page.wait_for_selector(f"#evolution-graph[data-checkpoint='step-{step}']")
        assert _visible_edges(page) == set(_edges_at(step))
        assert (K_EDGE in _visible_edges(page)) == (step >= PHASE_STEP)
        if index == phase_index:
            assert K_EDGE in page.inner_text("#appeared-list")
            widths = dict(
                _cy(page, "cy.edges().map((e) => [e.id(), parseFloat(e.style('width'))])")
            )
            assert widths[K_EDGE] > widths["input->a0.h0<v>"]  # this checkpoint's scores
            page.screenshot(path=_artifacts(tmp_path) / "evolution.png")
    labels = dict(_cy(page, "cy.nodes().map((n) => [n.id(), n.data('label')])"))
    assert "induction head" in labels[INDUCTION_HEAD]


def test_ui_jobs_submit_follow_and_export(page: Any, served: Served, tmp_path: Path) -> None:
    from circuitreg.services.db import make_engine
    from circuitreg.services.queue import JobQueue

    _open(page, served, "jobs")
    assert page.is_disabled("#submit-form button[type=submit]")  # no token yet
    page.fill("#token", "not-a-token")
    page.click("#token-form button")
    page.wait_for_selector("main[data-state=error]")
    assert "unknown or revoked API token" in page.inner_text("[role=alert]")
    page.fill("#token", served.write_token)
    page.click("#token-form button")
    page.wait_for_selector("main[data-state=ready] #submit-form button:not([disabled])")
    page.fill("#submit-model", MODEL)
    page.fill("#submit-task", TASK)
    page.fill("#submit-params", '{"top_k": 8}')  # not an option of eap_ig: the API says so
    page.click("#submit-form button[type=submit]")
    page.wait_for_selector("#submit-outcome .error")
    assert "top_k" in page.inner_text("#submit-outcome")
    page.fill("#submit-params", "[1, 2]")
    page.click("#submit-form button[type=submit]")
    page.wait_for_selector("#submit-outcome .error:text-is('params must be a JSON object')")
    page.fill("#submit-params", '{"steps": 4}')
    page.click("#submit-form button[type=submit]")
    page.wait_for_selector("#submit-outcome a, #submit-outcome .error")
    assert page.locator("#submit-outcome a").count() == 1, page.inner_text("#submit-outcome")
    link = page.locator("#submit-outcome a")
    job_id = link.inner_text()
    page.wait_for_selector(f"#jobs-table a:text-is('{job_id}')")  # the list refreshes itself
    link.click()
    page.wait_for_selector("#job-detail #job-status:text-is('QUEUED')")

    engine = make_engine(served.settings.resolved_database_url)
    queue = JobQueue(engine)
    claimed = queue.claim("ui-test-worker")
    assert claimed is not None and claimed.id == job_id
    assert queue.heartbeat(job_id, "ui-test-worker", progress=0.5, message="halfway")
    page.wait_for_function(
        "document.querySelector('#job-detail progress').value === 0.5"
        " && document.querySelector('#job-status').textContent === 'RUNNING'"
    )
    # anonymous read is on, so the browser's WebSocket (which cannot send a token) may stream
    assert page.inner_text("#job-live") == "(live via subscription)"
    engine.dispose()
    page.screenshot(path=_artifacts(tmp_path) / "jobs.png")

    _open(page, served, "circuit?id=ui-final")
    with page.expect_download() as svg_download:
        page.click("#export-svg")
    svg = Path(svg_download.value.path()).read_text()
    assert svg.lstrip().startswith(("<?xml", "<svg")) and "a1.h3" in svg
    with page.expect_download() as png_download:
        page.click("#export-png")
    png = Path(png_download.value.path()).read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
    (_artifacts(tmp_path) / "export.svg").write_text(svg)


def test_ui_jobs_fall_back_to_polling_without_anonymous_read(browser: Any, tmp_path: Path) -> None:
    """A browser WebSocket cannot carry the token, so a private API is followed by polling."""
    from circuitreg.migrations.relational import upgrade
    from circuitreg.services.api.app import create_app
    from circuitreg.services.api.auth import create_token
    from circuitreg.services.db import make_engine
    from circuitreg.services.queue import JobQueue, JobSpec
    from circuitreg.services.stores.factory import open_store

    settings = Settings(data_dir=tmp_path / "private", anonymous_read=False, log_level="WARNING")
    upgrade(settings.resolved_database_url)
    store = open_store(settings)
    store.migrate()
    engine = make_engine(settings.resolved_database_url)
    token = create_token(engine, "ui-reader", "read")
    queue = JobQueue(engine)
    job = queue.enqueue(JobSpec(kind="discovery", model=MODEL, task=TASK, method=METHOD))
    context = browser.new_context()
    try:
        with _running(create_app(settings, store)) as base_url:
            page = context.new_page()
            page.goto(f"{base_url}/ui/#jobs?id={job.id}")
            page.wait_for_selector("main[data-state=error]")  # no token: reads are refused
            page.fill("#token", token)
            page.click("#token-form button")
            page.wait_for_selector("main[data-state=ready] #job-detail")
            assert queue.claim("ui-test-worker") is not None
            assert queue.heartbeat(job.id, "ui-test-worker", progress=0.25, message="a quarter")
            page.wait_for_function("document.querySelector('#job-detail progress').value === 0.25")
            assert page.inner_text("#job-live") == "(live via polling)"
            page.screenshot(path=_artifacts(tmp_path) / "jobs-polling.png")
    finally:
        context.close()
        engine.dispose()
        store.close()
