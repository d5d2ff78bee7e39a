"""``tracr:...`` model specs: committed fixtures, or a user's program compiled on demand.

``tracr:reverse`` loads a committed fixture (no JAX needed). ``tracr:path/to/file.py:func``
imports the file, calls ``func()`` (see ``programs.py`` for what it returns) and compiles it
with tracr (the ``tracr`` extra) into ``data_dir/tracr/<hash of the file and function>``, so
the next load of the same unchanged program reuses the compiled fixture.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Any

from circuitreg.workers.models import LoadedModel, ModelLoadError, _ref_from_bridge, sha256_of_files
from circuitreg.workers.tracr.fixture import (
    CONFIG_FILE,
    TracrFixture,
    TracrFixtureError,
    available_fixtures,
    build_bridge,
    fixture_path,
    load_fixture,
)
from circuitreg.workers.tracr.programs import ProgramSpec


def _program_from_file(path: Path, function: str, spec: str) -> ProgramSpec:
    module_spec = importlib.util.spec_from_file_location(f"tracr_program_{path.stem}", path)
    if module_spec is None or module_spec.loader is None:
        raise ModelLoadError(f"model {spec!r}: cannot import {path}")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    make = getattr(module, function, None)
    if not callable(make):
        raise ModelLoadError(f"model {spec!r}: {path} defines no function {function!r}")
    result: Any = make()
    if isinstance(result, ProgramSpec):
        return result
    if isinstance(result, dict) and {"program", "vocab", "max_seq_len"} <= set(result):
        program = result["program"]
        return ProgramSpec(
            name=f"{path.stem}.{function}",
            make=lambda: program,
            vocab=frozenset(result["vocab"]),
            max_seq_len=int(result["max_seq_len"]),
            causal=bool(result.get("causal", False)),
        )
    raise ModelLoadError(
        f"model {spec!r}: {function}() must return a ProgramSpec or a dict with program, "
        "vocab and max_seq_len"
    )


def resolve_tracr_fixture(spec: str) -> TracrFixture:
    """The fixture for a ``tracr:`` spec, compiling a user program if needed."""
    from circuitreg.settings import get_settings

    body = spec.removeprefix("tracr:")
    if ":" not in body:
        try:
            return load_fixture(fixture_path(body))
        except TracrFixtureError:
            raise ModelLoadError(
                f"model {spec!r}: no built-in tracr program {body!r} "
                f"(built-ins: {', '.join(available_fixtures())}; or give path.py:function)"
            ) from None
    file_part, _, function = body.rpartition(":")
    path = Path(file_part).expanduser()
    if not path.is_file():
        raise ModelLoadError(f"model {spec!r}: program file {path} does not exist")
    digest = hashlib.sha256(path.read_bytes() + function.encode()).hexdigest()[:16]
    out_dir = get_settings().data_dir / "tracr" / digest
    if (out_dir / CONFIG_FILE).is_file():
        return load_fixture(out_dir)
    from circuitreg.workers.tracr.compile import TracrCompileError, compile_program

    program = _program_from_file(path, function, spec)
    try:
        return compile_program(program, out_dir)
    except TracrCompileError as exc:
        raise ModelLoadError(f"model {spec!r}: {exc}") from None


def load_tracr_model(spec: str, device: str) -> LoadedModel:
    """A ``LoadedModel`` for a ``tracr:`` spec; ``info`` carries the fixture and BOS id."""
    fixture = resolve_tracr_fixture(spec)
    bridge = build_bridge(fixture, device)
    ref = _ref_from_bridge(
        bridge,
        name=f"tracr-{fixture.name}",
        architecture="tracr",
        revision=sha256_of_files([fixture.model_path]),
    )
    info = {"fixture": fixture, "bos_token": fixture.bos_id, "d_vocab": len(fixture.input_encoding)}
    return LoadedModel(bridge, ref, device, spec, "tracr", info)
