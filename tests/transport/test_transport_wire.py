"""The C byte work of the I/O thread (`connector.transport._wire`) against its pure-Python
references: same results, same bytes, same errors, on random and malformed input."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.codec import btp
from connector.slots import EGRESS, INGRESS
from connector.telemetry.metrics import Histogram
from connector.transport import _wire, btp_wire, ws
from connector.transport.ws import FrameParser, ProtocolError
from ringbuf import READ_MANY_LENGTH

DIFF = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KEYS = st.binary(min_size=4, max_size=4)


# --------------------------------------------------------------------------- frames


@st.composite
def raw_frame(draw) -> bytes:
    """One frame, often valid, often not: any opcode, reserved bits, fin, mask bit, any of
    the three length forms (sometimes non-minimal or with the top bit set), payloads that
    may be bad UTF-8 or bad close payloads."""
    opcode = draw(st.sampled_from([0x0, 0x1, 0x2, 0x8, 0x9, 0xA, 0x3, 0xB, 0xF]))
    fin = draw(st.booleans()) if draw(st.integers(0, 4)) == 0 else True
    rsv = draw(st.sampled_from([0, 0, 0, 0, 1, 2, 4]))
    mask = draw(st.booleans())
    kind = draw(st.integers(0, 9))
    if kind == 0 and opcode == 0x8:
        payload = struct.pack(">H", draw(st.integers(0, 5000))) + draw(st.binary(max_size=20))
    elif kind == 1:
        payload = draw(st.text(max_size=40)).encode("utf-8")
    elif kind == 2:
        payload = draw(st.binary(min_size=120, max_size=400))
    else:
        payload = draw(st.binary(max_size=40))
    form = draw(st.sampled_from(["min", "min", "min", "16", "64", "64top"]))
    n = len(payload)
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    mbit = 0x80 if mask else 0
    if form == "min" and n < 126:
        head = bytes((b0, mbit | n))
    elif form in ("min", "16") and n < 65536:
        head = bytes((b0, mbit | 126)) + struct.pack(">H", n)
    elif form == "64top":
        head = bytes((b0, mbit | 127)) + struct.pack(">Q", n | (1 << 63))
    else:
        head = bytes((b0, mbit | 127)) + struct.pack(">Q", n)
    if mask:
        key = draw(KEYS)
        return head + key + ws.masked(payload, key)
    return head + payload


@st.composite
def frame_stream(draw) -> bytes:
    """Frames back to back, cut at a random point; sometimes plain random bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=300))
    data = b"".join(draw(st.lists(raw_frame(), max_size=8)))
    cut = draw(st.integers(0, len(data)))
    return data[:cut] if draw(st.booleans()) else data


def _run_parse(function, data: bytes, start: int, expect_masked: bool, max_message_size: int):
    buf = bytearray(b"\xee" * start + data + b"\xdd" * 7)
    view = memoryview(buf)
    messages: list = []
    try:
        result = function(view, start, start + len(data), expect_masked, max_message_size, messages)
    except Exception as exc:  # noqa: BLE001 - the two must fail alike
        result = (type(exc), str(exc))
    got = [(opcode, bytes(payload)) for opcode, payload in messages]
    for _, payload in messages:
        payload.release()
    view.release()
    return result, got, bytes(buf)


@DIFF
@given(data=frame_stream(), start=st.integers(0, 5), expect_masked=st.booleans(),
       max_message_size=st.sampled_from([125, 126, 200, 1 << 16]))
def test_parse_frames_agrees_with_the_reference(data, start, expect_masked, max_message_size):
    c = _run_parse(_wire.parse_frames, data, start, expect_masked, max_message_size)
    py = _run_parse(ws.parse_frames_py, data, start, expect_masked, max_message_size)
    assert c == py


