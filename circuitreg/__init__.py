"""Circuit Registry: discover, validate and query transformer circuits as typed graphs.

The package maps one import namespace onto the repository's fixed top-level folders:
``circuitreg.schema`` (``schema/``), ``circuitreg.services`` (``services/``),
``circuitreg.workers`` (``workers/``) and ``circuitreg.migrations`` (``migrations/``).
"""

__version__ = "0.1.0"
