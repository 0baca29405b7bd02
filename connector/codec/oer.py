"""Canonical OER primitives used by the Interledger wire formats (RFC-0030).

Readers take a ``memoryview`` and an offset and return ``(value, next_offset)``;
octet strings come back as sub-views of the input, never copies, so they alias
(and keep alive) the caller's buffer.  Writers return ``bytes``.  Every
malformed input raises :class:`CodecError`, and nothing else.
"""

from __future__ import annotations

import re
import struct
import threading
from datetime import date, datetime, timedelta, timezone

from .errors import CodecError

__all__ = [
    "Buffer",
    "CodecError",
    "MAX_UINT64",
    "TIMESTAMP_LENGTH",
    "as_view",
    "datetime_to_ms",
    "decode_timestamp",
    "decode_timestamp_ms",
    "encode_length",
    "encode_timestamp",
    "encode_timestamp_ms",
    "encode_uint8",
    "encode_uint16",
    "encode_uint32",
    "encode_uint64",
    "encode_var_octets",
    "encode_var_uint",
    "expect_end",
    "format_generalized_time",
    "ms_to_datetime",
    "parse_generalized_time",
    "read_ascii",
    "read_fixed",
    "read_length",
    "read_uint8",
    "read_uint16",
    "read_uint32",
    "read_uint64",
    "read_var_ascii",
    "read_var_octets",
    "read_var_uint",
    "read_var_utf8",
    "validate_generalized_time",
]

Buffer = bytes | bytearray | memoryview

MAX_UINT64 = (1 << 64) - 1
TIMESTAMP_LENGTH = 17
# A var-uint wider than this cannot be a UInt64; the RFC caps lengths there too.
_MAX_LENGTH_OF_LENGTH = 8
_MAX_VAR_UINT_BYTES = 8

_SHORT_LENGTHS = tuple(bytes((n,)) for n in range(128))
_UINT16 = struct.Struct(">H")
_UINT32 = struct.Struct(">I")
_UINT64 = struct.Struct(">Q")

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_EPOCH_ORDINAL = _EPOCH.toordinal()
_MAX_ORDINAL = date.max.toordinal()
_MS_PER_DAY = 86_400_000
_ONE_MICROSECOND = timedelta(microseconds=1)
_GENERALIZED_TIME = re.compile(
    rb"(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(?:\.(\d{1,3}))?Z"
)


def as_view(buffer: Buffer) -> memoryview:
    """Return a flat unsigned-byte view of any contiguous bytes-like object."""
    kind = type(buffer)
    if kind is bytes or kind is bytearray:
        return memoryview(buffer)
    if kind is memoryview and buffer.format == "B" and buffer.ndim == 1:
        view = buffer
    else:
        try:
            view = memoryview(buffer)
            if view.format != "B" or view.ndim != 1:
                view = view.cast("B")
        except TypeError as error:
            raise CodecError(f"expected a contiguous bytes-like object: {error}") from None
    if not view.contiguous:
        raise CodecError("expected a contiguous bytes-like object")
    return view


def expect_end(view: memoryview, offset: int, what: str) -> None:
    """Reject bytes left over after the last field of ``what``."""
    if offset != len(view):
        raise CodecError(f"{what}: {len(view) - offset} trailing byte(s)")


def _truncated(what: str, needed: int, offset: int, view: memoryview) -> CodecError:
    available = max(len(view) - offset, 0)
    return CodecError(
        f"truncated {what}: need {needed} byte(s) at offset {offset}, have {available}"
    )


# --- length determinant -----------------------------------------------------


def read_length(view: memoryview, offset: int) -> tuple[int, int]:
    """Read a canonical length determinant; return ``(length, next_offset)``."""
    size = len(view)
    if offset >= size:
        raise _truncated("length prefix", 1, offset, view)
    first = view[offset]
    if first < 0x80:
        return first, offset + 1
    # One and two length bytes cover every ILP packet; spell them out for speed.
    if first == 0x82 and offset + 3 <= size:
        length = (view[offset + 1] << 8) | view[offset + 2]
        if length < 0x100:
            raise _non_canonical_length(offset, length, 2)
        return length, offset + 3
    if first == 0x81 and offset + 2 <= size:
        length = view[offset + 1]
        if length < 0x80:
            raise _non_canonical_length(offset, length, 1)
        return length, offset + 2
    return _read_long_length(view, offset, first & 0x7F)


