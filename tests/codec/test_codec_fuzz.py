"""Fuzzing: decoders see random and mutated bytes and may only raise CodecError.

Because decoding is strict (canonical lengths, no trailing bytes), any input
a decoder accepts must also re-encode to exactly the same bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.codec import btp, ildcp, ilp, oer
from connector.codec.errors import CodecError

VECTORS = json.loads(Path(__file__).with_name("vectors.json").read_text())
FUZZ = settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def reencode_ilp(buffer: bytes) -> bytes:
    return ilp.encode_packet(ilp.decode_packet(buffer))


def reencode_prepare_view(buffer: bytes) -> bytes:
    view = ilp.PrepareView(buffer)
    view.expires_at_ms, view.amount, bytes(view.data)  # every property must read
    return ilp.encode_prepare(view.to_prepare())


def reencode_btp(buffer: bytes) -> bytes:
    return btp.encode_frame(btp.decode_frame(buffer))


def reencode_ildcp_response(buffer: bytes) -> bytes:
    return ildcp.encode_ildcp_response(ildcp.decode_ildcp_response(buffer))


def reencode_ildcp_request(buffer: bytes) -> bytes:
    # RFC-0031 lets peers agree on a non-zero amount, so it is kept as sent.
    return ilp.encode_prepare(ildcp.decode_ildcp_request(buffer))


def reencode_f08(buffer: bytes) -> bytes:
    details = ilp.decode_amount_too_large(buffer)
    return ilp.encode_amount_too_large(details.received_amount, details.maximum_amount)


CODECS = {
    "ilp": reencode_ilp,
    "prepare_view": reencode_prepare_view,
    "btp": reencode_btp,
    "ildcp_response": reencode_ildcp_response,
    "ildcp_request": reencode_ildcp_request,
    "f08": reencode_f08,
}


def check_only_codec_errors(reencode, buffer: bytes) -> None:
    try:
        again = reencode(buffer)
    except CodecError:
        return
    assert again == buffer, "accepted input must be canonical"


def seeds() -> list[bytes]:
    """Small valid encodings to mutate (large vectors are left out for speed)."""
    groups = ("ilp_prepares", "ilp_fulfills", "ilp_rejects", "btp_frames", "ildcp_requests",
              "ildcp_responses")
    found = [bytes.fromhex(vector["hex"]) for group in groups for vector in VECTORS[group]]
    return [seed for seed in found if len(seed) < 2000]


SEEDS = seeds()


@st.composite
def mutated(draw) -> bytes:
    buffer = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["truncate", "flip", "set", "insert", "delete", "length"]))
        position = draw(st.integers(0, max(len(buffer) - 1, 0)))
        if kind == "truncate":
            del buffer[position:]
        elif not buffer:
            buffer.append(draw(st.integers(0, 255)))
        elif kind == "flip":
            buffer[position] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            buffer[position] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0x81, 0x82, 0xFF]))
        elif kind == "insert":
            buffer[position:position] = draw(st.binary(min_size=1, max_size=3))
        elif kind == "delete":
            del buffer[position]
        else:  # rewrite a likely length byte: the envelope's or one near the end
            target = draw(st.sampled_from([1, 5, len(buffer) - 1, position]))
            buffer[min(target, len(buffer) - 1)] = draw(st.integers(0, 255))
    return bytes(buffer)


@pytest.mark.parametrize("name", sorted(CODECS))
@FUZZ
@given(buffer=st.binary(max_size=300))
def test_random_bytes(name, buffer):
    check_only_codec_errors(CODECS[name], buffer)


@pytest.mark.parametrize("name", sorted(CODECS))
@FUZZ
@given(buffer=st.sampled_from([12, 13, 14, 1, 2, 6, 7]).flatmap(
    lambda first: st.binary(max_size=200).map(lambda rest: bytes([first]) + rest)
))
def test_random_bytes_with_valid_type_byte(name, buffer):
    check_only_codec_errors(CODECS[name], buffer)


@pytest.mark.parametrize("name", sorted(CODECS))
@FUZZ
@given(buffer=mutated())
def test_mutated_valid_encodings(name, buffer):
    check_only_codec_errors(CODECS[name], buffer)


@pytest.mark.parametrize("seed", SEEDS, ids=range(len(SEEDS)))
def test_every_truncation_is_rejected(seed):
    reencode = reencode_btp if seed[0] in (1, 2, 6, 7) else reencode_ilp
    assert reencode(seed) == seed
    for end in range(len(seed)):
        with pytest.raises(CodecError):
            reencode(seed[:end])


@pytest.mark.parametrize("seed", SEEDS[:20], ids=range(20))
def test_every_single_bit_flip_is_rejected_or_canonical(seed):
    reencode = reencode_btp if seed[0] in (1, 2, 6, 7) else reencode_ilp
    for position in range(len(seed)):
        for bit in range(8):
            mutant = bytearray(seed)
            mutant[position] ^= 1 << bit
            check_only_codec_errors(reencode, bytes(mutant))


def test_long_form_lengths_for_short_contents_are_rejected():
    """Re-wrap a valid packet's contents with a non-canonical long-form length."""
    packet = ilp.encode_fulfill(ilp.Fulfill(bytes(32), b"x"))
    contents = packet[2:]
    for prefix in (b"\x81" + bytes([len(contents)]), b"\x82\x00" + bytes([len(contents)])):
        with pytest.raises(CodecError, match="non-canonical"):
            ilp.decode_fulfill(packet[:1] + prefix + contents)


def test_oer_readers_only_raise_codec_error_at_any_offset():
    readers = [
        oer.read_length, oer.read_var_octets, oer.read_var_uint, oer.read_var_ascii,
        oer.read_var_utf8, oer.read_uint8, oer.read_uint16, oer.read_uint32, oer.read_uint64,
    ]
    for sample in (b"", b"\x80", b"\x81\x00", b"\x88" + b"\xff" * 8, b"\x05ab", b"\xff" * 9):
        view = memoryview(sample)
        for reader in readers:
            for offset in range(len(sample) + 2):
                try:
                    reader(view, offset)
                except CodecError:
                    pass


@FUZZ
@given(st.binary(max_size=40))
def test_timestamp_decoders_only_raise_codec_error(raw):
    for decode in (oer.decode_timestamp, oer.decode_timestamp_ms, oer.validate_generalized_time):
        try:
            decode(raw)
        except CodecError:
            pass


@FUZZ
@given(st.text(st.sampled_from("0123456789"), min_size=17, max_size=17))
def test_digit_timestamps_decode_consistently(text):
    try:
        moment = oer.decode_timestamp(text.encode())
    except CodecError:
        with pytest.raises(CodecError):
            oer.decode_timestamp_ms(text.encode())
        return
    assert oer.encode_timestamp(moment) == text.encode()
    assert oer.encode_timestamp_ms(oer.decode_timestamp_ms(text.encode())) == text.encode()
