"""One peer socket as the I/O thread sees it: WebSocket state, buffers, BTP bookkeeping.

Only the I/O thread that owns a `Connection` touches it (its buffers and memoryviews
belong to that thread, docs/runtime.md).
"""

from __future__ import annotations

import enum
import socket

from .config import Peer
from .ws import ClientHandshake, FrameParser, FrameWriter, ServerHandshake


class State(enum.IntEnum):
    CONNECTING = 0  # client: TCP connect in progress
    HANDSHAKE = 1  # HTTP Upgrade in progress
    AUTH = 2  # WebSocket open, BTP auth not yet done
    OPEN = 3  # authenticated: packets flow
    CLOSING = 4  # our close frame is queued; waiting for the peer's, or EOF, or a deadline
    CLOSED = 5


class PeerLink:
    """A client-role peer: where to dial, the connection if any, and the reconnect schedule."""

    __slots__ = ("peer", "host", "port", "path", "attempt", "next_at", "conn")

    def __init__(self, peer: Peer, host: str, port: int, path: str):
        self.peer = peer
        self.host = host
        self.port = port
        self.path = path
        self.attempt = 0
        self.next_at = 0.0  # monotonic time of the next dial; 0: now
        self.conn: Connection | None = None


class Connection:
    """A socket with its WebSocket parser, output buffer and BTP state."""

    __slots__ = (
        "sock", "fd", "id", "remote", "server_side", "link", "peer", "state", "handshake",
        "parser", "writer", "out", "outstanding", "bad_frames", "deadline", "interest",
        "auth_request_id", "up_since", "dirty", "reported_up",
    )

    def __init__(self, sock: socket.socket, conn_id: int, remote: str, *, link: PeerLink | None,
                 deadline: float, max_head: int):
        self.sock = sock
        self.fd = sock.fileno()
        self.id = conn_id
        self.remote = remote
        self.server_side = link is None
        self.link = link
        self.peer: Peer | None = None if link is None else link.peer
        self.state = State.HANDSHAKE if link is None else State.CONNECTING
        self.handshake: ServerHandshake | ClientHandshake = (
            ServerHandshake(max_head=max_head) if link is None
            else ClientHandshake(link.host, link.port, link.path, max_head=max_head)
        )
        self.parser: FrameParser | None = None
        self.writer = FrameWriter(mask=link is not None)  # clients mask, servers do not
        self.out = bytearray()
        self.outstanding: dict[int, float] = {}  # request ids of Prepares we sent -> monotonic send time
        self.bad_frames = 0
        self.deadline = deadline  # handshake/auth deadline, then close deadline; 0: none
        self.interest = 0  # selector events currently registered
        self.auth_request_id = 0
        self.up_since = 0.0
        self.dirty = False  # output appended this turn, not yet flushed
        self.reported_up = False  # PEER_UP published, PEER_DOWN owed

    def open_websocket(self, *, max_message_size: int, buffer_size: int) -> None:
        self.parser = FrameParser(expect_masked=self.server_side, max_message_size=max_message_size,
                                  buffer_size=buffer_size)
        self.parser.feed(self.handshake.leftover)
        self.state = State.AUTH

    def log_fields(self) -> dict:
        return {"connection_id": self.id, "remote": self.remote,
                "peer": self.peer.name if self.peer else None}