def _read_long_length(view: memoryview, offset: int, size: int) -> tuple[int, int]:
    if size == 0:
        raise CodecError(f"invalid length prefix 0x80 at offset {offset}")
    if size > _MAX_LENGTH_OF_LENGTH:
        raise CodecError(f"length prefix of {size} bytes at offset {offset} is too long")
    end = offset + 1 + size
    if end > len(view):
        raise _truncated("length prefix", size + 1, offset, view)
    length = int.from_bytes(view[offset + 1 : end], "big")
    if length < 0x80 or view[offset + 1] == 0:
        raise _non_canonical_length(offset, length, size)
    return length, end


def _non_canonical_length(offset: int, length: int, size: int) -> CodecError:
    return CodecError(f"non-canonical length prefix at offset {offset}: {length} in {size} byte(s)")


def encode_length(length: int) -> bytes:
    """Encode a canonical length determinant (short form below 128)."""
    if 0 <= length < 0x80:
        return _SHORT_LENGTHS[length]
    if length < 0:
        raise CodecError(f"negative length {length}")
    size = (length.bit_length() + 7) // 8
    if size > _MAX_LENGTH_OF_LENGTH:
        raise CodecError(f"length {length} is too large")
    return bytes((0x80 | size,)) + length.to_bytes(size, "big")


# --- octet strings ----------------------------------------------------------


def read_fixed(view: memoryview, offset: int, size: int) -> tuple[memoryview, int]:
    """Read a fixed-size octet string as a view."""
    end = offset + size
    if end > len(view):
        raise _truncated("fixed-length field", size, offset, view)
    return view[offset:end], end


def read_var_octets(view: memoryview, offset: int) -> tuple[memoryview, int]:
    """Read a length-prefixed octet string as a view."""
    length, start = read_length(view, offset)
    end = start + length
    if end > len(view):
        raise CodecError(
            f"length {length} at offset {offset} overruns the buffer "
            f"({len(view) - start} byte(s) left)"
        )
    return view[start:end], end


def encode_var_octets(data: Buffer) -> bytes:
    """Encode a length-prefixed octet string."""
    return encode_length(len(data)) + data


def read_ascii(view: memoryview, offset: int, size: int) -> tuple[str, int]:
    """Read a fixed-size IA5 (7-bit ASCII) string."""
    raw, end = read_fixed(view, offset, size)
    return _decode_ascii(raw, offset), end


def read_var_ascii(view: memoryview, offset: int) -> tuple[str, int]:
    """Read a length-prefixed IA5 (7-bit ASCII) string."""
    raw, end = read_var_octets(view, offset)
    return _decode_ascii(raw, offset), end


def read_var_utf8(view: memoryview, offset: int) -> tuple[str, int]:
    """Read a length-prefixed UTF-8 string."""
    raw, end = read_var_octets(view, offset)
    try:
        return str(raw, "utf-8"), end
    except UnicodeDecodeError:
        raise CodecError(f"invalid UTF-8 in string at offset {offset}") from None


def _decode_ascii(raw: memoryview, offset: int) -> str:
    try:
        return str(raw, "ascii")
    except UnicodeDecodeError:
        raise CodecError(f"non-ASCII byte in string at offset {offset}") from None


# --- fixed-size unsigned integers -------------------------------------------


def read_uint8(view: memoryview, offset: int) -> tuple[int, int]:
    if offset >= len(view):
        raise _truncated("UInt8", 1, offset, view)
    return view[offset], offset + 1


def read_uint16(view: memoryview, offset: int) -> tuple[int, int]:
    if offset + 2 > len(view):
        raise _truncated("UInt16", 2, offset, view)
    return _UINT16.unpack_from(view, offset)[0], offset + 2


def read_uint32(view: memoryview, offset: int) -> tuple[int, int]:
    if offset + 4 > len(view):
        raise _truncated("UInt32", 4, offset, view)
    return _UINT32.unpack_from(view, offset)[0], offset + 4


def read_uint64(view: memoryview, offset: int) -> tuple[int, int]:
    if offset + 8 > len(view):
        raise _truncated("UInt64", 8, offset, view)
    return _UINT64.unpack_from(view, offset)[0], offset + 8


def _encode_uint(value: int, size: int) -> bytes:
    if type(value) is not int or not 0 <= value < 1 << (8 * size):
        raise CodecError(f"{value!r} is not a UInt{8 * size}")
    return value.to_bytes(size, "big")


def encode_uint8(value: int) -> bytes:
    return _encode_uint(value, 1)


def encode_uint16(value: int) -> bytes:
    return _encode_uint(value, 2)


def encode_uint32(value: int) -> bytes:
    return _encode_uint(value, 4)


