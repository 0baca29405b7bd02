"""Record formats of the packet path's rings: the contract between its stages.

Every record is a fixed little-endian header followed by a body (an ILP packet, or
nothing).  Stages read headers with `unpack_from` on the slot's memoryview and hand the
body on as a memoryview slice: the packet is copied into the ingress slot once by the
I/O thread and out of the egress slot once into the socket buffer.

    ingress   I/O threads -> workers          (MPMC)   IngressHeader + ILP packet
    egress    workers, batch writer -> one I/O thread (MPMC, one ring per I/O thread)
                                                       EgressHeader + ILP packet
"""

from __future__ import annotations

import enum
import struct


class Ingress(enum.IntEnum):
    """What an I/O thread hands to the workers."""

    PREPARE = 1  # a peer sent us a Prepare (BTP MESSAGE with `ilp` data); body: the Prepare
    REPLY = 2  # a peer answered a Prepare we forwarded (BTP RESPONSE / ERROR); body: Fulfill or Reject
    PEER_DOWN = 3  # the peer's connection closed; body empty. Workers reject what is in flight.
    PEER_UP = 4  # the peer is authenticated and connected; body empty
    RESERVED = 5  # a ledger answered a reservation made asynchronously; `io` = the worker that
    #               parked the Prepare; body: RESERVED (packet id, and the ILP code refusing it)


class Egress(enum.IntEnum):
    """What the workers (and the batch writer) hand to an I/O thread."""

    PREPARE = 1  # send a Prepare to the peer as a BTP MESSAGE with this request id
    REPLY = 2  # answer the peer's Prepare (request id = theirs) with a BTP RESPONSE carrying the body
    CLOSE = 3  # close the connection (body: UTF-8 reason)


# kind u8, io thread u8, peer u16, connection u32, BTP request id u32, reserved u32, monotonic ns u64
INGRESS = struct.Struct("<BBHIIIQ")
# kind u8, reserved u8, peer u16, connection u32 (0: the peer's current one), request id u32,
# reserved u32, monotonic ns when the packet entered the connector u64 (for latency)
EGRESS = struct.Struct("<BBHIIIQ")

# packet id u64, ILP error code (3 ASCII bytes; zeros when both legs are reserved)
RESERVED = struct.Struct("<Q3s")
RESERVED_OK = b"\0\0\0"

# A BTP request id we send names the worker that sent it in its low bits, so the worker
# that reads the reply finds the in-flight entry: this many workers at most.
WORKER_BITS = 4
MAX_WORKERS = 1 << WORKER_BITS

HEADER_SIZE = INGRESS.size
assert EGRESS.size == HEADER_SIZE == 24

# The largest ILP packet: a Prepare with a 1023-byte address and 32767 bytes of data,
# plus envelope and length prefixes, rounded up.
MAX_ILP_PACKET = 33_880
SLOT_SIZE = HEADER_SIZE + MAX_ILP_PACKET
