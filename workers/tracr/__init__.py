"""tracr ground truth: compiled RASP programs as TransformerBridges, with their true edges.

The committed fixtures (``fixtures/``) are loaded without JAX; compiling new programs and
rebuilding the fixtures (``rebuild_fixtures.py``) needs the ``tracr`` extra.
"""

from circuitreg.workers.tracr.fixture import (
    TracrFixture,
    TracrFixtureError,
    TracrSample,
    available_fixtures,
    build_bridge,
    load_fixture,
)
from circuitreg.workers.tracr.groundtruth import ground_truth_edges, ground_truth_nodes

__all__ = [
    "TracrFixture",
    "TracrFixtureError",
    "TracrSample",
    "available_fixtures",
    "build_bridge",
    "ground_truth_edges",
    "ground_truth_nodes",
    "load_fixture",
]
