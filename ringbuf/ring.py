"""Lock-free rings of fixed-size slots in a named shared-memory segment.

Producers claim slots, fill them through memoryview slices and publish them; consumers
take published slots, read them in place and release them.  Claims and takes come in
batches so the cost of the cursors is shared by many slots.  No mutex is taken on any
path; a thread that finds nothing to do spins briefly, then parks on a futex word in the
segment until the other side publishes or releases (see docs/ringbuf.md for the memory
ordering argument).

Two algorithms share one layout:

* ``RingKind.SPSC``: one producer thread and one consumer thread.  Each side owns one
  cursor; the other side reads it with acquire loads.  Cheapest.
* ``RingKind.MPMC``: any number of producer and consumer threads, in any processes.
  Positions are claimed with compare-and-swap on the cursors, and every slot carries a
  sequence word saying whether it is free, published, or free again for the next lap.

Positions are 64-bit counters that never wrap in practice (2**64 slots); a slot's index
is ``position & (capacity - 1)``.

**One handle per thread.**  A `Ring` object is a handle: its own mapping of the segment
and its own memoryviews.  CPython 3.13t does not count buffer exports of a memoryview
atomically, so two threads slicing or taking buffers from one memoryview corrupt it
(docs/ringbuf.md shows the reproduction).  A handle therefore binds to the first thread
that moves slots through it and refuses any other; `handle()` gives the next thread its
own.  `close()` may come from any thread.
"""

from __future__ import annotations

import os
import threading
import time
import weakref

from . import layout, segment
from ._atomics import SharedWords
from .errors import RingClosed, RingError, RingIncompatible, SlotOverflow
from .layout import RingConfig, RingKind

_U64_MINUS_ONE = (1 << 64) - 1
_WAKE_ALL = 0x7FFFFFFF

DEFAULT_SPIN = 50
DEFAULT_PARK_TIMEOUT = 0.5  # seconds a parked thread sleeps before re-checking on its own


