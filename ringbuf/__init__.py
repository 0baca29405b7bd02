"""Lock-free shared-memory rings of fixed-size slots.

This package knows nothing of Interledger: it moves opaque payloads between threads
and processes.  See docs/ringbuf.md for the layout and the memory-ordering argument.
"""

from .errors import RingClosed, RingError, RingIncompatible, RingInUse, RingNotFound, SlotOverflow
from .layout import RingKind
from .ring import READ_MANY_LENGTH, Ring
from .segment import list_segments, sweep_stale

__all__ = [
    "READ_MANY_LENGTH",
    "Ring",
    "RingClosed",
    "RingError",
    "RingInUse",
    "RingIncompatible",
    "RingKind",
    "RingNotFound",
    "SlotOverflow",
    "list_segments",
    "sweep_stale",
]
