"""Circuit Registry: discover, validate and query transformer circuits as typed graphs.

The package maps one import namespace onto the repository's fixed top-level folders:
``circuitreg.schema`` (``schema/``), ``circuitreg.services`` (``services/``),
``circuitreg.workers`` (``workers/``) and ``circuitreg.migrations`` (``migrations/``).
"""

import time

__version__ = "0.1.0"

# When this process started running our code (the first import of the package, before any
# command's imports): the demo's "finished in" counts from here, so it covers the whole run.
STARTED = time.perf_counter()
