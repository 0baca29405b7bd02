"""Sans-I/O WebSocket: handshakes, the frame parser (incl. fuzzing), the encoder."""

from __future__ import annotations

import base64
import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.transport import ws
from connector.transport.ws import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    ClientHandshake,
    FrameParser,
    FrameWriter,
    HandshakeError,
    ProtocolError,
    ServerHandshake,
)

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 section 1.3 example


def request(**overrides) -> bytes:
    headers = {
        "Host": "example.com:80",
        "Upgrade": "websocket",
        "Connection": "keep-alive, Upgrade",
        "Sec-WebSocket-Key": KEY,
        "Sec-WebSocket-Version": "13",
    }
    start = overrides.pop("start", "GET /btp HTTP/1.1")
    for name, value in overrides.items():
        name = name.replace("_", "-")
        if value is None:
            headers.pop(name, None)
        else:
            headers[name] = value
    lines = [start] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True, rsv: int = 0) -> bytes:
    """One frame with a fixed masking key (parametrize ids must not vary between xdist workers)."""
    key = b"\x37\xfa\x21\x3d" if mask else None
    out = bytearray(ws.frame_header(opcode, len(payload), fin=fin, mask_key=key))
    out += ws.masked(payload, key) if mask else payload
    out[0] |= rsv << 4
    return bytes(out)


# --- handshake --------------------------------------------------------------------


def test_accept_key_matches_rfc_example():
    assert ws.accept_key(KEY) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_server_handshake_byte_by_byte_then_leftover():
    hs = ServerHandshake()
    raw = request() + b"\x82\x80abcd"
    done = [hs.feed(raw[i : i + 1]) for i in range(len(request()))]
    assert done[-1] and not any(done[:-1])
    assert hs.path == "/btp"
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in hs.response
    assert hs.response.startswith(b"HTTP/1.1 101 ")


def test_server_handshake_keeps_bytes_after_the_head():
    hs = ServerHandshake()
    assert hs.feed(request() + b"\x82\x80abcd")
    assert hs.leftover == b"\x82\x80abcd"


@pytest.mark.parametrize("overrides, status", [
    ({"Sec-WebSocket-Key": None}, b"400"),
    ({"Sec-WebSocket-Key": "c2hvcnQ="}, b"400"),  # 5 bytes, not 16
    ({"Sec-WebSocket-Key": "not base64!!"}, b"400"),
    ({"Sec-WebSocket-Version": "8"}, b"426"),
    ({"Upgrade": None}, b"400"),
    ({"Upgrade": "h2c"}, b"400"),
    ({"Connection": "keep-alive"}, b"400"),
    ({"Host": None}, b"400"),
    ({"start": "POST / HTTP/1.1"}, b"405"),
    ({"start": "GET / HTTP/1.0"}, b"400"),
    ({"start": "GET /x"}, b"400"),
    ({"start": "GET http://x/ HTTP/1.1"}, b"400"),
])
def test_server_handshake_refusals(overrides, status):
    with pytest.raises(HandshakeError) as info:
        ServerHandshake().feed(request(**overrides))
    assert info.value.response.startswith(b"HTTP/1.1 " + status)
    if status == b"426":
        assert b"Sec-WebSocket-Version: 13" in info.value.response


def test_server_handshake_header_names_and_values_are_case_insensitive():
    raw = request().replace(b"Upgrade: websocket", b"uPgRaDe: WebSocket").replace(b"Upgrade\r\n", b"UPGRADE\r\n")
    assert ServerHandshake().feed(raw)


def test_server_handshake_rejects_folded_and_malformed_headers():
    with pytest.raises(HandshakeError):
        ServerHandshake().feed(request().replace(b"\r\nUpgrade", b"\r\n Upgrade"))
    with pytest.raises(HandshakeError):
        ServerHandshake().feed(request().replace(b"Upgrade: websocket", b"Upgrade websocket"))


def test_server_handshake_limits_head_size():
    hs = ServerHandshake(max_head=1024)
    with pytest.raises(HandshakeError) as info:
        for _ in range(100):
            hs.feed(b"X-Filler: " + b"a" * 50 + b"\r\n")
    assert info.value.response.startswith(b"HTTP/1.1 400")


def test_client_handshake_round_trip_with_server():
    client = ClientHandshake("127.0.0.1", 9000, "/path?q=1")
    assert client.request.startswith(b"GET /path?q=1 HTTP/1.1\r\n")
    assert len(base64.b64decode(client.key)) == 16
    server = ServerHandshake()
    assert server.feed(client.request)
    assert server.path == "/path?q=1"
    assert client.feed(server.response + b"\x82\x00")
    assert client.leftover == b"\x82\x00"


