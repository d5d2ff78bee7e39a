"""The demo's questions to the registry, asked of the real API app over HTTP in process.

One request asks for the final circuit (its heads, their role labels and the K-composition
edge), the circuit at every checkpoint (``circuitEvolution``), and the subcircuit shared by
the checkpoints after the induction phase change and by those before it
(``sharedSubcircuits``), the product's headline question.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from circuitreg.settings import Settings

DEMO_QUERY = """
query Demo($id: String!, $model: String!, $task: String!, $method: String!) {
  circuit(id: $id) {
    id modelName checkpoint step method ablation faithfulness nEdges
    components(first: 100) { edges { node { name layer head score labels hookName } } }
    edges(first: 100) { edges { node { name source target receiver score } } }
  }
  circuitEvolution(model: $model, task: $task, method: $method) {
    steps(first: 100) { edges { node { checkpoint step edges appeared disappeared } } }
  }
}
"""

SHARED_QUERY = """
query Shared($after: [String!], $afterSupport: Int!, $before: [String!]) {
  afterPhaseChange: sharedSubcircuits(circuitIds: $after, minSupport: $afterSupport) {
    circuitIds edges(first: 100) { edges { node { edge support } } }
  }
  beforePhaseChange: sharedSubcircuits(circuitIds: $before, minSupport: 1) {
    circuitIds edges(first: 100) { edges { node { edge support } } }
  }
}
"""


@dataclass(frozen=True)
class DemoQuestion:
    """What the demo asks: the final circuit, and the circuits around the phase change."""

    circuit_id: str
    model: str
    task: str
    method: str
    after_phase_change: list[str]
    before_phase_change: list[str]


async def ask_api(settings: Settings, store: Any, question: DemoQuestion) -> dict[str, Any]:
    """Ask the real API app, over HTTP in process, with a freshly created read token.

    The shared-subcircuit part is asked only when there are checkpoints on both sides of the
    phase change; its answer is then under ``afterPhaseChange`` and ``beforePhaseChange``.
    """
    import httpx

    from circuitreg.services.api.app import create_app
    from circuitreg.services.api.auth import create_token
    from circuitreg.services.db import make_engine

    engine = make_engine(settings.resolved_database_url)
    try:
        token = create_token(engine, f"demo-{int(time.time() * 1000)}", "read")
    finally:
        engine.dispose()
    if "log_level" not in settings.model_fields_set:
        # The demo prints its own answer; per-request access lines would bury it.
        settings = settings.model_copy(update={"log_level": "WARNING"})
    app = create_app(settings, store)
    requests: list[tuple[str, dict[str, Any]]] = [
        (
            DEMO_QUERY,
            {
                "id": question.circuit_id,
                "model": question.model,
                "task": question.task,
                "method": question.method,
            },
        )
    ]
    if question.after_phase_change and question.before_phase_change:
        requests.append(
            (
                SHARED_QUERY,
                {
                    "after": question.after_phase_change,
                    "afterSupport": len(question.after_phase_change),
                    "before": question.before_phase_change,
                },
            )
        )
    data: dict[str, Any] = {}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://circuitreg") as client:
        for query, variables in requests:
            response = await client.post(
                "/graphql",
                json={"query": query, "variables": variables},
                headers={"Authorization": f"Bearer {token}"},
            )
            response.raise_for_status()
            body: dict[str, Any] = response.json()
            if body.get("errors"):
                raise RuntimeError(f"GraphQL errors: {json.dumps(body['errors'])}")
            data.update(body["data"])
    return data
