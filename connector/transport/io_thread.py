"""The I/O thread: every peer socket, BTP over WebSocket, the ingress and egress rings.

One epoll loop owns an optional listening socket (peers that connect to us), client
connections it dials and redials with backoff, and a `Waker` eventfd.  Each turn it

1. reads each ready socket once, with `recv_into` into the connection's parser buffer,
   and handles every complete WebSocket message in it (BTP decode, auth, dispatch);
2. publishes what the peers sent into the ingress ring, one claim per turn;
3. drains its egress ring in batches, writing BTP frames into connections' output
   bytearrays (the ILP packet is copied once, from the slot into the buffer);
4. flushes every connection with output using one `send` each (partial writes kept);
5. runs timers: redials, handshake/auth and close deadlines, forgetting stale requests.

The packet path is written for few Python operations per message: frames are parsed,
unmasked and split in C (`_wire`, behind ws.py and btp_wire.py), a Prepare or a reply
becomes its ingress record (header and packet, one bytes object) inline in the message
loop, and the egress loop builds each outgoing frame with one C call.  Anything else
(auth, control frames, errors, other BTP frames) takes the general path.

The ingress ring is never waited on: when it is full, the records that did not fit are
kept (copied) and no socket is read until they are published, so the thread keeps
draining egress (a worker blocked on a full egress ring can always make progress).
Backpressure per connection: output beyond `output_soft_limit` stops reading from that
socket; beyond `output_hard_limit` the peer is too slow and is disconnected.
"""

from __future__ import annotations

import collections
import errno
import hmac
import logging
import secrets
import select
import socket
import threading
import time

from connector.codec import btp, ilp
from connector.codec.errors import CodecError
from connector.lockfree import peek
from connector.slots import EGRESS, HEADER_SIZE, INGRESS, Egress, Ingress
from ringbuf import READ_MANY_LENGTH, Ring, RingClosed

from . import _wire, btp_wire
from .config import CLIENT, SERVER, Peer, TransportConfig, parse_ws_url
from .connection import Connection, PeerLink, State
from .waker import Waker
from .ws import (
    CLOSE_GOING_AWAY,
    CLOSE_NORMAL,
    CLOSE_NO_STATUS,
    CLOSE_POLICY_VIOLATION,
    CLOSE_UNSUPPORTED_DATA,
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    HandshakeError,
    parse_close,
)

log = logging.getLogger(__name__)

_READ, _WRITE = select.EPOLLIN, select.EPOLLOUT
_NOT_READ, _NOT_WRITE = ~select.EPOLLIN, ~select.EPOLLOUT
_LISTENER, _WAKER = object(), object()
_MAX_EVENTS = 256  # epoll events per turn; more wait for the next turn
# Plain ints and objects for the per-record loops (enum attribute lookups cost more).
_OPEN = State.OPEN
_SWEEP_INTERVAL = 0.05  # seconds between deadline scans
_ACCEPTS_PER_TURN = 64
_DUMMY_SECRET = secrets.token_bytes(32)  # compared against when the username is unknown


class _Histogram:
    """Where the latencies go when nobody asked for them."""

    def __init__(self):
        self.bounds, self.counts, self.sum = (), [0], 0.0


_NO_HISTOGRAM = _Histogram()


