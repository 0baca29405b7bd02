"""BTP frames straight into WebSocket output, for the packet path.

The hot path sends one kind of BTP frame: a Message or Response whose only protocol data
is `ilp` (octet-stream) carrying a packet that sits in an egress ring slot.  Building the
BTP envelope around it by hand lets the packet be copied once, from the slot into the
connection's output bytearray.  Everything else goes through `connector.codec.btp`.
The bytes are identical to `btp.encode_frame(btp.ilp_message(...))` (the tests check).
"""

from __future__ import annotations

import struct
from datetime import datetime, timezone

from connector.codec import btp
from connector.codec.errors import CodecError
from connector.codec.oer import encode_length, read_length

from .ws import OP_BINARY, FrameWriter

# var-uint count 1, then name "ilp", content type octet-stream
_ILP_ENTRY_HEAD = b"\x01\x01\x03ilp\x00"
_ENVELOPE = struct.Struct(">BI")


def append_ilp_frame(writer: FrameWriter, out: bytearray, frame_type: int, request_id: int, packet) -> None:
    """Append a WebSocket frame holding a BTP Message/Response with `packet` as `ilp` data."""
    packet_length = encode_length(len(packet))
    contents = len(_ILP_ENTRY_HEAD) + len(packet_length) + len(packet)
    head = _ENVELOPE.pack(frame_type, request_id) + encode_length(contents) + _ILP_ENTRY_HEAD + packet_length
    writer.append_parts(out, OP_BINARY, (head, packet), len(head) + len(packet))


def split_ilp_frame(view: memoryview) -> tuple[int, int, memoryview] | None:
    """(frame type, request id, packet) of a Message or Response whose only protocol data is
    `ilp`, read without building objects; None for anything else (decode it with the codec)."""
    if len(view) < 13 or view[0] not in (btp.MESSAGE, btp.RESPONSE):
        return None
    frame_type, request_id = _ENVELOPE.unpack_from(view, 0)
    try:
        length, at = read_length(view, 5)
        if at + length != len(view) or view[at : at + 7] != _ILP_ENTRY_HEAD:
            return None
        packet_length, packet_at = read_length(view, at + 7)
    except CodecError:
        return None
    if packet_at + packet_length != len(view):
        return None
    return frame_type, request_id, view[packet_at:]


def append_btp(writer: FrameWriter, out: bytearray, frame: btp.Frame) -> None:
    """Append a WebSocket frame holding any BTP frame."""
    writer.append(out, OP_BINARY, btp.encode_frame(frame))


def error(request_id: int, message: str, code: str = "F00") -> btp.BtpError:
    """A BTP Error whose data is the UTF-8 message (as ilp-plugin-btp fills it)."""
    data = message.encode("utf-8")[: btp.MAX_ERROR_DATA_LENGTH]
    return btp.error_frame(request_id, code, datetime.now(timezone.utc), data=data)


def request_id_of(raw) -> int:
    """The request id of a frame that failed to decode, when its first five bytes are there."""
    return _ENVELOPE.unpack_from(raw, 0)[1] if len(raw) >= 5 else 0
