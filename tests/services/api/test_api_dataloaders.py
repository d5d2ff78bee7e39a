"""No N+1: a page of circuits with nested fields makes a bounded number of store/DB calls."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import event

from circuitreg.services.api import create_app

from .conftest import INDUCTION, CountingStore, Registry, gql, make_doc

PAGE = """{
  circuits(first: 20) {
    nodes {
      id nEdges faithfulness tags
      model { name catalogued checkpoints { totalCount } }
      task { name spec }
      job { status }
      run { method device }
      edges(first: 5) { totalCount }
      components(first: 5) { totalCount }
    }
  }
}"""


async def test_api_page_of_circuits_batches_its_reads(registry: Registry) -> None:
    for seed in range(20):
        registry.store.put_circuit(make_doc(INDUCTION, seed=seed, model=f"m{seed % 3}"))
    counting = CountingStore(registry.store)
    app = create_app(registry.settings, counting)  # type: ignore[arg-type]
    statements: list[str] = []

    def record(*args: Any) -> None:
        statements.append(str(args[2]))

    event.listen(app.state.services.engine, "before_cursor_execute", record)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://t",
        headers={"Authorization": f"Bearer {registry.tokens['read']}"},
    ) as client:
        body = await gql(client, PAGE)
    nodes = body["data"]["circuits"]["nodes"]
    assert len(nodes) == 20 and all(n["edges"]["totalCount"] == 3 for n in nodes)
    # One list call; summaries come with it; each document is read once although three
    # fields per circuit need it (run, edges, components), in one batched thread hop.
    assert counting.calls == {"list_circuits": 1, "get_circuit": 20}
    # The token lookup, then one catalogue query for the 3 models and one for the task.
    catalogue = [s for s in statements if "FROM models" in s or "FROM tasks" in s]
    assert len(catalogue) == 2, catalogue
    assert len(statements) <= 4, statements
