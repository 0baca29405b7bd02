"""BTP 2.0 frames (RFC-0023): Response (1), Error (2), Message (6), Transfer (7).

A frame is ``type UInt8, requestId UInt32`` followed by its contents as a
var-octet-string.  Every frame ends with protocol data: a var-uint count
(the OER quantity of a SEQUENCE OF, so zero is ``01 00``) and that many
``(protocolName, contentType UInt8, data)`` entries.  Decoded ``data`` fields
are ``memoryview`` slices of the input (zero copy).

Also here: builders for the ``auth`` handshake as ``ilp-plugin-btp`` sends it,
and for carrying ILP packets under the ``ilp`` protocol name.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from .errors import CodecError
from .oer import (
    MAX_UINT64,
    Buffer,
    as_view,
    encode_length,
    encode_var_uint,
    expect_end,
    format_generalized_time,
    read_ascii,
    read_uint8,
    read_uint32,
    read_uint64,
    read_var_ascii,
    read_var_octets,
    read_var_uint,
    validate_generalized_time,
)

__all__ = [
    "AUTH",
    "AUTH_TOKEN",
    "AUTH_USERNAME",
    "BTP_ERROR_NAMES",
    "BtpError",
    "BtpMessage",
    "BtpResponse",
    "BtpTransfer",
    "ERROR",
    "Frame",
    "ILP",
    "MAX_ERROR_DATA_LENGTH",
    "MESSAGE",
    "MIME_APPLICATION_JSON",
    "MIME_APPLICATION_OCTET_STREAM",
    "MIME_TEXT_PLAIN_UTF8",
    "ProtocolData",
    "RESPONSE",
    "TRANSFER",
    "auth_message",
    "auth_protocol_data",
    "decode_frame",
    "encode_frame",
    "error_frame",
    "find_protocol_data",
    "ilp_message",
    "ilp_packet_of",
    "ilp_protocol_data",
    "ilp_response",
    "parse_auth",
]

RESPONSE = 1
ERROR = 2
MESSAGE = 6
TRANSFER = 7
_FRAME_TYPES = frozenset({RESPONSE, ERROR, MESSAGE, TRANSFER})

MIME_APPLICATION_OCTET_STREAM = 0
MIME_TEXT_PLAIN_UTF8 = 1
MIME_APPLICATION_JSON = 2

ILP = "ilp"
AUTH = "auth"
AUTH_USERNAME = "auth_username"
AUTH_TOKEN = "auth_token"

ERROR_CODE_LENGTH = 3
MAX_ERROR_DATA_LENGTH = 8192
# The smallest protocol data entry: empty name, content type, empty data.
_MIN_ENTRY_SIZE = 3
_MAX_UINT32 = (1 << 32) - 1
_ENVELOPE_HEAD = struct.Struct(">BI")

BTP_ERROR_NAMES: dict[str, str] = {
    "T00": "UnreachableError",
    "F00": "NotAcceptedError",
    "F01": "InvalidFieldsError",
    "F03": "TransferNotFoundError",
    "F04": "InvalidFulfillmentError",
    "F05": "DuplicateIdError",
    "F06": "AlreadyRolledBackError",
    "F07": "AlreadyFulfilledError",
    "F08": "InsufficientBalanceError",
}


@dataclass(slots=True)
class ProtocolData:
    name: str
    content_type: int
    data: Buffer = b""


@dataclass(slots=True)
class BtpResponse:
    request_id: int
    protocol_data: Sequence[ProtocolData] = ()


@dataclass(slots=True)
class BtpMessage:
    request_id: int
    protocol_data: Sequence[ProtocolData] = ()


@dataclass(slots=True)
class BtpTransfer:
    request_id: int
    amount: int
    protocol_data: Sequence[ProtocolData] = ()


@dataclass(slots=True)
class BtpError:
    """A BTP Error; ``triggered_at`` is GeneralizedTime text, e.g. ``20171224161432.279Z``.

    ``data`` is bytes; the JavaScript implementation fills it with UTF-8 text.
    """

    request_id: int
    code: str
    name: str
    triggered_at: str
    data: Buffer = b""
    protocol_data: Sequence[ProtocolData] = ()


Frame = BtpResponse | BtpMessage | BtpTransfer | BtpError


# --- protocol data ----------------------------------------------------------------


def _read_protocol_data(view: memoryview, offset: int) -> tuple[ProtocolData, ...]:
    count, offset = read_var_uint(view, offset)
    if count * _MIN_ENTRY_SIZE > len(view) - offset:
        raise CodecError(f"BTP protocol data: {count} entries cannot fit the frame")
    entries = []
    for _ in range(count):
        name, offset = read_var_ascii(view, offset)
        content_type, offset = read_uint8(view, offset)
        data, offset = read_var_octets(view, offset)
        entries.append(ProtocolData(name, content_type, data))
    expect_end(view, offset, "BTP frame")
    return tuple(entries)


def _protocol_data_parts(entries: Sequence[ProtocolData]) -> list[Buffer]:
    parts: list[Buffer] = [encode_var_uint(len(entries))]
    for entry in entries:
        if not (isinstance(entry.name, str) and entry.name.isascii()):
            raise CodecError(f"BTP protocol name must be ASCII, got {entry.name!r}")
        if type(entry.content_type) is not int or not 0 <= entry.content_type <= 255:
            raise CodecError(f"BTP content type {entry.content_type!r} is not a UInt8")
        name = entry.name.encode("ascii")
        parts += (
            encode_length(len(name)),
            name,
            bytes((entry.content_type,)),
            encode_length(len(entry.data)),
            entry.data,
        )
    return parts


# --- frames -----------------------------------------------------------------------


def decode_frame(buffer: Buffer) -> Frame:
    """Decode one BTP frame; protocol data ``data`` fields are views of ``buffer``."""
    view = as_view(buffer)
    frame_type, offset = read_uint8(view, 0)
    if frame_type not in _FRAME_TYPES:
        raise CodecError(f"unknown BTP frame type {frame_type}")
    request_id, offset = read_uint32(view, offset)
    contents, end = read_var_octets(view, offset)
    expect_end(view, end, "BTP frame envelope")
    if frame_type == MESSAGE:
        return BtpMessage(request_id, _read_protocol_data(contents, 0))
    if frame_type == RESPONSE:
        return BtpResponse(request_id, _read_protocol_data(contents, 0))
    if frame_type == TRANSFER:
        amount, offset = read_uint64(contents, 0)
        return BtpTransfer(request_id, amount, _read_protocol_data(contents, offset))
    return _read_error(request_id, contents)


def _read_error(request_id: int, view: memoryview) -> BtpError:
    code, offset = read_ascii(view, 0, ERROR_CODE_LENGTH)
    name, offset = read_var_ascii(view, offset)
    triggered_at, offset = read_var_octets(view, offset)
    data, offset = read_var_octets(view, offset)
    if len(data) > MAX_ERROR_DATA_LENGTH:
        raise CodecError(f"BTP Error data of {len(data)} bytes exceeds {MAX_ERROR_DATA_LENGTH}")
    return BtpError(
        request_id,
        code,
        name,
        validate_generalized_time(triggered_at),
        data,
        _read_protocol_data(view, offset),
    )


def encode_frame(frame: Frame) -> bytes:
    """Encode one BTP frame."""
    if isinstance(frame, BtpMessage):
        frame_type, parts = MESSAGE, _protocol_data_parts(frame.protocol_data)
    elif isinstance(frame, BtpResponse):
        frame_type, parts = RESPONSE, _protocol_data_parts(frame.protocol_data)
    elif isinstance(frame, BtpTransfer):
        frame_type, parts = TRANSFER, _transfer_parts(frame)
    elif isinstance(frame, BtpError):
        frame_type, parts = ERROR, _error_parts(frame)
    else:
        raise CodecError(f"not a BTP frame: {frame!r}")
    request_id = frame.request_id
    if type(request_id) is not int or not 0 <= request_id <= _MAX_UINT32:
        raise CodecError(f"BTP request id {request_id!r} is not a UInt32")
    head = _ENVELOPE_HEAD.pack(frame_type, request_id)
    return b"".join((head, encode_length(sum(map(len, parts))), *parts))


def _transfer_parts(frame: BtpTransfer) -> list[Buffer]:
    amount = frame.amount
    if type(amount) is not int or not 0 <= amount <= MAX_UINT64:
        raise CodecError(f"BTP Transfer amount {amount!r} is not a UInt64")
    return [amount.to_bytes(8, "big"), *_protocol_data_parts(frame.protocol_data)]


def _error_parts(frame: BtpError) -> list[Buffer]:
    code, name = frame.code, frame.name
    if not (isinstance(code, str) and len(code) == ERROR_CODE_LENGTH and code.isascii()):
        raise CodecError(f"BTP Error code must be 3 ASCII characters, got {code!r}")
    if not (isinstance(name, str) and name.isascii()):
        raise CodecError(f"BTP Error name must be ASCII, got {name!r}")
    triggered_at = frame.triggered_at.encode("ascii", "replace")
    validate_generalized_time(triggered_at)
    if len(frame.data) > MAX_ERROR_DATA_LENGTH:
        raise CodecError(f"BTP Error data exceeds {MAX_ERROR_DATA_LENGTH} bytes")
    return [
        code.encode("ascii"),
        encode_length(len(name)),
        name.encode("ascii"),
        encode_length(len(triggered_at)),
        triggered_at,
        encode_length(len(frame.data)),
        frame.data,
        *_protocol_data_parts(frame.protocol_data),
    ]


# --- builders and lookups ---------------------------------------------------------


def error_frame(
    request_id: int,
    code: str,
    triggered_at: datetime,
    *,
    name: str | None = None,
    data: Buffer = b"",
    protocol_data: Sequence[ProtocolData] = (),
) -> BtpError:
    """A BTP Error; ``name`` defaults to the RFC name of ``code``."""
    if name is None:
        name = BTP_ERROR_NAMES.get(code, "")
    return BtpError(
        request_id, code, name, format_generalized_time(triggered_at), data, protocol_data
    )


def ilp_protocol_data(packet: Buffer) -> ProtocolData:
    """The ``ilp`` entry that carries an encoded ILP packet."""
    return ProtocolData(ILP, MIME_APPLICATION_OCTET_STREAM, packet)


def ilp_message(request_id: int, packet: Buffer) -> BtpMessage:
    """A Message carrying an ILP Prepare (or any ILP packet)."""
    return BtpMessage(request_id, (ilp_protocol_data(packet),))


def ilp_response(request_id: int, packet: Buffer) -> BtpResponse:
    """A Response carrying an ILP Fulfill or Reject."""
    return BtpResponse(request_id, (ilp_protocol_data(packet),))


def auth_protocol_data(token: str, username: str | None = "") -> tuple[ProtocolData, ...]:
    """Entries of the auth Message, as ``ilp-plugin-btp`` sends them.

    Primary ``auth`` (octet-stream, empty), then ``auth_username`` (omitted
    when ``username`` is None) and ``auth_token``, both text/plain UTF-8.
    """
    entries = [ProtocolData(AUTH, MIME_APPLICATION_OCTET_STREAM, b"")]
    if username is not None:
        entries.append(ProtocolData(AUTH_USERNAME, MIME_TEXT_PLAIN_UTF8, username.encode()))
    entries.append(ProtocolData(AUTH_TOKEN, MIME_TEXT_PLAIN_UTF8, token.encode()))
    return tuple(entries)


def auth_message(request_id: int, token: str, username: str | None = "") -> BtpMessage:
    """The first Message a BTP client sends."""
    return BtpMessage(request_id, auth_protocol_data(token, username))


def find_protocol_data(entries: Iterable[ProtocolData], name: str) -> ProtocolData | None:
    """The first entry called ``name``, or None."""
    for entry in entries:
        if entry.name == name:
            return entry
    return None


def ilp_packet_of(frame: Frame) -> memoryview | bytes | None:
    """The ILP packet a frame carries when its primary protocol is ``ilp``."""
    entries = frame.protocol_data
    if entries and entries[0].name == ILP:
        return entries[0].data
    return None


def parse_auth(message: BtpMessage) -> tuple[str | None, str]:
    """Return ``(username, token)`` from an auth Message.

    RFC-0023: the primary entry must be ``auth`` and an ``auth_token`` entry
    must follow; ``auth_username`` is optional (None when absent).
    """
    entries = message.protocol_data
    if not entries or entries[0].name != AUTH:
        raise CodecError("BTP auth: primary protocol data is not 'auth'")
    token_entry = find_protocol_data(entries[1:], AUTH_TOKEN)
    if token_entry is None:
        raise CodecError("BTP auth: no 'auth_token' entry")
    username_entry = find_protocol_data(entries[1:], AUTH_USERNAME)
    try:
        token = bytes(token_entry.data).decode("utf-8")
        username = None if username_entry is None else bytes(username_entry.data).decode("utf-8")
    except UnicodeDecodeError:
        raise CodecError("BTP auth: username or token is not UTF-8") from None
    return username, token
