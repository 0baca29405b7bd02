"""Checksummed payloads for the ring stress tests and benchmark: a torn, lost or
duplicated slot is detected, not just counted."""

from __future__ import annotations

import struct
import zlib

HEADER = struct.Struct("<IQI")  # producer id, sequence number, crc32 of the body
HEADER_SIZE = HEADER.size


def body_length(producer: int, seq: int, slot_size: int) -> int:
    return (seq * 2654435761 + producer) % (slot_size - HEADER_SIZE + 1)


def make_payload(producer: int, seq: int, slot_size: int) -> bytes:
    """A payload of varying length (HEADER_SIZE..slot_size) whose bytes depend on seq."""
    size = body_length(producer, seq, slot_size)
    body = (seq.to_bytes(8, "little") * (size // 8 + 1))[:size]
    return HEADER.pack(producer, seq, zlib.crc32(body)) + body


def check_payload(data, slot_size: int) -> tuple[int, int]:
    """Return (producer, seq) of an intact payload; raise AssertionError on a torn one."""
    if len(data) < HEADER_SIZE:
        raise AssertionError(f"torn slot: {len(data)} bytes, shorter than the header")
    producer, seq, crc = HEADER.unpack_from(data)
    body = data[HEADER_SIZE:]
    if len(body) != body_length(producer, seq, slot_size) or zlib.crc32(body) != crc:
        raise AssertionError(f"torn slot: producer {producer} seq {seq} ({len(data)} bytes)")
    return producer, seq


class SequenceChecker:
    """Per-producer accounting on the consumer side: every seq exactly once."""

    def __init__(self, producers: int, per_producer: int, *, ordered: bool):
        self.expected = per_producer
        self.ordered = ordered  # one consumer: each producer's slots arrive in order
        self.next_seq = [0] * producers
        self.seen = [bytearray(per_producer) for _ in range(producers)]
        self.count = 0

    def add(self, producer: int, seq: int) -> None:
        if self.ordered:
            if seq != self.next_seq[producer]:
                raise AssertionError(f"producer {producer}: got seq {seq}, expected {self.next_seq[producer]}")
            self.next_seq[producer] = seq + 1
        if self.seen[producer][seq]:
            raise AssertionError(f"duplicate slot: producer {producer} seq {seq}")
        self.seen[producer][seq] = 1
        self.count += 1

    def merge(self, other: "SequenceChecker") -> None:
        """Fold in another consumer's accounting; a slot both saw is a duplicate."""
        for producer, theirs in enumerate(other.seen):
            mine = self.seen[producer]
            a, b = int.from_bytes(mine), int.from_bytes(theirs)
            if a & b:
                raise AssertionError(f"duplicate slot: producer {producer} delivered to two consumers")
            self.seen[producer] = bytearray((a | b).to_bytes(len(mine)))
        self.count += other.count

    def assert_complete(self) -> None:
        for producer, seen in enumerate(self.seen):
            missing = seen.count(0)
            if missing:
                raise AssertionError(f"producer {producer}: {missing} slots lost")
