"""Records on the ledger ring, and the per-thread emitter that writes them.

A *record* is what one call hands to the batch writer:

    RECORD header (16 bytes): accounts u16, transfers u16, kind u8, 3 pad, target u64
    accounts  × 128-byte TigerBeetle account structs (creations)
    transfers × 128-byte TigerBeetle transfer structs (already applied in memory)
    payload   the held reply's bytes (kind HELD_REPLY), released once durable

`target` is the held reply's routing int (kind HELD_REPLY) or a sync token (kind SYNC).

A record travels in one ring slot, or — when it is larger than a slot (a Fulfill with a
lot of data) — in several, each slot starting with an 8-byte SLOT header: the emitter's
id (u32) and a MORE flag.  One emitter's slots reach the single consumer in the order it
published them (docs/ringbuf.md), so the writer reassembles fragments per emitter id.

**Never blocking a worker.**  `emit` tries to claim slots without waiting.  When the ring
is full (the writer is behind, or the database is failing) the slots go to the emitter's
own backlog, in order, and are published by the next `emit` or `flush` from the same
thread.  `backlogged` tells the packet books to stop taking new reservations (T03) while
the backlog stands; nothing is ever dropped.
"""

from __future__ import annotations

import collections
import logging
import struct
from collections.abc import Sequence

from ringbuf import Ring

from ._fastpath import pack_transfers
from .model import RECORD_SIZE, Account, Transfer, pack_account

log = logging.getLogger(__name__)

SLOT = struct.Struct("<IB3x")  # emitter id, flags
RECORD = struct.Struct("<HHB3xQ")  # accounts, transfers, kind, target
MORE = 1

KIND_PLAIN = 0
KIND_HELD_REPLY = 1
KIND_SYNC = 2

MAX_EVENTS = 0xFFFF


def pack_record(transfers: Sequence[bytes], accounts: Sequence[bytes] = (), kind: int = KIND_PLAIN,
                target: int = 0, payload: bytes = b"") -> bytes:
    if len(transfers) > MAX_EVENTS or len(accounts) > MAX_EVENTS:
        raise ValueError(f"a record carries at most {MAX_EVENTS} accounts and {MAX_EVENTS} transfers")
    return b"".join((RECORD.pack(len(accounts), len(transfers), kind, target), *accounts, *transfers, payload))


def fragments(emitter_id: int, record: bytes, slot_size: int) -> list[bytes]:
    """The slot payloads that carry `record` (one in the common case)."""
    room = slot_size - SLOT.size
    if room <= 0:
        raise ValueError(f"slot size {slot_size} leaves no room after the {SLOT.size}-byte slot header")
    if len(record) <= room:
        return [SLOT.pack(emitter_id, 0) + record]
    chunks = [record[i:i + room] for i in range(0, len(record), room)]
    last = len(chunks) - 1
    return [SLOT.pack(emitter_id, MORE if i < last else 0) + chunk for i, chunk in enumerate(chunks)]


