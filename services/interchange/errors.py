"""Errors of the interchange formats: each says WHERE in the input it went wrong, and what.

A researcher handed a 30,000-edge file wants the one bad key, not a stack trace, so every
importer raises ``InterchangeError`` with a location (a JSON path such as
``$.edges["a0.h1->m0"].score``, ``line 3 column 17``, or a pickle key) and a message.
"""

from __future__ import annotations


class InterchangeError(ValueError):
    """A file that cannot be read or a document that cannot be written in a format."""

    def __init__(self, message: str, *, location: str | None = None, format: str | None = None):
        self.message = message
        self.location = location
        self.format = format
        super().__init__(self._render())

    def _render(self) -> str:
        prefix = f"{self.format}: " if self.format else ""
        where = f"at {self.location}: " if self.location else ""
        return f"{prefix}{where}{self.message}"

    def with_format(self, format: str) -> InterchangeError:
        """The same error, naming the format (set once, by the registry)."""
        if self.format is None:
            self.format = format
            self.args = (self._render(),)
        return self


class UnknownFormatError(InterchangeError):
    """The format named (or detected) is not registered, or cannot be detected."""


class UnrepresentableError(InterchangeError):
    """The document holds something the target format (or our schema) cannot express."""
