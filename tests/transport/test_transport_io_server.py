"""The I/O thread as a BTP server, on 127.0.0.1, against independent clients
(the `websockets` library's sync client) and a raw socket client for TCP-level control."""

from __future__ import annotations

import socket
import struct
import time
from datetime import datetime, timezone

import pytest
from transport_helpers import (
    RawClient,
    auth_frame,
    fulfill_bytes,
    next_record,
    no_record,
    prepare_bytes,
    put_egress,
    server_peer,
)
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from connector.codec import btp, ilp
from connector.slots import Egress, Ingress

PEER = 1


def url(io) -> str:
    host, port = io.listen_address
    return f"ws://{host}:{port}/"


def authenticate(ws, ingress, request_id=7, **kw):
    ws.send(auth_frame(request_id, **kw))
    answer = btp.decode_frame(ws.recv(timeout=5))
    assert isinstance(answer, btp.BtpResponse) and answer.request_id == request_id
    assert answer.protocol_data == ()
    (kind, io_index, peer, conn_id, request, _, ns), body = next_record(ingress)
    assert (kind, peer, request, body) == (Ingress.PEER_UP, PEER, 0, b"")
    return conn_id


def expect_refusal(ws, *, request_id: int | None = None):
    answer = btp.decode_frame(ws.recv(timeout=5))
    assert isinstance(answer, btp.BtpError) and answer.code == "F00"
    if request_id is not None:
        assert answer.request_id == request_id
    with pytest.raises(ConnectionClosed) as info:
        ws.recv(timeout=5)
    assert info.value.rcvd.code == 1008
    return answer


# --- auth ---------------------------------------------------------------------------


def test_auth_success_publishes_peer_up(rings, start_io):
    ingress, _ = rings
    io = start_io([server_peer()], io_index=3)
    with connect(url(io)) as ws:
        ws.send(auth_frame(99))
        answer = btp.decode_frame(ws.recv(timeout=5))
        assert answer == btp.BtpResponse(99, ())
        (kind, io_index, peer, conn_id, request, zero, ns), body = next_record(ingress)
        assert (kind, io_index, peer, request, zero, body) == (Ingress.PEER_UP, 3, PEER, 0, 0, b"")
        assert conn_id >= 1 and abs(ns - time.monotonic_ns()) < 5e9


def test_wrong_secret_is_refused(rings, start_io):
    ingress, _ = rings
    io = start_io([server_peer()])
    with connect(url(io)) as ws:
        ws.send(auth_frame(5, token="wrong"))
        answer = expect_refusal(ws, request_id=5)
        assert b"invalid" in bytes(answer.data)
    no_record(ingress)


def test_unknown_user_is_refused(rings, start_io):
    io = start_io([server_peer()])
    with connect(url(io)) as ws:
        ws.send(auth_frame(5, username="mallory"))
        expect_refusal(ws, request_id=5)
    no_record(rings[0])


def test_unauthenticated_message_is_refused(rings, start_io):
    io = start_io([server_peer()])
    with connect(url(io)) as ws:
        ws.send(btp.encode_frame(btp.ilp_message(11, prepare_bytes())))
        expect_refusal(ws, request_id=11)
    no_record(rings[0])


def test_garbage_before_auth_is_refused(rings, start_io):
    io = start_io([server_peer()])
    with connect(url(io)) as ws:
        ws.send(b"\x06\x00\x00\x00\x2a\xff")
        expect_refusal(ws, request_id=42)


def test_empty_username_peer(rings, start_io):
    """ilp-plugin-btp without an account sends auth_username ''."""
    io = start_io([server_peer(username="")])
    with connect(url(io)) as ws:
        authenticate(ws, rings[0], username="")


def test_auth_timeout_closes(rings, start_io):
    io = start_io([server_peer()], handshake_timeout=0.3)
    with connect(url(io)) as ws:
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)


