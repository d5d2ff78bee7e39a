"""RASP programs from tracr's own library that no test and no default was tuned on.

The recovery bench (``bench/recovery.py``) compiles each one as a user program,
``tracr:bench/unseen_programs.py:make_<name>``, when the ``tracr`` extra is installed, and
grades every method on it: the discovery issue asks for the same recovery "on programs the
tests never saw". Each function returns the dict form of a user program (see
``circuitreg.workers.tracr.programs``). The two Dyck programs were added after mask pruning's
``mask_samples`` default was chosen on the others, so they were unseen by that choice too;
the last two (outputs RASP leaves undefined) after that.
"""

from __future__ import annotations

from typing import Any

from tracr.compiler import lib
from tracr.rasp import rasp


def make_hist() -> dict[str, Any]:
    """How often each token occurs in the input (categorical)."""
    return {"program": lib.make_hist(), "vocab": {"a", "b", "c"}, "max_seq_len": 5}


def make_count_a() -> dict[str, Any]:
    """How many "a" tokens the input holds, at every position (categorical)."""
    return {"program": lib.make_count(rasp.tokens, "a"), "vocab": {"a", "b"}, "max_seq_len": 5}


def make_count_less_freq() -> dict[str, Any]:
    """How many tokens occur at most twice (two attention layers)."""
    return {"program": lib.make_count_less_freq(2), "vocab": {"a", "b", "c"}, "max_seq_len": 5}


def make_sort() -> dict[str, Any]:
    """The input sorted (three layers; keys made unique by position)."""
    program = lib.make_sort(rasp.tokens, rasp.tokens, max_seq_len=4, min_key=1)
    return {"program": program, "vocab": {1, 2, 3, 4}, "max_seq_len": 4}


def make_sort_freq() -> dict[str, Any]:
    """Tokens sorted by how often they occur (five layers)."""
    return {"program": lib.make_sort_freq(4), "vocab": {"a", "b", "c"}, "max_seq_len": 4}


def make_shuffle_dyck() -> dict[str, Any]:
    """Whether the brackets are balanced (six layers, 388 edges)."""
    return {"program": lib.make_shuffle_dyck(["()"]), "vocab": {"(", ")"}, "max_seq_len": 5}


def make_shuffle_dyck2() -> dict[str, Any]:
    """Whether two kinds of brackets are each balanced (eight layers, 1,997 edges)."""
    program = lib.make_shuffle_dyck2()
    return {"program": program, "vocab": {"(", ")", "{", "}"}, "max_seq_len": 4}


def make_shift_by_one() -> dict[str, Any]:
    """The previous token (its first output is undefined: RASP gives None there)."""
    program = lib.shift_by(1, rasp.tokens)
    return {"program": program, "vocab": {"a", "b", "c"}, "max_seq_len": 5, "causal": True}


def make_detect_ab() -> dict[str, Any]:
    """Whether the pattern "ab" ends at each position (undefined at the first)."""
    program = lib.detect_pattern(rasp.tokens, "ab")
    return {"program": program, "vocab": {"a", "b", "c"}, "max_seq_len": 5, "causal": True}


# Added after the score function's learning rate (0.2) was chosen on every program above.


def make_hist_wide() -> dict[str, Any]:
    """How often each token occurs, over four token kinds and six positions."""
    return {"program": lib.make_hist(), "vocab": {"a", "b", "c", "d"}, "max_seq_len": 6}


def make_same_as_two_back() -> dict[str, Any]:
    """Whether each token repeats the one two places back (undefined at the first two)."""
    back = lib.shift_by(2, rasp.tokens)
    program = rasp.categorical(rasp.SequenceMap(lambda x, y: x == y, rasp.tokens, back))
    return {"program": program, "vocab": {"a", "b", "c"}, "max_seq_len": 6, "causal": True}


UNSEEN = (
    "make_hist",
    "make_count_a",
    "make_count_less_freq",
    "make_sort",
    "make_sort_freq",
    "make_shuffle_dyck",
    "make_shuffle_dyck2",
    "make_shift_by_one",
    "make_detect_ab",
    "make_detect_abc",
    "make_count_less_freq_3",
    "make_same_as_previous",
    "make_shift_by_two",
    "make_hist_wide",
    "make_same_as_two_back",
)


# Added after mask pruning's ``auto`` choice (score function up to 256 edges) was made on
# the programs above, so they are unseen by it: variants of the library's programs with
# other sizes, and one composed here.


def make_detect_abc() -> dict[str, Any]:
    """Whether the pattern "abc" ends at each position (undefined at the first two)."""
    program = lib.detect_pattern(rasp.tokens, "abc")
    return {"program": program, "vocab": {"a", "b", "c"}, "max_seq_len": 5, "causal": True}


def make_count_less_freq_3() -> dict[str, Any]:
    """How many tokens occur at most three times, over four token kinds."""
    program = lib.make_count_less_freq(3)
    return {"program": program, "vocab": {"a", "b", "c", "d"}, "max_seq_len": 5}


def make_same_as_previous() -> dict[str, Any]:
    """Whether each token repeats the one before it (undefined at the first)."""
    previous = lib.shift_by(1, rasp.tokens)
    program = rasp.categorical(rasp.SequenceMap(lambda x, y: x == y, rasp.tokens, previous))
    return {"program": program, "vocab": {"a", "b", "c"}, "max_seq_len": 5, "causal": True}


def make_shift_by_two() -> dict[str, Any]:
    """The token two places back (undefined at the first two)."""
    program = lib.shift_by(2, rasp.tokens)
    return {"program": program, "vocab": {"a", "b", "c", "d"}, "max_seq_len": 6, "causal": True}
