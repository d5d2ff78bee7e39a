"""Workers: models, tasks, the intervention engine, discovery methods, validation and the loop."""

if __name__ != "circuitreg.workers":  # one name per module: the folder is linked into circuitreg
    raise ImportError(f"{__name__}: import it as circuitreg.workers")
