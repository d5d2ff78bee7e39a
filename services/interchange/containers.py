"""Recognising the container a file is in (JSON, pickle, torch zip, npz, safetensors, XML,
DOT) and decoding it safely, so that format detection inspects structure, not file names.
"""

from __future__ import annotations

import io
import json
import re
import struct
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .errors import InterchangeError
from .jsonread import parse_json
from .safeload import is_torch_zip, safe_torch_load, safe_unpickle

ContainerKind = Literal["json", "pickle", "torch", "npz", "safetensors", "xml", "dot", "unknown"]

_DOT_START = re.compile(rb"^\s*(?:strict\s+)?(?:di)?graph\b", re.IGNORECASE)


@dataclass(frozen=True)
class Container:
    """The kind of container and its decoded payload (None for XML, DOT and unknown)."""

    kind: ContainerKind
    payload: Any


def _looks_like_safetensors(data: bytes) -> bool:
    """An 8-byte little-endian header length, then that many bytes of JSON object."""
    if len(data) < 10:
        return False
    (header_len,) = struct.unpack("<Q", data[:8])
    if not (2 <= header_len <= len(data) - 8 and data[8:9] == b"{"):
        return False
    try:
        return isinstance(json.loads(data[8 : 8 + header_len]), dict)
    except (ValueError, UnicodeDecodeError):
        return False


def load_npz(data: bytes) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` archive (object arrays refused: they would need pickle)."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except Exception as exc:  # any failure to decode untrusted bytes is the file's fault
        raise InterchangeError(f"unreadable npz archive: {exc!r}", location="npz") from None


def load_safetensors(data: bytes) -> dict[str, np.ndarray]:
    """The tensors of a safetensors file, as numpy arrays."""
    from safetensors.numpy import load

    try:
        return dict(load(data))
    except Exception as exc:
        raise InterchangeError(f"unreadable safetensors file: {exc}", location="header") from None


def decode_container(data: bytes) -> Container:
    """Recognise and decode ``data``; a JSON file that does not parse raises with line/column."""
    head = data[:64].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head[:1] in (b"{", b"["):
        return Container("json", parse_json(data))
    if head[:1] == b"<":
        return Container("xml", None)
    if _DOT_START.match(data[:256]):
        return Container("dot", None)
    # Before pickle: a safetensors header of 128-255 bytes also starts with byte 0x80.
    if _looks_like_safetensors(data):
        return Container("safetensors", load_safetensors(data))
    if data[:1] == b"\x80":
        return Container("pickle", safe_unpickle(data))
    if data.startswith(b"PK\x03\x04"):
        if is_torch_zip(data):
            return Container("torch", safe_torch_load(data))
        return Container("npz", load_npz(data))
    return Container("unknown", None)


def decode_for_reader(data: bytes, allowed: tuple[ContainerKind, ...], what: str) -> Container:
    """Decode ``data`` and insist on one of the containers a reader understands."""
    container = decode_container(data)
    if container.kind not in allowed:
        raise InterchangeError(
            f"{what} must be {' or '.join(allowed)}, but this looks like {container.kind}",
            location="file",
        )
    return container


def json_text(value: Any) -> str:
    """Short JSON rendering of a value for error messages."""
    text = json.dumps(value, default=repr)
    return text if len(text) <= 60 else text[:57] + "..."
