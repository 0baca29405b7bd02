"""Small parts of the transport: the Waker, the hand-built BTP envelope."""

from __future__ import annotations

import os
import select
import threading

import pytest

from connector.codec import btp
from connector.transport import Waker
from connector.transport.btp_wire import append_ilp_frame, error, request_id_of
from connector.transport.ws import OP_BINARY, FrameParser, FrameWriter


def readable(fd: int, timeout: float = 0.0) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


def test_waker_wakes_and_coalesces():
    waker = Waker()
    try:
        assert not readable(waker.fileno())
        for _ in range(1000):
            waker.wake()
        assert readable(waker.fileno())
        assert os.eventfd_read(waker.fileno()) == 1  # one write for a thousand wakes
        waker.consume()
        waker.wake()
        assert readable(waker.fileno())
        waker.consume()
        assert not readable(waker.fileno())
    finally:
        waker.close()
    waker.wake()  # after close: a no-op, not an error


def test_waker_from_many_threads_is_never_lost():
    waker = Waker()
    published = []
    seen = 0

    def producer(n):
        for i in range(2000):
            published.append(i)
            waker.wake()

    threads = [threading.Thread(target=producer, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    try:
        while True:
            if readable(waker.fileno(), 2.0):
                waker.consume()
            elif all(not t.is_alive() for t in threads):
                break
            seen = len(published)
        # after the last wake-up was consumed, everything published was visible
        assert seen == 4000
    finally:
        for t in threads:
            t.join()
        waker.close()


@pytest.mark.parametrize("size", [0, 1, 100, 127, 128, 5000, 33_000])
@pytest.mark.parametrize("frame_type", [btp.MESSAGE, btp.RESPONSE])
def test_append_ilp_frame_matches_the_codec(size, frame_type):
    packet = os.urandom(size)
    out = bytearray()
    append_ilp_frame(FrameWriter(mask=False), out, frame_type, 0xA1B2C3D4, memoryview(packet))
    parser = FrameParser(expect_masked=False, max_message_size=1 << 16)
    parser.feed(out)
    (opcode, payload), = parser.parse()
    build = btp.ilp_message if frame_type == btp.MESSAGE else btp.ilp_response
    assert opcode == OP_BINARY and bytes(payload) == btp.encode_frame(build(0xA1B2C3D4, packet))


def test_masked_ilp_frame_round_trips():
    out = bytearray()
    append_ilp_frame(FrameWriter(mask=True), out, btp.MESSAGE, 5, b"\x0cabc")
    parser = FrameParser(expect_masked=True)
    parser.feed(out)
    (_, payload), = parser.parse()
    frame = btp.decode_frame(payload)
    assert frame.request_id == 5 and bytes(btp.ilp_packet_of(frame)) == b"\x0cabc"


def test_error_frame_and_request_id_recovery():
    frame = error(9, "x" * 10_000)
    assert len(frame.data) == btp.MAX_ERROR_DATA_LENGTH
    btp.encode_frame(frame)
    assert request_id_of(b"\x06\x00\x00\x01\x00") == 256
    assert request_id_of(b"\x06\x00") == 0


def test_split_ilp_frame_fast_path_agrees_with_the_codec():
    from connector.transport.btp_wire import split_ilp_frame

    for size in (0, 1, 127, 128, 40_000):
        packet = os.urandom(size)
        for build, kind in ((btp.ilp_message, btp.MESSAGE), (btp.ilp_response, btp.RESPONSE)):
            raw = btp.encode_frame(build(77, packet))
            frame_type, request_id, got = split_ilp_frame(memoryview(raw))
            assert (frame_type, request_id, bytes(got)) == (kind, 77, packet)
    others = [
        btp.encode_frame(btp.BtpMessage(1, (btp.ProtocolData("ilp", 0, b"\x0c"), btp.ProtocolData("x", 0, b"")))),
        btp.encode_frame(btp.BtpMessage(1, (btp.ProtocolData("ilp", 1, b"\x0c"),))),
        btp.encode_frame(btp.auth_message(1, "t", "u")),
        btp.encode_frame(btp.ilp_message(1, b"\x0cabc")) + b"\x00",
        btp.encode_frame(btp.ilp_message(1, b"\x0cabc"))[:-1],
        btp.encode_frame(btp.BtpTransfer(1, 5)),
        b"",
    ]
    for raw in others:
        assert split_ilp_frame(memoryview(raw)) is None


from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=200))
def test_split_ilp_frame_accepts_only_what_the_codec_accepts(raw):
    from connector.codec.errors import CodecError
    from connector.transport.btp_wire import split_ilp_frame

    fast = split_ilp_frame(memoryview(raw))
    if fast is not None:
        try:
            frame = btp.decode_frame(raw)
        except CodecError:
            raise AssertionError("fast path accepted what the codec refuses") from None
        assert frame.request_id == fast[1] and bytes(btp.ilp_packet_of(frame)) == bytes(fast[2])
