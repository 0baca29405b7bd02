"""Waking an I/O thread that sleeps in epoll: an eventfd plus a coalescing flag.

Producers publish into the I/O thread's egress ring, then call `wake()`.  The first
`wake()` after the I/O thread last looked sets a flag and writes the eventfd; later ones
see the flag and make no system call.  The I/O thread calls `consume()` when the eventfd
is readable, *before* draining the ring: it empties the eventfd, then clears the flag.

Why no wake-up is lost (Dekker's pattern, as in docs/ringbuf.md): the producer publishes,
then a seq_cst fence, then reads the flag; the I/O thread clears the flag, then a seq_cst
fence, then reads the ring.  At least one side sees the other's store: either the
producer sees the flag clear and writes the eventfd, or the I/O thread's drain sees the
publication.  The flag lives in an 8-byte anonymous mapping and is read and written by
`ringbuf`'s C atomics (`SharedWords` keeps a raw pointer, so sharing it between threads
creates no memoryview exports).
"""

from __future__ import annotations

import mmap
import os

from ringbuf._atomics import SharedWords

_FLAG = 0  # offset of the flag word


class Waker:
    """Thread-safe, coalescing wake-up of one I/O thread (Linux eventfd)."""

    def __init__(self) -> None:
        self._fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._memory = mmap.mmap(-1, mmap.PAGESIZE)
        self._words = SharedWords(self._memory)
        self._closed = False

    def fileno(self) -> int:
        return self._fd

    def wake(self) -> None:
        """Called by producers after publishing; cheap when a wake-up is already pending."""
        if self._closed:
            return
        words = self._words
        words.fence()  # the caller's publication is ordered before our look at the flag
        if words.load(_FLAG) == 0 and words.cas(_FLAG, 0, 1):
            try:
                os.eventfd_write(self._fd, 1)
            except OSError:  # closed under us during shutdown: nobody is left to wake
                pass

    def consume(self) -> None:
        """Called by the I/O thread when the eventfd is readable, before it drains its ring."""
        # Read the eventfd *before* clearing the flag: a wake() that sets the flag after
        # the clear then writes an eventfd count that no earlier read can swallow.
        try:
            os.eventfd_read(self._fd)
        except BlockingIOError:
            pass
        self._words.store(_FLAG, 0)
        self._words.fence()  # the cleared flag is visible before we look at the ring

    def close(self) -> None:
        """Release the eventfd; later `wake()` calls do nothing."""
        if self._closed:
            return
        self._closed = True
        os.close(self._fd)
