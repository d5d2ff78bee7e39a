"""Reading untrusted JSON with errors that name the JSON path (or line and column) at fault.

The importers walk parsed JSON through these typed accessors instead of indexing it blindly,
so a string where a score belongs reports ``$.edges["a0.h1->m0"].score: expected a number,
got the string '0.5'`` rather than a ``TypeError`` deep in a loop.
"""

from __future__ import annotations

import json
import math
from typing import Any

from .errors import InterchangeError

_SIMPLE_KEY = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


def parse_json(data: bytes | str) -> Any:
    """Parse JSON; a syntax error (a truncated file, say) reports its line and column."""
    try:
        return json.loads(data)
    except UnicodeDecodeError as exc:
        raise InterchangeError(
            f"not UTF-8 text ({exc.reason})", location=f"byte {exc.start}"
        ) from None
    except json.JSONDecodeError as exc:
        raise InterchangeError(
            f"invalid JSON: {exc.msg}", location=f"line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        # No circuit format nests more than a few levels; a hostile file can nest 100,000.
        raise InterchangeError("JSON nested too deeply to be a circuit file") from None
    except ValueError as exc:  # Python refuses to convert integers of over 4300 digits
        raise InterchangeError(f"invalid JSON: {exc}".split(";")[0]) from None


def child(path: str, key: str | int) -> str:
    """The JSON path of ``key`` under ``path``: ``$.cfg``, ``$.links[3]``, ``$.edges["a->b"]``."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    if key and set(key) <= _SIMPLE_KEY and not key[0].isdigit():
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key)}]"


def describe(value: Any) -> str:
    """A short description of a JSON value for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"the string {shown!r}"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, list):
        return f"a list of {len(value)} items"
    if isinstance(value, dict):
        return f"an object with {len(value)} keys"
    return f"a {type(value).__name__}"


def as_object(value: Any, path: str) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an error at ``path``."""
    if not isinstance(value, dict):
        raise InterchangeError(f"expected an object, got {describe(value)}", location=path)
    return value


def as_list(value: Any, path: str) -> list[Any]:
    """``value`` if it is a JSON array, else an error at ``path``."""
    if not isinstance(value, list):
        raise InterchangeError(f"expected a list, got {describe(value)}", location=path)
    return value


def require(obj: dict[str, Any], key: str, path: str) -> Any:
    """``obj[key]``, or an error naming the missing key."""
    if key not in obj:
        raise InterchangeError(f"missing required key {key!r}", location=path)
    return obj[key]


def as_bool(value: Any, path: str) -> bool:
    """A JSON boolean (not 0/1, not "true")."""
    if not isinstance(value, bool):
        raise InterchangeError(f"expected true or false, got {describe(value)}", location=path)
    return value


def as_int(value: Any, path: str) -> int:
    """A JSON integer (booleans and floats refused)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InterchangeError(f"expected an integer, got {describe(value)}", location=path)
    return value


def as_float(value: Any, path: str) -> float:
    """A finite JSON number, returned as the float that was written (ints widened)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InterchangeError(f"expected a number, got {describe(value)}", location=path)
    try:
        result = float(value)
    except OverflowError:  # an integer beyond a float's range
        raise InterchangeError(
            f"expected a finite number, got an integer of {int(value).bit_length()} bits",
            location=path,
        ) from None
    if not math.isfinite(result):
        raise InterchangeError(f"expected a finite number, got {value!r}", location=path)
    return result


def as_str(value: Any, path: str) -> str:
    """A JSON string."""
    if not isinstance(value, str):
        raise InterchangeError(f"expected a string, got {describe(value)}", location=path)
    return value


def dumps(value: Any) -> bytes:
    """Compact-but-readable JSON as written by the exporters (floats keep their repr)."""
    return json.dumps(value, allow_nan=False).encode()