def test_client_handshake_keys_are_random():
    assert ClientHandshake("h", 1).key != ClientHandshake("h", 1).key


@pytest.mark.parametrize("response", [
    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\n",
    b"garbage\r\n\r\n",
])
def test_client_handshake_refusals(response):
    with pytest.raises(HandshakeError):
        ClientHandshake("h", 1).feed(response)


def test_client_handshake_rejects_unrequested_extension():
    client = ClientHandshake("h", 1)
    response = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: " + ws.accept_key(client.key).encode() + b"\r\n"
                b"Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n")
    with pytest.raises(HandshakeError):
        client.feed(response)


# --- parser -----------------------------------------------------------------------


def parse_all(data: bytes, *, server: bool = True, max_size: int = 1 << 16, chunks=None):
    parser = FrameParser(expect_masked=server, max_message_size=max_size, buffer_size=4096)
    out = []
    for chunk in chunks or [data]:
        parser.feed(chunk)
        out += [(op, bytes(p)) for op, p in parser.parse()]
    return out, parser


def test_many_frames_in_one_buffer_unmasked_in_place():
    payloads = [os.urandom(n) for n in (0, 1, 125, 126, 127, 65535, 65536, 70000, 3)]
    data = b"".join(frame(OP_BINARY, p) for p in payloads)
    messages, parser = parse_all(data, max_size=1 << 17)
    assert messages == [(OP_BINARY, p) for p in payloads]
    assert parser.failure is None and parser.buffered == 0


def test_payloads_are_views_of_the_parser_buffer():
    parser = FrameParser(expect_masked=True)
    parser.feed(frame(OP_BINARY, b"abc") + frame(OP_BINARY, b"defg"))
    (_, first), (_, second) = parser.parse()
    assert isinstance(first, memoryview) and first.obj is second.obj
    assert bytes(first) == b"abc" and bytes(second) == b"defg"


def test_writable_advance_path():
    parser = FrameParser(expect_masked=False)
    data = frame(OP_BINARY, b"x" * 300, mask=False)
    tail = parser.writable()
    tail[: len(data)] = data
    parser.advance(len(data))
    assert [(op, bytes(p)) for op, p in parser.parse()] == [(OP_BINARY, b"x" * 300)]


def test_fragmented_message_with_interleaved_ping():
    data = (frame(OP_TEXT, b"hel", fin=False) + frame(OP_PING, b"p")
            + frame(OP_CONTINUATION, b"lo ", fin=False) + frame(OP_CONTINUATION, "wörld".encode(), fin=True))
    messages, parser = parse_all(data)
    assert messages == [(OP_PING, b"p"), (OP_TEXT, "hello wörld".encode())]
    assert parser.failure is None


def test_control_frames_and_close():
    data = frame(OP_PING, b"hi") + frame(OP_PONG, b"") + frame(OP_CLOSE, struct.pack(">H", 1000) + b"bye")
    messages, parser = parse_all(data + frame(OP_BINARY, b"after close"))
    assert [op for op, _ in messages] == [OP_PING, OP_PONG, OP_CLOSE]
    assert ws.parse_close(messages[2][1]) == (1000, "bye")
    assert parser.closed and parser.parse() == []


@pytest.mark.parametrize("data, code", [
    (frame(OP_BINARY, b"x", mask=False), 1002),  # unmasked from a client
    (frame(OP_BINARY, b"x", rsv=4), 1002),  # RSV1 without extension
    (frame(0x3, b"x"), 1002),  # reserved data opcode
    (frame(0xB, b"x"), 1002),  # reserved control opcode
    (frame(OP_CONTINUATION, b"x"), 1002),  # nothing to continue
    (frame(OP_BINARY, b"a", fin=False) + frame(OP_BINARY, b"b"), 1002),  # new message mid-fragment
    (frame(OP_PING, b"x", fin=False), 1002),  # fragmented control frame
    (frame(OP_PING, b"x" * 126), 1002),  # control payload > 125
    (frame(OP_CLOSE, b"\x03"), 1002),  # 1-byte close payload
    (frame(OP_CLOSE, struct.pack(">H", 1005)), 1002),  # reserved close code
    (frame(OP_CLOSE, struct.pack(">H", 1000) + b"\xff"), 1007),  # reason not UTF-8
    (frame(OP_TEXT, b"\xff\xfe"), 1007),  # text not UTF-8
    (b"\x82\xff" + struct.pack(">Q", 1 << 63) + b"abcd", 1002),  # 64-bit length top bit
])
def test_protocol_errors(data, code):
    messages, parser = parse_all(frame(OP_BINARY, b"ok") + data)
    assert messages[0] == (OP_BINARY, b"ok")  # what came before the error is delivered
    assert parser.failure is not None and parser.failure.code == code
    assert parser.parse() == []


