"""The built-in RASP programs and the contract for user programs.

A program is described by a ``ProgramSpec``: a function that builds the RASP expression (it
imports tracr, so only callers with the ``tracr`` extra run it), the input vocabulary, the
longest input, and whether the compiled model is causal. ``reverse`` reads tokens after the
current position, so it must be bidirectional; ``frac_prevs`` (fraction of earlier "x"
tokens) and ``pair_balance`` (fraction of earlier "(" minus fraction of earlier ")") only
look back, so they are compiled causal like an ordinary language model.

A user file given as ``tracr:path/to/file.py:make_program`` defines ``make_program()`` that
returns either a ``ProgramSpec`` or a dict with keys ``program`` (a RASP SOp), ``vocab``,
``max_seq_len`` and optionally ``causal`` (default False).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ProgramSpec:
    """What tracr needs to compile a program, and a name for it."""

    name: str
    make: Callable[[], Any]
    vocab: frozenset[Any]
    max_seq_len: int
    causal: bool = False


def _make_reverse() -> Any:
    from tracr.compiler import lib
    from tracr.rasp import rasp

    return lib.make_reverse(rasp.tokens)


def _make_frac_prevs() -> Any:
    from tracr.compiler import lib
    from tracr.rasp import rasp

    return lib.make_frac_prevs(rasp.tokens == "x")


def _make_pair_balance() -> Any:
    from tracr.compiler import lib
    from tracr.rasp import rasp

    return lib.make_pair_balance(rasp.tokens, "(", ")")


BUILTIN_PROGRAMS: dict[str, ProgramSpec] = {
    "reverse": ProgramSpec("reverse", _make_reverse, frozenset({"a", "b", "c", "d"}), 5),
    "frac_prevs": ProgramSpec(
        "frac_prevs", _make_frac_prevs, frozenset({"x", "y", "z"}), 6, causal=True
    ),
    "pair_balance": ProgramSpec(
        "pair_balance", _make_pair_balance, frozenset({"(", ")", "a"}), 6, causal=True
    ),
}
