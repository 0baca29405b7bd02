"""The load generator's BTP peers: a raw WebSocket connection, packet builders, and the
sender, reply-reader and receiver loops.

Built for throughput rather than convenience (`connector.transport.client.BtpClient`
makes a Future per request and one `send` per frame): the sender builds each due batch of
Prepares straight into one bytearray and writes it with one `sendall`; the readers parse
every buffered frame in one `FrameParser.parse` call and read BTP envelopes with
`btp_wire.split_ilp_frame`, without building objects.  Each loop runs on its own thread:
on free-threaded CPython they run in parallel.

Packet data is `b"F"` or `b"R"` (fulfil or reject), the 8-byte sequence number, then
padding.  The fulfillment is sha256(secret + data), so the receiver derives it from what
arrives and the sender knows the condition in advance.
"""

from __future__ import annotations

import hashlib
import socket
import struct
import time
from dataclasses import dataclass, field

from connector.codec import btp, ilp
from connector.codec.oer import encode_length, encode_timestamp_ms, read_length
from connector.transport import btp_wire, ws

FULFILL_SECRET = b"ilp-loadgen:"
FIRST_REQUEST_ID = 1000  # below it: the auth and probe requests
MIN_DATA_BYTES = 9  # flag byte + 8-byte sequence number
_SEQ = struct.Struct(">Q")
_FULFILL_HEAD = bytes((ilp.FULFILL, 33))  # contents: 32-byte fulfillment + empty data (1 length byte)
_EMPTY_DATA = b"\x00"


class PeerError(RuntimeError):
    """A connection failed, authentication was refused, or the peer broke the protocol."""


# --------------------------------------------------------------------------- connection


