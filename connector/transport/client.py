"""A small blocking BTP client: one socket, a reader thread, pipelined requests.

For the demo command, for tests that need a Python peer, and as the base of the load
generator.  It speaks the same wire as `ilp-plugin-btp`: WebSocket (client frames
masked), BTP auth first, then ILP packets as `ilp` protocol data.

    client = BtpClient("ws://127.0.0.1:7768", username="alice", token="secret")
    client.connect()
    reply = client.request(prepare_bytes)            # a Fulfill or Reject (bytes)
    client.serve(lambda prepare: fulfill_bytes)      # answer Prepares the connector sends us
"""

from __future__ import annotations

import itertools
import logging
import socket
import threading
from concurrent.futures import Future
from urllib.parse import urlsplit

from ..codec import btp
from . import btp_wire, ws

log = logging.getLogger(__name__)


class BtpClientError(RuntimeError):
    """The connection failed, was refused, or closed with requests outstanding."""


class BtpClient:
    def __init__(self, url: str, *, username: str, token: str, timeout: float = 10.0,
                 max_message_size: int = 1 << 20):
        parts = urlsplit(url)
        if parts.scheme != "ws" or not parts.hostname:
            raise ValueError(f"expected a ws://host:port/ URL, got {url!r}")
        self.host, self.port, self.path = parts.hostname, parts.port or 80, parts.path or "/"
        self.username, self.token, self.timeout = username, token, timeout
        self._parser = ws.FrameParser(expect_masked=False, max_message_size=max_message_size)
        self._writer = ws.FrameWriter(mask=True)
        self._send_lock = threading.Lock()
        self._pending: dict[int, Future] = {}
        self._ids = itertools.count(1)
        self._ids_lock = threading.Lock()
        self._handler = None
        self._sock: socket.socket | None = None
        self._reader: threading.Thread | None = None
        self.closed = threading.Event()

    # ----------------------------------------------------------------- lifecycle

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        handshake = ws.ClientHandshake(self.host, self.port, self.path)
        sock.sendall(handshake.request)
        while not handshake.done:
            data = sock.recv(65536)
            if not data:
                raise BtpClientError("the server closed the connection during the WebSocket handshake")
            handshake.feed(data)
        if handshake.leftover:
            self._parser.feed(handshake.leftover)
        sock.settimeout(None)
        self._sock = sock
        self._reader = threading.Thread(target=self._read_loop, name=f"btp-client-{self.username}", daemon=True)
        self._reader.start()
        reply = self._call(btp.auth_message(self._next_id(), self.token, self.username))
        if isinstance(reply, btp.BtpError):
            self.close()
            raise BtpClientError(f"authentication refused: {reply.code} {bytes(reply.data)[:200]!r}")

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                out = bytearray()
                self._writer.append_close(out)
                with self._send_lock:
                    sock.sendall(out)
            except OSError:
                pass
            sock.close()
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(self.timeout)
        self._fail_pending("the connection was closed")

    def __enter__(self) -> "BtpClient":
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ----------------------------------------------------------------- requests

    def request(self, packet: bytes, timeout: float | None = None) -> bytes:
        """Send an ILP packet, return the ILP reply (a BTP Error raises BtpClientError)."""
        reply = self.request_async(packet).result(timeout or self.timeout)
        if not isinstance(reply, bytes):
            raise BtpClientError(f"the peer answered without an ILP packet: {reply!r}"[:300])
        return reply

    def request_async(self, packet: bytes) -> Future:
        """Send an ILP packet without waiting; the Future resolves to the ILP reply bytes."""
        request_id = self._next_id()
        future: Future = Future()
        self._pending[request_id] = future
        out = bytearray()
        btp_wire.append_ilp_frame(self._writer, out, btp.MESSAGE, request_id, packet)
        self._send(out)
        return future

    def serve(self, handler) -> None:
        """Answer every Prepare the other side sends with handler(prepare: bytes) -> reply bytes
        (None: send no answer)."""
        self._handler = handler

    def _call(self, message: btp.BtpMessage):
        future: Future = Future()
        self._pending[message.request_id] = future
        out = bytearray()
        btp_wire.append_btp(self._writer, out, message)
        self._send(out)
        return future.result(self.timeout)

    def _next_id(self) -> int:
        with self._ids_lock:
            return next(self._ids) & 0xFFFFFFFF

    def _send(self, out: bytearray) -> None:
        sock = self._sock
        if sock is None:
            raise BtpClientError("not connected")
        with self._send_lock:
            sock.sendall(out)

    # ----------------------------------------------------------------- reading

    def _read_loop(self) -> None:
        try:
            while self._sock is not None:
                view = self._parser.writable()
                count = self._sock.recv_into(view)
                view.release()
                if not count:
                    break
                self._parser.advance(count)
                for opcode, payload in self._parser.parse():
                    if opcode == ws.OP_BINARY:
                        self._on_frame(payload)
                    elif opcode == ws.OP_PING:
                        out = bytearray()
                        self._writer.append(out, ws.OP_PONG, bytes(payload))
                        self._send(out)
                    elif opcode == ws.OP_CLOSE:
                        return
                if self._parser.failure is not None:
                    log.warning("websocket protocol error from the server", extra={"error": str(self._parser.failure)})
                    return
        except (OSError, BtpClientError):
            pass
        finally:
            self.closed.set()
            self._fail_pending("the connection closed")

    def _on_frame(self, payload) -> None:
        fast = btp_wire.split_ilp_frame(payload)
        if fast is not None:
            frame_type, request_id, packet = fast
            if frame_type == btp.RESPONSE:
                return self._resolve(request_id, bytes(packet))
            return self._answer(request_id, bytes(packet))
        frame = btp.decode_frame(payload)
        if isinstance(frame, (btp.BtpResponse, btp.BtpError)):
            packet = btp.ilp_packet_of(frame)
            self._resolve(frame.request_id, bytes(packet) if packet is not None else frame)
        elif isinstance(frame, btp.BtpMessage):
            packet = btp.ilp_packet_of(frame)
            if packet is None:
                out = bytearray()
                btp_wire.append_btp(self._writer, out, btp.BtpResponse(frame.request_id, ()))
                self._send(out)
            else:
                self._answer(frame.request_id, bytes(packet))

    def _resolve(self, request_id: int, result) -> None:
        future = self._pending.pop(request_id, None)
        if future is not None:
            future.set_result(result)

    def _answer(self, request_id: int, prepare: bytes) -> None:
        if self._handler is None:
            log.warning("a Prepare arrived but no handler is set", extra={"request": request_id})
            return
        reply = self._handler(prepare)
        if reply is None:  # the handler chose not to answer (tests of timeouts and lost peers)
            return
        out = bytearray()
        btp_wire.append_ilp_frame(self._writer, out, btp.RESPONSE, request_id, reply)
        self._send(out)

    def _fail_pending(self, reason: str) -> None:
        while self._pending:
            _, future = self._pending.popitem()
            if not future.done():
                future.set_exception(BtpClientError(reason))
