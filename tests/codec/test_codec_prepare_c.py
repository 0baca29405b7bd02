"""The C pass over a Prepare (`_prepare.prepare_layout`) agrees with the Python codec:
on every well-formed Prepare it answers what `_prepare_layout` and `decode_timestamp_ms`
answer, and on anything else it answers None (the Python codec then raises its precise
error), never a different layout.  The same holds for the worker's reads
(`prepare_fields`, `fulfillment_of`), and `write_prepare_fields` writes the bytes the
Python setters write, or nothing."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.codec import ilp
from connector.codec._prepare import fulfillment_of, prepare_fields, prepare_layout, write_prepare_fields
from connector.codec.errors import CodecError
from connector.codec.ilp import _CONDITION_AT, _EXPIRY_AT, _prepare_layout
from connector.codec.oer import decode_timestamp_ms

VECTORS = json.loads((Path(__file__).parent / "vectors.json").read_text())
PREPARES = [bytes.fromhex(v["hex"]) for v in VECTORS["ilp_prepares"]]

segment = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_~-", min_size=1, max_size=12)
addresses = st.builds(lambda scheme, parts: ".".join([scheme, *parts]),
                      st.sampled_from(["g", "private", "example", "peer", "self", "test", "test1", "test2",
                                       "test3", "local"]),
                      st.lists(segment, min_size=1, max_size=6))
moments = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59),
                       timezones=st.just(timezone.utc)).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000))
prepares = st.builds(ilp.Prepare, st.integers(0, (1 << 64) - 1), moments, st.binary(min_size=32, max_size=32),
                     addresses, st.one_of(st.binary(max_size=300), st.just(b"\x01" * 32767)))


def python_layout(buffer: bytes):
    view = memoryview(buffer)
    try:
        base, destination_start, data_at, _ = _prepare_layout(view)
        return base, destination_start, data_at, decode_timestamp_ms(view[base + _EXPIRY_AT:base + _CONDITION_AT])
    except CodecError:
        return None


@settings(max_examples=300, deadline=None)
@given(prepares)
def test_well_formed_prepares_are_read_in_c_as_in_python(prepare):
    buffer = ilp.encode_prepare(prepare)
    assert prepare_layout(buffer) == python_layout(buffer) is not None


@pytest.mark.parametrize("index", range(len(PREPARES)))
def test_published_vectors_are_read_in_c_as_in_python(index):
    assert prepare_layout(PREPARES[index]) == python_layout(PREPARES[index]) is not None


@st.composite
def damaged(draw) -> bytes:
    buffer = bytearray(ilp.encode_prepare(draw(prepares)) if draw(st.booleans()) else draw(st.sampled_from(PREPARES)))
    for _ in range(draw(st.integers(1, 3))):
        position = draw(st.integers(0, len(buffer) - 1)) if buffer else 0
        kind = draw(st.sampled_from(["truncate", "set", "insert", "delete"]))
        if kind == "truncate":
            del buffer[position:]
        elif not buffer:
            buffer.append(draw(st.integers(0, 255)))
        elif kind == "set":
            buffer[position] = draw(st.sampled_from([0, 0x2E, 0x30, 0x39, 0x3A, 0x7F, 0x80, 0x81, 0x82, 0xFF,
                                                     draw(st.integers(0, 255))]))
        elif kind == "insert":
            buffer[position:position] = draw(st.binary(min_size=1, max_size=2))
        else:
            del buffer[position]
    return bytes(buffer)


@settings(max_examples=1500, deadline=None)
@given(st.one_of(damaged(), st.binary(max_size=200)))
def test_damaged_prepares_get_the_python_answer_or_none(buffer):
    in_c, in_python = prepare_layout(buffer), python_layout(buffer)
    assert in_c is None or in_c == in_python


@pytest.mark.parametrize("stamp, valid", [
    (b"20240229235959999", True), (b"20230229000000000", False), (b"21000229000000000", False),
    (b"20000229000000000", True), (b"00001231000000000", False), (b"20241301000000000", False),
    (b"20241231240000000", False), (b"20241231236000000", False), (b"20241231235960000", False),
    (b"2024123123595999x", False), (b"99991231235959999", True), (b"00010101000000000", True),
])
def test_timestamps_at_the_edges(stamp, valid):
    prepare = ilp.encode_prepare(ilp.Prepare(1, datetime(2024, 1, 1, tzinfo=timezone.utc), b"\0" * 32, "g.a", b""))
    buffer = prepare[:2 + _EXPIRY_AT] + stamp + prepare[2 + _CONDITION_AT:]
    assert python_layout(buffer) is not None if valid else python_layout(buffer) is None
    assert prepare_layout(buffer) == python_layout(buffer)


def test_the_view_keeps_the_expiry_it_writes():
    moment = datetime(2030, 5, 6, 7, 8, 9, 123000, tzinfo=timezone.utc)
    view = ilp.PrepareView(bytearray(ilp.encode_prepare(ilp.Prepare(5, moment, b"\0" * 32, "g.a.b", b"x"))))
    assert view.expires_at == moment
    view.set_expires_at_ms(view.expires_at_ms - 1500)
    assert view.expires_at == moment - timedelta(milliseconds=1500)
    assert view.expires_at_ms == decode_timestamp_ms(bytes(view.buffer[2 + _EXPIRY_AT:2 + _CONDITION_AT]))
    view.set_expires_at(moment)
    assert view.expires_at_ms == ilp.PrepareView(bytes(view.buffer)).expires_at_ms


SAMPLE = ilp.encode_prepare(ilp.Prepare(7, datetime(2030, 1, 1, tzinfo=timezone.utc), b"\1" * 32, "g.a", b"x"))


def python_fields(buffer: bytes):
    try:
        view = ilp.PrepareView(buffer)
    except CodecError:
        return None
    return view._base, view.amount, view.expires_at_ms, bytes(view.execution_condition), view.destination


@settings(max_examples=300, deadline=None)
@given(prepares)
def test_the_workers_fields_are_read_in_c_as_in_python(prepare):
    buffer = ilp.encode_prepare(prepare)
    assert prepare_fields(buffer) == python_fields(buffer) is not None
    assert ilp.read_prepare(buffer) == python_fields(buffer)


@settings(max_examples=1000, deadline=None)
@given(st.one_of(damaged(), st.binary(max_size=200)))
def test_damaged_prepares_give_no_fields_in_c_and_the_codecs_error(buffer):
    in_c, in_python = prepare_fields(buffer), python_fields(buffer)
    assert in_c is None or in_c == in_python
    if in_python is None:
        with pytest.raises(CodecError):
            ilp.read_prepare(buffer)


@settings(max_examples=300, deadline=None)
@given(prepares, st.integers(0, (1 << 64) - 1), moments)
def test_amount_and_expiry_are_written_in_c_as_in_python(prepare, amount, moment):
    expires_at_ms = int(moment.timestamp() * 1000)
    in_c, in_python = bytearray(ilp.encode_prepare(prepare)), bytearray(ilp.encode_prepare(prepare))
    base = ilp.read_prepare(in_c)[0]
    assert write_prepare_fields(in_c, base, amount, expires_at_ms) is True
    view = ilp.PrepareView(in_python)
    view.set_amount(amount)
    view.set_expires_at_ms(expires_at_ms)
    assert in_c == in_python
    assert ilp.read_prepare(in_c)[1:3] == (amount, expires_at_ms)


@pytest.mark.parametrize("amount, expires_at_ms", [
    (-1, 0), (1 << 64, 0), (True, 0), (1.0, 0), (1, -62135596800001), (1, 253402300800000), (1, 1 << 70), (1, "0"),
])
def test_out_of_range_values_write_nothing(amount, expires_at_ms):
    buffer = bytearray(SAMPLE)
    assert write_prepare_fields(buffer, 2, amount, expires_at_ms) is False
    with pytest.raises((CodecError, TypeError)):
        ilp.write_prepare(buffer, 2, amount, expires_at_ms)
    assert buffer == SAMPLE


def test_the_first_and_last_representable_moments_are_written():
    for moment in (datetime(1, 1, 1, tzinfo=timezone.utc), datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=timezone.utc),
                   datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=timezone.utc)):
        buffer = bytearray(SAMPLE)
        expires_at_ms = ilp.read_prepare(ilp.encode_prepare(ilp.Prepare(7, moment, b"\1" * 32, "g.a", b"x")))[2]
        assert write_prepare_fields(buffer, 2, 7, expires_at_ms) is True
        assert ilp.PrepareView(buffer).expires_at == moment


def test_a_read_only_buffer_is_left_to_the_python_codec():
    assert write_prepare_fields(SAMPLE, 2, 1, 0) is False
    with pytest.raises(TypeError):
        ilp.write_prepare(SAMPLE, 2, 1, 0)


fulfills = st.builds(ilp.Fulfill, st.binary(min_size=32, max_size=32),
                     st.one_of(st.binary(max_size=300), st.just(b"\2" * 32767)))


def python_fulfillment(buffer: bytes):
    try:
        return bytes(ilp.decode_fulfill(buffer).fulfillment)
    except CodecError:
        return None


@settings(max_examples=300, deadline=None)
@given(fulfills)
def test_fulfillments_are_read_in_c_as_in_python(fulfill):
    buffer = ilp.encode_fulfill(fulfill)
    assert fulfillment_of(buffer) == python_fulfillment(buffer) == fulfill.fulfillment
    assert ilp.read_fulfillment(buffer) == fulfill.fulfillment


@settings(max_examples=1000, deadline=None)
@given(st.one_of(fulfills.map(ilp.encode_fulfill), st.binary(max_size=120)).flatmap(
    lambda b: st.tuples(st.just(b), st.integers(0, max(len(b) - 1, 0)), st.integers(0, 255), st.booleans())))
def test_damaged_fulfills_get_the_python_answer_or_none(case):
    buffer, position, value, truncate = case
    damaged_buffer = bytearray(buffer)
    if truncate:
        del damaged_buffer[position:]
    elif damaged_buffer:
        damaged_buffer[position] = value
    in_c, in_python = fulfillment_of(bytes(damaged_buffer)), python_fulfillment(bytes(damaged_buffer))
    assert in_c is None or in_c == in_python
    if in_python is None:
        with pytest.raises(CodecError):
            ilp.read_fulfillment(bytes(damaged_buffer))