def test_parse_frames_reports_each_error_like_the_reference():
    bad = {
        b"\x82\x7f" + struct.pack(">Q", 1 << 63): (1002, "64-bit length with the top bit set"),
        b"\xc2\x00": (1002, "reserved bits set without a negotiated extension"),
        b"\x82\x80abcd": (1002, "server frames must not be masked"),
        b"\x09\x00": (1002, "fragmented control frame"),
        b"\x89\x7e\x00\x7e": (1002, "control frame payload over 125 bytes"),
        b"\x80\x00": (1002, "continuation frame without a message to continue"),
        b"\x83\x00": (1002, "unknown opcode 0x3"),
        b"\x82\x7e\x01\x00": (1009, "message of 256+ bytes exceeds 200"),
        b"\x88\x01\x03": (1002, "close frame with a 1-byte payload"),
        b"\x88\x02\x03\xec": (1002, "invalid close code 1004"),
        b"\x88\x03\x03\xe8\xff": (1007, "close reason is not UTF-8"),
        b"\x81\x02\xc3\x28": (1007, "text message is not UTF-8"),
    }
    for data, error in bad.items():
        for function in (_wire.parse_frames, ws.parse_frames_py):
            (_, _, _, got), _, _ = _run_parse(function, data, 0, False, 200)
            assert got == error, (function, data)


def test_parse_frames_stops_at_a_fragment_and_after_a_close():
    data = b"\x82\x01a" + b"\x02\x01b" + b"\x80\x01c"
    for function in (_wire.parse_frames, ws.parse_frames_py):
        assert _run_parse(function, data, 0, False, 200)[:2] == ((3, 0, ws.STATUS_FRAGMENT, None), [(2, b"a")])
    data = b"\x88\x02\x03\xe8" + b"\x82\x01a"
    for function in (_wire.parse_frames, ws.parse_frames_py):
        assert _run_parse(function, data, 0, False, 200)[:2] == ((4, 0, ws.STATUS_CLOSED, None), [(8, b"\x03\xe8")])


def test_parse_frames_reports_what_an_incomplete_frame_needs():
    data = b"\x82\x7e\x00\xc8" + b"x" * 50
    for function in (_wire.parse_frames, ws.parse_frames_py):
        assert _run_parse(function, data, 0, False, 1 << 16)[0] == (0, 204, ws.STATUS_MORE, None)


def test_parse_frames_checks_its_arguments():
    view = memoryview(bytearray(10))
    with pytest.raises(ValueError):
        _wire.parse_frames(view, 5, 11, False, 200, [])
    with pytest.raises(BufferError):
        _wire.parse_frames(memoryview(b"\x82\x00"), 0, 2, False, 200, [])  # read-only


# --------------------------------------------------------------------------- the parser, both ways


def _parse_stream(chunks: list[bytes], expect_masked: bool, use_c: bool, monkeypatch) -> tuple:
    monkeypatch.setattr(ws, "parse_frames", _wire.parse_frames if use_c else ws.parse_frames_py)
    parser = FrameParser(expect_masked=expect_masked, max_message_size=300, buffer_size=4096)
    seen = []
    for chunk in chunks:
        parser.feed(chunk)
        seen += [(opcode, bytes(payload)) for opcode, payload in parser.parse()]
    failure = None if parser.failure is None else (parser.failure.code, parser.failure.reason)
    return seen, failure, parser.closed, parser.buffered


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(frames=st.lists(raw_frame(), max_size=10), cuts=st.lists(st.integers(0, 2000), max_size=4),
       expect_masked=st.booleans())
def test_frame_parser_is_the_same_with_the_c_scanner_and_the_reference(frames, cuts, expect_masked, monkeypatch):
    """Fragmented messages, control frames between fragments, errors: the parser built on
    `_wire.parse_frames` behaves exactly as the one built on `parse_frames_py`."""
    data = b"".join(frames)
    points = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    chunks = [data[a:b] for a, b in zip(points, points[1:])]
    assert (_parse_stream(chunks, expect_masked, True, monkeypatch)
            == _parse_stream(chunks, expect_masked, False, monkeypatch))


def test_fragmented_message_between_whole_frames():
    frames = (b"\x82\x01a" + b"\x02\x01b" + b"\x89\x01p" + b"\x00\x01c" + b"\x80\x01d" + b"\x82\x01e"
              + b"\x88\x02\x03\xe8" + b"\x82\x01z")
    parser = FrameParser(expect_masked=False)
    parser.feed(frames)
    got = [(opcode, bytes(payload)) for opcode, payload in parser.parse()]
    assert got == [(2, b"a"), (9, b"p"), (2, b"bcd"), (2, b"e"), (8, b"\x03\xe8")]
    assert parser.closed and parser.failure is None