def test_bad_handshake_gets_400(rings, start_io):
    io = start_io([server_peer()])
    with socket.create_connection(io.listen_address, timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        response = sock.recv(4096)
        assert response.startswith(b"HTTP/1.1 400")
        assert sock.recv(4096) == b""


# --- packets ------------------------------------------------------------------------


def test_prepare_becomes_ingress_record_and_reply_goes_back(rings, start_io):
    ingress, egress = rings
    io = start_io([server_peer()], io_index=2)
    with connect(url(io)) as ws:
        conn_id = authenticate(ws, ingress)
        prepare = prepare_bytes(b"x" * 500)
        ws.send(btp.encode_frame(btp.ilp_message(0xDEADBEEF, prepare)))
        (kind, io_index, peer, conn, request, _, ns), body = next_record(ingress)
        assert (kind, io_index, peer, conn, request) == (Ingress.PREPARE, 2, PEER, conn_id, 0xDEADBEEF)
        assert body == prepare
        fulfill = fulfill_bytes(b"y" * 300)
        put_egress(egress, io, Egress.REPLY, PEER, 0xDEADBEEF, fulfill, conn=conn_id)
        answer = btp.decode_frame(ws.recv(timeout=5))
        assert isinstance(answer, btp.BtpResponse) and answer.request_id == 0xDEADBEEF
        assert bytes(btp.ilp_packet_of(answer)) == fulfill


@pytest.mark.parametrize("reply, expected_code", [
    ("fulfill", None),
    ("reject", None),
    ("btp_error", "T01"),
    ("empty_response", "F00"),
])
def test_egress_prepare_and_the_peers_answer(rings, start_io, reply, expected_code):
    ingress, egress = rings
    io = start_io([server_peer()], ilp_address="g.connector")
    with connect(url(io)) as ws:
        conn_id = authenticate(ws, ingress)
        prepare = prepare_bytes()
        put_egress(egress, io, Egress.PREPARE, PEER, 1234, prepare)
        message = btp.decode_frame(ws.recv(timeout=5))
        assert isinstance(message, btp.BtpMessage) and message.request_id == 1234
        assert bytes(btp.ilp_packet_of(message)) == prepare
        packet = {"fulfill": fulfill_bytes(), "reject": ilp.encode_reject(ilp.Reject("F02", "g.bob", "no"))}.get(reply)
        if packet is not None:
            ws.send(btp.encode_frame(btp.ilp_response(1234, packet)))
        elif reply == "btp_error":
            ws.send(btp.encode_frame(btp.error_frame(1234, "F00", datetime.now(timezone.utc), data=b"nope")))
        else:
            ws.send(btp.encode_frame(btp.BtpResponse(1234, ())))
        (kind, _, peer, conn, request, _, _), body = next_record(ingress)
        assert (kind, peer, conn, request) == (Ingress.REPLY, PEER, conn_id, 1234)
        if expected_code is None:
            assert body == packet
        else:
            rejected = ilp.decode_reject(body)
            assert rejected.code == expected_code and rejected.triggered_by == "g.connector"
            assert rejected.message


def test_reply_to_an_unknown_request_is_ignored(rings, start_io):
    ingress, _ = rings
    io = start_io([server_peer()])
    with connect(url(io)) as ws:
        authenticate(ws, ingress)
        ws.send(btp.encode_frame(btp.ilp_response(555, fulfill_bytes())))
        no_record(ingress)


def test_prepare_to_a_disconnected_peer_is_rejected_t01(rings, start_io):
    ingress, egress = rings
    io = start_io([server_peer()])
    put_egress(egress, io, Egress.PREPARE, PEER, 77, prepare_bytes())
    (kind, _, peer, _, request, _, _), body = next_record(ingress)
    assert (kind, peer, request) == (Ingress.REPLY, PEER, 77)
    assert ilp.decode_reject(body).code == "T01"


def test_peers_numbered_past_the_small_int_cache_are_served_and_named(rings, start_io):
    # Indices above 256 are ints each thread makes anew: the I/O thread reads its tables
    # keyed by them without dict.get (connector/lockfree.py).
    ingress, egress = rings
    io = start_io([server_peer(index=300, name="agent-300"), server_peer(index=5000, name="agent-5000", secret="x")])
    put_egress(egress, io, Egress.PREPARE, 5000, 78, prepare_bytes())
    (kind, _, peer, _, request, _, _), body = next_record(ingress)
    reject = ilp.decode_reject(body)
    assert (kind, peer, request, reject.code) == (Ingress.REPLY, 5000, 78, "T01")
    assert "agent-5000" in reject.message
    with connect(url(io)) as ws:
        ws.send(auth_frame(7, username="agent-300"))
        assert isinstance(btp.decode_frame(ws.recv(timeout=5)), btp.BtpResponse)
        (kind, _, peer, _, _, _, _), _ = next_record(ingress)
        assert (kind, peer) == (Ingress.PEER_UP, 300)
        put_egress(egress, io, Egress.PREPARE, 300, 79, prepare_bytes())
        frame = btp.decode_frame(ws.recv(timeout=5))
        assert isinstance(frame, btp.BtpMessage) and frame.request_id == 79


def test_message_without_ilp_gets_empty_response(rings, start_io):
    io = start_io([server_peer()])
    with connect(url(io)) as ws:
        authenticate(ws, rings[0])
        ws.send(btp.encode_frame(btp.BtpMessage(8, (btp.ProtocolData("custom", 2, b"{}"),))))
        assert btp.decode_frame(ws.recv(timeout=5)) == btp.BtpResponse(8, ())


def test_non_prepare_ilp_message_gets_f01_and_transfer_a_btp_error(rings, start_io):
    io = start_io([server_peer()], ilp_address="g.us")
    with connect(url(io)) as ws:
        authenticate(ws, rings[0])
        ws.send(btp.encode_frame(btp.ilp_message(9, fulfill_bytes())))
        answer = btp.decode_frame(ws.recv(timeout=5))
        assert isinstance(answer, btp.BtpResponse) and answer.request_id == 9
        reject = ilp.decode_reject(btp.ilp_packet_of(answer))
        assert (reject.code, reject.triggered_by) == ("F01", "g.us")
        ws.send(btp.encode_frame(btp.BtpTransfer(10, 100)))
        answer = btp.decode_frame(ws.recv(timeout=5))
        assert isinstance(answer, btp.BtpError) and answer.request_id == 10
        no_record(rings[0])


def test_malformed_btp_gets_error_and_connection_survives(rings, start_io):
    ingress, _ = rings
    io = start_io([server_peer()])
    with connect(url(io)) as ws:
        authenticate(ws, ingress)
        ws.send(b"\x06\x00\x00\x01\x00\x05\x01\x01")  # truncated Message, request id 256
        answer = btp.decode_frame(ws.recv(timeout=5))
        assert isinstance(answer, btp.BtpError) and answer.code == "F00" and answer.request_id == 256
        ws.send(btp.encode_frame(btp.ilp_message(3, prepare_bytes())))
        (kind, *_), _ = next_record(ingress)
        assert kind == Ingress.PREPARE


def test_many_malformed_frames_close_the_connection(rings, start_io):
    io = start_io([server_peer()], max_bad_frames=3)
    with connect(url(io)) as ws:
        authenticate(ws, rings[0])
        for _ in range(4):
            ws.send(b"\xff")
        with pytest.raises(ConnectionClosed) as info:
            for _ in range(10):
                ws.recv(timeout=5)
        assert info.value.rcvd.code == 1008


def test_oversized_frame_closes_1009(rings, start_io):
    ingress, _ = rings
    io = start_io([server_peer(max_message_size=4096)])
    with connect(url(io), max_size=None) as ws:
        authenticate(ws, ingress)
        ws.send(b"\x00" * 5000)
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=5)
        assert info.value.rcvd.code == 1009
    (kind, *_), _ = next_record(ingress)
    assert kind == Ingress.PEER_DOWN


