"""What an I/O thread is told: its peers and its limits (plain objects; parsing config files is not done here)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from .ws import DEFAULT_MAX_MESSAGE_SIZE

_JITTER = random.Random()

SERVER = "server"  # we are the BTP server: the peer connects to us and authenticates
CLIENT = "client"  # we are the BTP client: we connect to the peer's URL and authenticate


@dataclass(frozen=True, slots=True)
class Peer:
    """One BTP peer of an I/O thread.

    `index` is the peer number carried in ring records (u16).  With `btp_role="server"`
    the peer connects to us and must send `auth_username` == `username` (default: `name`;
    set `username=""` for a client such as `ilp-plugin-btp` configured without an
    account) and `auth_token` == `secret`.  With `btp_role="client"` we connect to `url`
    (`ws://host:port/path`, `btp+ws://` accepted) and send `username` (default: `name`)
    and `token`.
    """

    index: int
    name: str
    btp_role: Literal["server", "client"]
    secret: str = ""
    url: str = ""
    token: str = ""
    username: str | None = None
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE

    @property
    def auth_username(self) -> str:
        return self.name if self.username is None else self.username

    def validate(self) -> None:
        if not 0 <= self.index <= 0xFFFF:
            raise ValueError(f"peer {self.name!r}: index {self.index} is not a u16")
        if self.btp_role == SERVER:
            if not self.secret:
                raise ValueError(f"peer {self.name!r}: a server-role peer needs a secret")
        elif self.btp_role == CLIENT:
            parse_ws_url(self.url)
        else:
            raise ValueError(f"peer {self.name!r}: btp_role must be 'server' or 'client'")
        if self.max_message_size < 1024:
            raise ValueError(f"peer {self.name!r}: max_message_size below 1024 bytes")


def parse_ws_url(url: str) -> tuple[str, int, str]:
    """(host, port, path) of a `ws://` (or `btp+ws://`) URL; TLS (`wss`) is not supported yet."""
    parts = urlsplit(url)
    scheme = parts.scheme.removeprefix("btp+")
    if scheme != "ws":
        raise ValueError(f"unsupported BTP URL {url!r}: only ws:// (or btp+ws://) is supported")
    if not parts.hostname:
        raise ValueError(f"BTP URL {url!r} has no host")
    if parts.username or parts.password:
        raise ValueError(f"BTP URL {url!r}: pass the username and token in the Peer, not the URL")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return parts.hostname, parts.port or 80, path


@dataclass(frozen=True, slots=True)
class Backoff:
    """Reconnect delays: `initial` × `multiplier`^attempt, capped at `maximum`, minus up to `jitter` of it."""

    initial: float = 0.1
    maximum: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.5  # fraction of the delay taken off at random, so peers do not reconnect in step
    reset_after: float = 10.0  # a connection up this long resets the attempt count

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        base = min(self.maximum, self.initial * self.multiplier ** min(attempt, 64))
        return base * (1.0 - self.jitter * (rng or _JITTER).random())


@dataclass(frozen=True, slots=True)
class TransportConfig:
    """Limits and timings of one I/O thread; every one has a default."""

    io_index: int = 0  # u8 carried in ingress records
    listen_host: str | None = None  # None: no BTP server socket
    listen_port: int = 0  # 0: an ephemeral port (see IoThread.listen_address)
    listen_backlog: int = 512
    ilp_address: str = ""  # triggeredBy of Rejects this thread makes up
    recv_buffer_size: int = 256 * 1024  # per connection
    output_soft_limit: int = 4 * 1024 * 1024  # stop reading from a connection whose output is this big
    output_hard_limit: int = 64 * 1024 * 1024  # close a connection whose output is this big (peer too slow)
    egress_batch: int = 256  # slots taken from the egress ring per call
    egress_batches_per_turn: int = 8  # then sockets get a turn
    handshake_max_bytes: int = 16 * 1024
    auth_max_message_size: int = 16 * 1024  # the first (auth) message of an unauthenticated peer
    handshake_timeout: float = 10.0  # TCP accept or connect to authenticated
    close_timeout: float = 2.0  # wait for the peer's close frame before dropping the socket
    max_unauthenticated: int = 256  # accepted connections not yet authenticated
    max_bad_frames: int = 16  # malformed BTP frames answered with an Error before we hang up
    outstanding_max_age: float = 120.0  # forget our unanswered requests after this long
    idle_poll: float = 1.0  # epoll timeout when nothing is scheduled
    stalled_poll: float = 0.001  # epoll timeout while the ingress ring is full
    backoff: Backoff = field(default_factory=Backoff)
