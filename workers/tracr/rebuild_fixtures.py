"""Rebuild the committed tracr fixtures (needs the ``tracr`` extra: JAX, dm-haiku, tracr).

    python -m circuitreg.workers.tracr.rebuild_fixtures [NAME ...]

Each built-in program is compiled, converted, checked against its RASP evaluation on sample
inputs, and written to ``workers/tracr/fixtures/<name>/``. The test suite only reads those
files, so it needs no JAX.
"""

from __future__ import annotations

import sys
import time

from circuitreg.workers.tracr.compile import compile_program
from circuitreg.workers.tracr.fixture import fixture_path
from circuitreg.workers.tracr.programs import BUILTIN_PROGRAMS


def main(argv: list[str] | None = None) -> int:
    """Compile the named (default: all) built-in programs into fixtures."""
    names = (argv if argv is not None else sys.argv[1:]) or sorted(BUILTIN_PROGRAMS)
    unknown = [n for n in names if n not in BUILTIN_PROGRAMS]
    if unknown:
        print(f"unknown program(s) {unknown}; built-ins: {sorted(BUILTIN_PROGRAMS)}")
        return 2
    for name in names:
        started = time.perf_counter()
        fixture = compile_program(BUILTIN_PROGRAMS[name], fixture_path(name))
        cfg = fixture.bridge_config
        print(
            f"{name}: {cfg['n_layers']} layers, {cfg['n_heads']} heads, d_model={cfg['d_model']},"
            f" {len(fixture.samples)} samples match RASP ({time.perf_counter() - started:.1f} s)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
