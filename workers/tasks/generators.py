"""Text task generators: IOI, greater-than and docstring (they need the model's tokenizer).

Names, years and argument words are kept only if the tokenizer makes them a single token
(GPT-2's does for the lists below); a tokenizer that leaves too few raises a clear error.
Each generator is seeded, and states its corruption:

- IOI (Wang et al. 2022): ``When Mary and John went to the store, John gave a drink to``
  -> `` Mary`` (distractor `` John``). Corruption ``abc``: all three names replaced by other
  names, which removes the name-mover signal while keeping the template.
- Greater-than (Hanna et al. 2023): ``The war lasted from the year 17YY to the year 17`` ->
  ``YY+1`` (distractor ``YY-1``). Corruption ``01``: the start year becomes ``1701``. Spans:
  YY (the token(s) holding the start year's two digits) and END.
- Docstring (Heimersheim & Janiak 2023): a function whose docstring lists ``:param`` lines for
  its arguments in order; the answer is the next argument name, the distractor another one.
  Corruption: the arguments in the ``def`` line are renamed. Spans: A-def, B-def, C-def (the
  ``def`` line's arguments), A-doc, B-doc (the documented names) and END.

Greater-than's and docstring's spans come from the tokenizer's character offsets
(``token_ranges``); a tokenizer without offsets gives those tasks no spans.
"""

from __future__ import annotations

import random

from circuitreg.workers.tasks.base import TaskContext, TaskData, TaskError
from circuitreg.workers.tasks.prompt_spans import token_ranges
from circuitreg.workers.tasks.text import PromptPair, build_from_pairs, is_single_token

NAMES = [
    "Mary",
    "John",
    "Alice",
    "Bob",
    "Tom",
    "James",
    "Sarah",
    "Paul",
    "Anna",
    "Mark",
    "Lisa",
    "David",
    "Kate",
    "Peter",
    "Emma",
    "Jack",
    "Laura",
    "Daniel",
    "Rachel",
    "Michael",
]
PLACES = ("store", "park", "school", "house", "office", "garden")
OBJECTS = ("drink", "book", "ring", "bone", "kiss", "letter")
IOI_TEMPLATES = (
    "When {A} and {B} went to the {P}, {S} gave a {O} to",
    "Then, {A} and {B} had a long day at the {P}. {S} gave a {O} to",
    "After {A} and {B} met at the {P}, {S} handed a {O} to",
)
WORDS = [
    "load",
    "size",
    "files",
    "last",
    "name",
    "value",
    "data",
    "mode",
    "node",
    "user",
    "item",
    "file",
    "line",
    "text",
    "port",
    "key",
    "page",
    "code",
    "time",
    "state",
]


def _single_tokens(context: TaskContext, words: list[str], need: int, what: str) -> list[str]:
    kept = [w for w in words if is_single_token(context, " " + w)]
    if len(kept) < need:
        raise TaskError(
            f"the tokenizer makes only {len(kept)} {what} single tokens; this task needs {need}"
        )
    return kept


def ioi_task(context: TaskContext, n: int = 64, seed: int = 0) -> TaskData:
    """Indirect object identification with ABC corruption, its prompts' spans named S1, IO,
    S2 and END (``_ioi_spans``): the templates differ in length, so positional runs align
    them by span."""
    names = _single_tokens(context, list(NAMES), 6, "names")
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        template = rng.choice(IOI_TEMPLATES)
        a, b, c, d, e = rng.sample(names, 5)
        place, obj = rng.choice(PLACES), rng.choice(OBJECTS)
        clean = template.format(A=a, B=b, S=b, P=place, O=obj)
        corrupted = template.format(A=c, B=d, S=e, P=place, O=obj)
        spans = _ioi_spans(context, clean, a, b)
        pairs.append(PromptPair(clean, corrupted, " " + a, " " + b, spans))
    return build_from_pairs(
        "ioi", {"n": n, "seed": seed}, pairs, context, "ioi/abc: all three names replaced"
    )


