"""ILDCP requests and responses against the JavaScript ilp-protocol-ildcp encoder."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.codec import ildcp, ilp
from connector.codec.errors import CodecError

VECTORS = json.loads(Path(__file__).with_name("vectors.json").read_text())
UTC = timezone.utc
EXPIRY = datetime(2030, 1, 1, tzinfo=UTC)


def iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_constants_follow_rfc():
    assert ildcp.PEER_PROTOCOL_CONDITION == base64.b64decode(
        "Zmh6rfhivXdsj8GLjp+OIAiXFIVu4jOzkCpZHQ1fKSU="
    )
    assert ildcp.PEER_PROTOCOL_FULFILLMENT == bytes(32)
    assert ildcp.ILDCP_DESTINATION == "peer.config"


@pytest.mark.parametrize("vector", VECTORS["ildcp_requests"], ids=lambda v: v["expires_at"])
def test_request_vectors(vector):
    encoded = bytes.fromhex(vector["hex"])
    expires_at = iso(vector["expires_at"])
    assert ildcp.encode_ildcp_request(expires_at) == encoded
    request = ildcp.decode_ildcp_request(encoded)
    assert request == ilp.Prepare(
        0, expires_at, ildcp.PEER_PROTOCOL_CONDITION, "peer.config", b""
    )
    assert ildcp.is_ildcp_request(request)


@pytest.mark.parametrize(
    "vector", VECTORS["ildcp_responses"], ids=lambda v: f"{v['asset_code']}-{v['asset_scale']}"
)
def test_response_vectors(vector):
    encoded = bytes.fromhex(vector["hex"])
    expected = ildcp.IldcpResponse(
        vector["client_address"], vector["asset_scale"], vector["asset_code"]
    )
    assert ildcp.decode_ildcp_response(encoded) == expected
    assert ildcp.encode_ildcp_response(expected) == encoded
    fulfill = ilp.decode_fulfill(encoded)
    assert ildcp.decode_ildcp_response_data(fulfill.data) == expected
    assert ildcp.encode_ildcp_response_data(expected) == fulfill.data


def test_prepares_to_other_destinations_are_not_requests():
    other = ilp.encode_prepare(
        ilp.Prepare(0, EXPIRY, ildcp.PEER_PROTOCOL_CONDITION, "peer.route.control")
    )
    assert not ildcp.is_ildcp_request(ilp.decode_prepare(other))
    with pytest.raises(CodecError, match="destination"):
        ildcp.decode_ildcp_request(other)


def test_wrong_condition_is_not_a_request():
    wrong = ilp.encode_prepare(ilp.Prepare(0, EXPIRY, bytes(32), "peer.config"))
    assert not ildcp.is_ildcp_request(ilp.decode_prepare(wrong))
    with pytest.raises(CodecError, match="condition"):
        ildcp.decode_ildcp_request(wrong)


def test_response_with_wrong_fulfillment_is_rejected():
    data = ildcp.encode_ildcp_response_data(ildcp.IldcpResponse("g.a", 2, "USD"))
    encoded = ilp.encode_fulfill(ilp.Fulfill(b"\x01" * 32, data))
    with pytest.raises(CodecError, match="fulfillment"):
        ildcp.decode_ildcp_response(encoded)


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"\x03g.a\x02\x03USD\x00", "trailing"),
        (b"\x03g.a\x02\x04USD", "overruns"),
        (b"\x03g.a", "truncated"),
        (b"\x03g!a\x02\x03USD", "invalid ILP address"),
        (b"\x03g.a\x02\x02\xff\xfe", "UTF-8"),
    ],
)
def test_malformed_response_data_is_rejected(data, reason):
    with pytest.raises(CodecError, match=reason):
        ildcp.decode_ildcp_response_data(data)


@pytest.mark.parametrize(
    "response",
    [
        ildcp.IldcpResponse("nope", 2, "USD"),
        ildcp.IldcpResponse("g.a", 256, "USD"),
        ildcp.IldcpResponse("g.a", -1, "USD"),
    ],
)
def test_encoder_refuses_invalid_responses(response):
    with pytest.raises(CodecError):
        ildcp.encode_ildcp_response(response)


@settings(max_examples=100, deadline=None)
@given(
    st.from_regex(r"\A(g|test|private)(\.[a-zA-Z0-9_~-]{1,30}){1,4}\Z"),
    st.integers(0, 255),
    st.text(max_size=20),
)
def test_response_round_trip(address, scale, code):
    response = ildcp.IldcpResponse(address, scale, code)
    assert ildcp.decode_ildcp_response(ildcp.encode_ildcp_response(response)) == response
