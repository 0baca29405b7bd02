"""The C pass over a Prepare (`_prepare.prepare_layout`) agrees with the Python codec:
on every well-formed Prepare it answers what `_prepare_layout` and `decode_timestamp_ms`
answer, and on anything else it answers None (the Python codec then raises its precise
error), never a different layout."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.codec import ilp
from connector.codec._prepare import prepare_layout
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
