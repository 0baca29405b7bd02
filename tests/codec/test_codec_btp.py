"""BTP 2.0 frames against the JavaScript btp-packet encoder, plus the auth and ilp helpers."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.codec import btp, ilp
from connector.codec.errors import CodecError
from connector.codec.oer import format_generalized_time, parse_generalized_time

VECTORS = json.loads(Path(__file__).with_name("vectors.json").read_text())
UTC = timezone.utc
FRAME_CLASSES = {
    btp.RESPONSE: btp.BtpResponse,
    btp.ERROR: btp.BtpError,
    btp.MESSAGE: btp.BtpMessage,
    btp.TRANSFER: btp.BtpTransfer,
}


def iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def expected_frame(vector) -> btp.Frame:
    entries = tuple(
        btp.ProtocolData(entry["name"], entry["content_type"], bytes.fromhex(entry["data"]))
        for entry in vector["protocol_data"]
    )
    request_id = vector["request_id"]
    if vector["type"] == btp.TRANSFER:
        return btp.BtpTransfer(request_id, int(vector["amount"]), entries)
    if vector["type"] == btp.ERROR:
        return btp.BtpError(
            request_id,
            vector["code"],
            vector["error_name"],
            format_generalized_time(iso(vector["triggered_at"])),
            bytes.fromhex(vector["data"]),
            entries,
        )
    return FRAME_CLASSES[vector["type"]](request_id, entries)


@pytest.mark.parametrize("vector", VECTORS["btp_frames"], ids=[v["name"] for v in VECTORS["btp_frames"]])
def test_frame_vectors(vector):
    encoded = bytes.fromhex(vector["hex"])
    expected = expected_frame(vector)
    decoded = btp.decode_frame(encoded)
    assert type(decoded) is FRAME_CLASSES[vector["type"]]
    assert decoded == expected
    assert btp.encode_frame(expected) == encoded


def test_vectors_cover_every_frame_type():
    assert {vector["type"] for vector in VECTORS["btp_frames"]} == set(FRAME_CLASSES)


def test_error_vector_time_text():
    vector = next(v for v in VECTORS["btp_frames"] if v["name"] == "error")
    frame = btp.decode_frame(bytes.fromhex(vector["hex"]))
    assert frame.triggered_at == "20171224161432.279Z"
    assert parse_generalized_time(frame.triggered_at) == iso(vector["triggered_at"])
    assert bytes(frame.data) == b"invalid auth_token"


def test_protocol_data_count_of_300_uses_two_bytes():
    vector = next(v for v in VECTORS["btp_frames"] if v["name"] == "message with 300 entries")
    encoded = bytes.fromhex(vector["hex"])
    frame = btp.decode_frame(encoded)
    assert len(frame.protocol_data) == 300
    contents_start = 5 + (1 if encoded[5] < 0x80 else 1 + (encoded[5] & 0x7F))
    assert encoded[contents_start : contents_start + 3] == b"\x02\x01\x2c"


# --- helpers ----------------------------------------------------------------------


def test_auth_message_matches_ilp_plugin_btp():
    vector = next(v for v in VECTORS["btp_frames"] if v["name"] == "auth message")
    assert btp.encode_frame(btp.auth_message(1, "s3cr3t", "alice")).hex() == vector["hex"]
    frame = btp.decode_frame(bytes.fromhex(vector["hex"]))
    assert btp.parse_auth(frame) == ("alice", "s3cr3t")


def test_auth_without_username():
    message = btp.decode_frame(btp.encode_frame(btp.auth_message(7, "token", None)))
    assert [entry.name for entry in message.protocol_data] == ["auth", "auth_token"]
    assert btp.parse_auth(message) == (None, "token")


@pytest.mark.parametrize(
    "entries, reason",
    [
        ((), "primary"),
        ((btp.ProtocolData("ilp", 0, b""),), "primary"),
        ((btp.ProtocolData("auth", 0, b""), btp.ProtocolData("auth_username", 1, b"u")), "auth_token"),
        ((btp.ProtocolData("auth", 0, b""), btp.ProtocolData("auth_token", 1, b"\xff")), "UTF-8"),
    ],
)
def test_parse_auth_rejects_bad_handshakes(entries, reason):
    with pytest.raises(CodecError, match=reason):
        btp.parse_auth(btp.BtpMessage(1, entries))


def test_ilp_message_and_response_carry_packets():
    prepare_vector = VECTORS["ilp_prepares"][1]
    packet = bytes.fromhex(prepare_vector["hex"])
    frame = btp.decode_frame(btp.encode_frame(btp.ilp_message(42, packet)))
    carried = btp.ilp_packet_of(frame)
    assert carried == packet
    assert ilp.decode_prepare(carried).destination == prepare_vector["destination"]

    fulfill = ilp.encode_fulfill(ilp.Fulfill(bytes(32)))
    response = btp.decode_frame(btp.encode_frame(btp.ilp_response(42, fulfill)))
    assert isinstance(response, btp.BtpResponse)
    assert btp.ilp_packet_of(response) == fulfill
    assert btp.ilp_packet_of(btp.BtpResponse(1)) is None
    assert btp.find_protocol_data(frame.protocol_data, "ilp").content_type == (
        btp.MIME_APPLICATION_OCTET_STREAM
    )
    assert btp.find_protocol_data(frame.protocol_data, "nope") is None


def test_ilp_prepare_message_vector_is_what_helper_builds():
    vector = next(v for v in VECTORS["btp_frames"] if v["name"] == "ilp prepare message")
    packet = bytes.fromhex(vector["protocol_data"][0]["data"])
    assert btp.encode_frame(btp.ilp_message(4294967295, packet)).hex() == vector["hex"]


def test_error_frame_builder_matches_btp_packet():
    vector = next(v for v in VECTORS["btp_frames"] if v["name"] == "error")
    frame = btp.error_frame(
        2, "F00", iso(vector["triggered_at"]), data=b"invalid auth_token"
    )
    assert frame.name == "NotAcceptedError"
    assert btp.encode_frame(frame).hex() == vector["hex"]


# --- strictness -------------------------------------------------------------------


def test_unknown_frame_types_are_rejected():
    for frame_type in (0, 3, 4, 5, 8, 255):
        with pytest.raises(CodecError, match="unknown BTP frame type"):
            btp.decode_frame(bytes([frame_type]) + bytes(4) + b"\x02\x01\x00")


def test_truncation_and_trailing_bytes_are_rejected():
    encoded = btp.encode_frame(btp.auth_message(1, "token"))
    with pytest.raises(CodecError):
        btp.decode_frame(encoded[:-1])
    with pytest.raises(CodecError, match="trailing"):
        btp.decode_frame(encoded + b"\x00")
    with pytest.raises(CodecError):
        btp.decode_frame(encoded[:3])


def test_non_canonical_entry_count_is_rejected():
    # A Response whose protocol data count 0 is written as two bytes.
    with pytest.raises(CodecError, match="leading zero"):
        btp.decode_frame(bytes.fromhex("010000000103020000"))
    assert btp.decode_frame(bytes.fromhex("0100000001020100")) == btp.BtpResponse(1, ())


def test_impossible_entry_count_is_rejected_early():
    with pytest.raises(CodecError, match="cannot fit"):
        btp.decode_frame(bytes.fromhex("06000000010908ffffffffffffffff"))


def test_invalid_error_time_is_rejected():
    frame = btp.BtpError(1, "F00", "NotAcceptedError", "20171224161432.279Z")
    encoded = bytearray(btp.encode_frame(frame))
    encoded[encoded.index(b"20171224") + 4] = ord("9")  # month 92
    with pytest.raises(CodecError, match="GeneralizedTime"):
        btp.decode_frame(encoded)


@pytest.mark.parametrize(
    "frame",
    [
        btp.BtpMessage(-1),
        btp.BtpMessage(1 << 32),
        btp.BtpTransfer(1, -5),
        btp.BtpMessage(1, (btp.ProtocolData("é", 0, b""),)),
        btp.BtpMessage(1, (btp.ProtocolData("x", 256, b""),)),
        btp.BtpError(1, "F0", "x", "20171224161432Z"),
        btp.BtpError(1, "F00", "ü", "20171224161432Z"),
        btp.BtpError(1, "F00", "x", "yesterday"),
        btp.BtpError(1, "F00", "x", "20171224161432Z", bytes(btp.MAX_ERROR_DATA_LENGTH + 1)),
    ],
)
def test_encoder_refuses_invalid_frames(frame):
    with pytest.raises(CodecError):
        btp.encode_frame(frame)


def test_encode_frame_refuses_other_objects():
    with pytest.raises(CodecError):
        btp.encode_frame(object())


# --- property-based round trip -----------------------------------------------------

entries = st.lists(
    st.builds(
        btp.ProtocolData,
        st.text(st.characters(max_codepoint=127), max_size=20),
        st.integers(0, 255),
        st.binary(max_size=300),
    ),
    max_size=6,
).map(tuple)
request_ids = st.integers(0, (1 << 32) - 1)
generalized_times = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)
).map(lambda moment: format_generalized_time(moment.replace(tzinfo=UTC)))
frames = st.one_of(
    st.builds(btp.BtpMessage, request_ids, entries),
    st.builds(btp.BtpResponse, request_ids, entries),
    st.builds(btp.BtpTransfer, request_ids, st.integers(0, (1 << 64) - 1), entries),
    st.builds(
        btp.BtpError,
        request_ids,
        st.text(st.characters(max_codepoint=127), min_size=3, max_size=3),
        st.text(st.characters(max_codepoint=127), max_size=40),
        generalized_times,
        st.binary(max_size=200),
        entries,
    ),
)


@settings(max_examples=150, deadline=None)
@given(frames)
def test_frame_round_trip(frame):
    encoded = btp.encode_frame(frame)
    decoded = btp.decode_frame(encoded)
    assert decoded == frame
    assert btp.encode_frame(decoded) == encoded
