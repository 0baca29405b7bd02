"""ILDCP, the dynamic configuration protocol (RFC-0031).

The child asks with an ILP Prepare to ``peer.config`` (amount 0, empty data,
the condition that is SHA-256 of 32 zero bytes); the parent answers with a
Fulfill (32 zero bytes) whose data is ``clientAddress`` (var ASCII string),
``assetScale`` (UInt8) and ``assetCode`` (var UTF-8 string).

Decoders do not look at the clock: checking a request's expiry is the
caller's job.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from .address import validate_address
from .errors import CodecError
from .ilp import Fulfill, Prepare, decode_fulfill, decode_prepare, encode_fulfill, encode_prepare
from .oer import (
    Buffer,
    as_view,
    encode_length,
    expect_end,
    read_uint8,
    read_var_ascii,
    read_var_utf8,
)

__all__ = [
    "ILDCP_DESTINATION",
    "IldcpResponse",
    "PEER_PROTOCOL_CONDITION",
    "PEER_PROTOCOL_FULFILLMENT",
    "decode_ildcp_request",
    "decode_ildcp_response",
    "decode_ildcp_response_data",
    "encode_ildcp_request",
    "encode_ildcp_response",
    "encode_ildcp_response_data",
    "is_ildcp_request",
]

ILDCP_DESTINATION = "peer.config"
PEER_PROTOCOL_FULFILLMENT = bytes(32)
PEER_PROTOCOL_CONDITION = hashlib.sha256(PEER_PROTOCOL_FULFILLMENT).digest()


@dataclass(slots=True)
class IldcpResponse:
    client_address: str
    asset_scale: int
    asset_code: str


def encode_ildcp_request(expires_at: datetime, data: Buffer = b"") -> bytes:
    """The request Prepare; RFC-0031 leaves the expiry to the sender."""
    return encode_prepare(
        Prepare(0, expires_at, PEER_PROTOCOL_CONDITION, ILDCP_DESTINATION, data)
    )


def is_ildcp_request(prepare: Prepare) -> bool:
    """True if a decoded Prepare is addressed to ILDCP with the peer condition."""
    return (
        prepare.destination == ILDCP_DESTINATION
        and prepare.execution_condition == PEER_PROTOCOL_CONDITION
    )


def decode_ildcp_request(buffer: Buffer) -> Prepare:
    """Decode a Prepare and check it is an ILDCP request."""
    prepare = decode_prepare(buffer)
    if prepare.destination != ILDCP_DESTINATION:
        raise CodecError(f"not an ILDCP request: destination is {prepare.destination!r}")
    if prepare.execution_condition != PEER_PROTOCOL_CONDITION:
        raise CodecError("not an ILDCP request: wrong execution condition")
    return prepare


def encode_ildcp_response_data(response: IldcpResponse) -> bytes:
    """The Fulfill data: clientAddress, assetScale, assetCode."""
    address = validate_address(response.client_address).encode("ascii")
    scale = response.asset_scale
    if type(scale) is not int or not 0 <= scale <= 255:
        raise CodecError(f"ILDCP asset scale {scale!r} is not a UInt8")
    code = response.asset_code.encode("utf-8")
    return b"".join(
        (encode_length(len(address)), address, bytes((scale,)), encode_length(len(code)), code)
    )


def decode_ildcp_response_data(data: Buffer) -> IldcpResponse:
    """Parse the Fulfill data of an ILDCP response."""
    view = as_view(data)
    address, offset = read_var_ascii(view, 0)
    validate_address(address)
    scale, offset = read_uint8(view, offset)
    code, offset = read_var_utf8(view, offset)
    expect_end(view, offset, "ILDCP response data")
    return IldcpResponse(address, scale, code)


def encode_ildcp_response(response: IldcpResponse) -> bytes:
    """The response Fulfill."""
    return encode_fulfill(
        Fulfill(PEER_PROTOCOL_FULFILLMENT, encode_ildcp_response_data(response))
    )


def decode_ildcp_response(buffer: Buffer) -> IldcpResponse:
    """Decode the response Fulfill and its configuration data."""
    fulfill = decode_fulfill(buffer)
    if fulfill.fulfillment != PEER_PROTOCOL_FULFILLMENT:
        raise CodecError("ILDCP response: fulfillment is not 32 zero bytes")
    return decode_ildcp_response_data(fulfill.data)
