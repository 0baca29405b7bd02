"""Lock-free rings of fixed-size slots in a named shared-memory segment.

Producers claim slots, fill them and publish them; consumers take published slots, read
them in place through memoryview slices and release them.  Claims and takes come in
batches so the cost of the cursors is shared by many slots.  No mutex is taken on any
path; a thread that finds nothing to do spins briefly, then parks on a futex word in the
segment until the other side publishes or releases (docs/ringbuf.md has the memory
ordering argument).

Two algorithms share one layout:

* ``RingKind.SPSC``: one producer thread and one consumer thread.  Each side owns one
  cursor; the other side reads it with acquire loads.  Cheapest.
* ``RingKind.MPMC``: any number of producer and consumer threads, in any processes.
  Positions are claimed with compare-and-swap on the cursors, and every slot carries a
  sequence word saying whether it is free, published, or free again for the next lap.

The per-slot algorithms run in C (``ringbuf._core``); this module owns the segment's
lifecycle, waiting and parking, and the memoryviews.  Positions are 64-bit counters that
never wrap in practice; a slot's index is ``position & (capacity - 1)``.

**One handle per thread.**  A `Ring` object is a handle: its own mapping of the segment
and its own memoryviews.  CPython 3.13t does not count buffer exports of a memoryview
atomically, so two threads slicing or taking buffers from one memoryview corrupt it
(docs/ringbuf.md shows the reproduction).  A handle therefore binds to the first thread
that moves slots through it and refuses any other; `handle()` gives the next thread its
own.  `close()` may come from any thread.
"""

from __future__ import annotations

import os
import struct
import time
import weakref

from . import layout, segment
from ._atomics import SharedWords
from ._core import RingCore
from .errors import RingClosed, RingError, RingIncompatible, SlotOverflow
from .layout import RingConfig, RingKind

_U64_MINUS_ONE = (1 << 64) - 1
_WAKE_ALL = 0x7FFFFFFF
_CORE_OFFSETS = (
    layout.HEADER_SIZE, layout.OFF_PRODUCER, layout.OFF_CONSUMER, layout.OFF_CLOSED,
    layout.OFF_DATA_EPOCH, layout.OFF_DATA_WAITERS, layout.OFF_SPACE_EPOCH, layout.OFF_SPACE_WAITERS,
    layout.SLOT_SEQ, layout.SLOT_LENGTH, layout.SLOT_HEADER_SIZE,
)

# Ring.read_many: each payload follows its length in this format
READ_MANY_LENGTH = struct.Struct("<I")

DEFAULT_SPIN = 50
DEFAULT_PARK_TIMEOUT = 0.5  # seconds a parked thread sleeps before re-checking on its own


def _overflow(ring: "Ring", size: int) -> SlotOverflow:
    return SlotOverflow(f"ring {ring.name!r}: payload of {size} bytes exceeds slot size {ring.slot_size}")


