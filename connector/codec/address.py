"""ILP address syntax (RFC-0015): ``scheme(.segment)+``, at most 1023 bytes."""

from __future__ import annotations

import re

from .errors import CodecError

__all__ = [
    "MAX_ADDRESS_LENGTH",
    "SCHEMES",
    "is_valid_address",
    "is_valid_address_bytes",
    "validate_address",
]

MAX_ADDRESS_LENGTH = 1023
SCHEMES = frozenset(
    {"g", "private", "example", "peer", "self", "test", "test1", "test2", "test3", "local"}
)

_PATTERN = r"(?:g|private|example|peer|self|test[1-3]?|local)(?:\.[a-zA-Z0-9_~-]+)+"
_ADDRESS = re.compile(_PATTERN.encode("ascii"))
# The character classes are spelled out, so a text match is ASCII-only and its
# length in characters equals its length in bytes.
_ADDRESS_TEXT = re.compile(_PATTERN)


def is_valid_address(address: str | bytes | bytearray | memoryview) -> bool:
    """True if ``address`` (text or ASCII bytes) is a well-formed ILP address."""
    pattern = _ADDRESS_TEXT if isinstance(address, str) else _ADDRESS
    return len(address) <= MAX_ADDRESS_LENGTH and pattern.fullmatch(address) is not None


def is_valid_address_bytes(raw: bytes | bytearray | memoryview) -> bool:
    """Fast path of :func:`is_valid_address` for ASCII bytes off the wire."""
    return len(raw) <= MAX_ADDRESS_LENGTH and _ADDRESS.fullmatch(raw) is not None


def validate_address(address: str | bytes | bytearray | memoryview) -> str:
    """Return ``address`` as ``str``, or raise :class:`CodecError` if malformed."""
    if not is_valid_address(address):
        shown = address if isinstance(address, str) else bytes(address)
        raise CodecError(f"invalid ILP address {shown[:80]!r}")
    return address if isinstance(address, str) else str(address, "ascii")
