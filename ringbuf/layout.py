"""Byte layout of a ring segment.

    [ header: HEADER_SIZE bytes ][ slot 0 ][ slot 1 ] ... [ slot capacity-1 ]

The header is split into 128-byte lines so that words written by different parties
(producer cursor, consumer cursor, wake-up words) never share a cache line (128 rather
than 64 because adjacent-line prefetch on x86 and 128-byte lines on some Arm cores make
64 too small to stop false sharing).

Each slot is `SLOT_HEADER_SIZE` bytes of header (a 64-bit sequence word used by the
multi-producer ring, a 32-bit payload length) followed by `slot_size` payload bytes,
rounded up so every slot starts 8-byte aligned.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

MAGIC = 0x31474E4952504C49  # b"ILPRING1" read as a little-endian u64
LAYOUT_VERSION = 1
LINE = 128

# Line 0: written once by the creator before it publishes MAGIC (release store).
OFF_MAGIC = 0
# (version u32, kind u32, slot_size u32, capacity u32, stride u32, owner pid u32, owner start u64)
CONFIG_FORMAT = "<IIIIIIQ"
OFF_CONFIG = 8
# Line 1: producers' cursor.  Line 2: consumers' cursor.
OFF_PRODUCER = 1 * LINE
OFF_CONSUMER = 2 * LINE
# Line 3: consumers park here when the ring is empty (futex epoch u32, waiter count u64).
OFF_DATA_EPOCH = 3 * LINE
OFF_DATA_WAITERS = 3 * LINE + 8
# Line 4: producers park here when the ring is full.
OFF_SPACE_EPOCH = 4 * LINE
OFF_SPACE_WAITERS = 4 * LINE + 8
# Line 5: set once, when the ring is closed.
OFF_CLOSED = 5 * LINE
HEADER_SIZE = 6 * LINE

SLOT_SEQ = 0  # u64, multi-producer ring only
SLOT_LENGTH = 8  # u32 payload length
SLOT_HEADER_SIZE = 16

MAX_SLOT_SIZE = 1 << 24
MAX_CAPACITY = 1 << 24


class RingKind(enum.IntEnum):
    """Which algorithm governs the cursors (see docs/ringbuf.md)."""

    SPSC = 1  # one producer thread, one consumer thread: plain cursors
    MPMC = 2  # any number of each: per-slot sequence words (covers MPSC and SPMC)


@dataclass(frozen=True)
class RingConfig:
    kind: RingKind
    slot_size: int
    capacity: int
    owner_pid: int = 0
    owner_start: int = 0

    @property
    def stride(self) -> int:
        return (SLOT_HEADER_SIZE + self.slot_size + 7) & ~7

    @property
    def segment_size(self) -> int:
        return HEADER_SIZE + self.stride * self.capacity

    def validate(self) -> None:
        if not isinstance(self.kind, RingKind):
            raise ValueError(f"kind must be a RingKind, not {self.kind!r}")
        if not 1 <= self.slot_size <= MAX_SLOT_SIZE:
            raise ValueError(f"slot_size must be between 1 and {MAX_SLOT_SIZE} bytes, not {self.slot_size}")
        if not 2 <= self.capacity <= MAX_CAPACITY or self.capacity & (self.capacity - 1):
            raise ValueError(f"capacity must be a power of two between 2 and {MAX_CAPACITY}, not {self.capacity}")

    def pack_into(self, buffer) -> None:
        struct.pack_into(
            CONFIG_FORMAT, buffer, OFF_CONFIG, LAYOUT_VERSION, int(self.kind), self.slot_size,
            self.capacity, self.stride, self.owner_pid, self.owner_start,
        )

    @classmethod
    def unpack_from(cls, buffer) -> tuple[int, "RingConfig", int]:
        """Return (layout version, config, stored stride); the caller checks them."""
        version, kind, slot_size, capacity, stride, pid, start = struct.unpack_from(
            CONFIG_FORMAT, buffer, OFF_CONFIG
        )
        try:
            ring_kind = RingKind(kind)
        except ValueError:
            ring_kind = kind  # reported by validate()
        return version, cls(ring_kind, slot_size, capacity, pid, start), stride
