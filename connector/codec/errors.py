"""The one exception type raised by the wire codecs."""


class CodecError(ValueError):
    """Bytes that are not a valid encoding, or a value that cannot be encoded."""
