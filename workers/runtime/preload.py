"""Imported once by the worker forkserver (see ``pool``): the heavy modules every job needs.

It only imports, never runs a model: the forkserver must stay free of torch threads.
"""

import importlib

for _module in (
    "torch",
    "transformer_lens.model_bridge",
    "circuitreg.workers.models",
    "circuitreg.workers.methods.registry",
    "circuitreg.workers.tasks.registry",
    "circuitreg.workers.validation",
    "circuitreg.workers.runtime.launch",
):
    importlib.import_module(_module)

importlib.import_module("circuitreg.workers.methods.registry").default_registry()
importlib.import_module("circuitreg.workers.tasks.registry").default_registry()
