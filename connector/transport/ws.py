"""Sans-I/O WebSocket (RFC 6455): handshakes, a batching frame parser, frame encoders.

Nothing here touches a socket or a clock.  The I/O thread reads into the parser's own
receive buffer (`FrameParser.writable` / `advance`), asks it for every complete message
in one call (`FrameParser.parse`), and appends outgoing frames to one bytearray per
connection (`FrameWriter`), which it flushes with one `send`.

Zero copy: `parse` returns payloads as memoryview slices of the parser's buffer, unmasked
in place.  They stay valid until the next `writable()` or `feed()` (which may move the
unparsed tail to the front), and like every memoryview in the connector they belong to
the one thread that owns the parser (docs/runtime.md).

Frame parsing runs in C (`_wire.parse_frames`); `parse_frames_py` is its reference and
the tests hold the two to the same results and errors.

Only what BTP needs is negotiated: no extensions (an offered permessage-deflate is
declined), no subprotocol.  A peer that breaks the protocol gets a `ProtocolError`
carrying the close code to send: 1002 protocol error, 1007 bad UTF-8, 1009 too big.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import struct

from ._wire import parse_frames

# --- opcodes and close codes ------------------------------------------------------

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA
_DATA_OPCODES = frozenset({OP_TEXT, OP_BINARY})
_CONTROL_OPCODES = frozenset({OP_CLOSE, OP_PING, OP_PONG})

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_NO_STATUS = 1005  # never sent: an empty close payload means it
CLOSE_INVALID_PAYLOAD = 1007
CLOSE_POLICY_VIOLATION = 1008
CLOSE_MESSAGE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011

MAX_CONTROL_PAYLOAD = 125
MAX_FRAME_HEADER = 14
DEFAULT_MAX_MESSAGE_SIZE = 1 << 16
DEFAULT_BUFFER_SIZE = 1 << 18
DEFAULT_MAX_HEAD = 16 * 1024

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_U16 = struct.Struct(">H")
_U64 = struct.Struct(">Q")
_HEAD_END = b"\r\n\r\n"


class ProtocolError(Exception):
    """The peer broke RFC 6455; `code` is the close code to answer with."""

    def __init__(self, code: int, reason: str):
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


class HandshakeError(Exception):
    """A handshake failed; `response` is what a server sends back before closing (may be empty)."""

    def __init__(self, message: str, response: bytes = b""):
        super().__init__(message)
        self.response = response


# --- handshake --------------------------------------------------------------------


def accept_key(key: str | bytes) -> str:
    """The `Sec-WebSocket-Accept` value for a `Sec-WebSocket-Key`."""
    raw = key.encode("ascii") if isinstance(key, str) else bytes(key)
    return base64.b64encode(hashlib.sha1(raw + _GUID).digest()).decode("ascii")


def _header_tokens(value: str) -> set[str]:
    return {token.strip().lower() for token in value.split(",") if token.strip()}


def _parse_head(head: bytes) -> tuple[str, dict[str, str]]:
    """Split an HTTP/1.1 head into its start line and lower-cased headers (repeats joined by ',')."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError as exc:  # pragma: no cover - latin-1 decodes anything
        raise ValueError("undecodable head") from exc
    lines = text.split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        if line[0] in " \t":
            raise ValueError("obsolete header line folding")
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip() or not name.isascii():
            raise ValueError(f"malformed header line {line[:60]!r}")
        name = name.lower()
        value = value.strip(" \t")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return lines[0], headers


class _HeadReader:
    """Accumulates bytes until the blank line that ends an HTTP head, within a size limit."""

    def __init__(self, max_head: int):
        self.max_head = max_head
        self._data = bytearray()
        self.head = b""
        self.leftover = b""

    def feed(self, data) -> bool:
        start = max(0, len(self._data) - 3)
        self._data += data
        end = self._data.find(_HEAD_END, start)
        if end < 0:
            if len(self._data) > self.max_head:
                raise ValueError(f"HTTP head longer than {self.max_head} bytes")
            return False
        if end + 4 > self.max_head:
            raise ValueError(f"HTTP head longer than {self.max_head} bytes")
        self.head = bytes(self._data[:end])
        self.leftover = bytes(self._data[end + 4 :])
        self._data = bytearray()
        return True