# --------------------------------------------------------------------------- BTP split


def _split(function, raw: bytes, as_view: bool):
    data = memoryview(raw) if as_view else raw
    try:
        result = function(data)
    except Exception as exc:  # noqa: BLE001
        return type(exc), str(exc)
    if result is None:
        return None
    frame_type, request_id, packet = result
    assert type(packet) is type(data)
    return frame_type, request_id, bytes(packet)


@st.composite
def btp_bytes(draw) -> bytes:
    """Valid ilp Messages/Responses, other BTP frames, and mutations of them."""
    packet = draw(st.binary(max_size=300))
    request_id = draw(st.integers(0, 0xFFFFFFFF))
    choice = draw(st.integers(0, 4))
    if choice == 0:
        raw = btp.encode_frame(btp.ilp_message(request_id, packet))
    elif choice == 1:
        raw = btp.encode_frame(btp.ilp_response(request_id, packet))
    elif choice == 2:
        raw = btp.encode_frame(btp.BtpMessage(request_id, (btp.ProtocolData("ilp", 0, packet),
                                                           btp.ProtocolData("x", 1, b""))))
    elif choice == 3:
        return draw(st.binary(max_size=60))
    else:
        raw = btp.encode_frame(btp.auth_message(request_id, "token", "user"))
    raw = bytearray(raw)
    for _ in range(draw(st.integers(0, 2))):
        if raw:
            at = draw(st.integers(0, len(raw) - 1))
            raw[at] = draw(st.integers(0, 255))
    if draw(st.integers(0, 3)) == 0:
        raw = raw[: draw(st.integers(0, len(raw)))] + draw(st.binary(max_size=3))
    return bytes(raw)


@DIFF
@given(raw=btp_bytes(), as_view=st.booleans())
def test_split_ilp_frame_agrees_with_the_reference(raw, as_view):
    assert _split(_wire.split_ilp_frame, raw, as_view) == _split(btp_wire.split_ilp_frame_py, raw, as_view)


def test_split_ilp_frame_long_length_forms():
    packet = bytes(70_000)
    for raw in (btp.encode_frame(btp.ilp_message(5, packet)),
                # non-canonical: 128 in two bytes, a leading zero byte, a zero-byte long form
                b"\x06\x00\x00\x00\x05\x82\x00\x80" + b"\x01\x01\x03ilp\x00" + b"\x00" * 120,
                b"\x06\x00\x00\x00\x05\x83\x00\x00\x0b\x01\x01\x03ilp\x00\x03abc",
                b"\x06\x00\x00\x00\x05\x80\x01\x01\x03ilp\x00\x00\x00",
                b"\x06\x00\x00\x00\x05\x89" + b"\x01" * 20):
        for as_view in (True, False):
            assert _split(_wire.split_ilp_frame, raw, as_view) == _split(btp_wire.split_ilp_frame_py, raw, as_view)


# --------------------------------------------------------------------------- BTP build


def _append(function, frame_type, request_id, packet, key, prefix: bytes):
    out = bytearray(prefix)
    try:
        function(out, frame_type, request_id, packet, key)
    except Exception as exc:  # noqa: BLE001
        return type(exc), str(exc), bytes(out)
    return bytes(out)


INTS = st.one_of(st.integers(-3, 300), st.integers(0, 0xFFFFFFFF), st.integers(-(1 << 70), 1 << 70),
                 st.sampled_from([0xFFFFFFFF + 1, 1.0, "7", None, True]))


@DIFF
@given(frame_type=st.one_of(st.sampled_from([btp.MESSAGE, btp.RESPONSE]), INTS),
       request_id=st.one_of(st.integers(0, 0xFFFFFFFF), INTS),
       packet=st.one_of(st.binary(max_size=300),  # and around the 16-bit/64-bit length boundary:
                        st.builds(lambda head, n: head * n, st.binary(min_size=1, max_size=3),
                                  st.integers(21_800, 21_900))),
       wrap=st.sampled_from([bytes, bytearray, memoryview]),
       key=st.one_of(st.none(), KEYS), prefix=st.binary(max_size=5))
