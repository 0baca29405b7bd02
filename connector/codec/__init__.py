"""Sans-I/O wire codecs for the connector: OER, ILPv4, BTP 2.0 and ILDCP.

Pure functions over bytes-like objects, with no I/O and no dependencies beyond
the standard library.  Every decoder raises :class:`CodecError` (a
``ValueError``) on malformed input, and nothing else.
"""

from .errors import CodecError

__all__ = ["CodecError"]