def test_oversized_auth_frame_closes_1009(rings, start_io):
    io = start_io([server_peer()], auth_max_message_size=1024)
    with connect(url(io), max_size=None) as ws:
        ws.send(b"\x00" * 2000)
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=5)
        assert info.value.rcvd.code == 1009


def test_text_message_closes_1003(rings, start_io):
    io = start_io([server_peer()])
    with connect(url(io)) as ws:
        authenticate(ws, rings[0])
        ws.send("hello")
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=5)
        assert info.value.rcvd.code == 1003


def test_disconnect_publishes_peer_down(rings, start_io):
    ingress, _ = rings
    io = start_io([server_peer()])
    ws = connect(url(io))
    conn_id = authenticate(ws, ingress)
    ws.close()
    (kind, _, peer, conn, *_), _ = next_record(ingress)
    assert (kind, peer, conn) == (Ingress.PEER_DOWN, PEER, conn_id)


def test_tcp_reset_publishes_peer_down(rings, start_io):
    ingress, _ = rings
    io = start_io([server_peer()])
    client = RawClient(io.listen_address)
    client.send(auth_frame())
    assert isinstance(client.recv_btp(), btp.BtpResponse)
    next_record(ingress)
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()  # RST
    (kind, *_), _ = next_record(ingress)
    assert kind == Ingress.PEER_DOWN


def test_new_connection_replaces_the_old_one(rings, start_io):
    ingress, _ = rings
    io = start_io([server_peer()])
    with connect(url(io)) as first, connect(url(io)) as second:
        old = authenticate(first, ingress)
        second.send(auth_frame(8))
        assert btp.decode_frame(second.recv(timeout=5)) == btp.BtpResponse(8, ())
        records = {next_record(ingress)[0][:4] for _ in range(2)}
        assert (Ingress.PEER_DOWN, 0, PEER, old) in records
        assert any(r[0] == Ingress.PEER_UP and r[3] != old for r in records)
        with pytest.raises(ConnectionClosed):
            first.recv(timeout=5)