def test_server_frames_must_not_be_masked():
    _, parser = parse_all(frame(OP_BINARY, b"x", mask=True), server=False)
    assert parser.failure.code == 1002


def test_oversized_message_fails_on_the_header_without_buffering():
    parser = FrameParser(expect_masked=True, max_message_size=1000, buffer_size=4096)
    parser.feed(frame(OP_BINARY, b"x" * 1001)[:8])  # only the header arrived
    assert parser.parse() == [] and parser.failure.code == 1009


def test_oversized_fragmented_message():
    data = frame(OP_BINARY, b"x" * 600, fin=False) + frame(OP_CONTINUATION, b"x" * 600)
    _, parser = parse_all(data, max_size=1000)
    assert parser.failure.code == 1009


def test_buffer_grows_for_a_large_frame_and_keeps_old_views_valid():
    parser = FrameParser(expect_masked=True, max_message_size=1 << 20, buffer_size=4096)
    parser.feed(frame(OP_BINARY, b"small"))
    (_, small), = parser.parse()
    big = os.urandom(100_000)
    parser.feed(frame(OP_BINARY, big))
    (_, got), = parser.parse()
    assert bytes(got) == big and bytes(small) == b"small"


# --- encoder ----------------------------------------------------------------------


def test_writer_lengths_and_masking():
    for size in (0, 125, 126, 65535, 65536):
        payload = os.urandom(size)
        for mask in (True, False):
            messages, _ = parse_all(frame(OP_BINARY, payload, mask=mask), server=mask, max_size=1 << 17)
            assert messages == [(OP_BINARY, payload)]


def test_writer_close_frame():
    out = bytearray()
    FrameWriter(mask=False).append_close(out, 1009, "x" * 300)
    assert out[0] == 0x88 and out[1] == 125  # reason cut to the control frame limit
    assert ws.parse_close(out[2:])[0] == 1009


def test_masking_keys_differ():
    writer, out = FrameWriter(mask=True), bytearray()
    keys = set()
    for _ in range(2000):
        out.clear()
        writer.append(out, OP_BINARY, b"")
        keys.add(bytes(out[2:6]))
    assert len(keys) > 1990


# --- fuzz -------------------------------------------------------------------------

message_st = st.tuples(st.sampled_from([OP_BINARY, OP_TEXT, OP_PING]), st.binary(max_size=300))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=st.lists(message_st, max_size=20), cuts=st.lists(st.integers(0, 10_000), max_size=30),
       fragment=st.booleans())
def test_fuzz_chunking_gives_the_same_messages(messages, cuts, fragment):
    expected, data = [], b""
    for opcode, payload in messages:
        if opcode == OP_TEXT:
            payload = payload.decode("latin-1").encode("utf-8")
        expected.append((opcode, payload))
        if fragment and opcode != OP_PING and len(payload) > 1:
            half = len(payload) // 2
            data += frame(opcode, payload[:half], fin=False) + frame(OP_CONTINUATION, payload[half:])
        else:
            data += frame(opcode, payload)
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0] + points, points + [len(data)])]
    got, parser = parse_all(data, chunks=chunks)
    assert parser.failure is None
    assert got == expected


@settings(max_examples=500, deadline=None)
@given(garbage=st.binary(max_size=2000), cuts=st.lists(st.integers(0, 2000), max_size=10),
       server=st.booleans())
def test_fuzz_garbage_gives_protocol_errors_only(garbage, cuts, server):
    parser = FrameParser(expect_masked=server, max_message_size=1024, buffer_size=4096)
    points = sorted({c % (len(garbage) + 1) for c in cuts})
    for a, b in zip([0] + points, points + [len(garbage)]):
        parser.feed(garbage[a:b])
        for opcode, payload in parser.parse():
            assert opcode in (OP_BINARY, OP_TEXT, OP_PING, OP_PONG, OP_CLOSE)
            assert len(payload) <= 1024
    assert parser.failure is None or isinstance(parser.failure, ProtocolError)
    assert parser.buffered <= len(garbage)


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=600))
def test_fuzz_handshake_garbage(raw):
    for handshake in (ServerHandshake(max_head=512), ClientHandshake("h", 1, max_head=512)):
        try:
            handshake.feed(raw + b"\r\n\r\n")
        except HandshakeError:
            pass


def test_reserve_grows_and_keeps_pending_bytes():
    parser = FrameParser(expect_masked=True, buffer_size=4096)
    data = frame(OP_BINARY, b"abc" * 100)
    parser.feed(data[:10])
    parser.reserve(1 << 18)
    assert len(parser.writable()) >= (1 << 18) - 10
    parser.feed(data[10:])
    assert [(op, bytes(p)) for op, p in parser.parse()] == [(OP_BINARY, b"abc" * 100)]