class BtpConnection:
    """One authenticated BTP-over-WebSocket client connection (blocking socket)."""

    def __init__(self, host: str, port: int, username: str, token: str, path: str = "/"):
        self.label = username
        self.parser = ws.FrameParser(expect_masked=False, max_message_size=1 << 20, buffer_size=1 << 20)
        self.writer = ws.FrameWriter(mask=True)
        self.sock = socket.create_connection((host, port), timeout=10.0)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._handshake(host, port, path)
        self._authenticate(username, token)
        # Blocking from here on: one timeout would serve both the reader's recv and the
        # sender's sendall; the run unblocks its threads by closing the socket instead.
        self.sock.settimeout(None)
        self.closed = False

    def _handshake(self, host: str, port: int, path: str) -> None:
        handshake = ws.ClientHandshake(host, port, path)
        self.sock.sendall(handshake.request)
        while not handshake.done:
            data = self.sock.recv(65536)
            if not data:
                raise PeerError("the server closed the connection during the WebSocket handshake")
            handshake.feed(data)
        if handshake.leftover:
            self.parser.feed(handshake.leftover)

    def _authenticate(self, username: str, token: str) -> None:
        out = bytearray()
        btp_wire.append_btp(self.writer, out, btp.auth_message(1, token, username))
        self.sock.sendall(out)
        for payload in self.frames_until(lambda frame: True, 10.0):
            frame = btp.decode_frame(payload)
            if isinstance(frame, btp.BtpError):
                raise PeerError(f"authentication of {username!r} refused: {frame.code} {bytes(frame.data)[:200]!r}")
            return
        raise PeerError(f"no answer to the authentication of {username!r}")

    def frames_until(self, wanted, timeout: float):
        """Yield binary payloads (as bytes) until `wanted(payload)` or `timeout`; for set-up only."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                self.sock.settimeout(max(0.01, deadline - time.monotonic()))
                try:
                    if not self.receive():
                        raise PeerError(f"{self.label}: the connection closed")
                except TimeoutError:
                    return
                for opcode, payload in self.parser.parse():
                    if opcode == ws.OP_BINARY and wanted(payload):
                        yield bytes(payload)
                        return
        finally:
            # Blocking again: a timeout left here would end the load's reply reader the
            # first time the connector went quiet for that long.
            self.sock.settimeout(None)

    def receive(self) -> bool:
        """Read what the socket has into the parser; False when the connection closed."""
        view = self.parser.writable(65536)
        try:
            count = self.sock.recv_into(view)
        finally:
            view.release()
        if not count:
            return False
        self.parser.advance(count)
        return True

    def close(self) -> None:
        """Send a WebSocket close and shut the socket (wakes a thread blocked reading it)."""
        if self.closed:
            return
        self.closed = True
        try:
            out = bytearray()
            self.writer.append_close(out)
            self.sock.sendall(out)
        except OSError:
            pass
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


# --------------------------------------------------------------------------- packets


def packet_data(seq: int, reject: bool, size: int) -> bytes:
    return (b"R" if reject else b"F") + _SEQ.pack(seq) + bytes(size - MIN_DATA_BYTES)


def fulfillment_of(data) -> bytes:
    return hashlib.sha256(FULFILL_SECRET + data).digest()


def is_rejected(seq: int, reject_share: float) -> bool:
    """Spread rejects evenly: exactly floor(n * share) of the first n packets."""
    return int((seq + 1) * reject_share) > int(seq * reject_share)


class PrepareBuilder:
    """Encodes Prepares of one shape; only expiry, condition and data vary per packet."""

    def __init__(self, destination: str, amount: int, data_bytes: int, reject_share: float):
        if data_bytes < MIN_DATA_BYTES:
            raise ValueError(f"data must be at least {MIN_DATA_BYTES} bytes")
        self.data_bytes, self.reject_share = data_bytes, reject_share
        address = destination.encode("ascii")
        content_length = 8 + 17 + 32 + len(encode_length(len(address))) + len(address) \
            + len(encode_length(data_bytes)) + data_bytes
        self._head = bytes((ilp.PREPARE,)) + encode_length(content_length) + struct.pack(">Q", amount)
        self._middle = encode_length(len(address)) + address + encode_length(data_bytes)
        self._expiry_ms = -1
        self._expiry = b""
        ilp.decode_prepare(self.build(0, 0))  # the layout is right, or fail before any load

    def build(self, seq: int, expiry_ms: int) -> bytes:
        if expiry_ms != self._expiry_ms:  # packets sent in the same millisecond share it
            self._expiry_ms, self._expiry = expiry_ms, encode_timestamp_ms(expiry_ms)
        data = packet_data(seq, is_rejected(seq, self.reject_share), self.data_bytes)
        condition = hashlib.sha256(fulfillment_of(data)).digest()
        return b"".join((self._head, self._expiry, condition, self._middle, data))


def reject_packet(address: str) -> bytes:
    return ilp.encode_reject(ilp.Reject("F99", address, "rejected by the load generator", b""))


def reject_code(packet) -> str:
    _, at = read_length(packet, 1)
    return bytes(packet[at : at + 3]).decode("ascii", "replace")


# --------------------------------------------------------------------------- loops


@dataclass
class Schedule:
    """The open-loop plan: packet `seq` is meant to leave at `t0 + seq / rate` (perf_counter)."""

    rate: float
    count: int
    t0: float
    expiry_s: float
    send_deadline: float  # perf_counter: stop sending after it (the --seconds bound)

    def intended(self, seq: int) -> float:
        return self.t0 + seq / self.rate


@dataclass
class SenderStats:
    sent: int = 0
    last_send: float = 0.0
    max_batch: int = 0
    max_lag_s: float = 0.0  # how far behind its intended time a packet left, at worst
    error: str | None = None


def run_sender(connections: list[BtpConnection], builder: PrepareBuilder, schedule: Schedule,
               stats: SenderStats, stop, max_in_flight: int, replied_count, tick_s: float = 0.0) -> None:
    """Send every packet when it is due; whatever is due at a wake-up goes in one write.

    Falling behind (a blocked socket, a slow wake-up) sends a bigger batch later: the
    packets' latencies still count from their intended times.  With `tick_s` the sender
    sleeps that long past the next due packet, so about `tick_s * rate` packets leave per
    write (fewer wake-ups on both sides; the wait counts in their latencies).
    """
    outs = [bytearray() for _ in connections]
    rate, t0, expiry_ms = schedule.rate, schedule.t0, schedule.expiry_s * 1000.0
    seq, count, n = 0, schedule.count, len(connections)
    try:
        while seq < count and not stop.is_set():
            now = time.perf_counter()
            # Past the deadline a late sender still sends what was due before it (their
            # latencies count from their intended times), then stops: dropping them would
            # hide the very lateness the run measures.
            late = now > schedule.send_deadline
            due = min(count, int((min(now, schedule.send_deadline) - t0) * rate) + 1,
                      replied_count() + max_in_flight)
            if due <= seq:
                if late:
                    break
                time.sleep(min(0.002 + tick_s, max(0.0, schedule.intended(seq) + tick_s - now)))
                continue
            stats.max_lag_s = max(stats.max_lag_s, now - schedule.intended(seq))
            stats.max_batch = max(stats.max_batch, due - seq)
            # Expiry = intended send time + expiry, on the wall clock read now, not at the
            # start: a step of the wall clock (a paused VM catching up) would otherwise
            # put every later packet's expiry in the past.
            wall_ms = (time.time() - time.perf_counter()) * 1000.0 + expiry_ms
            for s in range(seq, due):
                packet = builder.build(s, int(wall_ms + (t0 + s / rate) * 1000.0))
                btp_wire.append_ilp_frame(connections[s % n].writer, outs[s % n], btp.MESSAGE,
                                          FIRST_REQUEST_ID + s, packet)
            for connection, out in zip(connections, outs):
                if out:
                    connection.sock.sendall(out)
                    out.clear()
            stats.sent, seq = due, due
            stats.last_send = time.perf_counter()
    except OSError as error:
        stats.error = f"send failed: {error!r}"


def _receive(connection: BtpConnection, stop) -> str | None:
    """None when bytes arrived; "" when the run closed the socket; otherwise what failed."""
    try:
        if connection.receive():
            return None
        failure = f"{connection.label}: the connector closed the connection"
    except OSError as error:
        failure = f"{connection.label}: read failed: {error!r}"
    return "" if stop.is_set() else failure


@dataclass
class ReplyStats:
    fulfilled: int = 0
    rejected: int = 0
    unexpected_rejects: int = 0  # any reject but the receiver's F99
    errors: int = 0  # BTP Errors, unknown frames, duplicate replies
    reject_codes: dict[str, int] = field(default_factory=dict)
    last_reply: float = 0.0
    error: str | None = None

    @property
    def replied(self) -> int:
        return self.fulfilled + self.rejected


def run_reply_reader(connection: BtpConnection, schedule: Schedule, replied: bytearray, stats: ReplyStats,
                     record_latency_us, stop, receiver_address: str) -> None:
    """Match each reply to its Prepare by request id; latency = now - intended send time."""
    t0, rate, count = schedule.t0, schedule.rate, schedule.count
    while not stop.is_set():
        failure = _receive(connection, stop)
        if failure is not None:
            stats.error = failure or None
            return
        now = time.perf_counter()
        for opcode, payload in connection.parser.parse():
            if opcode != ws.OP_BINARY:
                continue
            split = btp_wire.split_ilp_frame(payload)
            seq = split[1] - FIRST_REQUEST_ID if split is not None and split[0] == btp.RESPONSE else -1
            if not 0 <= seq < count or replied[seq]:
                stats.errors += 1
                continue
            replied[seq] = 1
            packet = split[2]
            record_latency_us(max(1, int((now - (t0 + seq / rate)) * 1e6)))
            if packet[0] == ilp.FULFILL:
                stats.fulfilled += 1
            else:
                _count_reject(stats, packet, receiver_address)
        stats.last_reply = now
        if connection.parser.failure is not None:
            stats.error = f"websocket protocol error: {connection.parser.failure}"
            return


def _count_reject(stats: ReplyStats, packet, receiver_address: str) -> None:
    stats.rejected += 1
    code = reject_code(packet)
    stats.reject_codes[code] = stats.reject_codes.get(code, 0) + 1
    if code != "F99" or receiver_address.encode() not in bytes(packet[:64]):
        stats.unexpected_rejects += 1


@dataclass
class ReceiverStats:
    prepares: int = 0
    other_frames: int = 0
    error: str | None = None


def run_receiver(connection: BtpConnection, reject_bytes: bytes, stats: ReceiverStats, stop,
                 data_bytes: int) -> None:
    """Answer every Prepare: Fulfill (fulfillment from the data) or the precomputed Reject."""
    out = bytearray()
    writer = connection.writer
    while not stop.is_set():
        failure = _receive(connection, stop)
        if failure is not None:
            stats.error = failure or None
            return
        for opcode, payload in connection.parser.parse():
            if opcode == ws.OP_BINARY:
                _answer(writer, out, payload, reject_bytes, stats, data_bytes)
            elif opcode == ws.OP_PING:
                writer.append(out, ws.OP_PONG, bytes(payload))
        if out:
            try:
                connection.sock.sendall(out)
            except OSError as error:
                stats.error = f"send failed: {error!r}"
                return
            out.clear()


def _answer(writer, out: bytearray, payload, reject_bytes: bytes, stats: ReceiverStats, data_bytes: int) -> None:
    split = btp_wire.split_ilp_frame(payload)
    if split is None or split[0] != btp.MESSAGE or split[2][0] != ilp.PREPARE:
        stats.other_frames += 1
        frame = btp.decode_frame(payload)
        if isinstance(frame, btp.BtpMessage):  # e.g. ILDCP or route control: acknowledge
            btp_wire.append_btp(writer, out, btp.BtpResponse(frame.request_id, ()))
        return
    _, request_id, prepare = split
    stats.prepares += 1
    data = prepare[len(prepare) - data_bytes :]  # data is the Prepare's last field
    reply = reject_bytes if data[0] == 0x52 else _FULFILL_HEAD + fulfillment_of(data) + _EMPTY_DATA  # 0x52: "R"
    btp_wire.append_ilp_frame(writer, out, btp.RESPONSE, request_id, reply)
