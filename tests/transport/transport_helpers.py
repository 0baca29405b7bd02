"""Helpers for the transport tests: names, records, packets, a raw WebSocket client."""

from __future__ import annotations

import os
import time
import uuid
from datetime import datetime, timedelta, timezone


from connector.codec import btp, ilp
from connector.slots import EGRESS, HEADER_SIZE, INGRESS, SLOT_SIZE
from connector.transport import IoThread, Peer, TransportConfig
from ringbuf import Ring, RingKind


def unique_name(tag: str) -> str:
    return f"ilptest-{tag}-{os.getpid()}-{uuid.uuid4().hex[:10]}"


def server_peer(index=1, name="alice", secret="s3cret", **kw) -> Peer:
    return Peer(index=index, name=name, btp_role="server", secret=secret, **kw)


def next_record(ring: Ring, timeout: float = 5.0):
    """(header tuple, body bytes) of the next ingress record."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        items = ring.get_many(1, timeout=0.05)
        if items:
            raw = items[0]
            return INGRESS.unpack_from(raw, 0), bytes(raw[HEADER_SIZE:])
    raise AssertionError(f"no ingress record within {timeout}s")


def no_record(ring: Ring, wait: float = 0.2) -> None:
    items = ring.get_many(1, timeout=wait)
    assert not items, f"unexpected ingress record {INGRESS.unpack_from(items[0], 0)}"


def put_egress(ring: Ring, io: IoThread, kind: int, peer: int, request_id: int, body: bytes, conn: int = 0) -> None:
    ring.put(EGRESS.pack(kind, 0, peer, conn, request_id, 0, time.monotonic_ns()) + body)
    io.waker.wake()


def prepare_bytes(data: bytes = b"hello", destination: str = "g.bob.x") -> bytes:
    return ilp.encode_prepare(ilp.Prepare(
        amount=1000, expires_at=datetime.now(timezone.utc) + timedelta(seconds=30),
        execution_condition=bytes(range(32)), destination=destination, data=data))


def fulfill_bytes(data: bytes = b"ok") -> bytes:
    return ilp.encode_fulfill(ilp.Fulfill(bytes(32), data))


def auth_frame(request_id: int = 1, token: str = "s3cret", username: str = "alice") -> bytes:
    return btp.encode_frame(btp.auth_message(request_id, token, username))


class RawClient:
    """A bare WebSocket client over a blocking socket, built from our sans-I/O pieces,
    for tests that need control over TCP segments."""

    def __init__(self, address, path: str = "/"):
        import socket

        from connector.transport.ws import ClientHandshake, FrameParser, FrameWriter

        self.sock = socket.create_connection(address, timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.handshake = ClientHandshake(address[0], address[1], path)
        self.sock.sendall(self.handshake.request)
        while not self.handshake.feed(self.sock.recv(4096)):
            pass
        self.parser = FrameParser(expect_masked=False, max_message_size=1 << 20)
        self.parser.feed(self.handshake.leftover)
        self.writer = FrameWriter(mask=True)
        self.pending: list = []

    def frame_bytes(self, payload: bytes, opcode: int = 2) -> bytes:
        out = bytearray()
        self.writer.append(out, opcode, payload)
        return bytes(out)

    def send(self, payload: bytes, opcode: int = 2) -> None:
        self.sock.sendall(self.frame_bytes(payload, opcode))

    def recv(self, timeout: float = 5.0):
        """(opcode, payload bytes) of the next message; (None, b'') on EOF."""
        deadline = time.monotonic() + timeout
        while not self.pending:
            self.pending = [(op, bytes(p)) for op, p in self.parser.parse()]
            if self.pending:
                break
            if self.parser.failure:
                raise AssertionError(f"server broke the protocol: {self.parser.failure}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no message")
            self.sock.settimeout(left)
            data = self.sock.recv(65536)
            if not data:
                return None, b""
            self.parser.feed(data)
        return self.pending.pop(0)

    def recv_btp(self, timeout: float = 5.0):
        opcode, payload = self.recv(timeout)
        assert opcode == 2, (opcode, payload)
        return btp.decode_frame(payload)

    def close(self) -> None:
        self.sock.close()
