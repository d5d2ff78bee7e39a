"""The registry of interchange formats: name -> reader, writer and detector.

One registry object (``FORMATS`` in ``formats.py``) is populated in one place; registering a
name twice is an error so that two modules can never silently fight over ``"mib"``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from circuitreg.registry import Registry
from circuitreg.schema import CircuitDocument

from .base import ImportOptions, check_storable
from .errors import InterchangeError, UnknownFormatError

Reader = Callable[[bytes, ImportOptions], CircuitDocument]
Writer = Callable[[CircuitDocument], bytes]
# Given the raw bytes and the decoded payload (JSON value, unpickled object, dict of arrays,
# or None when the container was not decodable), say whether the data is in this format.
Sniffer = Callable[[bytes, Any], bool]


@dataclass(frozen=True)
class Format:
    """One interchange format; a format may be import-only or export-only."""

    name: str
    description: str
    extension: str
    media_type: str
    reader: Reader | None = None
    writer: Writer | None = None
    sniff: Sniffer | None = None
    options: frozenset[str] = frozenset()  # the format-specific ImportOptions it honours

    def read(self, data: bytes, options: ImportOptions | None = None) -> CircuitDocument:
        """Parse ``data``; errors name this format and where in the data they are."""
        if self.reader is None:
            raise UnknownFormatError(f"format {self.name!r} can be exported but not imported")
        options = options or ImportOptions()
        ignored = options.specific() - self.options
        if ignored:
            raise InterchangeError(
                f"option{'s' if len(ignored) > 1 else ''} {', '.join(sorted(ignored))} "
                f"do{'' if len(ignored) > 1 else 'es'} not apply to format {self.name!r}",
                location="options",
                format=self.name,
            )
        try:
            doc = self.reader(data, options)
            check_storable(doc)
        except InterchangeError as exc:
            raise exc.with_format(self.name) from None
        return doc

    def write(self, doc: CircuitDocument) -> bytes:
        """Serialise ``doc``; documents the format cannot express raise an error saying why."""
        if self.writer is None:
            raise UnknownFormatError(f"format {self.name!r} can be imported but not exported")
        try:
            return self.writer(doc)
        except InterchangeError as exc:
            raise exc.with_format(self.name) from None


class FormatRegistry(Registry[Format]):
    """Formats by name, in registration order (which is also detection order)."""

    def __init__(self) -> None:
        super().__init__(
            "format", error=UnknownFormatError, duplicate_error=ValueError, sort_names=False
        )

    def register(self, fmt: Format) -> Format:
        """Add a format; a name already taken is refused."""
        return self.add(fmt.name, fmt)

    def readable(self) -> list[str]:
        """Names of formats that can be imported."""
        return [f.name for f in self if f.reader is not None]

    def writable(self) -> list[str]:
        """Names of formats that can be exported."""
        return [f.name for f in self if f.writer is not None]