class Ring:
    """One ring. Build it with `Ring.create` (the owner) or `Ring.attach` (anyone else)."""

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
        self._mask = config.capacity - 1
        self._stride = config.stride
        self._payloads = [self._buf[o : o + config.slot_size] for o in self._payload_offsets()]
        self._unlinker = weakref.finalize(self, segment.unlink, name) if owner else None
        self._thread: int | None = None
        # SPSC: each side's private view of the cursors (only that side's thread touches it).
        self._p_next = self._words.load(layout.OFF_PRODUCER)
        self._p_limit = self._words.load(layout.OFF_CONSUMER) + self.capacity
        self._c_next = self._words.load(layout.OFF_CONSUMER)
        self._c_limit = self._words.load(layout.OFF_PRODUCER)

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

    def _bind(self) -> None:
        """Bind this handle to the calling thread on first use; refuse any other thread."""
        me = threading.get_ident()
        if self._thread is None:
            self._thread = me
        elif self._thread != me:
            raise RingError(
                f"ring {self.name!r}: this handle belongs to another thread; "
                f"give each thread its own with handle() or Ring.attach()"
            )
        if self._buf is None:
            raise RingError(f"ring {self.name!r}: handle used after detach()")

    def _payload_offsets(self):
        first = layout.HEADER_SIZE + layout.SLOT_HEADER_SIZE
        return range(first, first + self.capacity * self._stride, self._stride)

    def _slot_offset(self, position: int) -> int:
        return layout.HEADER_SIZE + (position & self._mask) * self._stride

    # ----------------------------------------------------------------- producer side

    def try_claim(self, n: int = 1) -> tuple[int, int]:
        """Claim up to `n` free slots without waiting: (first position, count), count may be 0."""
        if self._thread != threading.get_ident() or self._buf is None:
            self._bind()
        if self._words.load(layout.OFF_CLOSED):
            raise RingClosed(f"ring {self.name!r} is closed")
        if self.kind is RingKind.SPSC:
            return self._spsc_claim(n)
        return self._mpmc_claim(n)

    def _spsc_claim(self, n: int) -> tuple[int, int]:
        first = self._p_next
        free = self._p_limit - first
        if free < n:  # refresh the consumer's cursor only when the cached one is not enough
            self._p_limit = self._words.load(layout.OFF_CONSUMER) + self.capacity
            free = self._p_limit - first
        count = n if free > n else free
        self._p_next = first + count
        return first, count

    def _mpmc_claim(self, n: int) -> tuple[int, int]:
        load, cas = self._words.load, self._words.cas
        header, mask, stride = layout.HEADER_SIZE, self._mask, self._stride
        while True:
            first = load(layout.OFF_PRODUCER)
            count = 0
            while count < n:
                position = first + count
                seq = load(header + (position & mask) * stride)
                if seq != position:
                    break
                count += 1
            if count == 0:
                if seq < first:  # the slot still holds the previous lap: full
                    return first, 0
                continue  # another producer claimed `first` meanwhile
            if cas(layout.OFF_PRODUCER, first, first + count):
                return first, count

    def slot(self, position: int) -> memoryview:
        """Writable view of a claimed slot's whole payload area (slot_size bytes)."""
        return self._payloads[position & self._mask]

    def set_length(self, position: int, length: int) -> None:
        """Record how many payload bytes of a claimed slot are meaningful."""
        if not 0 <= length <= self.slot_size:
            raise SlotOverflow(f"ring {self.name!r}: length {length} exceeds slot size {self.slot_size}")
        self._words.write_u32(self._slot_offset(position) + layout.SLOT_LENGTH, length)

    def write(self, position: int, data) -> None:
        """Copy `data` into a claimed slot and record its length."""
        size = len(data)
        if size > self.slot_size:
            raise SlotOverflow(f"ring {self.name!r}: payload of {size} bytes exceeds slot size {self.slot_size}")
        index = position & self._mask
        self._payloads[index][:size] = data
        self._words.write_u32(layout.HEADER_SIZE + index * self._stride + layout.SLOT_LENGTH, size)

    def publish(self, first: int, count: int) -> None:
        """Make claimed slots [first, first + count) visible to consumers."""
        if count <= 0:
            return
        if self.kind is RingKind.SPSC:
            self._words.store(layout.OFF_PRODUCER, first + count)  # release
        else:
            store, header, mask, stride = self._words.store, layout.HEADER_SIZE, self._mask, self._stride
            for position in range(first, first + count):
                store(header + (position & mask) * stride, position + 1)  # release
        self._notify(layout.OFF_DATA_EPOCH, layout.OFF_DATA_WAITERS)

    def claim(self, n: int = 1, timeout: float | None = None) -> tuple[int, int]:
        """Claim 1..n slots, parking while the ring is full; count 0 only on timeout."""
        first, count = self.try_claim(n)
        if count:
            return first, count
        return self._wait(lambda: self.try_claim(n), self._has_space,
                          layout.OFF_SPACE_EPOCH, layout.OFF_SPACE_WAITERS, timeout)

    def put(self, data, timeout: float | None = None) -> None:
        """Copy one payload into the ring (TimeoutError if no slot frees up in time)."""
        if len(data) > self.slot_size:
            raise SlotOverflow(f"ring {self.name!r}: payload of {len(data)} bytes exceeds slot size {self.slot_size}")
        first, count = self.claim(1, timeout)
        if not count:
            raise TimeoutError(f"ring {self.name!r} stayed full for {timeout}s")
        self.write(first, data)
        self.publish(first, 1)

    def put_many(self, items, timeout: float | None = None) -> None:
        """Copy several payloads in, publishing them in as few batches as free space allows."""
        items = list(items)
        for item in items:
            if len(item) > self.slot_size:
                raise SlotOverflow(
                    f"ring {self.name!r}: payload of {len(item)} bytes exceeds slot size {self.slot_size}")
        done = 0
        while done < len(items):
            first, count = self.claim(len(items) - done, timeout)
            if not count:
                raise TimeoutError(f"ring {self.name!r} stayed full for {timeout}s ({done} of {len(items)} written)")
            for i in range(count):
                self.write(first + i, items[done + i])
            self.publish(first, count)
            done += count

    # ----------------------------------------------------------------- consumer side

    def try_consume(self, n: int = 1) -> tuple[int, int]:
        """Take up to `n` published slots without waiting: (first position, count)."""
        if self._thread != threading.get_ident() or self._buf is None:
            self._bind()
        if self.kind is RingKind.SPSC:
            first = self._c_next
            ready = self._c_limit - first
            if ready < n:
                self._c_limit = self._words.load(layout.OFF_PRODUCER)  # acquire
                ready = self._c_limit - first
            count = n if ready > n else ready
            self._c_next = first + count
            return first, count
        return self._mpmc_consume(n)

    def _mpmc_consume(self, n: int) -> tuple[int, int]:
        load, cas = self._words.load, self._words.cas
        header, mask, stride = layout.HEADER_SIZE, self._mask, self._stride
        while True:
            first = load(layout.OFF_CONSUMER)
            count = 0
            while count < n:
                position = first + count
                seq = load(header + (position & mask) * stride)  # acquire: pairs with publish
                if seq != position + 1:
                    break
                count += 1
            if count == 0:
                if seq <= first:  # not yet published (or claimed but still being written)
                    return first, 0
                continue  # another consumer took `first` meanwhile
            if cas(layout.OFF_CONSUMER, first, first + count):
                return first, count

    def view(self, position: int) -> memoryview:
        """The payload of a taken slot, in place (valid until the slot is released)."""
        index = position & self._mask
        length = self._words.read_u32(layout.HEADER_SIZE + index * self._stride + layout.SLOT_LENGTH)
        return self._payloads[index][:length]

    def release(self, first: int, count: int) -> None:
        """Hand taken slots [first, first + count) back to the producers."""
        if count <= 0:
            return
        if self.kind is RingKind.SPSC:
            self._words.store(layout.OFF_CONSUMER, first + count)  # release: our reads are done
        else:
            store, header, mask, stride = self._words.store, layout.HEADER_SIZE, self._mask, self._stride
            lap = self.capacity
            for position in range(first, first + count):
                store(header + (position & mask) * stride, position + lap)
        self._notify(layout.OFF_SPACE_EPOCH, layout.OFF_SPACE_WAITERS)

    def consume(self, n: int = 1, timeout: float | None = None) -> tuple[int, int]:
        """Take 1..n published slots, parking while the ring is empty.

        Count 0 only on timeout; RingClosed once the ring is closed and drained."""
        first, count = self.try_consume(n)
        if count:
            return first, count
        return self._wait(lambda: self._try_consume_open(n), self._has_data,
                          layout.OFF_DATA_EPOCH, layout.OFF_DATA_WAITERS, timeout)

    def _try_consume_open(self, n: int) -> tuple[int, int]:
        closed = self._words.load(layout.OFF_CLOSED)  # read before looking: see docs/ringbuf.md
        first, count = self.try_consume(n)
        if count == 0 and closed:
            raise RingClosed(f"ring {self.name!r} was closed by its producer and is drained")
        return first, count

    def get(self, timeout: float | None = None) -> bytes:
        """Copy one payload out (TimeoutError if none arrives in time)."""
        first, count = self.consume(1, timeout)
        if not count:
            raise TimeoutError(f"ring {self.name!r} stayed empty for {timeout}s")
        data = bytes(self.view(first))
        self.release(first, 1)
        return data

    def get_many(self, n: int, timeout: float | None = None) -> list[bytes]:
        """Copy out 1..n payloads (an empty list on timeout)."""
        first, count = self.consume(n, timeout)
        items = [bytes(self.view(position)) for position in range(first, first + count)]
        self.release(first, count)
        return items

    # ----------------------------------------------------------------- parking

    def _has_data(self) -> bool:
        if self._words.load(layout.OFF_CLOSED):
            return True
        if self.kind is RingKind.SPSC:
            return self._words.load(layout.OFF_PRODUCER) != self._c_next
        first = self._words.load(layout.OFF_CONSUMER)
        return self._words.load(self._slot_offset(first)) == first + 1

    def _has_space(self) -> bool:
        if self._words.load(layout.OFF_CLOSED):
            return True
        if self.kind is RingKind.SPSC:
            return self._words.load(layout.OFF_CONSUMER) + self.capacity != self._p_next
        first = self._words.load(layout.OFF_PRODUCER)
        return self._words.load(self._slot_offset(first)) == first

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

    def _notify(self, epoch_offset: int, waiters_offset: int) -> None:
        words = self._words
        words.fence()  # our cursor/sequence stores are visible before we look for waiters
        if words.load(waiters_offset):
            words.fetch_add32(epoch_offset, 1)
            words.wake32(epoch_offset, _WAKE_ALL)

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