class Ring:
    """One handle on one ring. Build it with `Ring.create` (the owner) or `Ring.attach`."""

    def __init__(self, name: str, shm, config: RingConfig, *, owner: bool,
                 spin: int = DEFAULT_SPIN, park_timeout: float = DEFAULT_PARK_TIMEOUT):
        self.name = name
        self.config = config
        self.kind = config.kind
        self.capacity = config.capacity
        self.slot_size = config.slot_size
        self.owner = owner
        self.spin = spin
        self.park_timeout = park_timeout
        self._shm = shm
        self._buf = shm.buf
        self._words = SharedWords(self._buf)
        self._core = RingCore(self._buf, int(config.kind), config.capacity, config.stride,
                              config.slot_size, _CORE_OFFSETS, RingError)
        self._mask = config.capacity - 1
        first = layout.HEADER_SIZE + layout.SLOT_HEADER_SIZE
        self._payloads = [self._buf[o : o + config.slot_size]
                          for o in range(first, first + config.capacity * config.stride, config.stride)]
        self._unlinker = weakref.finalize(self, segment.unlink, name) if owner else None

    # ----------------------------------------------------------------- construction

    @classmethod
    def create(cls, name: str, *, slot_size: int, capacity: int, kind: RingKind = RingKind.SPSC,
               **options) -> "Ring":
        """Create and own the segment `name` (replacing one a dead process left behind)."""
        pid = os.getpid()
        config = RingConfig(kind, slot_size, capacity, pid, segment.process_start_time(pid))
        config.validate()
        shm = segment.create(name, config)
        config.pack_into(shm.buf)
        words = SharedWords(shm.buf)
        try:
            if kind is RingKind.MPMC:
                for index in range(capacity):  # slot i is free for position i
                    words.store(layout.HEADER_SIZE + index * config.stride + layout.SLOT_SEQ, index)
            words.store(layout.OFF_MAGIC, layout.MAGIC)  # release: the header is complete
        finally:
            words.release()
        return cls(name, shm, config, owner=True, **options)

    @classmethod
    def attach(cls, name: str, **options) -> "Ring":
        """Attach to a ring another thread or process created."""
        shm = segment.attach(name)
        try:
            words = SharedWords(shm.buf)
            magic = words.load(layout.OFF_MAGIC)  # acquire: pairs with the creator's store
            words.release()
            if magic != layout.MAGIC:
                raise RingIncompatible(f"segment {name!r} is not an initialised ring (magic {magic:#x})")
            config = segment.read_config(name, shm)
        except BaseException:
            shm.close()
            raise
        return cls(name, shm, config, owner=False, **options)

    def handle(self) -> "Ring":
        """A new handle on the same ring, for another thread."""
        return Ring.attach(self.name, spin=self.spin, park_timeout=self.park_timeout)

    # ----------------------------------------------------------------- producer side

    def try_claim(self, n: int = 1) -> tuple[int, int]:
        """Claim up to `n` free slots without waiting: (first position, count), count may be 0."""
        first, count = self._core.try_claim(n)
        if count < 0:
            raise RingClosed(f"ring {self.name!r} is closed")
        return first, count

    def slot(self, position: int) -> memoryview:
        """Writable view of a claimed slot's whole payload area (slot_size bytes)."""
        return self._payloads[position & self._mask]

    def set_length(self, position: int, length: int) -> None:
        """Record how many payload bytes of a claimed slot (filled through slot()) count."""
        if not 0 <= length <= self.slot_size:
            raise SlotOverflow(f"ring {self.name!r}: length {length} exceeds slot size {self.slot_size}")
        self._core.set_length(position, length)

    def write(self, position: int, data) -> None:
        """Copy `data` into a claimed slot and record its length."""
        if len(data) > self.slot_size:
            raise _overflow(self, len(data))
        self._core.write(position, data)

    def publish(self, first: int, count: int) -> None:
        """Make claimed slots [first, first + count) visible to consumers."""
        self._core.publish(first, count)

    def claim(self, n: int = 1, timeout: float | None = None) -> tuple[int, int]:
        """Claim 1..n slots, parking while the ring is full; count 0 only on timeout."""
        first, count = self.try_claim(n)
        if count:
            return first, count
        return self._wait(lambda: self.try_claim(n), self._core.has_space,
                          layout.OFF_SPACE_EPOCH, layout.OFF_SPACE_WAITERS, timeout)

    def put(self, data, timeout: float | None = None) -> None:
        """Copy one payload into the ring (TimeoutError if no slot frees up in time)."""
        if len(data) > self.slot_size:
            raise _overflow(self, len(data))
        done = self._core.put(data)
        if done > 0:
            return
        if done < 0:
            raise RingClosed(f"ring {self.name!r} is closed")
        first, count = self.claim(1, timeout)
        if not count:
            raise TimeoutError(f"ring {self.name!r} stayed full for {timeout}s")
        self._core.write(first, data)
        self._core.publish(first, 1)

    def try_put(self, data, tail=None) -> bool:
        """Copy one payload in if a slot is free right now; False if the ring is full.
        With `tail`, the payload is `data` followed by `tail` (a header and a body, copied
        once, without joining them first)."""
        size = len(data) if tail is None else len(data) + len(tail)
        if size > self.slot_size:
            raise _overflow(self, size)
        done = self._core.put(data) if tail is None else self._core.put(data, tail)
        if done < 0:
            raise RingClosed(f"ring {self.name!r} is closed")
        return done > 0

    @property
    def try_put_raw(self):
        """`try_put` without the Python frame, for a producer in C on its hot path: the C
        `put(data[, tail])` -> 1 done, 0 full, -1 closed (ValueError past the slot size,
        before claiming)."""
        return self._core.put

    def put_many(self, items, timeout: float | None = None) -> None:
        """Copy several payloads in, publishing them in as few batches as free space allows
        (waiting for space when there is none)."""
        items = list(items)
        for item in items:
            if len(item) > self.slot_size:
                raise _overflow(self, len(item))
        done = 0

        def attempt() -> tuple[int, int]:
            return 0, self._core.write_many(items, done)

        while done < len(items):
            _, count = attempt()
            if not count:
                _, count = self._wait(attempt, self._core.has_space, layout.OFF_SPACE_EPOCH,
                                      layout.OFF_SPACE_WAITERS, timeout)
            if count < 0:
                raise RingClosed(f"ring {self.name!r} is closed")
            if not count:
                raise TimeoutError(f"ring {self.name!r} stayed full for {timeout}s ({done} of {len(items)} written)")
            done += count

    def try_put_many(self, items, start: int = 0) -> int:
        """Copy in as many of `items[start:]` (a list), in order, as fit right now, without
        waiting, published together; return how many went.  For producers that must never
        block (telemetry) or that keep their own backlog (the ledger's emitters, the I/O
        thread).  An item larger than a slot raises SlotOverflow once those before it are in."""
        done = self._core.write_many(items if type(items) is list else list(items), start)
        if done < 0:
            raise RingClosed(f"ring {self.name!r} is closed")
        nxt = start + done
        if nxt < len(items) and len(items[nxt]) > self.slot_size:
            raise _overflow(self, len(items[nxt]))
        return done

    # ----------------------------------------------------------------- consumer side

    def try_consume(self, n: int = 1) -> tuple[int, int]:
        """Take up to `n` published slots without waiting: (first position, count)."""
        return self._core.try_consume(n)

    def view(self, position: int) -> memoryview:
        """The payload of a taken slot, in place (valid until the slot is released)."""
        return self._payloads[position & self._mask][: self._core.length(position)]

    def read_many(self, first: int, count: int) -> bytes:
        """Copies of taken slots [first, first + count) in one bytes object: each payload
        after its length (`READ_MANY_LENGTH`).  The slots can be released right away."""
        return self._core.read_many(first, count)

    def release(self, first: int, count: int) -> None:
        """Hand taken slots [first, first + count) back to the producers."""
        self._core.release(first, count)

    def consume(self, n: int = 1, timeout: float | None = None) -> tuple[int, int]:
        """Take 1..n published slots, parking while the ring is empty.

        Count 0 only on timeout; RingClosed once the ring is closed and drained.  The
        spinning and parking run in C (`RingCore.consume_wait`): a worker that finds the
        ring empty a few thousand times a second pays no interpreter work for it."""
        first, count = self._core.consume_wait(n, -1.0 if timeout is None else timeout, self.spin,
                                               self.park_timeout)
        if count < 0:
            raise RingClosed(f"ring {self.name!r} was closed by its producer and is drained")
        return first, count

    def get(self, timeout: float | None = None) -> bytes:
        """Copy one payload out (TimeoutError if none arrives in time)."""
        items = self.get_many(1, timeout)
        if not items:
            raise TimeoutError(f"ring {self.name!r} stayed empty for {timeout}s")
        return items[0]

    def get_many(self, n: int, timeout: float | None = None) -> list[bytes]:
        """Copy out 1..n payloads (an empty list on timeout)."""
        items = self._core.get_many(n)
        if items:
            return items
        first, count = self.consume(n, timeout)
        items = [bytes(self.view(position)) for position in range(first, first + count)]
        self._core.release(first, count)
        return items

    # ----------------------------------------------------------------- parking

    def _wait(self, attempt, ready, epoch_offset: int, waiters_offset: int, timeout):
        """Retry `attempt` until it yields slots: spin first, then park on the epoch word."""
        deadline = None if timeout is None else time.monotonic() + timeout
        spins = self.spin
        while True:
            if spins:
                spins -= 1
            else:
                remaining = self.park_timeout if deadline is None else min(self.park_timeout, deadline - time.monotonic())
                if remaining > 0:
                    self._park(ready, epoch_offset, waiters_offset, remaining)
            first, count = attempt()
            if count:
                return first, count
            if deadline is not None and time.monotonic() >= deadline:
                return first, 0

    def _park(self, ready, epoch_offset: int, waiters_offset: int, timeout: float) -> None:
        words = self._words
        epoch = words.load32(epoch_offset)
        words.fetch_add(waiters_offset, 1)
        words.fence()  # our waiter count is visible before we look at the cursors once more
        try:
            if not ready():
                words.wait32(epoch_offset, epoch, timeout)
        finally:
            words.fetch_add(waiters_offset, _U64_MINUS_ONE)

    # ----------------------------------------------------------------- lifecycle

    @property
    def closed(self) -> bool:
        return bool(self._words.load(layout.OFF_CLOSED))

    def close(self) -> None:
        """Stop the ring: claims fail from now on, consumers drain what is left, then
        get RingClosed; every parked thread, in any process, wakes up."""
        words = self._words
        words.store(layout.OFF_CLOSED, 1)
        for epoch_offset in (layout.OFF_DATA_EPOCH, layout.OFF_SPACE_EPOCH):
            words.fence()
            words.fetch_add32(epoch_offset, 1)
            words.wake32(epoch_offset, _WAKE_ALL)

    def detach(self) -> None:
        """Unmap this handle (views it handed out must be released first)."""
        if self._buf is None:
            return
        self._core.detach()
        for view in self._payloads:
            view.release()
        self._payloads = []
        self._words.release()
        self._buf = None
        self._shm.close()

    def destroy(self) -> None:
        """Owner's shutdown: close, unmap and remove the segment's name."""
        if self._buf is not None:
            self.close()
        self.detach()
        if self._unlinker is not None:
            self._unlinker()

    def __enter__(self) -> "Ring":
        return self

    def __exit__(self, *exc) -> None:
        if self.owner:
            self.destroy()
        else:
            self.detach()

    def __repr__(self) -> str:
        return (f"Ring({self.name!r}, kind={self.kind.name}, slot_size={self.slot_size}, "
                f"capacity={self.capacity}, owner={self.owner})")