def _http_response(status: str, headers: tuple[tuple[str, str], ...] = (), body: str = "") -> bytes:
    lines = [f"HTTP/1.1 {status}"]
    lines += [f"{name}: {value}" for name, value in headers]
    payload = body.encode("utf-8")
    lines += [f"Content-Length: {len(payload)}", "Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1") + payload


def _bad_request(reason: str, status: str = "400 Bad Request", headers=()) -> HandshakeError:
    return HandshakeError(reason, _http_response(status, headers, reason + "\n"))


class ServerHandshake:
    """The server side of the opening handshake, fed bytes as they arrive.

    `feed` returns True once a valid Upgrade request is complete; then `response` holds the
    101 answer, `path` and `headers` describe the request and `leftover` any bytes the
    client sent after it.  A bad request raises `HandshakeError` whose `response` is a
    400 (426 for a WebSocket version other than 13).
    """

    def __init__(self, *, max_head: int = DEFAULT_MAX_HEAD):
        self._reader = _HeadReader(max_head)
        self.path = ""
        self.headers: dict[str, str] = {}
        self.response = b""
        self.leftover = b""
        self.done = False

    def feed(self, data) -> bool:
        if self.done:
            raise HandshakeError("handshake already complete")
        try:
            if not self._reader.feed(data):
                return False
            start_line, headers = _parse_head(self._reader.head)
        except ValueError as exc:
            raise _bad_request(str(exc)) from None
        self.path = self._check_request_line(start_line)
        key = self._check_headers(headers)
        self.headers = headers
        self.leftover = self._reader.leftover
        self.response = _http_response_101(accept_key(key))
        self.done = True
        return True

    @staticmethod
    def _check_request_line(line: str) -> str:
        parts = line.split(" ")
        if len(parts) != 3:
            raise _bad_request(f"malformed request line {line[:80]!r}")
        method, target, version = parts
        if method != "GET":
            raise _bad_request(f"method {method[:16]!r} is not GET", "405 Method Not Allowed", (("Allow", "GET"),))
        if version != "HTTP/1.1":
            raise _bad_request(f"{version[:16]!r} is not HTTP/1.1")
        if not target.startswith("/"):
            raise _bad_request("request target must be an absolute path")
        return target

    @staticmethod
    def _check_headers(headers: dict[str, str]) -> str:
        if "host" not in headers:
            raise _bad_request("missing Host header")
        if "websocket" not in _header_tokens(headers.get("upgrade", "")):
            raise _bad_request("missing 'Upgrade: websocket'")
        if "upgrade" not in _header_tokens(headers.get("connection", "")):
            raise _bad_request("missing 'Connection: Upgrade'")
        if headers.get("sec-websocket-version", "").strip() != "13":
            raise _bad_request("unsupported Sec-WebSocket-Version (13 only)", "426 Upgrade Required",
                               (("Sec-WebSocket-Version", "13"),))
        key = headers.get("sec-websocket-key", "").strip()
        try:
            decoded = base64.b64decode(key, validate=True)
        except (binascii.Error, ValueError):
            decoded = b""
        if len(decoded) != 16:
            raise _bad_request("Sec-WebSocket-Key must be 16 bytes in base64")
        return key


def _http_response_101(accept: str) -> bytes:
    return (
        "HTTP/1.1 101 Switching Protocols\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept}\r\n\r\n"
    ).encode("ascii")


