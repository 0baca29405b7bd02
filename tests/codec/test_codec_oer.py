"""OER primitives: length prefixes, var-uints, fixed integers and timestamps."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.codec import oer
from connector.codec.errors import CodecError

VECTORS = json.loads(Path(__file__).with_name("vectors.json").read_text())
UTC = timezone.utc


def view(hex_text: str) -> memoryview:
    return memoryview(bytes.fromhex(hex_text))


# --- length prefixes ------------------------------------------------------------


@pytest.mark.parametrize("vector", VECTORS["oer_length_prefixes"], ids=lambda v: str(v["length"]))
def test_length_prefix_matches_oer_utils(vector):
    assert oer.encode_length(vector["length"]).hex() == vector["hex"]
    prefix = bytes.fromhex(vector["hex"])
    padded = memoryview(prefix + bytes(min(vector["length"], 70000)))
    assert oer.read_length(padded, 0) == (vector["length"], len(prefix))


@pytest.mark.parametrize(
    "vector", VECTORS["oer_rejected_length_prefixes"], ids=lambda v: v["hex"]
)
def test_length_prefixes_rejected_by_oer_utils_are_rejected(vector):
    with pytest.raises(CodecError):
        oer.read_length(view(vector["hex"]) if vector["hex"] else memoryview(b""), 0)


@pytest.mark.parametrize(
    "encoded, reason",
    [
        ("817f", "non-canonical"),  # long form for a short length
        ("820001", "non-canonical"),  # leading zero byte
        ("8300ffff", "non-canonical"),
        ("80", "invalid length prefix 0x80"),
        ("89010000000000000000", "too long"),
        ("82ff", "truncated"),
        ("", "truncated"),
    ],
)
def test_bad_length_prefixes_say_why(encoded, reason):
    with pytest.raises(CodecError, match=reason):
        oer.read_length(view(encoded), 0)


def test_read_length_at_offset():
    assert oer.read_length(view("ff8180"), 1) == (128, 3)


def test_var_octets_are_views_without_copy():
    buffer = bytearray(b"\x03abcXYZ")
    data, end = oer.read_var_octets(memoryview(buffer), 0)
    assert (bytes(data), end) == (b"abc", 4)
    buffer[1] = ord("z")
    assert bytes(data) == b"zbc"


def test_var_octets_overrun_is_rejected():
    with pytest.raises(CodecError, match="overruns"):
        oer.read_var_octets(view("05616263"), 0)


def test_encode_var_octets_prefixes_length():
    assert oer.encode_var_octets(b"x" * 200) == b"\x81\xc8" + b"x" * 200
    assert oer.encode_var_octets(memoryview(b"ab")) == b"\x02ab"


def test_negative_length_is_rejected():
    with pytest.raises(CodecError):
        oer.encode_length(-1)


@given(st.integers(min_value=0, max_value=(1 << 64) - 1))
def test_length_round_trip(length):
    encoded = oer.encode_length(length)
    assert oer.read_length(memoryview(encoded), 0) == (length, len(encoded))
    assert (len(encoded) == 1) == (length < 128)


# --- var-uint --------------------------------------------------------------------


@pytest.mark.parametrize("vector", VECTORS["oer_var_uints"], ids=lambda v: v["value"])
def test_var_uint_matches_oer_utils(vector):
    value = int(vector["value"])
    assert oer.encode_var_uint(value).hex() == vector["hex"]
    assert oer.read_var_uint(view(vector["hex"]), 0) == (value, len(vector["hex"]) // 2)


@pytest.mark.parametrize(
    "encoded, reason",
    [("00", "length 0"), ("020001", "leading zero"), ("09010000000000000000", "exceeds")],
)
def test_non_canonical_var_uints_are_rejected(encoded, reason):
    with pytest.raises(CodecError, match=reason):
        oer.read_var_uint(view(encoded), 0)


@given(st.integers(min_value=0, max_value=(1 << 64) - 1))
def test_var_uint_round_trip(value):
    encoded = oer.encode_var_uint(value)
    assert oer.read_var_uint(memoryview(encoded), 0) == (value, len(encoded))


@pytest.mark.parametrize("value", [-1, 1 << 64, 1.0, "1"])
def test_var_uint_encoder_rejects_out_of_range(value):
    with pytest.raises(CodecError):
        oer.encode_var_uint(value)


# --- fixed-size integers -----------------------------------------------------------


def test_fixed_uints_follow_rfc_examples():
    assert oer.read_uint8(view("00"), 0) == (0, 1)
    assert oer.read_uint16(view("1234"), 0) == (4660, 2)
    assert oer.read_uint32(view("ABABABAB"), 0) == (2880154539, 4)
    assert oer.read_uint64(view("AC01055A1DEBAC1E"), 0) == (12394193534107495454, 8)
    assert oer.encode_uint64(12394193534107495454).hex() == "ac01055a1debac1e"
    assert oer.encode_uint32(2880154539) == bytes.fromhex("ABABABAB")
    assert oer.encode_uint16(4660) == b"\x12\x34"
    assert oer.encode_uint8(255) == b"\xff"


@pytest.mark.parametrize(
    "reader, size", [(oer.read_uint8, 1), (oer.read_uint16, 2), (oer.read_uint32, 4), (oer.read_uint64, 8)]
)
def test_fixed_uint_truncation(reader, size):
    with pytest.raises(CodecError, match="truncated"):
        reader(memoryview(bytes(size)), 1)


@pytest.mark.parametrize("value", [-1, 256, 1.5])
def test_uint8_encoder_rejects_bad_values(value):
    with pytest.raises(CodecError):
        oer.encode_uint8(value)


def test_strings():
    assert oer.read_ascii(view("463030"), 0, 3) == ("F00", 3)
    assert oer.read_var_utf8(memoryview(b"\x02\xc3\xa9"), 0) == ("é", 3)
    with pytest.raises(CodecError, match="non-ASCII"):
        oer.read_var_ascii(memoryview(b"\x01\xe9"), 0)
    with pytest.raises(CodecError, match="UTF-8"):
        oer.read_var_utf8(memoryview(b"\x01\xff"), 0)


def test_expect_end():
    oer.expect_end(memoryview(b"ab"), 2, "thing")
    with pytest.raises(CodecError, match="1 trailing byte"):
        oer.expect_end(memoryview(b"abc"), 2, "thing")


# --- as_view -------------------------------------------------------------------------


def test_as_view_accepts_bytes_likes():
    for buffer in (b"ab", bytearray(b"ab"), memoryview(b"ab"), memoryview(b"ab").cast("c")):
        result = oer.as_view(buffer)
        assert (result.format, bytes(result)) == ("B", b"ab")


@pytest.mark.parametrize("bad", ["text", 12, None, memoryview(b"abcd")[::2]])
def test_as_view_rejects_non_bytes(bad):
    with pytest.raises(CodecError):
        oer.as_view(bad)


# --- ILP timestamps (RFC-0030 examples) ---------------------------------------------

VALID_TIMESTAMPS = {
    "20171224161432279": datetime(2017, 12, 24, 16, 14, 32, 279000, tzinfo=UTC),
    "20171224161432270": datetime(2017, 12, 24, 16, 14, 32, 270000, tzinfo=UTC),
    "20171224161432200": datetime(2017, 12, 24, 16, 14, 32, 200000, tzinfo=UTC),
    "20171224161432000": datetime(2017, 12, 24, 16, 14, 32, tzinfo=UTC),
    "20161231235959852": datetime(2016, 12, 31, 23, 59, 59, 852000, tzinfo=UTC),
    "20171225000000000": datetime(2017, 12, 25, tzinfo=UTC),
    "99991224161432279": datetime(9999, 12, 24, 16, 14, 32, 279000, tzinfo=UTC),
}

INVALID_TIMESTAMPS = [
    "20171224235312.431+0200",
    "201712242153124318",
    "20171324161432200",
    "20171224230000000.",
    "20171224240000000",
    "20171224215300",
    "2017122421531",
    "201712242153",
    "2017122421",
    "20161231235960852",
    # Further cases: no such day, sign, spaces, non-ASCII digits, year zero.
    "20170229000000000",
    "+0171224161432279",
    " 2017122416143227",
    "2017_224161432279",
    "00001224161432279",
]


@pytest.mark.parametrize("text, expected", VALID_TIMESTAMPS.items())
def test_rfc_valid_timestamps(text, expected):
    assert oer.decode_timestamp(text.encode()) == expected
    assert oer.decode_timestamp_ms(text.encode()) == oer.datetime_to_ms(expected)
    assert oer.encode_timestamp(expected) == text.encode()


@pytest.mark.parametrize("text", INVALID_TIMESTAMPS)
def test_rfc_invalid_timestamps(text):
    raw = text.encode()
    with pytest.raises(CodecError):
        oer.decode_timestamp(raw)
    with pytest.raises(CodecError):
        oer.decode_timestamp_ms(raw)


def test_non_ascii_digits_are_rejected():
    with pytest.raises(CodecError):
        oer.decode_timestamp("2017122416143227٣".encode())


def test_timestamp_encoding_rounds_and_converts_to_utc():
    plus_two = timezone(timedelta(hours=2))
    assert oer.encode_timestamp(datetime(2017, 12, 24, 16, 14, 32, 279112, tzinfo=UTC)) == (
        b"20171224161432279"
    )
    assert oer.encode_timestamp(datetime(2017, 12, 24, 18, 14, 32, tzinfo=plus_two)) == (
        b"20171224161432000"
    )
    assert oer.encode_timestamp(datetime(2017, 12, 24, 23, 59, 59, 999600, tzinfo=UTC)) == (
        b"20171225000000000"
    )


def test_naive_datetime_is_refused():
    with pytest.raises(CodecError, match="naive"):
        oer.encode_timestamp(datetime(2020, 1, 1))


@pytest.mark.parametrize("epoch_ms", [-62135596800001, 253402300800000])
def test_timestamps_outside_four_digit_years_are_refused(epoch_ms):
    with pytest.raises(CodecError):
        oer.encode_timestamp_ms(epoch_ms)


millisecond_datetimes = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999000)
).map(lambda moment: moment.replace(microsecond=moment.microsecond // 1000 * 1000, tzinfo=UTC))


@given(millisecond_datetimes)
def test_timestamp_round_trip(moment):
    encoded = oer.encode_timestamp(moment)
    assert len(encoded) == oer.TIMESTAMP_LENGTH
    assert oer.decode_timestamp(encoded) == moment
    epoch_ms = oer.decode_timestamp_ms(encoded)
    assert oer.encode_timestamp_ms(epoch_ms) == encoded
    assert oer.ms_to_datetime(epoch_ms) == moment


# --- GeneralizedTime (RFC-0030 examples) --------------------------------------------

VALID_GENERALIZED = {
    "20171224161432.279Z": datetime(2017, 12, 24, 16, 14, 32, 279000, tzinfo=UTC),
    "20171224161432.27Z": datetime(2017, 12, 24, 16, 14, 32, 270000, tzinfo=UTC),
    "20171224161432.2Z": datetime(2017, 12, 24, 16, 14, 32, 200000, tzinfo=UTC),
    "20171224161432Z": datetime(2017, 12, 24, 16, 14, 32, tzinfo=UTC),
    "20171225000000Z": datetime(2017, 12, 25, tzinfo=UTC),
    "99991224161432.279Z": datetime(9999, 12, 24, 16, 14, 32, 279000, tzinfo=UTC),
    # What btp-packet and interledger-rs write: always three digits.
    "20171224161432.200Z": datetime(2017, 12, 24, 16, 14, 32, 200000, tzinfo=UTC),
    # Leap second: accepted, folded into the last millisecond of the minute.
    "20161231235960.852Z": datetime(2016, 12, 31, 23, 59, 59, 999000, tzinfo=UTC),
}

INVALID_GENERALIZED = [
    "20171224235312.431+0200",
    "20171224215312.4318Z",
    "20171224161432,279Z",
    "20171324161432.279Z",
    "20171224230000.Z",
    "20171224240000Z",
    "2017122421531Z",
    "201712242153Z",
    "2017122421Z",
    "20171224161432.279",
    "20171224166032Z",
]


@pytest.mark.parametrize("text, expected", VALID_GENERALIZED.items())
def test_valid_generalized_times(text, expected):
    assert oer.validate_generalized_time(text.encode()) == text
    assert oer.parse_generalized_time(text) == expected


@pytest.mark.parametrize("text", INVALID_GENERALIZED)
def test_invalid_generalized_times(text):
    with pytest.raises(CodecError):
        oer.validate_generalized_time(text.encode())


def test_generalized_time_format_has_three_digits():
    moment = datetime(2017, 12, 24, 16, 14, 32, tzinfo=UTC)
    assert oer.format_generalized_time(moment) == "20171224161432.000Z"


@settings(max_examples=50)
@given(millisecond_datetimes)
def test_generalized_time_round_trip(moment):
    assert oer.parse_generalized_time(oer.format_generalized_time(moment)) == moment


def test_timestamp_caches_are_per_thread_and_agree_across_threads():
    # each thread fills its own cache (a dict.get of keys another thread made spins on
    # the dict's lock on 3.13t: connector/lockfree.py), and every thread reads the same
    stamps = [1_796_000_000_000 + day * 86_400_000 + 12_345 for day in range(5)]
    expected = [oer.encode_timestamp_ms(ms) for ms in stamps]
    seen = {}

    def decode_and_encode(name: str) -> None:
        before = (len(oer._caches.dates), len(oer._caches.day_texts))
        seen[name] = (before, [oer.decode_timestamp_ms(text) for text in expected],
                      [oer.encode_timestamp_ms(ms) for ms in stamps],
                      sorted(oer._caches.dates), sorted(oer._caches.day_texts))

    threads = [threading.Thread(target=decode_and_encode, args=(f"t{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    days = [ms // 86_400_000 for ms in stamps]
    assert len(oer._caches.day_texts) >= 5  # this thread's own, filled by `expected` above
    for before, decoded, encoded, dates, day_texts in seen.values():
        assert before == (0, 0)  # nothing another thread cached is visible
        assert decoded == stamps and encoded == expected
        assert dates == sorted(text[:8] for text in expected) and day_texts == days
