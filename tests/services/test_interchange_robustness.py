"""Damaged files of every format fail with InterchangeError, never with a stray exception."""

from __future__ import annotations

import random

import pytest

from circuitreg.schema import CircuitDocument, Component, Edge, MethodRef, ModelRef, TaskRef
from circuitreg.services.interchange import (
    ImportOptions,
    InterchangeError,
    read_document,
    write_document,
)


def _doc() -> CircuitDocument:
    names = ["input", "a0.h0", "a0.h1", "m0", "a1.h0", "a1.h1", "m1", "logits"]
    edges = [
        ("input->a0.h0<q>", 0.5),
        ("a0.h0->m0", -0.3),
        ("a0.h1->a1.h0<k>", 0.125),
        ("m0->a1.h1<v>", 1.5),
        ("a1.h0->logits", -2.0),
        ("m1->logits", 0.0625),
    ]
    return CircuitDocument(
        model=ModelRef(name="toy", n_layers=2, n_heads=2),
        task=TaskRef(name="t"),
        method=MethodRef(name="m"),
        components=[Component.from_name(n) for n in names],
        edges=[Edge.from_name(n, score=s, in_circuit=s > 0) for n, s in edges],
    )


def _damage(data: bytes, rng: random.Random) -> bytes:
    damaged = bytearray(data)
    op = rng.randrange(4)
    if op == 0:
        return bytes(damaged[: rng.randrange(len(damaged))])
    if op == 1:
        for _ in range(rng.randrange(1, 4)):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
    elif op == 2:
        at = rng.randrange(len(damaged))
        damaged[at:at] = rng.choice([b'"', b"null", b"[", b"{}", b"1e999", b"<", b'"x"'])
    else:
        at = rng.randrange(len(damaged))
        del damaged[at : at + rng.randrange(1, 30)]
    return bytes(damaged)


@pytest.mark.parametrize("fmt", ["circuitreg", "mib", "graphml", "acdc", "auto-circuit"])
def test_damaged_files_raise_interchange_errors_only(fmt: str) -> None:
    data = write_document(_doc(), fmt)
    rng = random.Random(fmt)
    options = None if fmt in ("circuitreg", "graphml") else ImportOptions(model="toy")
    refused = 0
    for _ in range(150):
        damaged = _damage(data, rng)
        for name in (fmt, None):
            try:
                read_document(damaged, name, options)
            except InterchangeError as exc:
                refused += 1
                assert str(exc)  # every refusal has a message
    assert refused > 50  # most damage is caught, the rest still parses to a valid document


@pytest.mark.parametrize("fmt", ["circuitreg", "mib", "acdc", None])
def test_deeply_nested_json_is_refused_in_one_line(fmt: str | None) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    options = None if fmt == "circuitreg" else ImportOptions(model="toy")
    with pytest.raises(InterchangeError, match="nested too deeply"):
        read_document(deep, fmt, options)
