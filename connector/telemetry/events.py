"""The telemetry ring's record: one fixed 40-byte little-endian struct per event.

    offset size field       PACKET            PEER_STATE   RATE_LIMITED   LEDGER_BATCH
    0      1    kind        1                 2            3              4
    1      1    status      Outcome           1 up, 0 down  -             -
    2      2    peer        incoming peer     peer          peer           -
    4      2    peer_out    outgoing or NONE  -             -              -
    6      3    code        ILP error code    -             -              -
    9      1    (pad)
    10     4    count       -                 -             packets        transfers
    14     8    a           amount in         -             amount         -
    22     8    b           amount out        -             -              -
    30     8    c           latency ns        -             -              commit µs
    38     2    (pad)

Fixed size, so the consumer unpacks a whole batch with one `iter_unpack`.  Peer numbers
are `PeerConfig.index` (configuration order); amounts are in each peer's own units.
"""

from __future__ import annotations

import enum
import struct

from ringbuf import Ring, RingKind

EVENT = struct.Struct("<BBHH3sxIQQQ2x")
EVENT_SIZE = EVENT.size
NO_PEER = 0xFFFF
NO_CODE = b"\0\0\0"
U64_MAX = (1 << 64) - 1
assert EVENT_SIZE == 40


class EventKind(enum.IntEnum):
    PACKET = 1  # a Prepare we received got its answer (or we answered it)
    PEER_STATE = 2  # a peer connected (status 1) or went away (status 0)
    RATE_LIMITED = 3  # packets refused by a peer's rate limit (T05)
    LEDGER_BATCH = 4  # the batch writer made one group commit durable


class Outcome(enum.IntEnum):
    """How a packet ended.  The label values are the JavaScript connector's `result`."""

    FULFILLED = 1  # the next hop fulfilled it (and the fulfillment checked out)
    REJECTED = 2  # the next hop rejected it; we relayed the reject
    REJECTED_BY_US = 3  # we rejected it ourselves (no route, T04, F08, R00 timeout, F05, ...)

    @property
    def label(self) -> str:
        return _RESULT_LABELS[self]


_RESULT_LABELS = {Outcome.FULFILLED: "fulfilled", Outcome.REJECTED: "rejected", Outcome.REJECTED_BY_US: "failed"}


def create_telemetry_ring(name: str, capacity: int = 8192, *, spin: int = 50,
                          park_timeout: float = 0.5) -> Ring:
    """Create (and own) the telemetry ring: MPMC, many producers, one consumer."""
    return Ring.create(name, slot_size=EVENT_SIZE, capacity=capacity, kind=RingKind.MPMC,
                       spin=spin, park_timeout=park_timeout)


def code_bytes(code: str | bytes | None) -> bytes:
    """An ILP error code as its 3 ASCII bytes (zeros for none)."""
    if not code:
        return NO_CODE
    raw = code.encode("ascii") if isinstance(code, str) else bytes(code)
    return raw[:3].ljust(3, b"\0")


def code_text(raw: bytes) -> str:
    """Label value of a code field: "" for none, else its printable ASCII."""
    if raw == NO_CODE:
        return ""
    return raw.rstrip(b"\0").decode("ascii", "replace")
