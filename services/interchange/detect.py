"""Format detection from content (never from the file name alone, which lies)."""

from __future__ import annotations

from pathlib import Path

from .containers import decode_container
from .errors import InterchangeError, UnknownFormatError
from .registry import FormatRegistry


def read_source(source: str | Path | bytes) -> bytes:
    """The bytes of a path or of bytes given directly."""
    if isinstance(source, bytes):
        return source
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        raise InterchangeError(
            f"cannot read the file: {exc.strerror}", location=str(source)
        ) from None


def detect_format(source: str | Path | bytes, registry: FormatRegistry | None = None) -> str:
    """The name of the registered format ``source`` is in, judged by its content.

    A JSON file that does not parse is reported with its line and column (detection
    cannot tell anything from half a file); an unrecognised structure lists what was tried.
    """
    from .formats import FORMATS

    registry = registry or FORMATS
    data = read_source(source)
    container = decode_container(data)
    for fmt in registry:
        if fmt.sniff is not None and fmt.sniff(data, container.payload):
            return fmt.name
    raise UnknownFormatError(
        f"cannot tell the format of this {container.kind} content; give it explicitly "
        f"(readable formats: {', '.join(registry.readable())})",
        location=str(source) if not isinstance(source, bytes) else "input",
    )