class LedgerEmitter:
    """One thread's producer side of the ledger ring (it owns its own ring handle)."""

    def __init__(self, ring: Ring, emitter_id: int):
        self.ring = ring
        self.emitter_id = emitter_id
        self._backlog: collections.deque[bytes] = collections.deque()
        self._whole = SLOT.pack(emitter_id, 0)  # the slot header of a record that fits one slot
        self._room = ring.slot_size - SLOT.size
        self.emitted = 0
        self.deferred = 0

    @property
    def backlogged(self) -> bool:
        return bool(self._backlog)

    def emit(self, transfers: Sequence[Transfer] = (), *, accounts: Sequence[Account] = (),
             reply: tuple[int, bytes] | None = None) -> bool:
        """Queue transfer (and account) records, optionally with a reply to hold until they
        are durable.  True if published now, False if parked in this emitter's backlog."""
        if len(transfers) > MAX_EVENTS or len(accounts) > MAX_EVENTS:
            raise ValueError(f"a record carries at most {MAX_EVENTS} accounts and {MAX_EVENTS} transfers")
        body = b"".join((*[pack_account(a) for a in accounts], pack_transfers(transfers)))
        return self._emit_body(len(accounts), len(transfers), body, reply)

    def emit_packed(self, transfers: bytes, *, reply: tuple[int, bytes] | None = None) -> bool:
        """`emit` of transfers already packed back to back (the packet books' pairs)."""
        count, partial = divmod(len(transfers), RECORD_SIZE)
        if partial or count > MAX_EVENTS:
            raise ValueError(f"a record carries whole 128-byte transfers, at most {MAX_EVENTS}")
        return self._emit_body(0, count, transfers, reply)

    def _emit_body(self, accounts: int, transfers: int, body: bytes, reply: tuple[int, bytes] | None) -> bool:
        """The record of packed accounts and transfers, and the reply it holds, if any."""
        if reply is None:
            return self.emit_record(RECORD.pack(accounts, transfers, KIND_PLAIN, 0), body)
        return self.emit_record(RECORD.pack(accounts, transfers, KIND_HELD_REPLY, reply[0]), body + reply[1])

    def lane_parts(self) -> dict:
        """What a `PacketLane` needs to publish as this emitter does: into one slot through
        the ring handle while nothing is backlogged, else through `_emit_body`."""
        return {"put": self.ring.try_put_raw, "backlog": self._backlog, "emit_body": self._emit_body,
                "emitter_id": self.emitter_id, "room": self._room}

    def emit_sync(self, token: int) -> bool:
        """A marker the writer reports back once everything before it is durable."""
        return self.emit_record(pack_record((), (), KIND_SYNC, token))

    def emit_record(self, record: bytes, tail: bytes = b"") -> bool:
        """Publish `record` followed by `tail` (header and body, joined only if the record
        has to be split over several slots)."""
        self.emitted += 1
        if (not self._backlog and len(record) + len(tail) <= self._room
                and self.ring.try_put(self._whole + record, tail)):
            return True  # the common case: one slot, nothing queued before it: one ring call
        slots = fragments(self.emitter_id, record + tail, self.ring.slot_size)
        if self._backlog and not self.flush():
            self._backlog.extend(slots)
            self.deferred += 1
            return False
        published = self._publish(slots)
        if published < len(slots):
            self._backlog.extend(slots[published:])
            self.deferred += 1
            log.debug("ledger ring full: record parked", extra={"emitter": self.emitter_id,
                                                                 "backlog_slots": len(self._backlog)})
            return False
        return True

    def flush(self) -> bool:
        """Publish what the backlog holds, without waiting.  True when it is empty."""
        backlog = self._backlog
        while backlog:
            pending = list(backlog)
            published = self._publish(pending)
            for _ in range(published):
                backlog.popleft()
            if published < len(pending):
                return False
        return True

    def _publish(self, slots: list[bytes]) -> int:
        """Claim and fill as many of `slots` as there is room for now; how many went."""
        return self.ring.try_put_many(slots)

    def close(self) -> None:
        """Detach this thread's ring handle (flush first; a backlog left here is lost)."""
        if self._backlog:
            log.error("ledger emitter closed with records unpublished",
                      extra={"emitter": self.emitter_id, "backlog_slots": len(self._backlog)})
        self.ring.detach()


class Reassembler:
    """The writer's side: whole records out of slots, fragments joined per emitter."""

    def __init__(self):
        self._partial: dict[int, bytearray] = {}

    def feed(self, slot) -> memoryview | bytes | None:
        """Return the record this slot completes (a view into the slot when it is whole)."""
        emitter_id, flags = SLOT.unpack_from(slot, 0)
        body = slot[SLOT.size:]
        partial = self._partial.get(emitter_id)
        if partial is None and not flags & MORE:
            return body
        if partial is None:
            partial = self._partial[emitter_id] = bytearray()
        partial += body
        if flags & MORE:
            return None
        del self._partial[emitter_id]
        return bytes(partial)

    @property
    def incomplete(self) -> int:
        return len(self._partial)
