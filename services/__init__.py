"""Services: the relational database, the circuit stores, the job queue and the API.

Nothing under ``circuitreg.services`` imports torch, TransformerLens or the workers: the API
container has neither, and answers queries while the GPUs work (import-linter enforces it).
"""

if __name__ != "circuitreg.services":  # one name per module: the folder is linked into circuitreg
    raise ImportError(f"{__name__}: import it as circuitreg.services")