class ClientHandshake:
    """The client side of the opening handshake: `request` to send, `feed` the answer."""

    def __init__(self, host: str, port: int, path: str = "/", *, key: str | None = None,
                 max_head: int = DEFAULT_MAX_HEAD):
        self.key = key or base64.b64encode(os.urandom(16)).decode("ascii")
        host_header = f"[{host}]" if ":" in host else host
        self.request = (
            f"GET {path or '/'} HTTP/1.1\r\n"
            f"Host: {host_header}:{port}\r\n"
            "Upgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {self.key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode("ascii")
        self._reader = _HeadReader(max_head)
        self.leftover = b""
        self.done = False

    def feed(self, data) -> bool:
        """True once a valid 101 arrived; `HandshakeError` if the server refused or answered badly."""
        try:
            if not self._reader.feed(data):
                return False
            status_line, headers = _parse_head(self._reader.head)
        except ValueError as exc:
            raise HandshakeError(f"bad handshake response: {exc}") from None
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or parts[0] != "HTTP/1.1" or parts[1] != "101":
            raise HandshakeError(f"server refused the upgrade: {status_line[:120]!r}")
        self._check_headers(headers)
        self.leftover = self._reader.leftover
        self.done = True
        return True

    def _check_headers(self, headers: dict[str, str]) -> None:
        if "websocket" not in _header_tokens(headers.get("upgrade", "")):
            raise HandshakeError("101 without 'Upgrade: websocket'")
        if "upgrade" not in _header_tokens(headers.get("connection", "")):
            raise HandshakeError("101 without 'Connection: Upgrade'")
        if headers.get("sec-websocket-accept", "").strip() != accept_key(self.key):
            raise HandshakeError("wrong Sec-WebSocket-Accept")
        if headers.get("sec-websocket-extensions") or headers.get("sec-websocket-protocol"):
            raise HandshakeError("server selected an extension or subprotocol we did not offer")


# --- masking ----------------------------------------------------------------------


def unmask_into(view: memoryview, key: bytes) -> None:
    """XOR `view` in place with the 4-byte masking `key` (one big-int XOR: C speed)."""
    n = len(view)
    if n:
        pad = (key * ((n >> 2) + 1))[:n]
        view[:] = (int.from_bytes(view, "little") ^ int.from_bytes(pad, "little")).to_bytes(n, "little")


def masked(data, key: bytes) -> bytes:
    """A masked copy of `data`."""
    n = len(data)
    if not n:
        return b""
    pad = (key * ((n >> 2) + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(pad, "little")).to_bytes(n, "little")


# --- close payloads -----------------------------------------------------------------


def _valid_close_code(code: int) -> bool:
    if 3000 <= code <= 4999:
        return True
    return 1000 <= code <= 1014 and code not in (1004, 1005, 1006)


def parse_close(payload) -> tuple[int, str]:
    """(code, reason) of a close frame's payload; CLOSE_NO_STATUS when empty."""
    if len(payload) == 0:
        return CLOSE_NO_STATUS, ""
    if len(payload) == 1:
        raise ProtocolError(CLOSE_PROTOCOL_ERROR, "close frame with a 1-byte payload")
    code = _U16.unpack_from(payload, 0)[0]
    if not _valid_close_code(code):
        raise ProtocolError(CLOSE_PROTOCOL_ERROR, f"invalid close code {code}")
    try:
        reason = str(payload[2:], "utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(CLOSE_INVALID_PAYLOAD, "close reason is not UTF-8") from None
    return code, reason


def close_payload(code: int, reason: str = "") -> bytes:
    """A close frame payload; the reason is cut to fit the 125-byte control frame limit."""
    raw = reason.encode("utf-8")[: MAX_CONTROL_PAYLOAD - 2]
    return _U16.pack(code) + raw.decode("utf-8", "ignore").encode("utf-8")


# --- parser -----------------------------------------------------------------------


Message = tuple[int, "memoryview | bytes"]

# parse_frames statuses: out of complete frames; stopped after a close frame; stopped at
# the first frame of a fragmented message (the parser reassembles those itself).
STATUS_MORE, STATUS_CLOSED, STATUS_FRAGMENT = 0, 1, 2


def parse_frames_py(view: memoryview, start: int, end: int, expect_masked: bool, max_message_size: int,
                    messages: list[Message]) -> tuple[int, int, int, tuple[int, str] | None]:
    """Every complete frame of `view[start:end]` up to the first fragmented one, with no
    fragmented message in progress: checks each header (as `FrameParser._check_header`),
    unmasks payloads in place, checks text and close payloads, and appends
    (opcode, payload slice of `view`) to `messages`.

    Returns (pos, need, status, error): pos is the first byte not consumed (the frame that
    failed, for a header error); need is the size of a frame whose header arrived but not
    its payload (else 0); status one of STATUS_*; error None or (close code, reason), in
    which case `messages` holds what came before.  The reference for `_wire.parse_frames`.
    """
    pos, need = start, 0
    while end - pos >= 2:
        b0, b1 = view[pos], view[pos + 1]
        try:
            sizes = _frame_sizes(view, pos, end)
        except ProtocolError as exc:
            return pos, need, STATUS_MORE, (exc.code, exc.reason)
        if sizes is None:
            break
        length, header = sizes
        masked = bool(b1 & 0x80)
        opcode = b0 & 0x0F
        error = _header_error(b0, masked, opcode, length, expect_masked, None, max_message_size)
        if error is not None:
            return pos, need, STATUS_MORE, error
        if opcode in _DATA_OPCODES and not b0 & 0x80:
            return pos, need, STATUS_FRAGMENT, None
        total = header + length
        if end - pos < total:
            return pos, total, STATUS_MORE, None
        payload = view[pos + header : pos + total]
        if masked:
            unmask_into(payload, bytes(view[pos + header - 4 : pos + header]))
        pos, need = pos + total, 0
        if opcode == OP_CLOSE:
            try:
                parse_close(payload)
            except ProtocolError as exc:
                return pos, need, STATUS_MORE, (exc.code, exc.reason)
            messages.append((opcode, payload))
            return pos, need, STATUS_CLOSED, None
        if opcode == OP_TEXT:
            try:
                _checked(opcode, payload)
            except ProtocolError as exc:
                return pos, need, STATUS_MORE, (exc.code, exc.reason)
        messages.append((opcode, payload))
    return pos, need, STATUS_MORE, None


def _frame_sizes(buf, pos: int, end: int) -> tuple[int, int] | None:
    """(payload length, header length with any mask key) of the frame at `pos`, or None
    while its header is incomplete; ProtocolError for a 64-bit length with the top bit."""
    b1 = buf[pos + 1]
    length, header = b1 & 0x7F, 2
    if length == 126:
        if end - pos < 4:
            return None
        length, header = _U16.unpack_from(buf, pos + 2)[0], 4
    elif length == 127:
        if end - pos < 10:
            return None
        length, header = _U64.unpack_from(buf, pos + 2)[0], 10
        if length >> 63:
            raise ProtocolError(CLOSE_PROTOCOL_ERROR, "64-bit length with the top bit set")
    return length, header + 4 if b1 & 0x80 else header


def _header_error(b0: int, masked: bool, opcode: int, length: int, expect_masked: bool,
                  fragments: int | None, max_message_size: int) -> tuple[int, str] | None:
    """What is wrong with a frame header, as (close code, reason); `fragments` is the size
    of the fragmented message in progress, None when there is none."""
    if b0 & 0x70:
        return CLOSE_PROTOCOL_ERROR, "reserved bits set without a negotiated extension"
    if masked != expect_masked:
        return CLOSE_PROTOCOL_ERROR, ("client frames must be masked" if expect_masked
                                      else "server frames must not be masked")
    if opcode in _CONTROL_OPCODES:
        if not b0 & 0x80:
            return CLOSE_PROTOCOL_ERROR, "fragmented control frame"
        if length > MAX_CONTROL_PAYLOAD:
            return CLOSE_PROTOCOL_ERROR, "control frame payload over 125 bytes"
        return None
    if opcode == OP_CONTINUATION:
        if fragments is None:
            return CLOSE_PROTOCOL_ERROR, "continuation frame without a message to continue"
        so_far = fragments
    elif opcode in _DATA_OPCODES:
        if fragments is not None:
            return CLOSE_PROTOCOL_ERROR, "new message before the fragmented one ended"
        so_far = 0
    else:
        return CLOSE_PROTOCOL_ERROR, f"unknown opcode {opcode:#x}"
    if so_far + length > max_message_size:
        return CLOSE_MESSAGE_TOO_BIG, f"message of {so_far + length}+ bytes exceeds {max_message_size}"
    return None


class FrameParser:
    """Turns received bytes into whole messages, many per call.

    `expect_masked` is True on the server side (client frames must be masked) and False
    on the client side (server frames must not be).  A message larger than
    `max_message_size` fails with 1009 as soon as a frame header announces it, before
    its payload is buffered.  After a failure, `failure` holds the `ProtocolError` and
    `parse` returns nothing more; after a close frame, `closed` is True.
    """

    def __init__(self, *, expect_masked: bool, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
                 buffer_size: int = DEFAULT_BUFFER_SIZE):
        if max_message_size < MAX_CONTROL_PAYLOAD:
            raise ValueError("max_message_size must be at least 125 bytes")
        self.expect_masked = expect_masked
        self.max_message_size = max_message_size
        self.failure: ProtocolError | None = None
        self.closed = False
        self._buf = bytearray(max(buffer_size, 4096))
        self._view = memoryview(self._buf)
        self._start = 0  # first unparsed byte
        self._end = 0  # one past the last received byte
        self._need = 0  # bytes the frame at _start needs in all, once its header is known
        self._fragments: bytearray | None = None  # a fragmented message being reassembled
        self._fragment_opcode = 0

    # ----------------------------------------------------------------- input

    @property
    def buffered(self) -> int:
        """Received bytes not yet parsed."""
        return self._end - self._start

    def writable(self, min_free: int = 4096) -> memoryview:
        """The free tail of the receive buffer, for `recv_into`; invalidates earlier payloads."""
        start, end, need = self._start, self._end, self._need
        if start == end:
            self._start = self._end = start = end = 0
        pending = end - start
        # Room for the rest of a partly received frame is enough; otherwise min_free.
        want_free = min(min_free, need - pending) if need > pending else min_free
        capacity = len(self._buf)
        if capacity - end < want_free or capacity - start < need:
            while capacity - pending < want_free or capacity < need:
                capacity *= 2
            self._compact(capacity)
            end = self._end
        return self._view[end:]

    def reserve(self, capacity: int) -> None:
        """Grow the receive buffer to at least `capacity` bytes (e.g. once a peer has authenticated)."""
        if capacity > len(self._buf):
            self._compact(capacity)

    def advance(self, count: int) -> None:
        """Record that `count` bytes were written at the start of `writable()`."""
        if not 0 <= count <= len(self._buf) - self._end:
            raise ValueError(f"advance({count}) exceeds the free buffer")
        self._end += count

    def feed(self, data) -> None:
        """Copy `data` in (the convenience path; sockets use `writable` / `advance`)."""
        data = memoryview(data).cast("B")
        while len(data):
            tail = self.writable(min(len(data), 1 << 16))
            n = min(len(tail), len(data))
            tail[:n] = data[:n]
            tail.release()
            self.advance(n)
            data = data[n:]

    def _compact(self, capacity: int) -> None:
        """Move the unparsed tail to the front of a buffer of `capacity` bytes."""
        pending = bytes(self._view[self._start : self._end])
        if capacity != len(self._buf):
            # Never resize in place: payload views handed out earlier may still pin the old one.
            self._view.release()
            self._buf = bytearray(capacity)
            self._view = memoryview(self._buf)
        self._buf[: len(pending)] = pending
        self._start, self._end = 0, len(pending)

    # ----------------------------------------------------------------- parsing

    def parse(self) -> list[Message]:
        """Every complete message in the buffer, as (opcode, payload).

        Data messages come as OP_TEXT / OP_BINARY (payload a memoryview, or bytes for a
        reassembled fragmented message); control frames as OP_PING / OP_PONG / OP_CLOSE
        (the caller answers a ping with a pong and a close with a close; `parse_close`
        reads a close payload, already validated here).
        """
        messages: list[Message] = []
        if self.failure is not None or self.closed:
            return messages
        try:
            self._parse_into(messages)
        except ProtocolError as error:
            self.failure = error
        return messages

    def _parse_into(self, messages: list[Message]) -> None:
        while True:
            if self._fragments is None:  # the common case: whole frames, in C
                pos, need, status, error = parse_frames(self._view, self._start, self._end, self.expect_masked,
                                                        self.max_message_size, messages)
                self._start, self._need = pos, need
                if error is not None:
                    raise ProtocolError(*error)
                if status == STATUS_CLOSED:
                    self.closed = True
                    return
                if status != STATUS_FRAGMENT:
                    return
            if not self._parse_fragmented(messages):
                return

    def _parse_fragmented(self, messages: list[Message]) -> bool:
        """Frames one by one while a fragmented message is reassembled; True once it is
        complete (and parsing may go on), False when out of bytes or closed."""
        buf, view, pos, end = self._buf, self._view, self._start, self._end
        while end - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            sizes = _frame_sizes(buf, pos, end)
            if sizes is None:
                break
            length, header = sizes
            opcode = b0 & 0x0F
            self._check_header(b0, b1, opcode, length)
            total = header + length
            if end - pos < total:
                self._need = total
                break
            payload = view[pos + header : pos + total]
            if b1 & 0x80:
                unmask_into(payload, bytes(buf[pos + header - 4 : pos + header]))
            pos += total
            self._start, self._need = pos, 0
            if self._deliver(b0 & 0x80, opcode, payload, messages):
                return False
            if self._fragments is None:
                return True
        self._start = pos
        return False

    def _check_header(self, b0: int, b1: int, opcode: int, length: int) -> None:
        fragments = None if self._fragments is None else len(self._fragments)
        error = _header_error(b0, bool(b1 & 0x80), opcode, length, self.expect_masked, fragments,
                              self.max_message_size)
        if error is not None:
            raise ProtocolError(*error)

    def _deliver(self, fin: int, opcode: int, payload: memoryview, messages: list[Message]) -> bool:
        """Hand a complete frame on; True when parsing must stop (a close frame)."""
        if opcode == OP_CLOSE:
            parse_close(payload)
            self.closed = True
            messages.append((opcode, payload))
            return True
        if opcode in _CONTROL_OPCODES:
            messages.append((opcode, payload))
        elif opcode == OP_CONTINUATION:
            self._fragments += payload
            if fin:
                data, self._fragments = bytes(self._fragments), None
                messages.append(_checked(self._fragment_opcode, data))
        elif fin:
            messages.append(_checked(opcode, payload))
        else:
            self._fragments, self._fragment_opcode = bytearray(payload), opcode
        return False


def _checked(opcode: int, payload) -> Message:
    if opcode == OP_TEXT:
        try:
            str(payload, "utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(CLOSE_INVALID_PAYLOAD, "text message is not UTF-8") from None
    return opcode, payload


# --- encoder ----------------------------------------------------------------------


def frame_header(opcode: int, length: int, *, fin: bool = True, mask_key: bytes | None = None) -> bytes:
    """The header of one frame (with the masking key appended when given)."""
    first = (0x80 if fin else 0) | opcode
    mask_bit = 0x80 if mask_key is not None else 0
    if length < 126:
        head = bytes((first, mask_bit | length))
    elif length < 65536:
        head = bytes((first, mask_bit | 126)) + _U16.pack(length)
    else:
        head = bytes((first, mask_bit | 127)) + _U64.pack(length)
    return head + mask_key if mask_key is not None else head


class FrameWriter:
    """Appends frames to an output bytearray; masks them when writing as a client.

    Masking keys come from a pool refilled from `os.urandom` 4 KiB at a time, so a client
    writing thousands of frames per second makes one system call per 1024 frames.
    """

    __slots__ = ("mask", "_pool", "_pool_at")

    def __init__(self, *, mask: bool):
        self.mask = mask
        self._pool = b""
        self._pool_at = 0

    def next_key(self) -> bytes:
        """A fresh 4-byte masking key."""
        if self._pool_at + 4 > len(self._pool):
            self._pool, self._pool_at = os.urandom(4096), 0
        at = self._pool_at
        self._pool_at = at + 4
        return self._pool[at : at + 4]

    def append(self, out: bytearray, opcode: int, payload=b"", *, fin: bool = True) -> None:
        """Append one frame carrying `payload`."""
        self.append_parts(out, opcode, (payload,), len(payload), fin=fin)

    def append_parts(self, out: bytearray, opcode: int, parts, length: int, *, fin: bool = True) -> None:
        """Append one frame whose payload is the concatenation of `parts` (`length` bytes in all)."""
        if self.mask:
            key = self.next_key()
            out += frame_header(opcode, length, fin=fin, mask_key=key)
            out += masked(b"".join(parts), key)
            return
        out += frame_header(opcode, length, fin=fin)
        for part in parts:
            out += part

    def append_close(self, out: bytearray, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        self.append(out, OP_CLOSE, close_payload(code, reason) if code != CLOSE_NO_STATUS else b"")