def test_append_ilp_frame_agrees_with_the_reference(frame_type, request_id, packet, wrap, key, prefix):
    packet = wrap(packet)
    c = _append(_wire.append_ilp_frame, frame_type, request_id, packet, key, prefix)
    py = _append(btp_wire.append_ilp_frame_py, frame_type, request_id, packet, key, prefix)
    assert c == py


def test_append_ilp_frame_errors_name_the_field():
    for function in (_wire.append_ilp_frame, btp_wire.append_ilp_frame_py):
        with pytest.raises(struct.error, match="'B' format requires 0 <= number <= 255"):
            function(bytearray(), 256, 1, b"", None)
        with pytest.raises(struct.error, match="'I' format requires 0 <= number <= 4294967295"):
            function(bytearray(), 6, -1, b"", None)
        with pytest.raises(struct.error, match="required argument is not an integer"):
            function(bytearray(), 6, 1.5, b"", None)
        with pytest.raises(ValueError, match="mask_key must be 4 bytes"):
            function(bytearray(), 6, 1, b"", b"abc")


@pytest.mark.parametrize("size", [0, 100, 125, 126, 65_535 - 20, 65_536, 70_000])
def test_ilp_frames_of_every_length_form_round_trip_masked(size):
    packet = bytes(range(256)) * (size // 256) + bytes(size % 256)
    writer = ws.FrameWriter(mask=True)
    out = bytearray()
    btp_wire.append_ilp_frame(writer, out, btp.RESPONSE, 0xDEADBEEF, packet)
    parser = FrameParser(expect_masked=True, max_message_size=1 << 20)
    parser.feed(out)
    (opcode, payload), = parser.parse()
    assert opcode == ws.OP_BINARY
    assert bytes(payload) == btp.encode_frame(btp.ilp_response(0xDEADBEEF, packet))


# --------------------------------------------------------------------------- ingress records


@st.composite
def packet_path_message(draw):
    """(opcode, payload) as the parser hands them on: mostly ilp Messages and Responses
    carrying Prepares, Fulfills, Rejects or anything else, some other frames."""
    opcode = draw(st.sampled_from([ws.OP_BINARY] * 6 + [ws.OP_TEXT, ws.OP_PING]))
    first = draw(st.sampled_from([12, 12, 13, 14, 0, 99]))
    packet = bytes([first]) + draw(st.binary(max_size=40)) if draw(st.integers(0, 9)) else b""
    request_id = draw(st.integers(0, 6))
    if draw(st.integers(0, 5)) == 0:
        raw = draw(btp_bytes())
    elif draw(st.booleans()):
        raw = btp.encode_frame(btp.ilp_message(request_id, packet))
    else:
        raw = btp.encode_frame(btp.ilp_response(request_id, packet))
    return opcode, memoryview(raw) if draw(st.booleans()) else raw


def _records(function, messages, index, ids, fields, max_body):
    outstanding = {request_id: 1.5 for request_id in ids}
    records: list = []
    try:
        result = function(messages, index, records, *fields, max_body, outstanding)
    except Exception as exc:  # noqa: BLE001
        result = (type(exc), str(exc))
    return result, records, outstanding


@DIFF
@given(messages=st.lists(packet_path_message(), max_size=8), index=st.integers(-1, 3),
       ids=st.sets(st.integers(0, 6)), max_body=st.sampled_from([0, 10, 30, 1000]),
       fields=st.tuples(st.integers(0, 255), st.integers(0, 65535), st.integers(0, 0xFFFFFFFF),
                        st.integers(0, (1 << 64) - 1)))
def test_ingress_records_agree_with_the_reference(messages, index, ids, max_body, fields):
    assert (_records(_wire.ingress_records, messages, index, ids, fields, max_body)
            == _records(btp_wire.ingress_records_py, messages, index, ids, fields, max_body))


def test_ingress_records_refuse_out_of_range_fields_alike():
    for fields in ((256, 0, 0, 0), (0, 65536, 0, 0), (0, 0, -1, 0), (0, 0, 0, 1 << 64), (0, 0, 0, 1.5)):
        c = _records(_wire.ingress_records, [], 0, (), fields, 100)
        assert c == _records(btp_wire.ingress_records_py, [], 0, (), fields, 100)
        assert c[0][0] is struct.error


def test_ingress_records_stop_at_the_first_other_message():
    prepare = btp.encode_frame(btp.ilp_message(7, b"\x0c" + b"p" * 10))
    fulfill = btp.encode_frame(btp.ilp_response(8, b"\x0d" + b"f" * 10))
    messages = [(ws.OP_BINARY, prepare), (ws.OP_BINARY, fulfill), (ws.OP_PING, b""), (ws.OP_BINARY, prepare)]
    for function in (_wire.ingress_records, btp_wire.ingress_records_py):
        (index, records, outstanding) = _records(function, messages, 0, {8}, (3, 4, 5, 6), 100)
        assert index == 2 and outstanding == {}
        assert records == [INGRESS.pack(1, 3, 4, 5, 7, 0, 6) + b"\x0c" + b"p" * 10,
                           INGRESS.pack(2, 3, 4, 5, 8, 0, 6) + b"\x0d" + b"f" * 10]
        # a reply to no request of ours is left to the general path, which logs it
        assert _records(function, messages[1:], 0, set(), (3, 4, 5, 6), 100)[0] == 0


# --------------------------------------------------------------------------- egress frames


class _Peer:
    def __init__(self, index):
        self.index = index


class _Writer:
    """A writer whose masking keys are a fixed sequence, so that two runs can be compared."""

    def __init__(self, mask):
        self.mask, self._n = mask, 0

    def next_key(self):
        self._n += 1
        return struct.pack(">I", self._n * 0x01010101 & 0xFFFFFFFF)


class _Conn:
    __slots__ = ("id", "state", "peer", "outstanding", "writer", "out", "dirty")

    def __init__(self, conn_id, state, peer_index, mask, outstanding, dirty):
        self.id, self.state, self.peer = conn_id, state, _Peer(peer_index)
        self.outstanding = {request_id: 0.5 for request_id in outstanding}
        self.writer, self.out, self.dirty = _Writer(mask), bytearray(), dirty


_OPEN_STATE, _CLOSING_STATE = object(), object()


@st.composite
def egress_setup(draw):
    """Connections (open or not, masking or not, some already dirty), the peers' current
    ones, and a blob of egress records as Ring.read_many returns them."""
    conns = {}
    for conn_id in draw(st.sets(st.integers(1, 4), max_size=4)):
        conns[conn_id] = (draw(st.sampled_from(["open", "open", "open", "closing"])), draw(st.integers(0, 3)),
                          draw(st.booleans()), draw(st.sets(st.integers(0, 5), max_size=3)), draw(st.booleans()))
    current = {peer: conn_id for peer, conn_id in draw(st.dictionaries(st.integers(0, 3), st.integers(1, 4)))
               .items() if conn_id in conns}
    records = []
    for _ in range(draw(st.integers(0, 8))):
        peer, conn_id = draw(st.integers(0, 3)), draw(st.sampled_from([0, 1, 2, 3, 4, 9]))
        if conns and draw(st.integers(0, 3)):  # mostly a connection that exists, named either way
            conn_id = draw(st.sampled_from(sorted(conns)))
            peer = conns[conn_id][1]
            if current.get(peer) == conn_id and draw(st.booleans()):
                conn_id = 0
        header = EGRESS.pack(draw(st.sampled_from([1, 1, 1, 2, 2, 3, 7])), 0, peer, conn_id, draw(st.integers(0, 5)),
                             0, draw(st.sampled_from([0, 1, 10**9, 10**9 + 2_000_000, 10**9 + 7_000_000])))
        records.append(header + draw(st.binary(max_size=160)))
    blob = b"".join(READ_MANY_LENGTH.pack(len(r)) + r for r in records)
    if draw(st.integers(0, 9)) == 0:
        blob += draw(st.binary(max_size=30))  # a torn tail: never taken
    return conns, current, blob


def _frames(function, setup, offset, soft_limit):
    conns_spec, current_spec, blob = setup
    conns = {cid: _Conn(cid, _OPEN_STATE if state == "open" else _CLOSING_STATE, peer, mask, outstanding, dirty)
             for cid, (state, peer, mask, outstanding, dirty) in conns_spec.items()}
    current = {peer: conns[cid] for peer, cid in current_spec.items()}
    forward, answer = Histogram([0.001, 0.005]), Histogram([0.0025, 0.01, 0.02])
    dirty: list = []
    try:
        offset, frames, over = function(blob, offset, current, conns, _OPEN_STATE, 10**9 + 9_000_000, 1.009,
                                        forward, answer, soft_limit, dirty)
        result = (offset, frames, None if over is None else over.id)
    except Exception as exc:  # noqa: BLE001
        result = (type(exc), str(exc))
    state = {cid: (bytes(c.out), c.outstanding, c.dirty, c.writer._n) for cid, c in conns.items()}
    return (result, state, [c.id for c in dirty], forward.counts, forward.sum, answer.counts, answer.sum)


@DIFF
@given(setup=egress_setup(), offset=st.sampled_from([0, 0, 0, 3, 10**6]),
       soft_limit=st.sampled_from([0, 100, 400, 10**6]))
def test_egress_frames_agree_with_the_reference(setup, offset, soft_limit):
    assert _frames(_wire.egress_frames, setup, offset, soft_limit) == _frames(btp_wire.egress_frames_py, setup,
                                                                              offset, soft_limit)


def test_egress_frames_write_the_packet_path_and_stop_for_the_rest():
    prepare = EGRESS.pack(1, 0, 2, 0, 7, 0, 10**9) + b"\x0cprepare"
    reply = EGRESS.pack(2, 0, 3, 5, 8, 0, 0) + b"\x0dfulfill"
    close = EGRESS.pack(3, 0, 3, 5, 0, 0, 0) + b"bye"
    blob = b"".join(READ_MANY_LENGTH.pack(len(r)) + r for r in (prepare, reply, close, reply))
    for function in (_wire.egress_frames, btp_wire.egress_frames_py):
        a, b = _Conn(4, _OPEN_STATE, 2, False, (), False), _Conn(5, _OPEN_STATE, 3, False, (), False)
        forward, answer, dirty = Histogram([0.001, 0.005]), Histogram([0.001]), []
        offset, frames, over = function(blob, 0, {2: a}, {4: a, 5: b}, _OPEN_STATE, 10**9 + 2_000_000, 1.002,
                                        forward, answer, 10**6, dirty)
        assert (offset, frames, over) == (8 + len(prepare) + len(reply), 2, None)  # stops at the close
        assert a.outstanding == {7: 1.002} and b.outstanding == {}
        assert bytes(a.out) == _framed(btp.ilp_message(7, b"\x0cprepare"))
        assert bytes(b.out) == _framed(btp.ilp_response(8, b"\x0dfulfill"))
        assert dirty == [a, b] and a.dirty and b.dirty
        assert forward.counts == [0, 1, 0] and forward.sum == pytest.approx(0.002)
        assert answer.counts == [0, 0] and answer.sum == 0.0  # not stamped: not counted
        # a request id still outstanding is the general path's (it warns)
        assert function(blob, 0, {2: a}, {}, _OPEN_STATE, 0, 2.0, forward, answer, 10**6, [])[:2] == (0, 0)
        # past the soft limit: stops right after that connection's frame and names it
        c = _Conn(6, _OPEN_STATE, 2, False, (), True)
        assert function(blob, 0, {2: c}, {}, _OPEN_STATE, 0, 3.0, forward, answer, 10, []) == (
            4 + len(prepare), 1, c)


def _framed(frame) -> bytes:
    out = bytearray()
    ws.FrameWriter(mask=False).append(out, ws.OP_BINARY, btp.encode_frame(frame))
    return bytes(out)
