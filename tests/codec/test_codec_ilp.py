"""ILPv4 packets against the JavaScript ilp-packet encoder, plus the in-place rewrite."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.codec import ilp
from connector.codec.address import MAX_ADDRESS_LENGTH, is_valid_address, validate_address
from connector.codec.errors import CodecError

VECTORS = json.loads(Path(__file__).with_name("vectors.json").read_text())
UTC = timezone.utc
EXPIRY = datetime(2017, 12, 23, 1, 21, 40, 549000, tzinfo=UTC)
CONDITION = bytes(range(32))


def iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def names(vectors):
    return [vector["name"] for vector in vectors]


def sample_prepare(**changes) -> ilp.Prepare:
    fields = dict(
        amount=107,
        expires_at=EXPIRY,
        execution_condition=CONDITION,
        destination="example.alice",
        data=b"hello",
    )
    fields.update(changes)
    return ilp.Prepare(**fields)


# --- vectors from ilp-packet -----------------------------------------------------


@pytest.mark.parametrize("vector", VECTORS["ilp_prepares"], ids=names(VECTORS["ilp_prepares"]))
def test_prepare_vectors(vector):
    encoded = bytes.fromhex(vector["hex"])
    expected = ilp.Prepare(
        amount=int(vector["amount"]),
        expires_at=iso(vector["expires_at"]),
        execution_condition=bytes.fromhex(vector["execution_condition"]),
        destination=vector["destination"],
        data=bytes.fromhex(vector["data"]),
    )
    assert ilp.decode_prepare(encoded) == expected
    assert ilp.decode_packet(encoded) == expected
    assert ilp.encode_prepare(expected) == encoded
    assert ilp.encode_packet(expected) == encoded

    view = ilp.PrepareView(encoded)
    assert view.amount == expected.amount
    assert view.expires_at == expected.expires_at
    assert view.expires_at_ms == int(expected.expires_at.timestamp() * 1000)
    assert view.execution_condition == expected.execution_condition
    assert view.destination == expected.destination
    assert bytes(view.destination_bytes) == expected.destination.encode()
    assert view.data == expected.data
    assert view.to_prepare() == expected


@pytest.mark.parametrize("vector", VECTORS["ilp_fulfills"], ids=names(VECTORS["ilp_fulfills"]))
def test_fulfill_vectors(vector):
    encoded = bytes.fromhex(vector["hex"])
    expected = ilp.Fulfill(bytes.fromhex(vector["fulfillment"]), bytes.fromhex(vector["data"]))
    assert ilp.decode_fulfill(encoded) == expected
    assert ilp.decode_reply(encoded) == expected
    assert ilp.decode_packet(encoded) == expected
    assert ilp.encode_fulfill(expected) == encoded
    assert ilp.encode_packet(expected) == encoded


@pytest.mark.parametrize("vector", VECTORS["ilp_rejects"], ids=names(VECTORS["ilp_rejects"]))
def test_reject_vectors(vector):
    encoded = bytes.fromhex(vector["hex"])
    expected = ilp.Reject(
        vector["code"], vector["triggered_by"], vector["message"], bytes.fromhex(vector["data"])
    )
    assert ilp.decode_reject(encoded) == expected
    assert ilp.decode_reply(encoded) == expected
    assert ilp.encode_reject(expected) == encoded
    assert ilp.encode_packet(expected) == encoded


def test_vectors_cover_every_standard_code():
    codes = {vector["code"] for vector in VECTORS["ilp_rejects"]}
    assert codes == set(ilp.ERROR_NAMES)


@pytest.mark.parametrize("vector", VECTORS["ilp_amount_too_large"], ids=lambda v: v["data"])
def test_amount_too_large_vectors(vector):
    received, maximum = int(vector["received_amount"]), int(vector["maximum_amount"])
    assert ilp.encode_amount_too_large(received, maximum).hex() == vector["data"]
    reject = ilp.decode_reject(bytes.fromhex(vector["reject_hex"]))
    assert reject.code == ilp.F08_AMOUNT_TOO_LARGE
    assert ilp.decode_amount_too_large(reject.data) == ilp.AmountTooLarge(received, maximum)


def test_amount_too_large_data_must_be_16_bytes():
    with pytest.raises(CodecError, match="16 bytes"):
        ilp.decode_amount_too_large(bytes(15))
    with pytest.raises(CodecError, match="16 bytes"):
        ilp.decode_amount_too_large(bytes(17))
    with pytest.raises(CodecError):
        ilp.encode_amount_too_large(-1, 0)


# --- error codes -----------------------------------------------------------------


def test_error_code_names_follow_rfc():
    assert ilp.ERROR_NAMES[ilp.F00_BAD_REQUEST] == "Bad Request"
    assert ilp.ERROR_NAMES[ilp.F04_INSUFFICIENT_DESTINATION_AMOUNT] == (
        "Insufficient Destination Amount"
    )
    assert ilp.ERROR_NAMES[ilp.F08_AMOUNT_TOO_LARGE] == "Amount Too Large"
    assert ilp.ERROR_NAMES[ilp.T04_INSUFFICIENT_LIQUIDITY] == "Insufficient Liquidity"
    assert ilp.ERROR_NAMES[ilp.R02_INSUFFICIENT_TIMEOUT] == "Insufficient Timeout"
    assert len(ilp.ERROR_NAMES) == 21
    assert sorted(code[0] for code in ilp.ERROR_NAMES) == ["F"] * 10 + ["R"] * 4 + ["T"] * 7


# --- addresses (RFC-0015) ----------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "g.acme.bob",
        "g.us-fed.ach.0.acmebank.swx0a0.acmecorp.sales.199.~ipr.cdfa5e16-e759-4ba3-88f6-8b9dc83c1868.2",
        "private.x",
        "example.a",
        "peer.config",
        "self.a",
        "test.a",
        "test1.a",
        "test2.a",
        "test3.a",
        "local.a",
        "g." + "a" * (MAX_ADDRESS_LENGTH - 2),
    ],
)
def test_valid_addresses(address):
    assert is_valid_address(address)
    assert is_valid_address(address.encode())
    assert validate_address(memoryview(address.encode())) == address


@pytest.mark.parametrize(
    "address",
    [
        "",
        "g",
        "g.",
        "g..a",
        "g.a.",
        ".g.a",
        "test4.a",
        "G.a",
        "h.a",
        "g.a b",
        "g.a/b",
        "g.é",
        "g.a\n",
        "g." + "a" * (MAX_ADDRESS_LENGTH - 1),
    ],
)
def test_invalid_addresses(address):
    assert not is_valid_address(address)
    with pytest.raises(CodecError, match="invalid ILP address"):
        validate_address(address)


# --- strictness ----------------------------------------------------------------------


def test_trailing_bytes_after_envelope_are_rejected():
    encoded = ilp.encode_prepare(sample_prepare())
    with pytest.raises(CodecError, match="trailing"):
        ilp.decode_prepare(encoded + b"\x00")


def test_trailing_bytes_inside_contents_are_rejected():
    fulfill = ilp.encode_fulfill(ilp.Fulfill(bytes(32), b""))
    padded = bytes([fulfill[0], fulfill[1] + 1]) + fulfill[2:] + b"\x00"
    with pytest.raises(CodecError, match="trailing"):
        ilp.decode_fulfill(padded)


def test_truncated_packet_is_rejected():
    encoded = ilp.encode_prepare(sample_prepare())
    with pytest.raises(CodecError, match="overruns"):
        ilp.decode_prepare(encoded[:-1])


def test_wrong_and_unknown_types():
    fulfill = ilp.encode_fulfill(ilp.Fulfill(bytes(32)))
    with pytest.raises(CodecError, match="expected ILP packet type 12"):
        ilp.decode_prepare(fulfill)
    with pytest.raises(CodecError, match="unknown ILP packet type 1"):
        ilp.decode_packet(b"\x01\x00")
    with pytest.raises(CodecError, match="Fulfill or Reject"):
        ilp.decode_reply(ilp.encode_prepare(sample_prepare()))
    with pytest.raises(CodecError, match="empty"):
        ilp.decode_packet(b"")
    assert ilp.packet_type(fulfill) == ilp.FULFILL


def test_invalid_destination_is_rejected():
    encoded = bytearray(ilp.encode_prepare(sample_prepare(destination="example.alice")))
    at = encoded.index(b"example.alice")
    encoded[at + 7] = ord("!")
    with pytest.raises(CodecError, match="invalid destination"):
        ilp.decode_prepare(encoded)
    with pytest.raises(CodecError, match="invalid destination"):
        ilp.PrepareView(encoded)


def test_invalid_expiry_is_rejected():
    encoded = bytearray(ilp.encode_prepare(sample_prepare()))
    encoded[2 + 8 + 4 : 2 + 8 + 6] = b"13"  # month 13
    with pytest.raises(CodecError, match="timestamp"):
        ilp.decode_prepare(encoded)
    with pytest.raises(CodecError, match="timestamp"):
        ilp.PrepareView(encoded)


def test_oversized_data_is_rejected_both_ways():
    too_big = bytes(ilp.MAX_DATA_LENGTH + 1)
    with pytest.raises(CodecError, match="exceeds"):
        ilp.encode_prepare(sample_prepare(data=too_big))
    with pytest.raises(CodecError, match="exceeds"):
        ilp.encode_fulfill(ilp.Fulfill(bytes(32), too_big))
    fits = ilp.encode_fulfill(ilp.Fulfill(bytes(32), bytes(ilp.MAX_DATA_LENGTH)))
    contents = fits[4:-ilp.MAX_DATA_LENGTH - 3] + b"\x82\x80\x00" + too_big
    forged = b"\x0d\x82" + len(contents).to_bytes(2, "big") + contents
    with pytest.raises(CodecError, match="exceeds"):
        ilp.decode_fulfill(forged)


def test_reject_with_invalid_utf8_message_is_rejected():
    encoded = bytearray(ilp.encode_reject(ilp.Reject("F02", "g.a", "ab")))
    encoded[encoded.index(b"ab")] = 0xFF
    with pytest.raises(CodecError, match="UTF-8"):
        ilp.decode_reject(encoded)


def test_reject_with_invalid_triggered_by_is_rejected():
    encoded = bytearray(ilp.encode_reject(ilp.Reject("F02", "g.a", "")))
    encoded[encoded.index(b"g.a") + 1] = ord(",")
    with pytest.raises(CodecError, match="triggeredBy"):
        ilp.decode_reject(encoded)


@pytest.mark.parametrize(
    "prepare",
    [
        sample_prepare(amount=-1),
        sample_prepare(amount=1 << 64),
        sample_prepare(amount=1.0),
        sample_prepare(execution_condition=bytes(31)),
        sample_prepare(destination="nowhere"),
        sample_prepare(expires_at=datetime(2020, 1, 1)),
    ],
)
def test_encoder_refuses_invalid_prepares(prepare):
    with pytest.raises(CodecError):
        ilp.encode_prepare(prepare)


@pytest.mark.parametrize(
    "reject",
    [ilp.Reject("F0", "g.a"), ilp.Reject("F0é", "g.a"), ilp.Reject("F00", "g")],
)
def test_encoder_refuses_invalid_rejects(reject):
    with pytest.raises(CodecError):
        ilp.encode_reject(reject)


def test_encode_packet_refuses_other_objects():
    with pytest.raises(CodecError):
        ilp.encode_packet("not a packet")


# --- zero copy and in-place rewrite ---------------------------------------------------


def test_decoded_fields_alias_the_input():
    buffer = bytearray(ilp.encode_prepare(sample_prepare(data=b"hello")))
    prepare = ilp.decode_prepare(buffer)
    buffer[-5:] = b"HELLO"
    assert bytes(prepare.data) == b"HELLO"


def test_view_rewrites_amount_and_expiry_in_place():
    original = sample_prepare(amount=107, data=b"payload" * 50)
    buffer = bytearray(ilp.encode_prepare(original))
    view = ilp.PrepareView(buffer)
    view.set_amount(99)
    view.set_expires_at(EXPIRY - timedelta(seconds=1))
    rewritten = ilp.decode_prepare(buffer)
    assert rewritten == ilp.Prepare(
        99, EXPIRY - timedelta(seconds=1), CONDITION, "example.alice", b"payload" * 50
    )
    assert bytes(buffer) == ilp.encode_prepare(rewritten)
    view.set_expires_at_ms(0)
    assert view.expires_at == datetime(1970, 1, 1, tzinfo=UTC)
    assert view.amount == 99


def test_rewrite_prepare_changes_only_amount_and_expiry():
    original = ilp.encode_prepare(sample_prepare())
    buffer = bytearray(original)
    new_expiry = datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    ilp.rewrite_prepare(buffer, amount=(1 << 64) - 1, expires_at=new_expiry)
    assert len(buffer) == len(original)
    assert buffer[27:] == original[27:]  # 2 envelope + 8 amount + 17 expiry
    assert ilp.decode_prepare(buffer) == sample_prepare(amount=(1 << 64) - 1, expires_at=new_expiry)


def test_rewrite_prepare_with_milliseconds_and_memoryview():
    buffer = bytearray(ilp.encode_prepare(sample_prepare(data=bytes(300))))
    epoch_ms = int(EXPIRY.timestamp() * 1000) - 30_000
    ilp.rewrite_prepare(memoryview(buffer), expires_at_ms=epoch_ms)
    assert ilp.PrepareView(buffer).expires_at_ms == epoch_ms
    assert ilp.PrepareView(buffer).amount == 107


def test_rewrite_inside_a_larger_buffer_slice():
    packet = ilp.encode_prepare(sample_prepare())
    ring = bytearray(b"\xaa" * 10 + packet + b"\xbb" * 10)
    window = memoryview(ring)[10 : 10 + len(packet)]
    ilp.PrepareView(window).set_amount(5)
    assert ring[:10] == b"\xaa" * 10 and ring[-10:] == b"\xbb" * 10
    assert ilp.decode_prepare(ring[10:-10]).amount == 5


def test_rewrite_refuses_bad_values_without_touching_the_buffer():
    original = ilp.encode_prepare(sample_prepare())
    buffer = bytearray(original)
    with pytest.raises(CodecError):
        ilp.rewrite_prepare(buffer, amount=-1)
    with pytest.raises(CodecError):
        ilp.rewrite_prepare(buffer, amount=5, expires_at=datetime(2020, 1, 1))
    with pytest.raises(CodecError):
        ilp.rewrite_prepare(buffer, expires_at=EXPIRY, expires_at_ms=0)
    assert bytes(buffer) == original


def test_rewrite_refuses_non_prepares_and_read_only_buffers():
    with pytest.raises(CodecError):
        ilp.rewrite_prepare(bytearray(ilp.encode_fulfill(ilp.Fulfill(bytes(32)))), amount=1)
    with pytest.raises(CodecError):
        ilp.rewrite_prepare(bytearray(b"\x0c\x05abcde"), amount=1)
    with pytest.raises(TypeError):
        ilp.rewrite_prepare(ilp.encode_prepare(sample_prepare()), amount=1)
    with pytest.raises(TypeError):
        ilp.PrepareView(ilp.encode_prepare(sample_prepare())).set_amount(1)


# --- property-based round trips ---------------------------------------------------------

addresses = st.from_regex(
    r"\A(g|private|example|peer|self|test[1-3]?|local)(\.[a-zA-Z0-9_~-]{1,20}){1,5}\Z"
)
millisecond_datetimes = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999000)
).map(lambda moment: moment.replace(microsecond=moment.microsecond // 1000 * 1000, tzinfo=UTC))
packet_data = st.binary(max_size=600) | st.binary(min_size=32000, max_size=ilp.MAX_DATA_LENGTH)

prepares = st.builds(
    ilp.Prepare,
    amount=st.integers(0, (1 << 64) - 1),
    expires_at=millisecond_datetimes,
    execution_condition=st.binary(min_size=32, max_size=32),
    destination=addresses,
    data=packet_data,
)
fulfills = st.builds(ilp.Fulfill, st.binary(min_size=32, max_size=32), packet_data)
rejects = st.builds(
    ilp.Reject,
    code=st.sampled_from(sorted(ilp.ERROR_NAMES)) | st.text(st.characters(max_codepoint=127), min_size=3, max_size=3),
    triggered_by=addresses | st.just(""),
    message=st.text(max_size=200),
    data=packet_data,
)


@settings(max_examples=150, deadline=None)
@given(st.one_of(prepares, fulfills, rejects))
def test_packet_round_trip(packet):
    encoded = ilp.encode_packet(packet)
    decoded = ilp.decode_packet(encoded)
    assert decoded == packet
    assert ilp.encode_packet(decoded) == encoded


@settings(max_examples=100, deadline=None)
@given(prepares, st.integers(0, (1 << 64) - 1), millisecond_datetimes)
def test_rewrite_equals_re_encoding(prepare, amount, expires_at):
    buffer = bytearray(ilp.encode_prepare(prepare))
    ilp.rewrite_prepare(buffer, amount=amount, expires_at=expires_at)
    prepare.amount, prepare.expires_at = amount, expires_at
    assert bytes(buffer) == ilp.encode_prepare(prepare)
