"""ILPv4 packets (RFC-0027): Prepare (12), Fulfill (13) and Reject (14).

Every packet is ``type UInt8`` followed by its contents as a var-octet-string.
Decoding is strict: canonical lengths only, no bytes after the last field, and
addresses, timestamps and size limits are checked.  Octet-string fields of
decoded packets are ``memoryview`` slices of the input (zero copy): copy them
with ``bytes()`` before the input buffer is reused.

:class:`PrepareView` is the hot-path form: it validates an encoded Prepare once
and reads fields lazily; :func:`rewrite_prepare` and its ``set_*`` methods
rewrite ``amount`` and ``expiresAt`` in place, the only fields a connector
changes when it forwards a packet.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime

from ._prepare import fulfillment_of, prepare_fields, prepare_layout, write_prepare_fields
from .address import is_valid_address, is_valid_address_bytes, validate_address
from .errors import CodecError
from .oer import (
    MAX_UINT64,
    TIMESTAMP_LENGTH,
    Buffer,
    as_view,
    datetime_to_ms,
    decode_timestamp,
    decode_timestamp_ms,
    encode_length,
    encode_timestamp,
    encode_timestamp_ms,
    expect_end,
    read_ascii,
    read_length,
    read_var_ascii,
    read_var_octets,
    read_var_utf8,
)

__all__ = [
    "AmountTooLarge",
    "CONDITION_LENGTH",
    "ERROR_NAMES",
    "FULFILL",
    "FULFILLMENT_LENGTH",
    "Fulfill",
    "MAX_DATA_LENGTH",
    "PREPARE",
    "Packet",
    "Prepare",
    "PrepareView",
    "REJECT",
    "Reject",
    "decode_amount_too_large",
    "decode_fulfill",
    "decode_packet",
    "decode_prepare",
    "decode_reject",
    "decode_reply",
    "encode_amount_too_large",
    "encode_fulfill",
    "encode_packet",
    "encode_prepare",
    "encode_reject",
    "packet_type",
    "read_fulfillment",
    "read_prepare",
    "rewrite_prepare",
    "write_prepare",
]

PREPARE = 12
FULFILL = 13
REJECT = 14

CONDITION_LENGTH = 32
FULFILLMENT_LENGTH = 32
ERROR_CODE_LENGTH = 3
MAX_DATA_LENGTH = 32767

# Offsets inside Prepare contents.
_AMOUNT_AT = 0
_EXPIRY_AT = 8
_CONDITION_AT = _EXPIRY_AT + TIMESTAMP_LENGTH
_DESTINATION_AT = _CONDITION_AT + CONDITION_LENGTH

_UINT64 = struct.Struct(">Q")
_TWO_UINT64 = struct.Struct(">QQ")

# --- error codes (RFC-0027) ---------------------------------------------------

F00_BAD_REQUEST = "F00"
F01_INVALID_PACKET = "F01"
F02_UNREACHABLE = "F02"
F03_INVALID_AMOUNT = "F03"
F04_INSUFFICIENT_DESTINATION_AMOUNT = "F04"
F05_WRONG_CONDITION = "F05"
F06_UNEXPECTED_PAYMENT = "F06"
F07_CANNOT_RECEIVE = "F07"
F08_AMOUNT_TOO_LARGE = "F08"
F99_APPLICATION_ERROR = "F99"
T00_INTERNAL_ERROR = "T00"
T01_PEER_UNREACHABLE = "T01"
T02_PEER_BUSY = "T02"
T03_CONNECTOR_BUSY = "T03"
T04_INSUFFICIENT_LIQUIDITY = "T04"
T05_RATE_LIMITED = "T05"
T99_APPLICATION_ERROR = "T99"
R00_TRANSFER_TIMED_OUT = "R00"
R01_INSUFFICIENT_SOURCE_AMOUNT = "R01"
R02_INSUFFICIENT_TIMEOUT = "R02"
R99_APPLICATION_ERROR = "R99"

ERROR_NAMES: dict[str, str] = {
    F00_BAD_REQUEST: "Bad Request",
    F01_INVALID_PACKET: "Invalid Packet",
    F02_UNREACHABLE: "Unreachable",
    F03_INVALID_AMOUNT: "Invalid Amount",
    F04_INSUFFICIENT_DESTINATION_AMOUNT: "Insufficient Destination Amount",
    F05_WRONG_CONDITION: "Wrong Condition",
    F06_UNEXPECTED_PAYMENT: "Unexpected Payment",
    F07_CANNOT_RECEIVE: "Cannot Receive",
    F08_AMOUNT_TOO_LARGE: "Amount Too Large",
    F99_APPLICATION_ERROR: "Application Error",
    T00_INTERNAL_ERROR: "Internal Error",
    T01_PEER_UNREACHABLE: "Peer Unreachable",
    T02_PEER_BUSY: "Peer Busy",
    T03_CONNECTOR_BUSY: "Connector Busy",
    T04_INSUFFICIENT_LIQUIDITY: "Insufficient Liquidity",
    T05_RATE_LIMITED: "Rate Limited",
    T99_APPLICATION_ERROR: "Application Error",
    R00_TRANSFER_TIMED_OUT: "Transfer Timed Out",
    R01_INSUFFICIENT_SOURCE_AMOUNT: "Insufficient Source Amount",
    R02_INSUFFICIENT_TIMEOUT: "Insufficient Timeout",
    R99_APPLICATION_ERROR: "Application Error",
}

__all__ += [name for name in tuple(globals()) if name[:1] in "FTR" and name[1:3].isdigit()]


# --- packet values --------------------------------------------------------------


@dataclass(slots=True)
class Prepare:
    amount: int
    expires_at: datetime
    execution_condition: Buffer
    destination: str
    data: Buffer = b""


@dataclass(slots=True)
class Fulfill:
    fulfillment: Buffer
    data: Buffer = b""


@dataclass(slots=True)
class Reject:
    code: str
    triggered_by: str
    message: str = ""
    data: Buffer = b""


Packet = Prepare | Fulfill | Reject


@dataclass(slots=True)
class AmountTooLarge:
    """The ``data`` of an F08 Reject (InterledgerErrorData.asn)."""

    received_amount: int
    maximum_amount: int


# --- envelope -------------------------------------------------------------------


def packet_type(buffer: Buffer) -> int:
    """The type byte of an encoded packet, without decoding the rest."""
    view = as_view(buffer)
    if not view:
        raise CodecError("empty ILP packet")
    return view[0]


def _open_envelope(view: memoryview, expected_type: int) -> int:
    """Check the type byte and that the contents fill the buffer exactly.

    Returns the offset of the contents.  Since the contents end where the
    buffer ends, field readers need no separate end bound.
    """
    if not view:
        raise CodecError("empty ILP packet")
    if view[0] != expected_type:
        raise CodecError(f"expected ILP packet type {expected_type}, got {view[0]}")
    length, start = read_length(view, 1)
    end = start + length
    if end != len(view):
        if end > len(view):
            raise CodecError(
                f"ILP packet length {length} overruns the buffer ({len(view) - start} left)"
            )
        raise CodecError(f"ILP packet: {len(view) - end} trailing byte(s) after envelope")
    return start


def _wrap(packet_type_byte: bytes, parts: tuple[Buffer, ...], content_length: int) -> bytes:
    return b"".join((packet_type_byte, encode_length(content_length), *parts))


def _check_data(data: Buffer, what: str) -> None:
    if len(data) > MAX_DATA_LENGTH:
        raise CodecError(f"{what}: data of {len(data)} bytes exceeds {MAX_DATA_LENGTH}")


def _read_data(view: memoryview, offset: int, what: str) -> memoryview:
    data, end = read_var_octets(view, offset)
    _check_data(data, what)
    expect_end(view, end, what)
    return data


# --- Prepare ----------------------------------------------------------------------


def _prepare_layout(view: memoryview) -> tuple[int, int, int, memoryview]:
    """Validate the structure of a Prepare.

    Returns the offsets of the contents, the destination and the data length
    prefix, and the data itself.  The timestamp is left to the caller, which
    decodes it into the form it needs.
    """
    base = _open_envelope(view, PREPARE)
    destination_at = base + _DESTINATION_AT
    if destination_at > len(view):
        raise CodecError(
            f"truncated ILP Prepare: {len(view) - base} content byte(s), "
            f"fixed fields need {_DESTINATION_AT}"
        )
    destination_length, destination_start = read_length(view, destination_at)
    data_at = destination_start + destination_length
    if data_at > len(view):
        raise CodecError("ILP Prepare: destination length overruns the packet")
    if not is_valid_address_bytes(view[destination_start:data_at]):
        raise CodecError(
            f"ILP Prepare: invalid destination {bytes(view[destination_start:data_at][:80])!r}"
        )
    # The data is the last field, so it must end exactly where the packet does.
    data_length, data_start = read_length(view, data_at)
    if data_start + data_length != len(view):
        if data_start + data_length > len(view):
            raise CodecError(f"ILP Prepare: data length {data_length} overruns the packet")
        raise CodecError(
            f"ILP Prepare: {len(view) - data_start - data_length} trailing byte(s)"
        )
    if data_length > MAX_DATA_LENGTH:
        raise CodecError(f"ILP Prepare: data of {data_length} bytes exceeds {MAX_DATA_LENGTH}")
    return base, destination_start, data_at, view[data_start:]


def decode_prepare(buffer: Buffer) -> Prepare:
    """Decode an ILP Prepare; octet-string fields are views of ``buffer``."""
    view = as_view(buffer)
    base, destination_start, data_at, data = _prepare_layout(view)
    return Prepare(
        amount=_UINT64.unpack_from(view, base)[0],
        expires_at=decode_timestamp(view[base + _EXPIRY_AT : base + _CONDITION_AT]),
        execution_condition=view[base + _CONDITION_AT : base + _DESTINATION_AT],
        destination=str(view[destination_start:data_at], "ascii"),
        data=data,
    )


def encode_prepare(prepare: Prepare) -> bytes:
    """Encode an ILP Prepare."""
    amount = prepare.amount
    if type(amount) is not int or not 0 <= amount <= MAX_UINT64:
        raise CodecError(f"ILP Prepare: amount {amount!r} is not a UInt64")
    condition = prepare.execution_condition
    if len(condition) != CONDITION_LENGTH:
        raise CodecError(f"ILP Prepare: execution condition must be {CONDITION_LENGTH} bytes")
    destination = validate_address(prepare.destination).encode("ascii")
    data = prepare.data
    _check_data(data, "ILP Prepare")
    parts = (
        _UINT64.pack(amount),
        encode_timestamp(prepare.expires_at),
        condition,
        encode_length(len(destination)),
        destination,
        encode_length(len(data)),
        data,
    )
    return _wrap(b"\x0c", parts, sum(map(len, parts)))


class PrepareView:
    """A validated, lazily read ILP Prepare over an encoded buffer (zero copy).

    Construction checks the whole packet once (lengths, address, timestamp,
    no trailing bytes); the properties then read straight from the buffer.
    When the buffer is writable, :meth:`set_amount` and
    :meth:`set_expires_at` rewrite those fields in place.
    """

    __slots__ = ("_view", "_base", "_destination_start", "_data_at", "_expires_at_ms")

    def __init__(self, buffer: Buffer) -> None:
        view = as_view(buffer)
        layout = prepare_layout(view)  # C, one pass; None: the checks below decide
        if layout is None:
            base, destination_start, data_at, _ = _prepare_layout(view)
            layout = base, destination_start, data_at, decode_timestamp_ms(
                view[base + _EXPIRY_AT : base + _CONDITION_AT])
        self._view = view
        self._base, self._destination_start, self._data_at, self._expires_at_ms = layout

    @property
    def buffer(self) -> memoryview:
        """The whole encoded packet."""
        return self._view

    @property
    def amount(self) -> int:
        return _UINT64.unpack_from(self._view, self._base)[0]

    @property
    def expires_at_ms(self) -> int:
        """Expiry in milliseconds since the Unix epoch."""
        return self._expires_at_ms

    @property
    def expires_at(self) -> datetime:
        base = self._base
        return decode_timestamp(self._view[base + _EXPIRY_AT : base + _CONDITION_AT])

    @property
    def execution_condition(self) -> memoryview:
        base = self._base
        return self._view[base + _CONDITION_AT : base + _DESTINATION_AT]

    @property
    def destination_bytes(self) -> memoryview:
        return self._view[self._destination_start : self._data_at]

    @property
    def destination(self) -> str:
        return str(self._view[self._destination_start : self._data_at], "ascii")

    @property
    def data(self) -> memoryview:
        return read_var_octets(self._view, self._data_at)[0]

    def set_amount(self, amount: int) -> None:
        _write_amount(self._view, self._base, amount)

    def set_expires_at_ms(self, epoch_ms: int) -> None:
        _write_expiry(self._view, self._base, encode_timestamp_ms(epoch_ms))
        self._expires_at_ms = epoch_ms

    def set_expires_at(self, when: datetime) -> None:
        _write_expiry(self._view, self._base, encode_timestamp(when))
        self._expires_at_ms = datetime_to_ms(when)

    def to_prepare(self) -> Prepare:
        return Prepare(
            self.amount, self.expires_at, self.execution_condition, self.destination, self.data
        )

    def __repr__(self) -> str:
        return (
            f"PrepareView(amount={self.amount}, expires_at={self.expires_at.isoformat()}, "
            f"destination={self.destination!r}, data_length={len(self.data)})"
        )


def _writable(view: memoryview) -> memoryview:
    if view.readonly:
        raise TypeError("cannot rewrite a Prepare in a read-only buffer")
    return view


def _write_amount(view: memoryview, base: int, amount: int) -> None:
    if type(amount) is not int or not 0 <= amount <= MAX_UINT64:
        raise CodecError(f"ILP Prepare: amount {amount!r} is not a UInt64")
    _UINT64.pack_into(_writable(view), base + _AMOUNT_AT, amount)


def _write_expiry(view: memoryview, base: int, stamp: bytes) -> None:
    _writable(view)[base + _EXPIRY_AT : base + _CONDITION_AT] = stamp


def rewrite_prepare(
    buffer: bytearray | memoryview,
    *,
    amount: int | None = None,
    expires_at: datetime | None = None,
    expires_at_ms: int | None = None,
) -> None:
    """Overwrite amount and/or expiry of an encoded Prepare in a writable buffer.

    Only the envelope is checked (type, length filling the buffer); decode or
    wrap in :class:`PrepareView` first to validate the rest.
    """
    if expires_at is not None and expires_at_ms is not None:
        raise CodecError("give expires_at or expires_at_ms, not both")
    view = as_view(buffer)
    base = _open_envelope(view, PREPARE)
    if base + _DESTINATION_AT > len(view):
        raise CodecError("truncated ILP Prepare: no room for amount and expiry")
    if expires_at is not None:
        expires_at_ms = datetime_to_ms(expires_at)
    stamp = encode_timestamp_ms(expires_at_ms) if expires_at_ms is not None else None
    if amount is not None:
        _write_amount(view, base, amount)
    if stamp is not None:
        _write_expiry(view, base, stamp)


def read_prepare(buffer: Buffer) -> tuple[int, int, int, bytes, str]:
    """What a connector decides on, from a Prepare validated as :class:`PrepareView` does:
    ``(base, amount, expires_at_ms, execution_condition, destination)``, `base` for
    :func:`write_prepare`.  One C pass; the Python codec raises the precise CodecError."""
    fields = prepare_fields(buffer)
    if fields is None:
        view = PrepareView(buffer)
        fields = (view._base, view.amount, view.expires_at_ms, bytes(view.execution_condition), view.destination)
    return fields


def write_prepare(buffer: Buffer, base: int, amount: int, expires_at_ms: int) -> None:
    """Rewrite amount and expiry in place in a Prepare :func:`read_prepare` read (`base`
    from it); nothing is written if either value is out of range (CodecError)."""
    if not write_prepare_fields(buffer, base, amount, expires_at_ms):
        view = as_view(buffer)
        stamp = encode_timestamp_ms(expires_at_ms)
        _write_amount(view, base, amount)
        _write_expiry(view, base, stamp)


# --- Fulfill ----------------------------------------------------------------------


def decode_fulfill(buffer: Buffer) -> Fulfill:
    """Decode an ILP Fulfill; octet-string fields are views of ``buffer``."""
    view = as_view(buffer)
    base = _open_envelope(view, FULFILL)
    data_at = base + FULFILLMENT_LENGTH
    if data_at > len(view):
        raise CodecError("truncated ILP Fulfill: fulfillment needs 32 bytes")
    return Fulfill(view[base:data_at], _read_data(view, data_at, "ILP Fulfill"))


def read_fulfillment(buffer: Buffer) -> bytes:
    """The fulfillment of a Fulfill :func:`decode_fulfill` accepts (one C pass; the
    Python codec raises the precise CodecError)."""
    fulfillment = fulfillment_of(buffer)
    if fulfillment is None:
        fulfillment = bytes(decode_fulfill(buffer).fulfillment)
    return fulfillment


def encode_fulfill(fulfill: Fulfill) -> bytes:
    """Encode an ILP Fulfill."""
    if len(fulfill.fulfillment) != FULFILLMENT_LENGTH:
        raise CodecError(f"ILP Fulfill: fulfillment must be {FULFILLMENT_LENGTH} bytes")
    data = fulfill.data
    _check_data(data, "ILP Fulfill")
    parts = (fulfill.fulfillment, encode_length(len(data)), data)
    return _wrap(b"\x0d", parts, sum(map(len, parts)))


# --- Reject -----------------------------------------------------------------------


def decode_reject(buffer: Buffer) -> Reject:
    """Decode an ILP Reject; ``data`` is a view of ``buffer``.

    ``triggered_by`` may be empty (as the JavaScript and Rust stacks allow),
    otherwise it must be a valid address; ``message`` must be UTF-8.
    """
    view = as_view(buffer)
    offset = _open_envelope(view, REJECT)
    code, offset = read_ascii(view, offset, ERROR_CODE_LENGTH)
    triggered_by, offset = read_var_ascii(view, offset)
    if triggered_by and not is_valid_address(triggered_by):
        raise CodecError(f"ILP Reject: invalid triggeredBy address {triggered_by[:80]!r}")
    message, offset = read_var_utf8(view, offset)
    return Reject(code, triggered_by, message, _read_data(view, offset, "ILP Reject"))


def encode_reject(reject: Reject) -> bytes:
    """Encode an ILP Reject."""
    code = reject.code
    if not (isinstance(code, str) and len(code) == ERROR_CODE_LENGTH and code.isascii()):
        raise CodecError(f"ILP Reject: code must be 3 ASCII characters, got {code!r}")
    triggered_by = (
        validate_address(reject.triggered_by).encode("ascii") if reject.triggered_by else b""
    )
    message = reject.message.encode("utf-8")
    data = reject.data
    _check_data(data, "ILP Reject")
    parts = (
        code.encode("ascii"),
        encode_length(len(triggered_by)),
        triggered_by,
        encode_length(len(message)),
        message,
        encode_length(len(data)),
        data,
    )
    return _wrap(b"\x0e", parts, sum(map(len, parts)))


# --- any packet -------------------------------------------------------------------

_DECODERS = {PREPARE: decode_prepare, FULFILL: decode_fulfill, REJECT: decode_reject}


def decode_packet(buffer: Buffer) -> Packet:
    """Decode a Prepare, Fulfill or Reject according to its type byte."""
    kind = packet_type(buffer)
    decoder = _DECODERS.get(kind)
    if decoder is None:
        raise CodecError(f"unknown ILP packet type {kind}")
    return decoder(buffer)


def decode_reply(buffer: Buffer) -> Fulfill | Reject:
    """Decode the reply to a Prepare: a Fulfill or a Reject."""
    kind = packet_type(buffer)
    if kind == FULFILL:
        return decode_fulfill(buffer)
    if kind == REJECT:
        return decode_reject(buffer)
    raise CodecError(f"expected an ILP Fulfill or Reject, got packet type {kind}")


def encode_packet(packet: Packet) -> bytes:
    """Encode a Prepare, Fulfill or Reject."""
    if isinstance(packet, Prepare):
        return encode_prepare(packet)
    if isinstance(packet, Fulfill):
        return encode_fulfill(packet)
    if isinstance(packet, Reject):
        return encode_reject(packet)
    raise CodecError(f"not an ILP packet: {packet!r}")


# --- F08 Amount Too Large data ----------------------------------------------------


def encode_amount_too_large(received_amount: int, maximum_amount: int) -> bytes:
    """The ``data`` of an F08 Reject: receivedAmount then maximumAmount, both UInt64."""
    for amount in (received_amount, maximum_amount):
        if type(amount) is not int or not 0 <= amount <= MAX_UINT64:
            raise CodecError(f"F08 data: amount {amount!r} is not a UInt64")
    return _TWO_UINT64.pack(received_amount, maximum_amount)


def decode_amount_too_large(data: Buffer) -> AmountTooLarge:
    """Parse the ``data`` of an F08 Reject (exactly 16 bytes)."""
    view = as_view(data)
    if len(view) != _TWO_UINT64.size:
        raise CodecError(f"F08 data must be {_TWO_UINT64.size} bytes, got {len(view)}")
    return AmountTooLarge(*_TWO_UINT64.unpack_from(view))