def encode_uint64(value: int) -> bytes:
    return _encode_uint(value, 8)


# --- variable-length unsigned integer ---------------------------------------


def read_var_uint(view: memoryview, offset: int) -> tuple[int, int]:
    """Read a canonical var-uint: length determinant, then minimal big-endian bytes."""
    raw, end = read_var_octets(view, offset)
    size = len(raw)
    if size == 0:
        raise CodecError(f"var-uint of length 0 at offset {offset}")
    if size > _MAX_VAR_UINT_BYTES:
        raise CodecError(f"var-uint of {size} bytes at offset {offset} exceeds UInt64")
    if size > 1 and raw[0] == 0:
        raise CodecError(f"non-canonical var-uint with a leading zero at offset {offset}")
    return int.from_bytes(raw, "big"), end


def encode_var_uint(value: int) -> bytes:
    """Encode a canonical var-uint (zero is one zero byte)."""
    if type(value) is not int or not 0 <= value <= MAX_UINT64:
        raise CodecError(f"{value!r} is not a var-uint in UInt64 range")
    size = max(1, (value.bit_length() + 7) // 8)
    return _SHORT_LENGTHS[size] + value.to_bytes(size, "big")


# --- ILP fixed-length timestamp: YYYYMMDDHHmmssfff, UTC ---------------------

# Expiries cluster on a handful of days, so the calendar work for the date half
# of a timestamp is cached, one cache per thread: on free-threaded 3.13 `dict.get` of
# a key equal to one another thread made spins on the dict's lock even with no other
# thread near it (about 25 µs a call against 1.6 µs; connector/lockfree.py).  A thread
# reading only what it wrote never meets that.
_CACHE_LIMIT = 4096


class _Caches(threading.local):
    def __init__(self) -> None:
        self.dates: dict[bytes, tuple[int, int, int, int]] = {}
        self.day_texts: dict[int, bytes] = {}


_caches = _Caches()


def _date_part(text: bytes) -> tuple[int, int, int, int]:
    """``(epoch ms at midnight, year, month, day)`` for the 8 leading digits."""
    key = text[:8]
    cache = _caches.dates
    cached = cache.get(key)
    if cached is not None:
        return cached
    year, month, day = int(key[:4]), int(key[4:6]), int(key[6:8])
    try:
        days = date(year, month, day).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        raise CodecError(f"invalid ILP timestamp {text!r}: no such date") from None
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    result = cache[key] = (days * _MS_PER_DAY, year, month, day)
    return result


def _timestamp_text(raw: Buffer) -> bytes:
    text = bytes(raw)
    # bytes.isdigit() accepts ASCII digits only, so int() cannot see signs,
    # spaces or underscores.
    if len(text) != TIMESTAMP_LENGTH or not text.isdigit():
        raise CodecError(f"invalid ILP timestamp {text!r}: expected 17 ASCII digits")
    return text


def _clock_out_of_range(text: bytes) -> CodecError:
    return CodecError(f"invalid ILP timestamp {text!r}: time out of range")


def decode_timestamp(raw: Buffer) -> datetime:
    """Decode a 17-byte ILP timestamp into an aware UTC datetime."""
    text = _timestamp_text(raw)
    _, year, month, day = _date_part(text)
    clock = int(text[8:])  # HHmmssfff
    hour, minute, second = clock // 10_000_000, clock // 100_000 % 100, clock // 1000 % 100
    if hour > 23 or minute > 59 or second > 59:
        raise _clock_out_of_range(text)
    return datetime(
        year, month, day, hour, minute, second, clock % 1000 * 1000, tzinfo=timezone.utc
    )


def decode_timestamp_ms(raw: Buffer) -> int:
    """Decode a 17-byte ILP timestamp into milliseconds since the Unix epoch."""
    text = bytes(raw)
    if len(text) != TIMESTAMP_LENGTH or not text.isdigit():
        text = _timestamp_text(text)  # raises with the message
    midnight = _caches.dates.get(text[:8]) or _date_part(text)
    clock = int(text[8:])  # HHmmssfff
    hour, minute = clock // 10_000_000, clock // 100_000 % 100
    if hour > 23 or minute > 59 or clock // 1000 % 100 > 59:
        raise _clock_out_of_range(text)
    # The trailing ssfff digits are already seconds * 1000 + milliseconds.
    return midnight[0] + hour * 3_600_000 + minute * 60_000 + clock % 100_000


def _day_text(days: int) -> bytes:
    cache = _caches.day_texts
    cached = cache.get(days)
    if cached is not None:
        return cached
    ordinal = days + _EPOCH_ORDINAL
    if not 1 <= ordinal <= _MAX_ORDINAL:
        raise CodecError(f"timestamp on day {days} after 1970 is outside years 1..9999")
    day = date.fromordinal(ordinal)
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    text = cache[days] = b"%04d%02d%02d" % (day.year, day.month, day.day)
    return text


def encode_timestamp_ms(epoch_ms: int) -> bytes:
    """Encode milliseconds since the Unix epoch as a 17-byte ILP timestamp."""
    if type(epoch_ms) is not int:
        raise CodecError(f"timestamp must be an int of milliseconds, not {epoch_ms!r}")
    days, ms_of_day = divmod(epoch_ms, _MS_PER_DAY)
    hour, ms_of_hour = divmod(ms_of_day, 3_600_000)
    minute, ms_of_minute = divmod(ms_of_hour, 60_000)
    return _day_text(days) + b"%09d" % (hour * 10_000_000 + minute * 100_000 + ms_of_minute)


def datetime_to_ms(when: datetime) -> int:
    """Milliseconds since the Unix epoch, rounded half up (RFC-0030 rounds)."""
    if type(when) is datetime and when.tzinfo is timezone.utc:
        # Arithmetic on the fields avoids timedelta objects on the hot path.
        days = when.toordinal() - _EPOCH_ORDINAL
        seconds = (when.hour * 60 + when.minute) * 60 + when.second
        return days * _MS_PER_DAY + seconds * 1000 + (when.microsecond + 500) // 1000
    if not isinstance(when, datetime):
        raise CodecError(f"expected a datetime, not {when!r}")
    if when.tzinfo is None or when.utcoffset() is None:
        raise CodecError("naive datetime: give a timezone-aware (UTC) datetime")
    micros = (when - _EPOCH) // _ONE_MICROSECOND
    return (micros + 500) // 1000


def ms_to_datetime(epoch_ms: int) -> datetime:
    """Aware UTC datetime for milliseconds since the Unix epoch."""
    try:
        return _EPOCH + timedelta(milliseconds=epoch_ms)
    except OverflowError:
        raise CodecError(f"timestamp {epoch_ms} ms is out of range") from None


def encode_timestamp(when: datetime) -> bytes:
    """Encode an aware datetime as a 17-byte ILP timestamp (UTC, milliseconds)."""
    return encode_timestamp_ms(datetime_to_ms(when))


# --- GeneralizedTime (BTP): YYYYMMDDHHmmss[.f{1,3}]Z -------------------------


def validate_generalized_time(raw: Buffer) -> str:
    """Check a GeneralizedTime text and return it as ``str``.

    Accepts 0 to 3 fraction digits, with or without trailing zeros: the RFC
    wants them trimmed but the JavaScript and Rust encoders always write three.
    Leap seconds (second 60) are allowed, as RFC-0030 requires.
    """
    match = _GENERALIZED_TIME.fullmatch(bytes(raw))
    if match is None:
        raise CodecError(f"invalid GeneralizedTime {bytes(raw)!r}")
    year, month, day, hour, minute, second = (int(group) for group in match.groups()[:6])
    if hour > 23 or minute > 59 or second > 60:
        raise CodecError(f"invalid GeneralizedTime {bytes(raw)!r}: time out of range")
    try:
        date(year, month, day)
    except ValueError:
        raise CodecError(f"invalid GeneralizedTime {bytes(raw)!r}: no such date") from None
    return match.group(0).decode("ascii")


def parse_generalized_time(text: str | Buffer) -> datetime:
    """Parse GeneralizedTime into an aware UTC datetime.

    A leap second cannot be a ``datetime``; it becomes 59.999 s of that minute.
    """
    raw = text.encode("ascii", "replace") if isinstance(text, str) else text
    checked = validate_generalized_time(raw)
    fraction = checked[15:-1]
    second = int(checked[12:14])
    millis = int(fraction.ljust(3, "0")) if fraction else 0
    if second == 60:
        second, millis = 59, 999
    return datetime(
        int(checked[0:4]), int(checked[4:6]), int(checked[6:8]),
        int(checked[8:10]), int(checked[10:12]), second, millis * 1000,
        tzinfo=timezone.utc,
    )


def format_generalized_time(when: datetime) -> str:
    """Format an aware datetime as GeneralizedTime with three fraction digits.

    Three digits, always, is what the JavaScript ``btp-packet`` reader accepts.
    """
    stamp = encode_timestamp(when).decode("ascii")
    return f"{stamp[:14]}.{stamp[14:]}Z"