class IoThread:
    """One I/O thread.  Build it, `start()` it, feed its egress ring and `waker`, `stop()` it.

    `ingress` and `egress` are rings (or their names); the thread takes its own handle on
    each.  `peers` is the peer table: indices must be unique, server-role usernames too.
    `forward_latency` and `answer_latency` (histograms with `bounds` in seconds, `counts`
    one longer, and `sum`; written by this thread only) count, for every Prepare and every
    reply written to a connection, the time since its Prepare was read.
    """

    def __init__(self, config: TransportConfig, peers: list[Peer], *, ingress: Ring | str,
                 egress: Ring | str, forward_latency=None, answer_latency=None):
        self.config = config
        self.peers = {peer.index: peer for peer in peers}
        if len(self.peers) != len(peers):
            raise ValueError("peer indices must be unique")
        for peer in peers:
            peer.validate()
        self._server_peers = {p.auth_username: p for p in peers if p.btp_role == SERVER}
        if len(self._server_peers) != sum(p.btp_role == SERVER for p in peers):
            raise ValueError("server-role peers must have distinct auth usernames")
        self._links = [PeerLink(p, *parse_ws_url(p.url)) for p in peers if p.btp_role == CLIENT]
        self._ingress_source, self._egress_source = ingress, egress
        self._latency = (_NO_HISTOGRAM if forward_latency is None else forward_latency,
                         _NO_HISTOGRAM if answer_latency is None else answer_latency)
        self.waker = Waker()
        self.listen_address: tuple[str, int] | None = None
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopping = False
        self.failure: BaseException | None = None
        self.stats = collections.Counter()  # read by tests and telemetry; written by this thread only
        # Everything below belongs to the I/O thread once it runs.
        self._epoll: select.epoll | None = None
        self._targets: dict[int, object] = {}  # registered fd -> its Connection, _WAKER or _LISTENER
        self._in: Ring | None = None
        self._out: Ring | None = None
        self._max_body = 0
        self._egress_batch = self._egress_batches = self._soft_limit = 0  # from config, in _open
        self._connections: dict[int, Connection] = {}
        self._current: dict[int, Connection] = {}  # peer index -> its authenticated connection
        self._next_conn_id = 1
        self._unauthenticated = 0
        self._records: list[bytes] = []  # ingress records of this turn: header + body
        self._stalled: collections.deque = collections.deque()  # records the full ingress ring refused
        self._dirty: list[Connection] = []
        self._next_sweep = 0.0
        self._busy = False  # egress left undrained last turn: poll without sleeping

    # ================================================================= lifecycle

    def start(self, timeout: float = 10.0) -> None:
        """Bind the listener (if any), start the thread, wait until it runs."""
        if self._thread is not None:
            raise RuntimeError("IoThread already started")
        if self.config.listen_host is not None:
            self._listener = self._bind()
            self.listen_address = self._listener.getsockname()[:2]
        self._thread = threading.Thread(target=self._main, name=f"io-{self.config.io_index}", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("I/O thread did not start in time")
        if self.failure is not None:
            raise RuntimeError("I/O thread failed to start") from self.failure

    def stop(self, timeout: float = 10.0) -> None:
        """Close every connection (peers get a close frame), detach the rings, end the thread."""
        self._stopping = True
        if self._thread is None:
            self._close_listener()
            self.waker.close()
            return
        self.waker.wake()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError(f"I/O thread {self._thread.name} did not stop within {timeout}s")

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _bind(self) -> socket.socket:
        config = self.config
        family = socket.AF_INET6 if ":" in config.listen_host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((config.listen_host, config.listen_port))
            sock.listen(config.listen_backlog)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    def _main(self) -> None:
        try:
            self._open()
        except BaseException as exc:
            self.failure = exc
            self._ready.set()
            self._release()
            return
        self._ready.set()
        log.info("I/O thread started", extra={"io_thread": self.config.io_index, "listen": self.listen_address})
        try:
            while not self._stopping:
                self._turn()
        except BaseException as exc:
            self.failure = exc
            log.exception("I/O thread failed", extra={"io_thread": self.config.io_index})
        finally:
            self._shutdown()

    def _open(self) -> None:
        self._in = _own_handle(self._ingress_source)
        self._out = _own_handle(self._egress_source)
        self._max_body = self._in.slot_size - HEADER_SIZE
        config = self.config
        self._egress_batch, self._egress_batches = config.egress_batch, config.egress_batches_per_turn
        self._soft_limit = config.output_soft_limit
        self._epoll = select.epoll()
        self._epoll.register(self.waker.fileno(), _READ)
        self._targets[self.waker.fileno()] = _WAKER
        if self._listener is not None:
            self._epoll.register(self._listener.fileno(), _READ)
            self._targets[self._listener.fileno()] = _LISTENER

    def _shutdown(self) -> None:
        for conn in list(self._connections.values()):
            if conn.parser is not None and conn.state in (State.AUTH, State.OPEN):
                conn.writer.append_close(conn.out, CLOSE_GOING_AWAY, "connector shutting down")
                self._flush(conn)
            self._teardown(conn, "shutdown")
        self._publish()
        if self._stalled:
            log.warning("ingress records dropped at shutdown", extra={"count": len(self._stalled)})
        self._release()
        log.info("I/O thread stopped", extra={"io_thread": self.config.io_index})

    def _release(self) -> None:
        self._close_listener()
        if self._epoll is not None:
            self._epoll.close()
        for ring in (self._in, self._out):
            if ring is not None:
                ring.detach()
        self.waker.close()

    def _close_listener(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    # ================================================================= the loop

    def _turn(self) -> None:
        self.stats["turns"] += 1
        targets = self._targets
        # Resolved before any is handled: a socket closed in this turn may free its fd
        # for one accepted or dialled in the same turn.
        ready = [(targets.get(fd), flags) for fd, flags in self._epoll.poll(self._poll_timeout(), _MAX_EVENTS)]
        for target, flags in ready:
            if target is _WAKER:
                self.waker.consume()
            elif target is _LISTENER:
                self._accept()
            elif target is not None:
                # as `selectors` reads epoll: errors and hang-ups wake both directions
                events = ((_WRITE if flags & _NOT_READ else 0) | (_READ if flags & _NOT_WRITE else 0)) & target.interest
                if events:
                    self._on_ready(target, events)
        if self._stalled:
            self._retry_stalled()
        more_egress = self._drain_egress()
        if self._records:
            self._publish()
        if self._dirty:
            self._flush_dirty()
        self._run_timers(time.monotonic())
        self._busy = more_egress

    def _poll_timeout(self) -> float:
        if self._busy:
            return 0.0
        if self._stalled:
            return self.config.stalled_poll
        now = time.monotonic()
        timeout = self.config.idle_poll
        if self._connections:
            timeout = min(timeout, max(0.0, self._next_sweep - now))
        for link in self._links:
            if link.conn is None:
                timeout = min(timeout, max(0.0, link.next_at - now))
        return timeout

    def _on_ready(self, conn: Connection, events: int) -> None:
        if conn.state is State.CLOSED:  # torn down earlier in this turn
            return
        try:
            if events & _WRITE:
                if conn.state is State.CONNECTING:
                    self._on_connected(conn)
                else:
                    self._flush(conn)
            if events & _READ and conn.state is not State.CLOSED and not self._stalled:
                self._read(conn)
        except Exception:  # a bug must cost one connection, not the thread
            log.exception("connection failed", extra=conn.log_fields())
            self._teardown(conn, "internal error")

    # ================================================================= accepting and dialling

    def _accept(self) -> None:
        for _ in range(_ACCEPTS_PER_TURN):
            try:
                sock, address = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. EMFILE: try again next turn
                log.warning("accept failed", extra={"error": str(exc)})
                return
            if self._unauthenticated >= self.config.max_unauthenticated:
                log.warning("too many unauthenticated connections; refusing", extra={"remote": _remote(address)})
                sock.close()
                continue
            self._unauthenticated += 1
            conn = self._adopt(sock, _remote(address), link=None)
            self._set_interest(conn)
            log.debug("connection accepted", extra=conn.log_fields())

    def _adopt(self, sock: socket.socket, remote: str, *, link: PeerLink | None) -> Connection:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn_id = self._next_conn_id
        self._next_conn_id = conn_id % 0xFFFFFFFF + 1  # u32, never 0 (0 means "the peer's current")
        deadline = time.monotonic() + self.config.handshake_timeout
        conn = Connection(sock, conn_id, remote, link=link, deadline=deadline,
                          max_head=self.config.handshake_max_bytes)
        self._connections[conn_id] = conn
        return conn

    def _dial(self, link: PeerLink) -> None:
        try:
            family, kind, proto, _, address = socket.getaddrinfo(link.host, link.port, type=socket.SOCK_STREAM)[0]
            sock = socket.socket(family, kind, proto)
        except OSError as exc:
            log.warning("cannot resolve peer", extra={"peer": link.peer.name, "error": str(exc)})
            self._schedule_redial(link, 0.0)
            return
        sock.setblocking(False)
        result = sock.connect_ex(address)
        if result not in (0, errno.EINPROGRESS):
            sock.close()
            log.info("connect failed", extra={"peer": link.peer.name, "error": errno.errorcode.get(result, result)})
            self._schedule_redial(link, 0.0)
            return
        link.conn = self._adopt(sock, f"{link.host}:{link.port}", link=link)
        self._set_interest(link.conn)
        log.debug("dialling peer", extra=link.conn.log_fields())

    def _on_connected(self, conn: Connection) -> None:
        failure = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if failure:
            self._teardown(conn, f"connect failed: {errno.errorcode.get(failure, failure)}")
            return
        conn.state = State.HANDSHAKE
        conn.out += conn.handshake.request
        self._flush(conn)

    def _schedule_redial(self, link: PeerLink, up_since: float) -> None:
        now = time.monotonic()
        if up_since and now - up_since >= self.config.backoff.reset_after:
            link.attempt = 0
        delay = self.config.backoff.delay(link.attempt)
        link.attempt += 1
        link.next_at = now + delay
        link.conn = None
        log.info("peer redial scheduled", extra={"peer": link.peer.name, "delay": round(delay, 3),
                                                 "attempt": link.attempt})

    # ================================================================= reading

    def _read(self, conn: Connection) -> None:
        if conn.state is State.HANDSHAKE:
            self._read_handshake(conn)
            return
        parser = conn.parser
        tail = parser.writable()
        try:
            count = conn.sock.recv_into(tail)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._teardown(conn, f"receive failed: {exc}")
            return
        finally:
            tail.release()
        if count == 0:
            self._teardown(conn, "peer closed the TCP connection")
            return
        self.stats["bytes_in"] += count
        parser.advance(count)
        self._on_messages(conn)

    def _read_handshake(self, conn: Connection) -> None:
        try:
            data = conn.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._teardown(conn, f"receive failed: {exc}")
            return
        if not data:
            self._teardown(conn, "peer closed the TCP connection during the handshake")
            return
        try:
            if not conn.handshake.feed(data):
                return
        except HandshakeError as exc:
            self._refuse_handshake(conn, exc)
            return
        self._websocket_opened(conn)

    def _refuse_handshake(self, conn: Connection, exc: HandshakeError) -> None:
        log.info("WebSocket handshake failed", extra={**conn.log_fields(), "error": str(exc)})
        if exc.response:
            conn.out += exc.response
            self._flush(conn)
        self._teardown(conn, "handshake failed")

    def _websocket_opened(self, conn: Connection) -> None:
        config = self.config
        if conn.server_side:
            conn.out += conn.handshake.response
            # Until it authenticates, a stranger gets a small buffer (it grows on auth).
            conn.open_websocket(max_message_size=config.auth_max_message_size,
                                buffer_size=min(config.recv_buffer_size, 2 * config.auth_max_message_size))
        else:
            conn.open_websocket(max_message_size=conn.peer.max_message_size, buffer_size=config.recv_buffer_size)
            conn.auth_request_id = secrets.randbits(32)
            auth = btp.auth_message(conn.auth_request_id, conn.peer.token, conn.peer.auth_username)
            btp_wire.append_btp(conn.writer, conn.out, auth)
        self._mark_dirty(conn)
        self._on_messages(conn)

    def _on_messages(self, conn: Connection) -> None:
        parser = conn.parser
        messages = parser.parse()
        if messages:
            self._handle_messages(conn, messages)
        if parser.failure is not None and conn.state is not State.CLOSED:
            log.info("WebSocket protocol error", extra={**conn.log_fields(), "error": str(parser.failure)})
            self._close(conn, parser.failure.code, parser.failure.reason)

    def _handle_messages(self, conn: Connection, messages: list) -> None:
        """Each message in turn.  While the connection is open, runs of packet-path messages
        (a BTP Message carrying a Prepare, a Response carrying a Fulfill or Reject to one of
        our requests) become ingress records in one C call; any other message goes through
        the general path (`_on_message`: auth, control frames, errors, other BTP frames)."""
        now_ns = time.monotonic_ns()
        records, total, index, frames_in = self._records, len(messages), 0, 0
        try:
            while index < total:
                if conn.state is _OPEN:
                    taken = _wire.ingress_records(messages, index, records, self.config.io_index, conn.peer.index,
                                                  conn.id, now_ns, self._max_body, conn.outstanding)
                    frames_in += taken - index
                    index = taken
                    if index == total:
                        break
                opcode, payload = messages[index]
                if not self._on_message(conn, opcode, payload, now_ns):
                    return
                frames_in += opcode == OP_BINARY
                index += 1
        finally:
            self.stats["frames_in"] += frames_in

    def _on_message(self, conn: Connection, opcode: int, payload, now_ns: int) -> bool:
        """One message by the general path; False when the rest must be ignored."""
        if conn.state is State.CLOSED:
            return False
        if opcode == OP_BINARY:
            self._on_btp(conn, payload, now_ns)
        elif opcode == OP_PING:
            conn.writer.append(conn.out, OP_PONG, payload)
            self._mark_dirty(conn)
        elif opcode == OP_CLOSE:
            self._on_close_frame(conn, payload)
            return False
        elif opcode == OP_TEXT:
            self._close(conn, CLOSE_UNSUPPORTED_DATA, "BTP is carried in binary messages")
            return False
        # OP_PONG: nothing to do
        return True

    def _on_close_frame(self, conn: Connection, payload) -> None:
        code, reason = parse_close(payload)
        if conn.state is not State.CLOSING:  # the peer started closing: answer, then hang up
            self._report_down(conn)
            conn.writer.append_close(conn.out, code if code != CLOSE_NO_STATUS else CLOSE_NORMAL)
            self._flush(conn)
        self._teardown(conn, f"peer closed the WebSocket ({code} {reason[:60]})")

    # ================================================================= BTP

    def _on_btp(self, conn: Connection, payload, now_ns: int) -> None:
        if conn.state is State.OPEN:
            fast = btp_wire.split_ilp_frame(payload)  # the packet path's frames, without objects
            if fast is not None:
                frame_type, request_id, packet = fast
                if frame_type == btp.MESSAGE:
                    self._on_prepare(conn, request_id, packet, now_ns)
                else:
                    self._on_reply(conn, request_id, now_ns, packet=packet)
                return
        try:
            frame = btp.decode_frame(payload)
        except CodecError as exc:
            if conn.state is State.AUTH:
                self._refuse_auth(conn, btp_wire.request_id_of(payload), f"malformed BTP frame: {exc}")
            else:
                self._malformed(conn, payload, exc)
            return
        if conn.state is State.OPEN:
            self._dispatch(conn, frame, now_ns)
        elif conn.state is State.AUTH:
            if conn.server_side:
                self._authenticate(conn, frame)
            else:
                self._on_auth_answer(conn, frame)
        # State.CLOSING: the peer's late frames are dropped

    def _dispatch(self, conn: Connection, frame: btp.Frame, now_ns: int) -> None:
        if isinstance(frame, btp.BtpMessage):
            entry = btp.find_protocol_data(frame.protocol_data, btp.ILP)
            if entry is None:  # another sub-protocol: acknowledge it, as ilp-plugin-btp does
                self._send_btp(conn, btp.BtpResponse(frame.request_id, ()))
            else:
                self._on_prepare(conn, frame.request_id, entry.data, now_ns)
        elif isinstance(frame, btp.BtpResponse):
            entry = btp.find_protocol_data(frame.protocol_data, btp.ILP)
            self._on_reply(conn, frame.request_id, now_ns, packet=None if entry is None else entry.data)
        elif isinstance(frame, btp.BtpError):
            self._on_reply(conn, frame.request_id, now_ns, error=frame)
        else:  # Transfer: settlement over BTP is not handled by the transport
            self._send_btp(conn, btp_wire.error(frame.request_id, "BTP Transfer is not supported"))

    def _on_prepare(self, conn: Connection, request_id: int, packet, now_ns: int) -> None:
        # Not a Prepare, or too big for a slot: answered here, at the edge, with an ILP
        # Reject F01 (the workers check everything else about a Prepare).
        if not packet or packet[0] != ilp.PREPARE:
            return self._answer_ilp(conn, request_id, self._reject(
                ilp.F01_INVALID_PACKET, "ilp data of a BTP Message must be an ILP Prepare"))
        if len(packet) > self._max_body:
            return self._answer_ilp(conn, request_id, self._reject(
                ilp.F01_INVALID_PACKET, f"ILP packet over {self._max_body} bytes"))
        self._records.append(self._record(Ingress.PREPARE, conn.peer.index, conn.id, request_id, now_ns, packet))

    def _on_reply(self, conn: Connection, request_id: int, now_ns: int, *, packet=None,
                  error: btp.BtpError | None = None) -> None:
        if conn.outstanding.pop(request_id, None) is None:
            log.debug("BTP reply to no request of ours", extra={**conn.log_fields(), "request_id": request_id})
            return
        if error is not None:
            detail = bytes(error.data[:200]).decode("utf-8", "replace")
            body = self._reject(ilp.T01_PEER_UNREACHABLE,
                                f"peer {conn.peer.name} answered with BTP error {error.code} {error.name}: {detail}")
        elif not packet or packet[0] not in (ilp.FULFILL, ilp.REJECT) or len(packet) > self._max_body:
            body = self._reject(ilp.F00_BAD_REQUEST, f"peer {conn.peer.name} answered without an ILP Fulfill or Reject")
        else:
            body = packet
        self._records.append(self._record(Ingress.REPLY, conn.peer.index, conn.id, request_id, now_ns, body))

    def _record(self, kind: int, peer_index: int, conn_id: int, request_id: int, ns: int, body=b"") -> bytes:
        """An ingress record: its header, then `body` (copied)."""
        return INGRESS.pack(kind, self.config.io_index, peer_index, conn_id, request_id, 0, ns) + body

    def _reject(self, code: str, message: str) -> bytes:
        return ilp.encode_reject(ilp.Reject(code, self.config.ilp_address, message[:1000]))

    def _malformed(self, conn: Connection, payload, exc: Exception) -> None:
        conn.bad_frames += 1
        self.stats["malformed_btp"] += 1
        log.info("malformed BTP frame", extra={**conn.log_fields(), "error": str(exc)})
        self._send_btp(conn, btp_wire.error(btp_wire.request_id_of(payload), f"malformed BTP frame: {exc}"))
        if conn.bad_frames > self.config.max_bad_frames:
            self._close(conn, CLOSE_POLICY_VIOLATION, "too many malformed BTP frames")

    def _answer_ilp(self, conn: Connection, request_id: int, packet: bytes) -> None:
        btp_wire.append_ilp_frame(conn.writer, conn.out, btp.RESPONSE, request_id, packet)
        self._mark_dirty(conn)

    def _send_btp(self, conn: Connection, frame: btp.Frame) -> None:
        btp_wire.append_btp(conn.writer, conn.out, frame)
        self._mark_dirty(conn)

    # ----------------------------------------------------------------- auth

    def _authenticate(self, conn: Connection, frame: btp.Frame) -> None:
        """Server side: the first frame must be the auth Message of a known peer with its secret."""
        if not isinstance(frame, btp.BtpMessage):
            self._refuse_auth(conn, frame.request_id, "first message must be a BTP auth Message")
            return
        try:
            username, token = btp.parse_auth(frame)
        except CodecError as exc:
            self._refuse_auth(conn, frame.request_id, str(exc))
            return
        peer = peek(self._server_peers, username or "")
        secret = peer.secret.encode("utf-8") if peer is not None else _DUMMY_SECRET
        if not hmac.compare_digest(token.encode("utf-8"), secret) or peer is None:
            log.warning("BTP auth refused", extra={**conn.log_fields(), "username": username,
                                                   "reason": "unknown user" if peer is None else "wrong token"})
            self._refuse_auth(conn, frame.request_id, "invalid auth_username or auth_token")
            return
        self._send_btp(conn, btp.BtpResponse(frame.request_id, ()))
        self._unauthenticated -= 1
        conn.parser.max_message_size = peer.max_message_size
        conn.parser.reserve(self.config.recv_buffer_size)
        self._bring_up(conn, peer)

    def _refuse_auth(self, conn: Connection, request_id: int, reason: str) -> None:
        self._send_btp(conn, btp_wire.error(request_id, reason))
        self._close(conn, CLOSE_POLICY_VIOLATION, "authentication failed")

    def _on_auth_answer(self, conn: Connection, frame: btp.Frame) -> None:
        """Client side: wait for the answer to our auth Message before anything else."""
        if frame.request_id != conn.auth_request_id or not isinstance(frame, (btp.BtpResponse, btp.BtpError)):
            log.debug("BTP frame before auth completed; dropped", extra=conn.log_fields())
            return
        if isinstance(frame, btp.BtpError):
            detail = bytes(frame.data[:200]).decode("utf-8", "replace")
            log.warning("peer refused our BTP auth", extra={**conn.log_fields(), "error": f"{frame.code} {detail}"})
            self._close(conn, CLOSE_NORMAL, "authentication refused")
            return
        self._bring_up(conn, conn.peer)

    def _bring_up(self, conn: Connection, peer: Peer) -> None:
        previous = peek(self._current, peer.index)
        if previous is not None and previous is not conn:
            self._close(previous, CLOSE_NORMAL, "replaced by a newer connection of the same peer")
        conn.peer = peer
        conn.state = State.OPEN
        conn.deadline = 0.0
        conn.up_since = time.monotonic()
        conn.reported_up = True
        self._current[peer.index] = conn
        self._records.append(self._record(Ingress.PEER_UP, peer.index, conn.id, 0, time.monotonic_ns()))
        log.info("peer connected", extra=conn.log_fields())

    def _report_down(self, conn: Connection) -> None:
        if peek(self._current, conn.peer.index if conn.peer else -1) is conn:
            del self._current[conn.peer.index]
        if conn.reported_up:
            conn.reported_up = False
            self._records.append(self._record(Ingress.PEER_DOWN, conn.peer.index, conn.id, 0, time.monotonic_ns()))
            log.info("peer disconnected", extra={**conn.log_fields(), "in_flight": len(conn.outstanding)})

    # ================================================================= ingress ring

    def _publish(self) -> None:
        """Publish this turn's records; what does not fit waits in `_stalled`."""
        records = self._records
        if not records:
            return
        self._records = []
        if self._stalled:
            self._stall(records, 0)
            return
        done = self._put_records(records)
        if done < len(records):
            self._stall(records, done)

    def _put_records(self, records: list[bytes]) -> int:
        """Copy records into the ingress ring, in order, as far as they fit; how many went."""
        ring, total, done = self._in, len(records), 0
        try:
            while done < total:  # a second claim takes what the workers freed meanwhile
                count = ring.try_put_many(records, done)
                if not count:
                    break
                done += count
        except RingClosed:
            log.warning("ingress ring closed; records dropped", extra={"count": total - done})
            return total
        self.stats["ingress_records"] += done
        return done

    def _stall(self, records: list[bytes], done: int) -> None:
        was_flowing = not self._stalled
        self._stalled.extend(records[done:])
        if was_flowing:
            self.stats["ingress_stalls"] += 1
            log.warning("ingress ring full: reading paused", extra={"waiting": len(self._stalled)})
            self._update_all_interests()

    def _update_all_interests(self) -> None:
        for conn in self._connections.values():
            self._set_interest(conn)

    def _retry_stalled(self) -> None:
        if not self._stalled:
            return
        records = list(self._stalled)
        done = self._put_records(records)
        for _ in range(done):
            self._stalled.popleft()
        if not self._stalled:
            log.info("ingress ring has room again: reading resumed")
            self._update_all_interests()

    # ================================================================= egress ring

    def _drain_egress(self) -> bool:
        """Move egress records into connection buffers; True if more are probably waiting.

        Each batch is copied out of the ring in one call and its slots released at once;
        the packet path's records become frames in C (`_wire.egress_frames`), the rest go
        one by one through `_on_egress`, in order."""
        ring, batch = self._out, self._egress_batch
        frames_out = 0
        try:
            for _ in range(self._egress_batches):
                first, count = ring.try_consume(batch)
                if not count:
                    return False
                blob = ring.read_many(first, count)
                ring.release(first, count)
                self.stats["egress_records"] += count
                now_ns = time.monotonic_ns()
                frames_out += self._frame_egress(blob, now_ns, now_ns / 1e9)
            return True
        finally:
            self.stats["frames_out"] += frames_out

    def _frame_egress(self, blob: bytes, now_ns: int, now: float) -> int:
        """The records of one `read_many` blob, in order; how many frames the fast path wrote."""
        forward, answer = self._latency
        current, connections, dirty, soft_limit = self._current, self._connections, self._dirty, self._soft_limit
        offset, end, frames_out = 0, len(blob), 0
        while offset < end:
            offset, frames, over_limit = _wire.egress_frames(blob, offset, current, connections, _OPEN, now_ns,
                                                             now, forward, answer, soft_limit, dirty)
            frames_out += frames
            if over_limit is not None:
                self._mark_dirty(over_limit)
            elif offset < end:  # a record for the general path
                (length,) = READ_MANY_LENGTH.unpack_from(blob, offset)
                self._on_egress(memoryview(blob)[offset + 4 : offset + 4 + length], now)
                offset += 4 + length
        return frames_out

    def _on_egress(self, view: memoryview, now: float) -> None:
        """One egress record by the general path (closes, unreachable peers, unknown kinds)."""
        kind, _, peer_index, conn_id, request_id, _, entered_ns = EGRESS.unpack_from(view, 0)
        body = view[HEADER_SIZE:]
        conn = peek(self._current, peer_index) if conn_id == 0 else peek(self._connections, conn_id)
        if conn is None or conn.state is not State.OPEN or conn.peer.index != peer_index:
            self._undeliverable(kind, peer_index, conn_id, request_id, entered_ns)
            return
        if kind == Egress.PREPARE:
            if conn.outstanding.setdefault(request_id, now) != now:
                log.warning("request id reused while outstanding", extra={**conn.log_fields(), "request_id": request_id})
            btp_wire.append_ilp_frame(conn.writer, conn.out, btp.MESSAGE, request_id, body)
        elif kind == Egress.REPLY:
            btp_wire.append_ilp_frame(conn.writer, conn.out, btp.RESPONSE, request_id, body)
        elif kind == Egress.CLOSE:
            self._close(conn, CLOSE_NORMAL, bytes(body).decode("utf-8", "replace"))
            return
        else:
            log.warning("unknown egress record kind", extra={"kind": kind, "peer_index": peer_index})
            return
        self.stats["frames_out"] += 1
        self._mark_dirty(conn)

    def _undeliverable(self, kind: int, peer_index: int, conn_id: int, request_id: int, entered_ns: int) -> None:
        peer = peek(self.peers, peer_index)
        name = peer.name if peer else f"#{peer_index}"
        if kind == Egress.PREPARE:
            self.stats["unreachable"] += 1
            body = self._reject(ilp.T01_PEER_UNREACHABLE, f"peer {name} is not connected")
            self._records.append(self._record(Ingress.REPLY, peer_index, conn_id, request_id, time.monotonic_ns(), body))
        elif kind == Egress.REPLY:
            log.info("reply dropped: its connection is gone",
                     extra={"peer": name, "connection_id": conn_id, "request_id": request_id})

    # ================================================================= writing

    def _mark_dirty(self, conn: Connection) -> None:
        if not conn.dirty:
            conn.dirty = True
            self._dirty.append(conn)
        size = len(conn.out)
        if size > self.config.output_soft_limit:
            if size > self.config.output_hard_limit:
                self._teardown(conn, f"peer too slow: {size} bytes of output queued")
            elif conn.interest & _READ:
                self._set_interest(conn)

    def _flush_dirty(self) -> None:
        dirty, self._dirty = self._dirty, []
        closed = State.CLOSED
        for conn in dirty:
            conn.dirty = False
            if conn.state is not closed:
                self._flush(conn)

    def _flush(self, conn: Connection) -> None:
        """One `send` of everything queued; what the kernel did not take waits for EVENT_WRITE."""
        out = conn.out
        if out:
            try:
                sent = conn.sock.send(out)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                self._teardown(conn, f"send failed: {exc}")
                return
            del out[:sent]
            self.stats["bytes_out"] += sent
        # (reading, nothing left to write: the interest is already right)
        state = conn.state
        if state is not State.CLOSED and (out or conn.interest != _READ or self._stalled or state is State.CONNECTING):
            self._set_interest(conn)

    def _set_interest(self, conn: Connection) -> None:
        if conn.state is State.CLOSED:
            return
        if conn.state is State.CONNECTING:
            wanted = _WRITE
        else:
            reading = not self._stalled and len(conn.out) <= self.config.output_soft_limit
            wanted = (_READ if reading else 0) | (_WRITE if conn.out else 0)
        if wanted == conn.interest:
            return
        if conn.interest == 0:
            self._epoll.register(conn.fd, wanted)
            self._targets[conn.fd] = conn
        elif wanted == 0:
            self._unregister(conn)
        else:
            self._epoll.modify(conn.fd, wanted)
        conn.interest = wanted

    def _unregister(self, conn: Connection) -> None:
        self._epoll.unregister(conn.fd)
        del self._targets[conn.fd]

    # ================================================================= closing

    def _close(self, conn: Connection, code: int, reason: str) -> None:
        """Start the closing handshake (or just hang up before the WebSocket is open)."""
        if conn.state in (State.CLOSING, State.CLOSED):
            return
        self._report_down(conn)
        if conn.parser is None:
            self._flush(conn)
            self._teardown(conn, reason)
            return
        log.info("closing connection", extra={**conn.log_fields(), "code": code, "reason": reason})
        conn.writer.append_close(conn.out, code, reason)
        conn.state = State.CLOSING
        conn.deadline = time.monotonic() + self.config.close_timeout
        self._mark_dirty(conn)

    def _teardown(self, conn: Connection, reason: str) -> None:
        """Drop the socket now; report the peer down; schedule a redial for client-role peers."""
        if conn.state is State.CLOSED:
            return
        self._report_down(conn)
        if conn.server_side and conn.peer is None:
            self._unauthenticated -= 1
        conn.state = State.CLOSED
        if conn.interest:
            self._unregister(conn)
            conn.interest = 0
        conn.sock.close()
        self._connections.pop(conn.id, None)
        log.log(logging.INFO if conn.peer else logging.DEBUG, "connection closed",
                extra={**conn.log_fields(), "reason": reason})
        if conn.link is not None and not self._stopping:
            self._schedule_redial(conn.link, conn.up_since)

    # ================================================================= timers

    def _run_timers(self, now: float) -> None:
        for link in self._links:
            if link.conn is None and now >= link.next_at and not self._stopping:
                self._dial(link)
        if now < self._next_sweep:
            return
        self._next_sweep = now + _SWEEP_INTERVAL
        oldest_allowed = now - self.config.outstanding_max_age
        for conn in list(self._connections.values()):
            if conn.deadline and now >= conn.deadline:
                self._on_deadline(conn)
            elif conn.outstanding:
                _forget_older(conn.outstanding, oldest_allowed)

    def _on_deadline(self, conn: Connection) -> None:
        if conn.state is State.CLOSING:
            self._teardown(conn, "closing handshake timed out")
        else:
            log.info("handshake or auth timed out", extra=conn.log_fields())
            self._close(conn, CLOSE_POLICY_VIOLATION, "authentication timed out")


def _forget_older(outstanding: dict[int, float], oldest_allowed: float) -> None:
    """Drop requests sent before `oldest_allowed` (the dict is in send order)."""
    while outstanding:
        request_id = next(iter(outstanding))
        if outstanding[request_id] >= oldest_allowed:
            return
        del outstanding[request_id]


def _own_handle(source: Ring | str) -> Ring:
    return Ring.attach(source) if isinstance(source, str) else source.handle()


def _remote(address) -> str:
    return f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)
