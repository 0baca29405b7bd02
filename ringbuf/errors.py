"""Errors raised by the rings: each names the ring and what is wrong."""


class RingError(Exception):
    """Base class of every ring error."""


class RingNotFound(RingError, FileNotFoundError):
    """No segment exists under the name given to attach()."""


class RingIncompatible(RingError):
    """A segment exists but is not a ring of this layout version (or is corrupt)."""


class RingInUse(RingError, FileExistsError):
    """create() found the name taken by a segment whose owner process is alive."""


class RingClosed(RingError):
    """The ring was closed: no more slots can be claimed, and a drained ring yields nothing."""


class SlotOverflow(RingError, ValueError):
    """A payload larger than the ring's slot size."""
