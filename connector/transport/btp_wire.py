"""BTP frames straight into WebSocket output, for the packet path.

The hot path sends one kind of BTP frame: a Message or Response whose only protocol data
is `ilp` (octet-stream) carrying a packet that sits in an egress ring slot.  Building the
BTP envelope around it by hand lets the packet be copied once, from the slot into the
connection's output bytearray.  Everything else goes through `connector.codec.btp`.
The bytes are identical to `btp.encode_frame(btp.ilp_message(...))` (the tests check).

`append_ilp_frame` and `split_ilp_frame` run in C (`_wire`); the `_py` functions are
their references, held to the same results and errors by the tests.
"""

from __future__ import annotations

import struct
from bisect import bisect_left
from datetime import datetime, timezone

from connector.codec import btp, ilp
from connector.codec.errors import CodecError
from connector.codec.oer import encode_length, read_length
from connector.lockfree import peek
from connector.slots import EGRESS, HEADER_SIZE, INGRESS, Egress, Ingress
from ringbuf import READ_MANY_LENGTH

from . import _wire
from .ws import OP_BINARY, FrameWriter, frame_header, masked

# _wire.ingress_records writes this record layout itself, _wire.egress_frames reads it
# (after each record's length, as Ring.read_many writes it)
assert INGRESS.format == EGRESS.format == "<BBHIIIQ" and INGRESS.size == HEADER_SIZE == 24
assert READ_MANY_LENGTH.format == "<I"

# var-uint count 1, then name "ilp", content type octet-stream
_ILP_ENTRY_HEAD = b"\x01\x01\x03ilp\x00"
_ENVELOPE = struct.Struct(">BI")


def append_ilp_frame(writer: FrameWriter, out: bytearray, frame_type: int, request_id: int, packet) -> None:
    """Append a WebSocket frame holding a BTP Message/Response with `packet` as `ilp` data."""
    _wire.append_ilp_frame(out, frame_type, request_id, packet, writer.next_key() if writer.mask else None)


def append_ilp_frame_py(out: bytearray, frame_type: int, request_id: int, packet, mask_key: bytes | None) -> None:
    """The reference of `_wire.append_ilp_frame`: the frame masked with `mask_key` (4 bytes)
    when given, as a client writes, else unmasked."""
    packet_length = encode_length(len(packet))
    contents = len(_ILP_ENTRY_HEAD) + len(packet_length) + len(packet)
    head = _ENVELOPE.pack(frame_type, request_id) + encode_length(contents) + _ILP_ENTRY_HEAD + packet_length
    length = len(head) + len(packet)
    if mask_key is not None:
        if len(mask_key) != 4:
            raise ValueError("mask_key must be 4 bytes or None")
        out += frame_header(OP_BINARY, length, mask_key=mask_key)
        out += masked(head + bytes(packet), mask_key)
        return
    out += frame_header(OP_BINARY, length)
    out += head
    out += packet


split_ilp_frame = _wire.split_ilp_frame


def split_ilp_frame_py(view: memoryview) -> tuple[int, int, memoryview] | None:
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


ingress_records = _wire.ingress_records


def ingress_records_py(messages: list, index: int, records: list, io_index: int, peer_index: int, conn_id: int,
                       now_ns: int, max_body: int, outstanding: dict) -> int:
    """The reference of `_wire.ingress_records`: from `messages[index:]` (as `FrameParser.parse`
    returns them), each binary message that is a BTP Message carrying an ILP Prepare, or a
    Response carrying a Fulfill or Reject whose request id `outstanding` holds (it is
    popped), with a packet of at most `max_body` bytes, becomes an ingress record
    appended to `records`.  Stops at the first message that is anything else and returns
    its index (len(messages) when all were taken)."""
    INGRESS.pack(0, io_index, peer_index, conn_id, 0, 0, now_ns)  # the same argument errors, up front
    index = max(index, 0)
    while index < len(messages):
        opcode, payload = messages[index]
        if opcode != OP_BINARY:
            break
        parts = split_ilp_frame_py(payload)
        if parts is None:
            break
        frame_type, request_id, packet = parts
        if not packet or len(packet) > max_body:
            break
        if frame_type == btp.MESSAGE:
            if packet[0] != ilp.PREPARE:
                break
            kind = Ingress.PREPARE
        else:
            if packet[0] not in (ilp.FULFILL, ilp.REJECT) or outstanding.pop(request_id, None) is None:
                break
            kind = Ingress.REPLY
        records.append(INGRESS.pack(kind, io_index, peer_index, conn_id, request_id, 0, now_ns) + packet)
        index += 1
    return index


egress_frames = _wire.egress_frames


def egress_frames_py(blob, offset: int, current: dict, connections: dict, open_state, now_ns: int, now: float,
                     forward, answer, soft_limit: int, dirty: list) -> tuple[int, int, object]:
    """The reference of `_wire.egress_frames`: the egress records of `blob` (each after its
    length, as `Ring.read_many` returns them) from `offset` on, each a Prepare or a reply
    for a connection that is open and still its peer's (`current[peer]` when the record
    names connection 0, else `connections[id]`), become frames appended to `conn.out`:
    a Prepare's request id goes into `conn.outstanding` (valued `now`), the time since the
    packet entered (`now_ns` minus its stamp, when stamped) into `forward` or `answer`
    (`bounds`, `counts`, `sum`), and each connection written to is marked dirty and
    appended to `dirty` once.  Stops at the first record that is anything else (a request
    id already outstanding included: the general path warns of it) or right after a
    connection's output passes `soft_limit`.  Returns (offset of the first record not
    taken, frames written, that connection or None)."""
    frames, end, sums = 0, len(blob), {forward: 0.0, answer: 0.0}
    over_limit = None
    try:
        while offset + 4 <= end and over_limit is None:
            (length,) = READ_MANY_LENGTH.unpack_from(blob, offset)
            if length < HEADER_SIZE or offset + 4 + length > end:
                break
            kind, _, peer_index, conn_id, request_id, _, entered_ns = EGRESS.unpack_from(blob, offset + 4)
            if kind != Egress.PREPARE and kind != Egress.REPLY:
                break
            conn = peek(current, peer_index) if conn_id == 0 else peek(connections, conn_id)
            if conn is None or conn.state is not open_state or conn.peer.index != peer_index:
                break
            if kind == Egress.PREPARE:
                if request_id in conn.outstanding:
                    break
                conn.outstanding[request_id] = now
                histogram, frame_type = forward, btp.MESSAGE
            else:
                histogram, frame_type = answer, btp.RESPONSE
            if entered_ns:
                seconds = (now_ns - entered_ns) * 1e-9
                histogram.counts[bisect_left(histogram.bounds, seconds)] += 1
                sums[histogram] += seconds
            writer = conn.writer
            packet = memoryview(blob)[offset + 4 + HEADER_SIZE : offset + 4 + length]
            append_ilp_frame_py(conn.out, frame_type, request_id, packet, writer.next_key() if writer.mask else None)
            frames += 1
            offset += 4 + length
            if not conn.dirty:
                conn.dirty = True
                dirty.append(conn)
            if len(conn.out) > soft_limit:
                over_limit = conn
    finally:
        for histogram, total in sums.items():
            if total:
                histogram.sum += total
    return offset, frames, over_limit


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