def _ioi_spans(context: TaskContext, clean: str, io: str, s: str) -> dict[str, tuple[int, int]]:
    """S1 and S2 (the subject's two occurrences), IO (the indirect object) and END (the last
    token, where the name is predicted), as token ranges of the clean prompt. The names are
    single tokens with their leading space (``_single_tokens``), so each is found by id."""
    ids = list(context.tokenizer.encode(clean, add_special_tokens=False))  # type: ignore[union-attr]
    io_id = context.tokenizer.encode(" " + io, add_special_tokens=False)[0]  # type: ignore[union-attr]
    s_id = context.tokenizer.encode(" " + s, add_special_tokens=False)[0]  # type: ignore[union-attr]
    subject = [i for i, t in enumerate(ids) if t == s_id]
    if len(subject) != 2 or io_id not in ids:
        raise TaskError(f"ioi prompt {clean!r}: cannot find S1, IO and S2 among its tokens")
    io_at, end = ids.index(io_id), len(ids) - 1
    return {"S1": (subject[0], subject[0] + 1), "IO": (io_at, io_at + 1),
            "S2": (subject[1], subject[1] + 1), "END": (end, end + 1)}  # fmt: skip


def greater_than_task(context: TaskContext, n: int = 64, seed: int = 0) -> TaskData:
    """Greater-than on years; logit difference between year+1 and year-1."""
    two_digit = [f"{y:02d}" for y in range(2, 99)]
    usable = [y for y in two_digit if is_single_token(context, y)]
    if len(usable) < 10 or not is_single_token(context, "01"):
        raise TaskError("the tokenizer does not make two-digit years single tokens")
    usable_set = set(usable)
    candidates = [
        y for y in usable if f"{int(y) + 1:02d}" in usable_set and f"{int(y) - 1:02d}" in usable_set
    ]
    if not candidates:
        raise TaskError("no two-digit year with single-token neighbours in this tokenizer")
    rng = random.Random(seed)
    pairs = []
    prefix = "The war lasted from the year 17"
    for i in range(n):
        yy = rng.choice(candidates)
        clean = f"{prefix}{yy} to the year 17"
        at = len(prefix)  # YY: the start year's last two digits; END: the read position
        chars = {"YY": (at, at + 2), "END": (len(clean) - 1, len(clean))}
        spans = token_ranges(context, clean, chars, f"greater_than example {i}")
        pairs.append(PromptPair(clean, f"{prefix}01 to the year 17", f"{int(yy) + 1:02d}",
                                f"{int(yy) - 1:02d}", spans))  # fmt: skip
    return build_from_pairs(
        "greater_than", {"n": n, "seed": seed}, pairs, context, "greater_than/01: start year 1701"
    )


def docstring_task(context: TaskContext, n: int = 64, seed: int = 0) -> TaskData:
    """Docstring argument completion with renamed arguments in the corrupted prompt."""
    words = _single_tokens(context, list(WORDS), 8, "argument words")
    rng = random.Random(seed)
    pairs = []
    for i in range(n):
        args = rng.sample(words, 6)
        real, fake = args[:3], args[3:]
        clean, chars = _docstring_prompt(real, real)
        spans = token_ranges(context, clean, chars, f"docstring example {i}")
        corrupted, _ = _docstring_prompt(fake, real)
        pairs.append(PromptPair(clean, corrupted, " " + real[2], " " + real[0], spans))
    return build_from_pairs(
        "docstring",
        {"n": n, "seed": seed},
        pairs,
        context,
        "docstring/random_def: arguments in the def line renamed",
    )


def _docstring_prompt(
    sig: list[str], documented: list[str]
) -> tuple[str, dict[str, tuple[int, int]]]:
    """The prompt and the character ranges of its roles: the ``def`` line's three arguments
    (A-def, B-def, C-def: C is the answer), the two documented names (A-doc, B-doc) and END,
    the final ``:param`` where the next name is predicted."""
    parts = [("def f(self, ", None), (sig[0], "A-def"), (", ", None), (sig[1], "B-def"),
             (", ", None), (sig[2], "C-def"), ('):\n    """Do it.\n\n    :param ', None),
             (documented[0], "A-doc"), (": the first\n    :param ", None),
             (documented[1], "B-doc"), (": the second\n    :param", None)]  # fmt: skip
    text, chars = "", {}
    for piece, name in parts:
        if name is not None:
            chars[name] = (len(text), len(text) + len(piece))
        text += piece
    chars["END"] = (len(text) - 1, len(text))
    return text, chars