def test_egress_close_closes_the_connection(rings, start_io):
    ingress, egress = rings
    io = start_io([server_peer()])
    with connect(url(io)) as ws:
        conn_id = authenticate(ws, ingress)
        put_egress(egress, io, Egress.CLOSE, PEER, 0, b"maintenance")
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=5)
        assert info.value.rcvd.code == 1000 and info.value.rcvd.reason == "maintenance"
    (kind, _, _, conn, *_), _ = next_record(ingress)
    assert (kind, conn) == (Ingress.PEER_DOWN, conn_id)


def test_ping_gets_pong(rings, start_io):
    io = start_io([server_peer()])
    with connect(url(io)) as ws:
        authenticate(ws, rings[0])
        assert ws.ping(b"are you there").wait(timeout=5)


# --- TCP segmentation ------------------------------------------------------------------


def test_many_frames_in_one_tcp_segment(rings, start_io):
    ingress, _ = rings
    io = start_io([server_peer()])
    client = RawClient(io.listen_address)
    packets = [prepare_bytes(i.to_bytes(2, "big")) for i in range(200)]
    wire = client.frame_bytes(auth_frame(1)) + b"".join(
        client.frame_bytes(btp.encode_frame(btp.ilp_message(1000 + i, p))) for i, p in enumerate(packets))
    client.sock.sendall(wire)  # one write: auth and 200 Prepares
    assert isinstance(client.recv_btp(), btp.BtpResponse)
    assert next_record(ingress)[0][0] == Ingress.PEER_UP
    for i, packet in enumerate(packets):
        (kind, _, _, _, request, _, _), body = next_record(ingress)
        assert (kind, request, body) == (Ingress.PREPARE, 1000 + i, packet)
    client.close()


def test_frames_split_across_segments(rings, start_io):
    ingress, _ = rings
    io = start_io([server_peer()])
    client = RawClient(io.listen_address)
    client.send(auth_frame(1))
    assert isinstance(client.recv_btp(), btp.BtpResponse)
    next_record(ingress)
    packets = [prepare_bytes(bytes([i]) * (i * 97)) for i in range(1, 6)]
    wire = b"".join(client.frame_bytes(btp.encode_frame(btp.ilp_message(i, p))) for i, p in enumerate(packets))
    for start in range(0, len(wire), 7):  # 7-byte writes, each its own segment (TCP_NODELAY)
        client.sock.sendall(wire[start : start + 7])
        if start % 70 == 0:
            time.sleep(0.001)
    for i, packet in enumerate(packets):
        (kind, _, _, _, request, _, _), body = next_record(ingress)
        assert (kind, request, body) == (Ingress.PREPARE, i, packet)
    client.close()


def test_full_ingress_ring_pauses_reading_without_loss(ring_name, start_io):
    from transport_helpers import IoThread, Ring, RingKind, SLOT_SIZE, TransportConfig, unique_name

    small_in = Ring.create(unique_name("small"), slot_size=SLOT_SIZE, capacity=4, kind=RingKind.MPMC)
    egress = Ring.create(unique_name("eg"), slot_size=SLOT_SIZE, capacity=16, kind=RingKind.MPMC)
    io = IoThread(TransportConfig(listen_host="127.0.0.1"), [server_peer()], ingress=small_in, egress=egress)
    io.start()
    try:
        client = RawClient(io.listen_address)
        client.send(auth_frame(1))
        assert isinstance(client.recv_btp(), btp.BtpResponse)
        wire = b"".join(client.frame_bytes(btp.encode_frame(btp.ilp_message(i, prepare_bytes()))) for i in range(50))
        client.sock.sendall(wire)
        time.sleep(0.2)  # let the ring fill up
        assert next_record(small_in)[0][0] == Ingress.PEER_UP
        for i in range(50):
            (kind, _, _, _, request, _, _), _ = next_record(small_in)
            assert (kind, request) == (Ingress.PREPARE, i)
        assert io.stats["ingress_stalls"] >= 1
        client.close()
    finally:
        io.stop()
        small_in.destroy()
        egress.destroy()


def test_slow_reader_is_disconnected_at_the_hard_limit(rings, start_io):
    ingress, egress = rings
    io = start_io([server_peer()], output_soft_limit=64 * 1024, output_hard_limit=1024 * 1024)
    client = RawClient(io.listen_address)
    client.send(auth_frame(1))
    assert isinstance(client.recv_btp(), btp.BtpResponse)
    conn_id = next_record(ingress)[0][3]
    body = fulfill_bytes(b"z" * 8000)
    deadline = time.monotonic() + 20
    down = None
    while down is None and time.monotonic() < deadline:  # the client never reads
        for _ in range(64):
            put_egress(egress, io, Egress.REPLY, PEER, 1, body, conn=conn_id)
        items = ingress.get_many(1, timeout=0.01)
        if items:
            down = items[0]
    assert down is not None and down[0] == Ingress.PEER_DOWN
    client.close()
